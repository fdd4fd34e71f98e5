//! The HTTP API end to end: commands, read models, problem+json errors, correlation ids,
//! operations endpoints and concurrency, each against its own full pipeline.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, body, wait_until};

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";
pub(crate) const SETTLE: Duration = Duration::from_secs(15);

/// A response header as a string ("" when absent).
pub(crate) fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts an RFC 9457 problem of type `slug` with `status`, and returns its body.
pub(crate) async fn assert_problem(r: reqwest::Response, status: u16, slug: &str) -> Value {
    let got = r.status().as_u16();
    let url = r.url().path().to_owned();
    let content_type = header(&r, "content-type");
    let correlation = header(&r, "x-correlation-id");
    let text = r.text().await.expect("response body");
    assert_eq!(got, status, "{url}: status; body: {text}");
    assert!(
        content_type.starts_with(PROBLEM_JSON),
        "{url}: content-type {content_type:?}, want {PROBLEM_JSON}; body: {text}"
    );
    let p: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: problem body is not JSON ({e}): {text}"));
    let ty = p["type"].as_str().unwrap_or_default();
    assert!(
        ty.ends_with(&format!("/{slug}")),
        "{url}: problem type {ty:?} should end with /{slug}; body: {text}"
    );
    assert!(
        p["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{url}: problem has a title: {text}"
    );
    assert_eq!(
        p["status"], status,
        "{url}: problem status equals HTTP status: {text}"
    );
    assert!(
        p["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{url}: problem has a detail: {text}"
    );
    assert!(
        !correlation.is_empty(),
        "{url}: X-Correlation-Id header is set"
    );
    assert_eq!(
        p["correlationId"],
        correlation.as_str(),
        "{url}: problem correlationId equals the X-Correlation-Id header"
    );
    p
}

/// Asserts a 400 `validation-error` problem naming `field` first.
pub(crate) async fn assert_validation(r: reqwest::Response, field: &str) -> Value {
    let p = assert_problem(r, 400, "validation-error").await;
    assert_eq!(p["errors"][0]["field"], field, "invalid field named: {p}");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the field error says what is wrong: {p}"
    );
    p
}

/// Asserts a client-error problem (any of `statuses`), never a 5xx, and returns its body.
async fn assert_client_problem(r: reqwest::Response, statuses: &[u16], what: &str) -> Value {
    let status = r.status().as_u16();
    assert!(
        statuses.contains(&status),
        "{what}: status {status}, want one of {statuses:?}; body: {}",
        r.text().await.unwrap_or_default()
    );
    let slug = match status {
        415 => "unsupported-media-type",
        _ => "invalid-request",
    };
    assert_problem(r, status, slug).await
}

pub(crate) fn check_in_body(patient_id: &str, priority: &str) -> Value {
    json!({
        "patientId": patient_id,
        "patientName": format!("Patient {patient_id}"),
        "priority": priority,
        "consultationType": "General",
    })
}

pub(crate) async fn call_next(app: &TestApp, queue_id: &str, room: &str) -> reqwest::Response {
    app.post(
        &format!("/api/queues/{queue_id}/call-next"),
        json!({ "consultingRoom": room }),
    )
    .await
}

pub(crate) async fn patient_command(
    app: &TestApp,
    queue_id: &str,
    patient_id: &str,
    command: &str,
) -> reqwest::Response {
    app.post_empty(&format!(
        "/api/queues/{queue_id}/patients/{patient_id}/{command}"
    ))
    .await
}

/// Events stored for `stream_id`.
pub(crate) async fn event_count(app: &TestApp, stream_id: &str) -> i64 {
    app.scalar(&format!(
        "SELECT count(*) FROM waiting_room_events WHERE stream_id = '{stream_id}'"
    ))
    .await
}

/// GET /api/queues/{id}, asserting 200.
async fn queue_view(app: &TestApp, queue_id: &str) -> Value {
    let r = app.get(&format!("/api/queues/{queue_id}")).await;
    assert_eq!(r.status(), 200, "get queue {queue_id}");
    body(r).await
}

/// `(patientId, status, position)` of each listed patient, in list order.
fn listed(view: &Value) -> Vec<(String, String, Option<i64>)> {
    view["patients"]
        .as_array()
        .expect("patients array")
        .iter()
        .map(|p| {
            (
                p["patientId"].as_str().expect("patientId").to_owned(),
                p["status"].as_str().expect("status").to_owned(),
                p["position"].as_i64(),
            )
        })
        .collect()
}

fn row(id: &str, status: &str, position: Option<i64>) -> (String, String, Option<i64>) {
    (id.to_owned(), status.to_owned(), position)
}

async fn checked_in_position(r: reqwest::Response) -> i64 {
    assert_eq!(r.status(), 201, "check-in");
    let b = body(r).await;
    assert!(
        b["eventId"].as_str().is_some(),
        "check-in returns eventId: {b}"
    );
    assert!(
        b["version"].as_i64().is_some(),
        "check-in returns version: {b}"
    );
    b["position"].as_i64().expect("position")
}

// ------------------------------------------------------------------ ordering

#[tokio::test]
async fn patients_are_listed_and_called_by_priority_then_earliest_check_in() {
    let app = TestApp::spawn().await;
    app.create_queue("triage", 10).await;

    // Input priorities are case-insensitive; positions are the place in call order at check-in.
    assert_eq!(
        checked_in_position(app.check_in("triage", "low-1", "Low").await).await,
        1
    );
    assert_eq!(
        checked_in_position(app.check_in("triage", "urgent", "urgent").await).await,
        1
    );
    assert_eq!(
        checked_in_position(app.check_in("triage", "medium", "Medium").await).await,
        2
    );
    assert_eq!(
        checked_in_position(app.check_in("triage", "high", "HIGH").await).await,
        2
    );
    assert_eq!(
        checked_in_position(app.check_in("triage", "low-2", "low").await).await,
        5
    );
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "triage").await;
    assert_eq!(
        listed(&view),
        vec![
            row("urgent", "WAITING", Some(1)),
            row("high", "WAITING", Some(2)),
            row("medium", "WAITING", Some(3)),
            row("low-1", "WAITING", Some(4)),
            row("low-2", "WAITING", Some(5)),
        ]
    );
    let priorities: Vec<&str> = view["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["priority"].as_str().unwrap())
        .collect();
    assert_eq!(
        priorities,
        ["Urgent", "High", "Medium", "Low", "Low"],
        "stored capitalised"
    );
    assert_eq!(view["currentPatientCount"], 5);
    assert_eq!(view["waitingCount"], 5);
    assert_eq!(view["maxCapacity"], 10);

    // The first two calls take Urgent, then High.
    for (expected, room) in [("urgent", "Room 1"), ("high", "Room 2")] {
        let r = call_next(&app, "triage", room).await;
        assert_eq!(r.status(), 200);
        let called = body(r).await;
        assert_eq!(called["patientId"], expected, "{called}");
        assert_eq!(called["consultingRoom"], room);
        assert_eq!(called["patientName"], format!("Patient {expected}"));
        assert!(
            called["calledAt"].is_string() && called["eventId"].is_string(),
            "{called}"
        );
    }
    app.wait_all_processed(SETTLE).await;

    // Called patients come first (earliest call first) with no position.
    let view = queue_view(&app, "triage").await;
    assert_eq!(
        listed(&view),
        vec![
            row("urgent", "CALLED", None),
            row("high", "CALLED", None),
            row("medium", "WAITING", Some(1)),
            row("low-1", "WAITING", Some(2)),
            row("low-2", "WAITING", Some(3)),
        ]
    );
    assert_eq!(view["patients"][0]["consultingRoom"], "Room 1");
    assert_eq!(view["patients"][1]["consultingRoom"], "Room 2");
    assert_eq!(view["currentPatientCount"], 5);
    assert_eq!(view["calledCount"], 2);
    assert_eq!(view["waitingCount"], 3);
    assert_eq!(view["version"], 8, "read model applied every event");

    // The rest in call order: Medium, then the two Low ones, earliest first.
    for expected in ["medium", "low-1", "low-2"] {
        let r = call_next(&app, "triage", "Room 3").await;
        assert_eq!(r.status(), 200);
        assert_eq!(body(r).await["patientId"], expected);
    }
    assert_problem(
        call_next(&app, "triage", "Room 3").await,
        409,
        "queue-empty",
    )
    .await;

    // The queue list shows it too.
    app.wait_all_processed(SETTLE).await;
    let r = app.get("/api/queues").await;
    assert_eq!(r.status(), 200);
    let queues = body(r).await;
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    assert_eq!(queues[0]["queueId"], "triage");
    assert_eq!(queues[0]["name"], "Queue triage");
    assert_eq!(queues[0]["calledCount"], 5);
}

// ------------------------------------------------------------------ rejections

#[tokio::test]
async fn creating_an_existing_queue_is_a_409_queue_exists_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("cardio", 5).await;
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "cardio", "name": "Other", "maxCapacity": 9}),
        )
        .await;
    let p = assert_problem(r, 409, "queue-exists").await;
    assert!(p["detail"].as_str().unwrap().contains("cardio"), "{p}");
    assert_eq!(event_count(&app, "cardio").await, 1, "nothing appended");
}

