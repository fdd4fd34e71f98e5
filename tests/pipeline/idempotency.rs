//! Idempotency-Key: a retried command returns the first response and appends nothing.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::api_support::{
    assert_problem, assert_validation, check_in_body, event_count, post_with_headers,
    status_and_body, total_events,
};
use crate::helpers::TestApp;

/// POSTs `body` (or nothing) with an Idempotency-Key; returns the status and JSON body.
async fn post_keyed(app: &TestApp, path: &str, key: &str, payload: Option<Value>) -> (u16, Value) {
    status_and_body(send_keyed(app, path, key, payload).await).await
}

async fn send_keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    payload: Option<Value>,
) -> reqwest::Response {
    post_with_headers(app, path, &[("Idempotency-Key", key)], payload.as_ref()).await
}

#[tokio::test]
async fn creating_a_queue_twice_with_one_key_returns_the_first_response_and_appends_once() {
    let app = TestApp::spawn().await;
    let request = json!({"queueId": "idem", "name": "Idem", "maxCapacity": 5});
    let first = post_keyed(&app, "/api/queues", "create-idem-1", Some(request.clone())).await;
    let second = post_keyed(&app, "/api/queues", "create-idem-1", Some(request)).await;
    assert_eq!(first.0, 201, "{first:?}");
    assert_eq!(second, first, "same status and body");
    assert_eq!(first.1, json!({"queueId": "idem", "version": 1}));
    assert_eq!(event_count(&app, "idem").await, 1);
}

#[tokio::test]
async fn a_retried_create_without_a_queue_id_returns_the_same_generated_queue() {
    let app = TestApp::spawn().await;
    let request = json!({"name": "Generated", "maxCapacity": 5});
    let first = post_keyed(
        &app,
        "/api/queues",
        "create-generated",
        Some(request.clone()),
    )
    .await;
    let second = post_keyed(&app, "/api/queues", "create-generated", Some(request)).await;
    assert_eq!(first.0, 201, "{first:?}");
    assert_eq!(second, first);
    let queue_id = first.1["queueId"].as_str().expect("generated queueId");
    assert!(
        uuid::Uuid::parse_str(queue_id).is_ok(),
        "a UUID: {queue_id}"
    );
    assert_eq!(total_events(&app).await, 1, "one queue, not two");
}

#[tokio::test]
async fn a_retried_check_in_returns_the_first_response_and_appends_once() {
    let app = TestApp::spawn().await;
    app.create_queue("ci", 5).await;
    let path = "/api/queues/ci/check-ins";
    let first = post_keyed(
        &app,
        path,
        "checkin-ann",
        Some(check_in_body("ann", "High")),
    )
    .await;
    let second = post_keyed(
        &app,
        path,
        "checkin-ann",
        Some(check_in_body("ann", "High")),
    )
    .await;
    assert_eq!(first.0, 201, "{first:?}");
    assert_eq!(second, first, "same eventId, version and position");
    assert_eq!(event_count(&app, "ci").await, 2, "create + one check-in");
    // Without the key, the same check-in is a real second attempt and is rejected.
    let r = app.check_in("ci", "ann", "High").await;
    assert_problem(r, 409, "already-checked-in").await;
}

#[tokio::test]
async fn a_retried_call_next_returns_the_same_called_patient_not_the_next_one() {
    let app = TestApp::spawn().await;
    app.create_queue("cn", 5).await;
    assert_eq!(app.check_in("cn", "first", "Urgent").await.status(), 201);
    assert_eq!(app.check_in("cn", "second", "Low").await.status(), 201);
    let path = "/api/queues/cn/call-next";
    let room = json!({"consultingRoom": "Room 1"});
    let first = post_keyed(&app, path, "call-1", Some(room.clone())).await;
    let second = post_keyed(&app, path, "call-1", Some(room.clone())).await;
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["patientId"], "first");
    assert_eq!(second, first, "the same call, same eventId and calledAt");
    assert_eq!(
        event_count(&app, "cn").await,
        4,
        "create, 2 check-ins, 1 call"
    );

    // A new key is a new call.
    let third = post_keyed(&app, path, "call-2", Some(room)).await;
    assert_eq!(third.0, 200);
    assert_eq!(third.1["patientId"], "second");
    assert_eq!(event_count(&app, "cn").await, 5);
}

