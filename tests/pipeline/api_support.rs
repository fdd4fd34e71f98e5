//! Helpers shared by the HTTP API tests (`api_*`) and the Idempotency-Key tests: problem+json
//! assertions, request bodies and senders, and what the event store and read model hold.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, body};

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
pub(crate) async fn assert_client_problem(
    r: reqwest::Response,
    statuses: &[u16],
    what: &str,
) -> Value {
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

/// Whether `p` is a problem whose type ends with `/{slug}`.
pub(crate) fn is_problem_type(p: &Value, slug: &str) -> bool {
    p["type"]
        .as_str()
        .is_some_and(|t| t.ends_with(&format!("/{slug}")))
}

pub(crate) fn check_in_body(patient_id: &str, priority: &str) -> Value {
    json!({
        "patientId": patient_id,
        "patientName": format!("Patient {patient_id}"),
        "priority": priority,
        "consultationType": "General",
    })
}

/// POSTs `payload` (or nothing) to `path` with extra request `headers`.
pub(crate) async fn post_with_headers(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    payload: Option<&Value>,
) -> reqwest::Response {
    let mut rb = app.http.post(format!("{}{path}", app.address));
    for (name, value) in headers {
        rb = rb.header(*name, *value);
    }
    if let Some(p) = payload {
        rb = rb.json(p);
    }
    rb.send().await.expect("request is sent")
}

/// The status and JSON body of `r`.
pub(crate) async fn status_and_body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, body(r).await)
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

/// Events stored for every stream.
pub(crate) async fn total_events(app: &TestApp) -> i64 {
    app.scalar("SELECT count(*) FROM waiting_room_events").await
}

/// GET /api/queues/{id}, asserting 200.
pub(crate) async fn queue_view(app: &TestApp, queue_id: &str) -> Value {
    let r = app.get(&format!("/api/queues/{queue_id}")).await;
    assert_eq!(r.status(), 200, "get queue {queue_id}");
    body(r).await
}

/// `(patientId, status, position)` of each listed patient, in list order.
pub(crate) fn listed(view: &Value) -> Vec<(String, String, Option<i64>)> {
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

pub(crate) fn row(id: &str, status: &str, position: Option<i64>) -> (String, String, Option<i64>) {
    (id.to_owned(), status.to_owned(), position)
}