#[tokio::test]
async fn commands_on_a_missing_queue_are_404_queue_not_found_problems() {
    let app = TestApp::spawn().await;
    assert_problem(
        app.check_in("ghost", "p1", "Low").await,
        404,
        "queue-not-found",
    )
    .await;
    assert_problem(
        call_next(&app, "ghost", "Room 1").await,
        404,
        "queue-not-found",
    )
    .await;
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "ghost", "p1", command).await;
        assert_problem(r, 404, "queue-not-found").await;
    }
    assert_problem(app.get("/api/queues/ghost").await, 404, "queue-not-found").await;
    assert_problem(
        app.get("/api/queues/ghost/events").await,
        404,
        "queue-not-found",
    )
    .await;
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 0, "nothing appended");
}

#[tokio::test]
async fn checking_in_a_waiting_or_called_patient_again_is_a_409_already_checked_in_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("derm", 5).await;
    assert_eq!(app.check_in("derm", "ann", "Low").await.status(), 201);
    let p = assert_problem(
        app.check_in("derm", "ann", "Urgent").await,
        409,
        "already-checked-in",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("WAITING"), "{p}");

    assert_eq!(call_next(&app, "derm", "Room 1").await.status(), 200);
    let p = assert_problem(
        app.check_in("derm", "ann", "Low").await,
        409,
        "already-checked-in",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("CALLED"), "{p}");
    assert_eq!(event_count(&app, "derm").await, 3, "create, check-in, call");
}