#[tokio::test]
async fn retried_complete_cancel_and_no_show_return_the_first_response_and_append_once() {
    let app = TestApp::spawn().await;
    let request = json!({"queueId": "pc", "name": "PC", "maxCapacity": 5, "maxNoShows": 3});
    assert_eq!(app.post("/api/queues", request).await.status(), 201);
    for id in ["a", "b", "c"] {
        assert_eq!(app.check_in("pc", id, "Medium").await.status(), 201);
    }
    let room = json!({"consultingRoom": "Room 1"});
    assert_eq!(
        app.post("/api/queues/pc/call-next", room.clone())
            .await
            .status(),
        200
    );

    let first = post_keyed(
        &app,
        "/api/queues/pc/patients/a/complete",
        "complete-a",
        None,
    )
    .await;
    let second = post_keyed(
        &app,
        "/api/queues/pc/patients/a/complete",
        "complete-a",
        None,
    )
    .await;
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(second, first);
    let after_complete = event_count(&app, "pc").await;
    assert_eq!(after_complete, 6);

    let first = post_keyed(&app, "/api/queues/pc/patients/b/cancel", "cancel-b", None).await;
    let second = post_keyed(&app, "/api/queues/pc/patients/b/cancel", "cancel-b", None).await;
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(second, first);
    assert_eq!(event_count(&app, "pc").await, 7);

    assert_eq!(
        app.post("/api/queues/pc/call-next", room).await.status(),
        200
    );
    let first = post_keyed(&app, "/api/queues/pc/patients/c/no-show", "no-show-c", None).await;
    let second = post_keyed(&app, "/api/queues/pc/patients/c/no-show", "no-show-c", None).await;
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["noShowCount"], 1, "one no-show, not two: {first:?}");
    assert_eq!(second, first);
    assert_eq!(event_count(&app, "pc").await, 9);
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_a_422_and_appends_nothing() {
    let app = TestApp::spawn().await;
    app.create_queue("reuse", 5).await;
    let path = "/api/queues/reuse/check-ins";
    let (status, _) = post_keyed(&app, path, "reused-key", Some(check_in_body("ann", "Low"))).await;
    assert_eq!(status, 201);
    let before = total_events(&app).await;

    // Same operation, different body.
    let r = send_keyed(&app, path, "reused-key", Some(check_in_body("bob", "Low"))).await;
    let p = assert_problem(r, 422, "idempotency-key-reused").await;
    assert!(p["detail"].as_str().unwrap().contains("reused-key"), "{p}");
    // Same body, different queue; and a different operation altogether.
    app.create_queue("other", 5).await;
    let before = before + 1;
    let r = send_keyed(
        &app,
        "/api/queues/other/check-ins",
        "reused-key",
        Some(check_in_body("ann", "Low")),
    )
    .await;
    assert_problem(r, 422, "idempotency-key-reused").await;
    let r = send_keyed(
        &app,
        "/api/queues/reuse/call-next",
        "reused-key",
        Some(json!({"consultingRoom": "Room 1"})),
    )
    .await;
    assert_problem(r, 422, "idempotency-key-reused").await;
    let r = send_keyed(
        &app,
        "/api/queues/reuse/patients/ann/cancel",
        "reused-key",
        None,
    )
    .await;
    assert_problem(r, 422, "idempotency-key-reused").await;

    assert_eq!(total_events(&app).await, before, "nothing appended");
    // The first request's retry still replays.
    let (status, _) = post_keyed(&app, path, "reused-key", Some(check_in_body("ann", "Low"))).await;
    assert_eq!(status, 201);
    assert_eq!(total_events(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_check_ins_with_one_key_all_return_the_same_response_and_append_once() {
    let app = TestApp::spawn().await;
    app.create_queue("herd", 50).await;
    let responses = join_all((0..10).map(|_| {
        post_keyed(
            &app,
            "/api/queues/herd/check-ins",
            "herd-key",
            Some(check_in_body("ann", "Low")),
        )
    }))
    .await;
    assert_eq!(responses[0].0, 201, "{responses:?}");
    assert!(
        responses.iter().all(|r| *r == responses[0]),
        "all identical: {responses:?}"
    );
    assert_eq!(
        event_count(&app, "herd").await,
        2,
        "create + exactly one check-in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_key_all_return_the_same_response_and_append_once() {
    let app = TestApp::spawn().await;
    let request = json!({"name": "Herd", "maxCapacity": 5});
    let responses = join_all(
        (0..10).map(|_| post_keyed(&app, "/api/queues", "create-herd", Some(request.clone()))),
    )
    .await;
    assert_eq!(responses[0].0, 201, "{responses:?}");
    assert!(
        responses.iter().all(|r| *r == responses[0]),
        "all identical: {responses:?}"
    );
    assert_eq!(total_events(&app).await, 1, "exactly one queue created");
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_a_400_and_appends_nothing() {
    let app = TestApp::spawn().await;
    app.create_queue("keys", 5).await;
    let long = "k".repeat(300);
    for key in [long.as_str(), "has space", "tab\tinside"] {
        let r = send_keyed(
            &app,
            "/api/queues/keys/check-ins",
            key,
            Some(check_in_body("ann", "Low")),
        )
        .await;
        assert_validation(r, "Idempotency-Key").await;
        let r = send_keyed(
            &app,
            "/api/queues",
            key,
            Some(json!({"queueId": "k2", "name": "K2", "maxCapacity": 5})),
        )
        .await;
        assert_validation(r, "Idempotency-Key").await;
        let r = send_keyed(&app, "/api/queues/keys/patients/ann/complete", key, None).await;
        assert_validation(r, "Idempotency-Key").await;
    }
    // 255 printable characters is the longest valid key.
    let longest = "k".repeat(255);
    let (status, _) = post_keyed(
        &app,
        "/api/queues/keys/check-ins",
        &longest,
        Some(check_in_body("ann", "Low")),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        total_events(&app).await,
        2,
        "only the create and the valid check-in"
    );
}

#[tokio::test]
async fn a_rejected_command_retried_with_its_key_gets_the_same_rejection_even_after_the_queue_changed()
 {
    let app = TestApp::spawn().await;
    app.create_queue("q", 1).await;
    assert_eq!(app.check_in("q", "a", "Low").await.status(), 201);
    let request = || {
        app.http
            .post(format!("{}/api/queues/q/check-ins", app.address))
            .header("Idempotency-Key", "K1")
            .json(&serde_json::json!({
                "patientId": "b", "patientName": "B", "priority": "Low", "consultationType": "General"
            }))
            .send()
    };
    let first = request().await.unwrap();
    assert_eq!(first.status(), 409);
    let first: serde_json::Value = first.json().await.unwrap();
    assert!(first["type"].as_str().unwrap().ends_with("queue-full"));

    // A place frees up; the retry still answers as the first request did and appends nothing.
    assert_eq!(
        app.post_empty("/api/queues/q/patients/a/cancel")
            .await
            .status(),
        200
    );
    let events = total_events(&app).await;
    let retry = request().await.unwrap();
    assert_eq!(retry.status(), 409);
    let retry: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(retry["type"], first["type"]);
    assert_eq!(retry["detail"], first["detail"]);
    assert_eq!(total_events(&app).await, events);
}
