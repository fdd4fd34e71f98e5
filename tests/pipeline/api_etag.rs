//! Optimistic concurrency for clients that want it: responses about a queue carry its stream
//! version as `ETag`, and commands with `If-Match` answer 412 when the queue has moved on.

use serde_json::json;

use crate::api_support::{
    SETTLE, assert_problem, assert_validation, check_in_body, event_count, header,
    post_with_headers,
};
use crate::helpers::{TestApp, body};

#[tokio::test]
async fn responses_about_a_queue_carry_its_version_as_etag() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "tags", "name": "Tags", "maxCapacity": 5}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "etag"), "\"1\"");
    let r = app
        .post("/api/queues/tags/check-ins", check_in_body("p1", "Low"))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "etag"), "\"2\"");
    app.wait_all_processed(SETTLE).await;
    let r = app.get("/api/queues/tags").await;
    assert_eq!(header(&r, "etag"), "\"2\"", "the read model's version");
    let r = app.get("/api/queues/tags/events").await;
    assert_eq!(header(&r, "etag"), "\"2\"", "the store's version");
}

#[tokio::test]
async fn a_command_with_a_stale_if_match_is_a_412_and_appends_nothing() {
    let app = TestApp::spawn().await;
    app.create_queue("stale", 5).await;
    let check_in = |id: &'static str, tag: &'static str| {
        let app = &app;
        async move {
            post_with_headers(
                app,
                "/api/queues/stale/check-ins",
                &[("If-Match", tag)],
                Some(&check_in_body(id, "High")),
            )
            .await
        }
    };
    // The queue is at version 1: a matching tag goes through and moves it to 2.
    let r = check_in("p1", "\"1\"").await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // Someone who still saw version 1 is refused.
    let p = assert_problem(check_in("p2", "\"1\"").await, 412, "precondition-failed").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("version 2"),
        "{p}"
    );
    assert_eq!(event_count(&app, "stale").await, 2, "nothing appended");
    // A list naming the current version, and `*`, match.
    assert_eq!(check_in("p2", "\"7\", \"2\"").await.status(), 201);
    assert_eq!(check_in("p3", "*").await.status(), 201);
    // Patient commands and call-next take it too.
    let r = post_with_headers(
        &app,
        "/api/queues/stale/call-next",
        &[("If-Match", "\"3\"")],
        Some(&json!({"consultingRoom": "Room 1"})),
    )
    .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = post_with_headers(
        &app,
        "/api/queues/stale/patients/p1/cancel",
        &[("If-Match", "\"4\"")],
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "\"5\"");
    assert_eq!(body(r).await["version"], 5);
}

#[tokio::test]
async fn if_match_on_a_missing_queue_is_a_412_and_a_malformed_one_a_400() {
    let app = TestApp::spawn().await;
    let r = post_with_headers(
        &app,
        "/api/queues/ghost/check-ins",
        &[("If-Match", "*")],
        Some(&check_in_body("p1", "Low")),
    )
    .await;
    assert_problem(r, 412, "precondition-failed").await;
    app.create_queue("shape", 5).await;
    for bad in ["1", "W/\"1\"", "\"x\"", "\"1\",", "\"12345678901\""] {
        let r = post_with_headers(
            &app,
            "/api/queues/shape/check-ins",
            &[("If-Match", bad)],
            Some(&check_in_body("p1", "Low")),
        )
        .await;
        assert_validation(r, "If-Match").await;
    }
    assert_eq!(event_count(&app, "shape").await, 1, "nothing appended");
}
