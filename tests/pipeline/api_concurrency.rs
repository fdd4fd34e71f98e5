//! The HTTP API under concurrent writers: check-ins never exceed capacity, a queue id is created
//! once, and each waiting patient is called exactly once, never with a 5xx.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::api_support::{
    SETTLE, call_next, event_count, is_problem_type, listed, queue_view, status_and_body,
};
use crate::helpers::TestApp;

/// The bodies of the `responses` answered with `status`.
fn bodies_with(responses: &[(u16, Value)], status: u16) -> Vec<&Value> {
    responses
        .iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, b)| b)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_check_ins_never_exceed_capacity_and_never_fail_with_5xx() {
    let app = TestApp::spawn().await;
    app.create_queue("rush", 10).await;
    let responses = join_all((0..40).map(|i| {
        let app = &app;
        async move {
            let r = app.check_in("rush", &format!("p{i:02}"), "Medium").await;
            let status = r.status().as_u16();
            let text = r.text().await.expect("body");
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    }))
    .await;

    let server_errors: Vec<_> = responses.iter().filter(|(s, _)| *s >= 500).collect();
    assert!(server_errors.is_empty(), "no 5xx: {server_errors:?}");
    let created = bodies_with(&responses, 201);
    let full = bodies_with(&responses, 409);
    assert_eq!(
        created.len(),
        10,
        "exactly capacity admitted: {responses:?}"
    );
    assert_eq!(full.len(), 30, "the rest rejected: {responses:?}");
    for p in &full {
        assert!(is_problem_type(p, "queue-full"), "{p}");
    }
    // Writers were serialised: each admitted patient got the next place in line.
    let mut positions: Vec<i64> = created
        .iter()
        .map(|b| b["position"].as_i64().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());
    let mut versions: Vec<i64> = created
        .iter()
        .map(|b| b["version"].as_i64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=11).collect::<Vec<_>>());

    assert_eq!(event_count(&app, "rush").await, 11, "create + 10 check-ins");
    app.wait_all_processed(SETTLE).await;
    let count: i32 = app
        .scalar("SELECT current_patient_count FROM waiting_queue_view WHERE queue_id = 'rush'")
        .await;
    assert_eq!(count, 10);
    let view = queue_view(&app, "rush").await;
    let positions: Vec<Option<i64>> = listed(&view).into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(positions, (1..=10).map(Some).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_queue_id_create_it_exactly_once() {
    let app = TestApp::spawn().await;
    let responses = join_all((0..10).map(|i| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/api/queues",
                    json!({"queueId": "race", "name": format!("Race {i}"), "maxCapacity": 5}),
                )
                .await;
            status_and_body(r).await
        }
    }))
    .await;
    let created = bodies_with(&responses, 201).len();
    let exists = bodies_with(&responses, 409);
    assert_eq!(created, 1, "{responses:?}");
    assert_eq!(exists.len(), 9, "{responses:?}");
    for p in exists {
        assert!(is_problem_type(p, "queue-exists"), "{p}");
    }
    assert_eq!(event_count(&app, "race").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_call_nexts_call_each_waiting_patient_exactly_once() {
    let app = TestApp::spawn().await;
    app.create_queue("calls", 10).await;
    for i in 0..5 {
        assert_eq!(
            app.check_in("calls", &format!("p{i}"), "Medium")
                .await
                .status(),
            201
        );
    }
    let responses = join_all((0..8).map(|i| {
        let app = &app;
        async move { status_and_body(call_next(app, "calls", &format!("Room {i}")).await).await }
    }))
    .await;
    assert!(
        responses.iter().all(|(s, _)| *s < 500),
        "no 5xx: {responses:?}"
    );
    let mut called: Vec<&str> = bodies_with(&responses, 200)
        .into_iter()
        .map(|b| b["patientId"].as_str().unwrap())
        .collect();
    called.sort_unstable();
    assert_eq!(called, ["p0", "p1", "p2", "p3", "p4"], "{responses:?}");
    let empty = bodies_with(&responses, 409)
        .into_iter()
        .filter(|b| is_problem_type(b, "queue-empty"))
        .count();
    assert_eq!(empty, 3, "{responses:?}");
    assert_eq!(
        event_count(&app, "calls").await,
        11,
        "create + 5 check-ins + 5 calls"
    );
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "calls").await;
    assert_eq!(view["calledCount"], 5);
    assert_eq!(view["waitingCount"], 0);
}