#[tokio::test]
async fn checking_in_to_a_full_queue_is_a_409_queue_full_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("small", 2).await;
    assert_eq!(app.check_in("small", "a", "Low").await.status(), 201);
    assert_eq!(app.check_in("small", "b", "Low").await.status(), 201);
    assert_problem(
        app.check_in("small", "c", "Urgent").await,
        409,
        "queue-full",
    )
    .await;
    // A called patient still holds a place.
    assert_eq!(call_next(&app, "small", "Room 1").await.status(), 200);
    assert_problem(app.check_in("small", "c", "Low").await, 409, "queue-full").await;
    // A finished visit frees it.
    assert_eq!(
        patient_command(&app, "small", "a", "complete")
            .await
            .status(),
        200
    );
    assert_eq!(app.check_in("small", "c", "Low").await.status(), 201);
}

#[tokio::test]
async fn calling_next_on_an_empty_queue_is_a_409_queue_empty_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("empty", 3).await;
    assert_problem(call_next(&app, "empty", "Room 1").await, 409, "queue-empty").await;
    // Only called patients left is still empty for call-next.
    assert_eq!(app.check_in("empty", "a", "Low").await.status(), 201);
    assert_eq!(call_next(&app, "empty", "Room 1").await.status(), 200);
    assert_problem(call_next(&app, "empty", "Room 2").await, 409, "queue-empty").await;
    assert_eq!(event_count(&app, "empty").await, 3);
}

#[tokio::test]
async fn commands_for_a_patient_without_an_active_visit_are_404_patient_not_found_problems() {
    let app = TestApp::spawn().await;
    app.create_queue("ortho", 3).await;
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "ortho", "nobody", command).await;
        let p = assert_problem(r, 404, "patient-not-found").await;
        assert!(p["detail"].as_str().unwrap().contains("nobody"), "{p}");
    }
    assert_eq!(event_count(&app, "ortho").await, 1);
}

#[tokio::test]
async fn completing_or_no_showing_a_waiting_patient_is_a_409_invalid_patient_state_problem() {
    let app = TestApp::spawn().await;
    app.create_queue("ent", 3).await;
    assert_eq!(app.check_in("ent", "bob", "Medium").await.status(), 201);
    for command in ["complete", "no-show"] {
        let r = patient_command(&app, "ent", "bob", command).await;
        let p = assert_problem(r, 409, "invalid-patient-state").await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("WAITING") && detail.contains("CALLED"),
            "{p}"
        );
    }
    assert_eq!(event_count(&app, "ent").await, 2, "nothing appended");
}

// ------------------------------------------------------------------ validation

#[tokio::test]
async fn invalid_queue_fields_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"queueId": "q", "name": "", "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "   \t ", "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "x".repeat(201), "maxCapacity": 5}),
            "name",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 0}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": -1}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 10001}),
            "maxCapacity",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 5, "maxNoShows": 11}),
            "maxNoShows",
        ),
        (
            json!({"queueId": "q", "name": "Q", "maxCapacity": 5, "maxNoShows": 0}),
            "maxNoShows",
        ),
        (
            json!({"queueId": "has space", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "-leading", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "a/b", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "", "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "q".repeat(65), "name": "Q", "maxCapacity": 5}),
            "queueId",
        ),
        (
            json!({"queueId": "q", "name": "bad\u{0}name", "maxCapacity": 5}),
            "name",
        ),
    ];
    for (request, field) in cases {
        let r = app.post("/api/queues", request.clone()).await;
        assert_eq!(r.status(), 400, "{request}");
        assert_validation(r, field).await;
    }
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 0, "nothing appended");
}

