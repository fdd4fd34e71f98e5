//! Requests the HTTP API cannot take as they are: malformed bodies and wrong content types,
//! unknown routes and methods, and how requests are framed (chunked bodies, the size cap).
//! Each is a client-error problem, never a server error.

use serde_json::json;

use crate::api_support::{
    assert_client_problem, assert_problem, event_count, header, patient_command, total_events,
};
use crate::helpers::TestApp;

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
    assert_eq!(total_events(&app).await, 1, "only the create appended");
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
    assert_eq!(
        header(&r, "allow"),
        "GET, HEAD, POST",
        "405 lists the allowed methods"
    );
    assert_problem(r, 405, "method-not-allowed").await;
    let r = app.post_empty("/health").await;
    assert_eq!(header(&r, "allow"), "GET, HEAD");
    assert_problem(r, 405, "method-not-allowed").await;
    let r = app.get("/api/queues/q/call-next").await;
    assert_eq!(header(&r, "allow"), "POST");
    assert_problem(r, 405, "method-not-allowed").await;
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
    for path in ["/health", "/api/queues"] {
        let r = app.get(path).await;
        assert_eq!(
            r.status(),
            200,
            "GET {path}: {}",
            r.text().await.unwrap_or_default()
        );
    }
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
    assert_eq!(total_events(&app).await, 0, "nothing appended");
}
