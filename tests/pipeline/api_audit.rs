//! What the HTTP API records about each command: the caller's correlation id and actor, echoed
//! and stored with the event, and the per-queue audit trail of events with paging.

use serde_json::{Value, json};

use crate::api_support::{
    assert_client_problem, assert_problem, assert_validation, call_next, check_in_body, header,
    post_with_headers,
};
use crate::helpers::{TestApp, body};

/// `(correlation_id, actor)` of each stored event of `stream_id`, in version order.
async fn stored_correlation_and_actor(app: &TestApp, stream_id: &str) -> Vec<(String, String)> {
    let client = app.pool.get().await.expect("pool connection");
    let rows = client
        .query(
            &format!(
                "SELECT correlation_id, actor FROM waiting_room_events \
                 WHERE stream_id = '{stream_id}' ORDER BY version"
            ),
            &[],
        )
        .await
        .expect("query runs");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

// ------------------------------------------------------------------ correlation

#[tokio::test]
async fn the_callers_correlation_id_and_actor_are_echoed_and_stored_with_the_event() {
    let app = TestApp::spawn().await;
    let r = post_with_headers(
        &app,
        "/api/queues",
        &[
            ("X-Correlation-Id", "corr-create-42"),
            ("X-Actor", "nurse-joy"),
        ],
        Some(&json!({"queueId": "corr", "name": "Corr", "maxCapacity": 3})),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "x-correlation-id"), "corr-create-42");
    let r = post_with_headers(
        &app,
        "/api/queues/corr/check-ins",
        &[("X-Correlation-Id", "corr-checkin-43")],
        Some(&check_in_body("p1", "Low")),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "x-correlation-id"), "corr-checkin-43");

    assert_eq!(
        stored_correlation_and_actor(&app, "corr").await,
        vec![
            ("corr-create-42".to_owned(), "nurse-joy".to_owned()),
            ("corr-checkin-43".to_owned(), "api".to_owned()),
        ]
    );

    // Errors carry it too, in the header and the problem body.
    let r = post_with_headers(
        &app,
        "/api/queues/corr/call-next",
        &[("X-Correlation-Id", "corr-error-44")],
        Some(&json!({"consultingRoom": ""})),
    )
    .await;
    assert_eq!(header(&r, "x-correlation-id"), "corr-error-44");
    let p = assert_validation(r, "consultingRoom").await;
    assert_eq!(p["correlationId"], "corr-error-44");
}

#[tokio::test]
async fn a_correlation_id_is_generated_and_stored_when_the_caller_sends_none_or_an_invalid_one() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "gen", "name": "Gen", "maxCapacity": 3}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let generated = header(&r, "x-correlation-id");
    assert!(
        uuid::Uuid::parse_str(&generated).is_ok(),
        "a UUID: {generated:?}"
    );

    let invalid = "x".repeat(129);
    let r = post_with_headers(
        &app,
        "/api/queues/gen/check-ins",
        &[("X-Correlation-Id", invalid.as_str())],
        Some(&check_in_body("p1", "Low")),
    )
    .await;
    assert_eq!(r.status(), 201);
    let replaced = header(&r, "x-correlation-id");
    assert!(
        uuid::Uuid::parse_str(&replaced).is_ok(),
        "a UUID: {replaced:?}"
    );
    assert_ne!(replaced, generated, "each request gets its own");

    assert_eq!(
        stored_correlation_and_actor(&app, "gen").await,
        vec![(generated, "api".to_owned()), (replaced, "api".to_owned())]
    );

    // Queries and health answers carry one as well.
    for path in ["/api/queues", "/health", "/api/nope"] {
        let r = app.get(path).await;
        assert!(
            !header(&r, "x-correlation-id").is_empty(),
            "{path} has X-Correlation-Id"
        );
    }
}

// ------------------------------------------------------------------ audit trail

#[tokio::test]
async fn the_events_endpoint_returns_the_audit_trail_in_version_order_with_paging() {
    let app = TestApp::spawn().await;
    app.create_queue("audit", 5).await;
    assert_eq!(app.check_in("audit", "a", "Low").await.status(), 201);
    assert_eq!(app.check_in("audit", "b", "High").await.status(), 201);
    assert_eq!(call_next(&app, "audit", "Room 9").await.status(), 200);

    let r = app.get("/api/queues/audit/events").await;
    assert_eq!(r.status(), 200);
    let page = body(r).await;
    assert_eq!(page["queueId"], "audit");
    let events = page["events"].as_array().expect("events array");
    let summary: Vec<(i64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["version"].as_i64().unwrap(),
                e["eventType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "WaitingQueueCreated"),
            (2, "PatientCheckedIn"),
            (3, "PatientCheckedIn"),
            (4, "PatientCalled"),
        ]
    );
    for e in events {
        assert_eq!(e["streamId"], "audit");
        assert_eq!(
            e["data"]["queueId"], "audit",
            "camelCase data with queueId: {e}"
        );
        assert!(
            e["eventId"].is_string() && e["occurredAt"].is_string(),
            "{e}"
        );
        assert!(e["correlationId"].is_string() && e["actor"] == "api", "{e}");
    }
    assert_eq!(events[0]["data"]["maxCapacity"], 5);
    assert_eq!(events[1]["data"]["patientId"], "a");
    assert_eq!(events[2]["data"]["patientId"], "b");
    assert_eq!(events[2]["data"]["consultationType"], "General");
    assert_eq!(events[3]["data"]["patientId"], "b");
    assert_eq!(events[3]["data"]["consultingRoom"], "Room 9");
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["globalPosition"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "global positions increase: {positions:?}"
    );

    let versions = |page: Value| -> Vec<i64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_i64().unwrap())
            .collect()
    };
    for (query, expected) in [
        ("afterVersion=2", vec![3, 4]),
        ("limit=1", vec![1]),
        ("afterVersion=1&limit=2", vec![2, 3]),
        ("afterVersion=4", vec![]),
        ("afterVersion=0&limit=1000", vec![1, 2, 3, 4]),
    ] {
        let r = app.get(&format!("/api/queues/audit/events?{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(versions(body(r).await), expected, "{query}");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("afterVersion=-1", "afterVersion"),
    ] {
        let r = app.get(&format!("/api/queues/audit/events?{query}")).await;
        assert_validation(r, field).await;
    }
    let r = app.get("/api/queues/audit/events?limit=abc").await;
    assert_client_problem(r, &[400], "limit=abc").await;
    assert_problem(
        app.get("/api/queues/nope/events").await,
        404,
        "queue-not-found",
    )
    .await;
}