#[tokio::test]
async fn invalid_check_in_fields_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_queue("val", 50).await;
    let with = |key: &str, value: Value| {
        let mut b = check_in_body("p1", "Low");
        b[key] = value;
        b
    };
    let cases = [
        (with("priority", json!("critical")), "priority"),
        (with("priority", json!("")), "priority"),
        (with("patientId", json!("p".repeat(65))), "patientId"),
        (with("patientId", json!("")), "patientId"),
        (with("patientId", json!("a/b")), "patientId"),
        (with("patientName", json!("")), "patientName"),
        (with("patientName", json!("   ")), "patientName"),
        (with("patientName", json!("Ann\u{0}Lee")), "patientName"),
        (with("patientName", json!("n".repeat(201))), "patientName"),
        (with("consultationType", json!("X")), "consultationType"),
        (with("consultationType", json!(" X ")), "consultationType"),
        (
            with("consultationType", json!("c".repeat(101))),
            "consultationType",
        ),
        (with("notes", json!("n".repeat(1001))), "notes"),
        (with("notes", json!("bad\u{0}note")), "notes"),
    ];
    for (request, field) in cases {
        let r = app.post("/api/queues/val/check-ins", request.clone()).await;
        assert_eq!(r.status(), 400, "{request}");
        assert_validation(r, field).await;
    }
    // call-next validates its room.
    let r = app
        .post("/api/queues/val/call-next", json!({"consultingRoom": "  "}))
        .await;
    assert_validation(r, "consultingRoom").await;
    assert_eq!(event_count(&app, "val").await, 1, "nothing appended");
}

#[tokio::test]
async fn invalid_ids_in_the_path_are_400_validation_problems_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_queue("paths", 5).await;
    for queue in ["has%20space", "-leading", "bad%21id"] {
        let r = app
            .post(
                &format!("/api/queues/{queue}/check-ins"),
                check_in_body("p1", "Low"),
            )
            .await;
        assert_validation(r, "queueId").await;
        assert_validation(call_next(&app, queue, "Room 1").await, "queueId").await;
        assert_validation(
            patient_command(&app, queue, "p1", "complete").await,
            "queueId",
        )
        .await;
    }
    let long = "p".repeat(65);
    for command in ["complete", "no-show", "cancel"] {
        let r = patient_command(&app, "paths", &long, command).await;
        assert_validation(r, "patientId").await;
    }
    assert_eq!(event_count(&app, "paths").await, 1, "nothing appended");
}

#[tokio::test]
async fn values_at_the_limits_are_accepted() {
    let app = TestApp::spawn().await;
    let max_id = "q".repeat(64);
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": max_id, "name": "n".repeat(200), "maxCapacity": 10000, "maxNoShows": 10}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await["queueId"], max_id.as_str());
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "Q1.a_b-c", "name": "  Padded  ", "maxCapacity": 1, "maxNoShows": 1}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post(
            &format!("/api/queues/{max_id}/check-ins"),
            json!({
                "patientId": "p".repeat(64),
                "patientName": "n".repeat(200),
                "priority": "  uRgEnT ",
                "consultationType": "GP",
                "notes": format!("line one\nline two\t{}", "x".repeat(980)),
            }),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "Q1.a_b-c").await;
    assert_eq!(view["name"], "Padded", "names are stored trimmed");
    let view = queue_view(&app, &max_id).await;
    assert_eq!(view["patients"][0]["priority"], "Urgent");
    assert_eq!(view["maxCapacity"], 10000);
    assert_eq!(view["maxNoShows"], 10);
}

#[tokio::test]
async fn unparsable_requests_are_client_error_problems_never_server_errors() {
    let app = TestApp::spawn().await;
    app.create_queue("parse", 5).await;
    let url = |path: &str| format!("{}{path}", app.address);
    let raw = |path: &str, content_type: Option<&str>, payload: &str| {
        let mut rb = app.http.post(url(path)).body(payload.to_owned());
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        rb.send()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Option<&str>, &str, &str)> = vec![
        ("/api/queues", json_ct, "{not json", "malformed JSON"),
        ("/api/queues", json_ct, "", "empty JSON body"),
        (
            "/api/queues",
            json_ct,
            "[1, 2]",
            "an array instead of an object",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q"}"#,
            "missing maxCapacity",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"maxCapacity": 3}"#,
            "missing name",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": {"first": "Q"}, "maxCapacity": 3}"#,
            "name is an object",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q", "maxCapacity": "ten"}"#,
            "capacity is a string",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q", "maxCapacity": 2.5}"#,
            "capacity is a fraction",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q", "maxCapacity": 99999999999999999999999}"#,
            "capacity overflows",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q", "maxCapacity": null}"#,
            "capacity is null",
        ),
        (
            "/api/queues",
            json_ct,
            r#"{"name": "Q", "maxCapacity": true}"#,
            "capacity is a boolean",
        ),
        (
            "/api/queues/parse/check-ins",
            json_ct,
            r#"{"patientId": "p"}"#,
            "check-in missing fields",
        ),
        (
            "/api/queues/parse/check-ins",
            json_ct,
            r#"{"patientId": ["p"], "patientName": "A", "priority": "Low", "consultationType": "GP"}"#,
            "patientId is an array",
        ),
        (
            "/api/queues/parse/call-next",
            json_ct,
            "{}",
            "call-next missing consultingRoom",
        ),
    ];
    for (path, ct, payload, what) in cases {
        let r = raw(path, ct, payload).await.expect("request is sent");
        assert_client_problem(r, &[400], what).await;
    }
    let wrong_type: Vec<(&str, Option<&str>, &str, &str)> = vec![
        (
            "/api/queues",
            Some("text/plain"),
            r#"{"name": "Q", "maxCapacity": 3}"#,
            "text/plain",
        ),
        ("/api/queues", Some("application/xml"), "<q/>", "xml"),
        ("/api/queues", None, "", "no body, no content type"),
        (
            "/api/queues/parse/call-next",
            None,
            "",
            "call-next without a body",
        ),
        (
            "/api/queues/parse/check-ins",
            Some("application/x-www-form-urlencoded"),
            "patientId=p",
            "a form",
        ),
    ];
    for (path, ct, payload, what) in wrong_type {
        let r = raw(path, ct, payload).await.expect("request is sent");
        assert_client_problem(r, &[400, 415], what).await;
    }
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 1, "only the create appended");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_problems() {
    let app = TestApp::spawn().await;
    assert_problem(app.get("/api/nope").await, 404, "not-found").await;
    assert_problem(app.get("/nope/at/all").await, 404, "not-found").await;
    let r = app
        .http
        .delete(format!("{}/api/queues", app.address))
        .send()
        .await
        .expect("request is sent");
    assert_problem(r, 405, "method-not-allowed").await;
    let r = app.post_empty("/health").await;
    assert_problem(r, 405, "method-not-allowed").await;
    let r = app.get("/api/queues/q/call-next").await;
    assert_problem(r, 405, "method-not-allowed").await;
}

// ------------------------------------------------------------------ flows

#[tokio::test]
async fn a_no_show_requeues_the_patient_behind_its_priority_until_the_limit_ends_the_visit() {
    let app = TestApp::spawn().await;
    app.create_queue("ns", 5).await; // default maxNoShows 2
    for (id, priority) in [("p1", "Medium"), ("p2", "Medium"), ("p3", "Low")] {
        assert_eq!(app.check_in("ns", id, priority).await.status(), 201);
    }
    let r = call_next(&app, "ns", "Room 1").await;
    assert_eq!(body(r).await["patientId"], "p1");

    let r = patient_command(&app, "ns", "p1", "no-show").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["status"], "WAITING", "{b}");
    assert_eq!(b["noShowCount"], 1, "{b}");
    assert!(b["version"].is_number() && b["eventId"].is_string(), "{b}");
    app.wait_all_processed(SETTLE).await;

    // Back at the end of the Medium group, still ahead of Low.
    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![
            row("p2", "WAITING", Some(1)),
            row("p1", "WAITING", Some(2)),
            row("p3", "WAITING", Some(3)),
        ]
    );
    assert_eq!(view["patients"][1]["noShowCount"], 1);
    assert!(view["patients"][1]["consultingRoom"].is_null());

    let r = call_next(&app, "ns", "Room 1").await;
    assert_eq!(body(r).await["patientId"], "p2");
    let r = call_next(&app, "ns", "Room 2").await;
    assert_eq!(body(r).await["patientId"], "p1");

    // The second no-show reaches the limit: the visit ends.
    let r = patient_command(&app, "ns", "p1", "no-show").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["status"], "NO_SHOW", "{b}");
    assert_eq!(b["noShowCount"], 2, "{b}");
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![row("p2", "CALLED", None), row("p3", "WAITING", Some(1))]
    );
    assert_eq!(view["currentPatientCount"], 2);
    let status: String = app
        .scalar(
            "SELECT status FROM waiting_patients_view WHERE queue_id = 'ns' AND patient_id = 'p1'",
        )
        .await;
    assert_eq!(status, "NO_SHOW");
    let position: Option<i32> = app
        .scalar("SELECT position_in_queue FROM waiting_patients_view WHERE queue_id = 'ns' AND patient_id = 'p1'")
        .await;
    assert_eq!(position, None);
    let count: i32 = app
        .scalar("SELECT current_patient_count FROM waiting_queue_view WHERE queue_id = 'ns'")
        .await;
    assert_eq!(count, 2);

    // The visit is over: no more commands for it, but a new visit may start.
    assert_problem(
        patient_command(&app, "ns", "p1", "no-show").await,
        404,
        "patient-not-found",
    )
    .await;
    assert_eq!(app.check_in("ns", "p1", "High").await.status(), 201);
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "ns").await;
    assert_eq!(
        listed(&view),
        vec![
            row("p2", "CALLED", None),
            row("p1", "WAITING", Some(1)),
            row("p3", "WAITING", Some(2)),
        ]
    );
    assert_eq!(
        view["patients"][1]["noShowCount"], 0,
        "a new visit starts afresh"
    );
}

#[tokio::test]
async fn completing_and_cancelling_end_visits_in_the_read_model_and_patients_may_return() {
    let app = TestApp::spawn().await;
    app.create_queue("gp", 3).await;
    for id in ["done", "waiting-cancel", "called-cancel"] {
        assert_eq!(app.check_in("gp", id, "Medium").await.status(), 201);
    }
    app.wait_all_processed(SETTLE).await;
    assert_eq!(queue_view(&app, "gp").await["currentPatientCount"], 3);

    assert_eq!(
        body(call_next(&app, "gp", "Room 1").await).await["patientId"],
        "done"
    );
    let r = patient_command(&app, "gp", "done", "complete").await;
    assert_eq!(r.status(), 200);
    let b = body(r).await;
    assert_eq!(b["version"], 6, "{b}");
    assert!(b["eventId"].is_string(), "{b}");

    let r = patient_command(&app, "gp", "waiting-cancel", "cancel").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["version"], 7);
    assert_eq!(
        body(call_next(&app, "gp", "Room 2").await).await["patientId"],
        "called-cancel"
    );
    assert_eq!(
        patient_command(&app, "gp", "called-cancel", "cancel")
            .await
            .status(),
        200
    );
    app.wait_all_processed(SETTLE).await;

    let view = queue_view(&app, "gp").await;
    assert_eq!(listed(&view), vec![], "no active patients");
    assert_eq!(view["currentPatientCount"], 0);
    assert_eq!(view["waitingCount"], 0);
    assert_eq!(view["calledCount"], 0);
    let client = app.pool.get().await.expect("pool connection");
    let rows = client
        .query(
            "SELECT patient_id, status, completed_at IS NOT NULL, position_in_queue, \
                    updated_by_event_version \
               FROM waiting_patients_view WHERE queue_id = 'gp' ORDER BY patient_id",
            &[],
        )
        .await
        .expect("query runs");
    let rows: Vec<(String, String, bool, Option<i32>, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("called-cancel".into(), "CANCELLED".into(), false, None, 9),
            ("done".into(), "COMPLETED".into(), true, None, 6),
            ("waiting-cancel".into(), "CANCELLED".into(), false, None, 7),
        ]
    );

    // Finished visits accept no more commands.
    assert_problem(
        patient_command(&app, "gp", "done", "complete").await,
        404,
        "patient-not-found",
    )
    .await;
    assert_problem(
        patient_command(&app, "gp", "done", "cancel").await,
        404,
        "patient-not-found",
    )
    .await;

    // And the patients may check in again.
    assert_eq!(app.check_in("gp", "done", "Low").await.status(), 201);
    assert_eq!(
        app.check_in("gp", "waiting-cancel", "Low").await.status(),
        201
    );
    app.wait_all_processed(SETTLE).await;
    let view = queue_view(&app, "gp").await;
    assert_eq!(
        listed(&view),
        vec![
            row("done", "WAITING", Some(1)),
            row("waiting-cancel", "WAITING", Some(2))
        ]
    );
    assert_eq!(view["currentPatientCount"], 2);
    let completed_at_cleared: bool = app
        .scalar("SELECT completed_at IS NULL FROM waiting_patients_view WHERE queue_id = 'gp' AND patient_id = 'done'")
        .await;
    assert!(completed_at_cleared, "a new visit has no completion time");
}

// ------------------------------------------------------------------ correlation

#[tokio::test]
async fn the_callers_correlation_id_and_actor_are_echoed_and_stored_with_the_event() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .post(format!("{}/api/queues", app.address))
        .header("X-Correlation-Id", "corr-create-42")
        .header("X-Actor", "nurse-joy")
        .json(&json!({"queueId": "corr", "name": "Corr", "maxCapacity": 3}))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "x-correlation-id"), "corr-create-42");
    let r = app
        .http
        .post(format!("{}/api/queues/corr/check-ins", app.address))
        .header("X-Correlation-Id", "corr-checkin-43")
        .json(&check_in_body("p1", "Low"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "x-correlation-id"), "corr-checkin-43");

    let client = app.pool.get().await.expect("pool connection");
    let rows = client
        .query(
            "SELECT correlation_id, actor FROM waiting_room_events WHERE stream_id = 'corr' ORDER BY version",
            &[],
        )
        .await
        .expect("query runs");
    let stored: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stored,
        vec![
            ("corr-create-42".to_owned(), "nurse-joy".to_owned()),
            ("corr-checkin-43".to_owned(), "api".to_owned()),
        ]
    );

    // Errors carry it too, in the header and the problem body.
    let r = app
        .http
        .post(format!("{}/api/queues/corr/call-next", app.address))
        .header("X-Correlation-Id", "corr-error-44")
        .json(&json!({"consultingRoom": ""}))
        .send()
        .await
        .expect("request is sent");
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
    let r = app
        .http
        .post(format!("{}/api/queues/gen/check-ins", app.address))
        .header("X-Correlation-Id", invalid.as_str())
        .json(&check_in_body("p1", "Low"))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201);
    let replaced = header(&r, "x-correlation-id");
    assert!(
        uuid::Uuid::parse_str(&replaced).is_ok(),
        "a UUID: {replaced:?}"
    );
    assert_ne!(replaced, generated, "each request gets its own");

    let client = app.pool.get().await.expect("pool connection");
    let rows = client
        .query(
            "SELECT correlation_id, actor FROM waiting_room_events WHERE stream_id = 'gen' ORDER BY version",
            &[],
        )
        .await
        .expect("query runs");
    let stored: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stored,
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

// ------------------------------------------------------------------ operations

#[tokio::test]
async fn lag_endpoints_validate_their_parameters_and_report_processed_events() {
    let app = TestApp::spawn().await;
    for query in [
        "windowSeconds=0",
        "windowSeconds=2592001",
        "windowSeconds=-3",
        "windowSeconds=NaN",
        "windowSeconds=inf",
    ] {
        assert_validation(
            app.get(&format!("/api/metrics/lag?{query}")).await,
            "windowSeconds",
        )
        .await;
    }
    assert_client_problem(
        app.get("/api/metrics/lag?windowSeconds=abc").await,
        &[400],
        "abc",
    )
    .await;
    for query in ["limit=0", "limit=1001"] {
        assert_validation(
            app.get(&format!("/api/metrics/lag/slowest?{query}")).await,
            "limit",
        )
        .await;
    }
    assert_validation(app.get("/api/metrics/lag/not-a-uuid").await, "eventId").await;
    let unknown = uuid::Uuid::new_v4();
    let p = assert_problem(
        app.get(&format!("/api/metrics/lag/{unknown}")).await,
        404,
        "event-not-found",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains(&unknown.to_string()),
        "{p}"
    );

    app.create_queue("lag", 5).await;
    let r = app.check_in("lag", "p1", "Low").await;
    assert_eq!(r.status(), 201);
    let event_id = body(r).await["eventId"].as_str().unwrap().to_owned();
    app.wait_all_processed(SETTLE).await;

    let r = app.get(&format!("/api/metrics/lag/{event_id}")).await;
    assert_eq!(r.status(), 200);
    let lifecycle = body(r).await;
    assert_eq!(lifecycle["eventId"], event_id.as_str());
    assert_eq!(lifecycle["eventType"], "PatientCheckedIn");
    assert_eq!(lifecycle["streamId"], "lag");
    assert_eq!(lifecycle["version"], 2);
    assert_eq!(lifecycle["status"], "PROCESSED");
    for stage in ["publishedAt", "processedAt", "totalLagMs"] {
        assert!(!lifecycle[stage].is_null(), "{stage} is set: {lifecycle}");
    }

    let r = app.get("/api/metrics/lag").await;
    assert_eq!(r.status(), 200);
    let report = body(r).await;
    assert_eq!(report["overall"]["count"], 2, "{report}");
    assert!(report["overall"]["p99Ms"].is_number(), "{report}");
    assert!(report["overall"]["eventsPerSecond"].is_number(), "{report}");
    let mut types: Vec<&str> = report["byEvent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["PatientCheckedIn", "WaitingQueueCreated"]);

    let r = app.get("/api/metrics/lag/slowest?limit=1").await;
    assert_eq!(r.status(), 200);
    let slowest = body(r).await;
    assert_eq!(slowest.as_array().map(Vec::len), Some(1), "{slowest}");
    assert_eq!(slowest[0]["status"], "PROCESSED");
}

#[tokio::test]
async fn outbox_and_projection_endpoints_report_a_drained_healthy_pipeline() {
    let app = TestApp::spawn().await;
    app.create_queue("ops", 5).await;
    assert_eq!(app.check_in("ops", "p1", "Low").await.status(), 201);
    app.wait_all_processed(SETTLE).await;

    // The relay marks rows published shortly after the projector may have processed them.
    wait_until(SETTLE, "outbox drained", || async {
        body(app.get("/api/outbox/pending").await).await["count"] == 0
    })
    .await;
    let r = app.get("/api/outbox/pending").await;
    assert_eq!(r.status(), 200);
    let outbox = body(r).await;
    assert_eq!(outbox["count"], 0, "{outbox}");
    assert_eq!(outbox["failed"], 0, "{outbox}");
    assert!(
        outbox.as_object().unwrap().contains_key("oldestAgeMs"),
        "{outbox}"
    );
    assert!(outbox["oldestAgeMs"].is_null(), "no pending row: {outbox}");

    let r = app.get("/api/projections/health").await;
    assert_eq!(r.status(), 200);
    let health = body(r).await;
    assert_eq!(health["status"], "healthy", "{health}");
    let projections = health["projections"].as_array().unwrap();
    let waiting_room = projections
        .iter()
        .find(|p| p["name"] == "waiting_room")
        .unwrap_or_else(|| panic!("waiting_room projection listed: {health}"));
    assert_eq!(waiting_room["streams"], 1, "{health}");
    assert_eq!(waiting_room["eventsBehind"], 0, "{health}");
    assert_eq!(waiting_room["parkedStreams"], 0, "{health}");
    assert_eq!(waiting_room["rebuilding"], false, "{health}");

    let p = assert_problem(
        app.post_empty("/api/projections/nope/rebuild").await,
        404,
        "projection-not-found",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("nope"), "{p}");
}

#[tokio::test]
async fn liveness_and_readiness_report_every_dependency_up() {
    let app = TestApp::spawn().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["status"], "ok");

    // Relay leadership and the projector's consumer come up asynchronously.
    wait_until(SETTLE, "readiness 200", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
    let r = app.get("/health/ready").await;
    assert_eq!(r.status(), 200);
    let ready = body(r).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let checks: Vec<(&str, &str)> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [
            ("postgres", "up"),
            ("rabbitmq", "up"),
            ("relay", "up"),
            ("projector", "up")
        ],
        "{ready}"
    );
}

#[tokio::test]
async fn metrics_are_openmetrics_text_counting_appended_events() {
    let app = TestApp::spawn().await;
    app.create_queue("metrics", 5).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let content_type = header(&r, "content-type");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "content-type {content_type:?}"
    );
    let text = r.text().await.expect("metrics text");
    let appended = text
        .lines()
        .find(|l| {
            l.starts_with("waitroom_events_appended_total{") && l.contains("WaitingQueueCreated")
        })
        .unwrap_or_else(|| panic!("waitroom_events_appended_total for the create:\n{text}"));
    assert!(appended.ends_with(" 1"), "one queue created: {appended}");
    assert!(
        text.contains("# TYPE waitroom_events_appended counter"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = TestApp::spawn().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let spec = body(r).await;
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "openapi field"
    );
    assert_eq!(spec["info"]["title"], "waitroom");
    for path in [
        "/api/queues",
        "/api/queues/{queueId}/check-ins",
        "/health/ready",
        "/metrics",
    ] {
        assert!(spec["paths"].get(path).is_some(), "spec documents {path}");
    }
    // Served spec and `waitroom openapi` are the same document.
    let printed: Value = serde_json::from_str(&waitroom::api::spec()).expect("spec is JSON");
    assert_eq!(spec, printed);

    let r = app.get("/docs").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let html = r.text().await.expect("docs html");
    assert!(html.to_lowercase().contains("swagger"), "Swagger UI page");
}

// ------------------------------------------------------------------ concurrency

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
    let created: Vec<&Value> = responses
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    let full: Vec<&Value> = responses
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        created.len(),
        10,
        "exactly capacity admitted: {responses:?}"
    );
    assert_eq!(full.len(), 30, "the rest rejected: {responses:?}");
    for p in &full {
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/queue-full")),
            "{p}"
        );
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
            let status = r.status().as_u16();
            (status, body(r).await)
        }
    }))
    .await;
    let created = responses.iter().filter(|(s, _)| *s == 201).count();
    let exists: Vec<&Value> = responses
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created, 1, "{responses:?}");
    assert_eq!(exists.len(), 9, "{responses:?}");
    for p in exists {
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/queue-exists")),
            "{p}"
        );
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
        async move {
            let r = call_next(app, "calls", &format!("Room {i}")).await;
            let status = r.status().as_u16();
            (status, body(r).await)
        }
    }))
    .await;
    assert!(
        responses.iter().all(|(s, _)| *s < 500),
        "no 5xx: {responses:?}"
    );
    let mut called: Vec<&str> = responses
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["patientId"].as_str().unwrap())
        .collect();
    called.sort_unstable();
    assert_eq!(called, ["p0", "p1", "p2", "p3", "p4"], "{responses:?}");
    let empty = responses
        .iter()
        .filter(|(s, b)| {
            *s == 409
                && b["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("/queue-empty"))
        })
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

// ------------------------------------------------------------------ request framing

/// Sends a raw HTTP/1.1 request and returns the response's status code and text.
async fn raw_http(app: &TestApp, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("API accepts connections");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request is written");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("response is read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {response:?}"));
    (status, response)
}

#[tokio::test]
async fn requests_without_a_content_length_are_served_not_refused() {
    let app = TestApp::spawn().await;
    // GETs and body-less POSTs carry no Content-Length; HTTP/1.1 does not require one.
    let r = app.get("/health").await;
    assert_eq!(
        r.status(),
        200,
        "GET /health: {}",
        r.text().await.unwrap_or_default()
    );
    let r = app.get("/api/queues").await;
    assert_eq!(
        r.status(),
        200,
        "GET /api/queues: {}",
        r.text().await.unwrap_or_default()
    );
    let r = patient_command(&app, "nowhere", "p1", "complete").await;
    assert_problem(r, 404, "queue-not-found").await;

    // A chunked body (no Content-Length) is read like any other.
    let payload = r#"{"queueId":"chunked","name":"Chunked","maxCapacity":3}"#;
    let request = format!(
        "POST /api/queues HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
        payload.len()
    );
    let (status, response) = raw_http(&app, &request).await;
    assert_eq!(status, 201, "chunked create: {response}");
    assert_eq!(event_count(&app, "chunked").await, 1);
}

#[tokio::test]
async fn a_request_body_over_64_kib_is_a_413_payload_too_large_problem() {
    let app = TestApp::spawn().await;
    let notes = "n".repeat(100 * 1024);
    let r = app
        .post(
            "/api/queues",
            json!({"queueId": "big", "name": "Big", "maxCapacity": 3, "notes": notes}),
        )
        .await;
    assert_problem(r, 413, "payload-too-large").await;
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 0, "nothing appended");
}
