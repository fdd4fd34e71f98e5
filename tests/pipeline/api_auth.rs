//! API tokens: with `API_TOKEN` / `API_TOKENS_FILE` set, every `/api` operation needs
//! `Authorization: Bearer <token>` (401 problem+json with a challenge otherwise), the health,
//! metrics, document and board routes stay open, the document declares the scheme, and the
//! binary refuses unusable tokens at start and warns when it runs without any.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waitroom::config::Secret;

use crate::api_support::assert_problem;
use crate::cli::{EXIT_WITHIN, Running, Scratch, assert_one_line_error, output_within, waitroom};
use crate::helpers::{TestApp, amqp_url, body, isolated_settings, wait_until};

const TOKEN: &str = "test-token-0123456789abcdef";

async fn with_token() -> TestApp {
    let mut settings = isolated_settings();
    settings.api_token = Some(Secret::new(TOKEN));
    TestApp::spawn_with(settings, waitroom::app::Roles::ALL).await
}

/// A client that sends no `Authorization` header.
fn anonymous() -> reqwest::Client {
    reqwest::Client::new()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a 401 `unauthorized` problem with the challenge and the correlation id; returns
/// the `WWW-Authenticate` value.
async fn assert_unauthorized(r: reqwest::Response) -> String {
    let challenge = header(&r, "www-authenticate");
    let correlation = header(&r, "x-correlation-id");
    let p = assert_problem(r, 401, "unauthorized").await;
    assert_eq!(
        p["type"], "https://waitroom.dev/problems/unauthorized",
        "{p}"
    );
    assert!(
        challenge.starts_with("Bearer realm=\"waitroom\""),
        "WWW-Authenticate: {challenge:?}"
    );
    assert!(!correlation.is_empty(), "X-Correlation-Id is set");
    assert_eq!(p["correlationId"], correlation.as_str(), "{p}");
    challenge
}

/// Every operation of the document: (method, path with its parameters filled in).
fn api_operations() -> Vec<(String, String)> {
    let spec: Value = serde_json::from_str(&waitroom::api::spec()).expect("spec is JSON");
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") {
            continue;
        }
        let concrete = path
            .replace("{queueId}", "q1")
            .replace("{patientId}", "p1")
            .replace("{eventId}", "0190f5f4-0000-7000-8000-000000000000")
            .replace("{name}", "waiting_room");
        for method in item.as_object().expect("path item").keys() {
            out.push((method.to_ascii_uppercase(), concrete.clone()));
        }
    }
    out
}

#[tokio::test]
async fn with_a_token_configured_every_api_operation_without_one_is_a_401_problem() {
    let app = with_token().await;
    let anonymous = anonymous();
    let operations = api_operations();
    assert!(operations.len() >= 15, "{operations:?}");
    for (method, path) in &operations {
        let r = anonymous
            .request(
                method.parse().expect("method"),
                format!("{}{path}", app.address),
            )
            .header("X-Correlation-Id", "auth-test-1")
            .json(&json!({"queueId": "q1", "name": "Q", "maxCapacity": 5}))
            .send()
            .await
            .expect("request is sent");
        let challenge = assert_unauthorized(r).await;
        assert_eq!(challenge, "Bearer realm=\"waitroom\"", "{method} {path}");
    }
    // Unknown paths and methods under /api say nothing about the routes either.
    for (method, path) in [
        ("GET", "/api/nope"),
        ("DELETE", "/api/queues"),
        ("GET", "/api"),
    ] {
        let r = anonymous
            .request(
                method.parse().expect("method"),
                format!("{}{path}", app.address),
            )
            .send()
            .await
            .expect("request is sent");
        assert_unauthorized(r).await;
    }
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 0, "no refused command appended anything");
}

#[tokio::test]
async fn a_wrong_or_malformed_authorization_header_is_a_401_and_the_right_token_passes() {
    let app = with_token().await;
    let anonymous = anonymous();
    let url = format!("{}/api/queues", app.address);
    let wrong_token = "test-token-0123456789abcdeF".to_owned();
    let cases: [(String, &str); 6] = [
        (format!("Bearer {wrong_token}"), "invalid_token"),
        (format!("Bearer {TOKEN}x"), "invalid_token"),
        ("Bearer short".to_owned(), "invalid_token"),
        (format!("Basic {TOKEN}"), "invalid_request"),
        (TOKEN.to_owned(), "invalid_request"),
        ("Bearer".to_owned(), "invalid_request"),
    ];
    for (value, error) in &cases {
        let r = anonymous
            .get(&url)
            .header("Authorization", value)
            .send()
            .await
            .expect("request is sent");
        let challenge = assert_unauthorized(r).await;
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{value:?}: {challenge}"
        );
    }
    // Two headers, one of them right: refused (which one would count is ambiguous).
    let r = anonymous
        .get(&url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Authorization", format!("Bearer {wrong_token}"))
        .send()
        .await
        .expect("request is sent");
    assert_unauthorized(r).await;

    // The right token, the scheme in any case: the commands and queries work.
    for scheme in ["Bearer", "bearer"] {
        let r = anonymous
            .get(&url)
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .expect("request is sent");
        assert_eq!(r.status(), 200, "{scheme}");
    }
    app.create_queue("cardio", 5).await;
    let r = app.check_in("cardio", "p1", "High").await;
    assert_eq!(r.status(), 201);
    let view = body(app.get("/api/queues/cardio").await).await;
    assert_eq!(view["patients"][0]["patientId"], "p1", "{view}");
}

#[tokio::test]
async fn every_token_of_the_tokens_file_and_api_token_is_accepted() {
    let scratch = std::env::temp_dir().join(format!("waitroom-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &scratch,
        "# one token per desk client\n\ndesk-one-token-00000001\n  desk-two-token-00000002  \n# retired: desk-old-token-000000000\n",
    )
    .expect("tokens file");
    let mut settings = isolated_settings();
    settings.api_token = Some(Secret::new(TOKEN));
    settings.api_tokens_file = Some(scratch.display().to_string());
    let app = TestApp::spawn_with(settings, waitroom::app::Roles::ALL).await;
    let _ = std::fs::remove_file(&scratch);
    let anonymous = anonymous();
    let url = format!("{}/api/outbox/pending", app.address);
    let send = |token: &str| {
        anonymous
            .get(&url)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    for token in [TOKEN, "desk-one-token-00000001", "desk-two-token-00000002"] {
        let r = send(token).await.expect("request is sent");
        assert_eq!(r.status(), 200, "{token}");
    }
    for token in ["desk-old-token-000000000", "desk-three-token-0000003"] {
        assert_unauthorized(send(token).await.expect("request is sent")).await;
    }
}

#[tokio::test]
async fn health_metrics_the_document_and_the_board_stay_open_with_tokens_on() {
    let app = with_token().await;
    app.create_queue("er", 5).await;
    // The board page needs the queue in the read model, a few milliseconds behind.
    wait_until(Duration::from_secs(10), "queue er projected", || async {
        app.get("/api/queues/er").await.status() == 200
    })
    .await;
    let anonymous = anonymous();
    for path in [
        "/health",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/",
        "/board/er",
        "/assets/board.js",
        "/live/queues",
        "/live/queues/er",
        "/live/staff",
    ] {
        let r = anonymous
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("request is sent");
        // Readiness may still be 503 while the roles settle; it is never a 401.
        let status = r.status().as_u16();
        assert!(
            status == 200 || (path == "/health/ready" && status == 503),
            "{path}: {status}"
        );
    }
    // The board's staff line reads its figures from /live/staff, without a token.
    let r = anonymous
        .get(format!("{}/live/staff", app.address))
        .send()
        .await
        .expect("request is sent");
    let staff = body(r).await;
    assert_eq!(staff["projection"]["status"], "healthy", "{staff}");
    assert!(staff["outbox"]["count"].is_i64(), "{staff}");
    assert!(staff["lag"]["count"].is_i64(), "{staff}");
}

#[test]
fn the_document_declares_the_bearer_scheme_and_a_401_on_every_api_operation() {
    let spec: Value = serde_json::from_str(&waitroom::api::spec()).expect("spec is JSON");
    let scheme = &spec["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    let mut secured = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let security = &operation["security"];
            let unauthorized = &operation["responses"]["401"];
            if path.starts_with("/api/") {
                assert_eq!(security, &json!([{"bearerAuth": []}]), "{method} {path}");
                assert_eq!(
                    unauthorized["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path}"
                );
                assert!(
                    unauthorized["headers"]["WWW-Authenticate"].is_object(),
                    "{method} {path}"
                );
                secured += 1;
            } else {
                assert!(security.is_null(), "{method} {path} stays open");
                assert!(unauthorized.is_null(), "{method} {path} has no 401");
            }
        }
    }
    assert!(secured >= 15, "{secured} operations");
}

#[tokio::test]
async fn without_tokens_the_binary_warns_that_the_api_is_open_and_with_one_it_does_not() {
    for token in [None, Some(TOKEN)] {
        let scratch = Scratch::new();
        let port = crate::helpers::free_port();
        let log = std::env::temp_dir().join(format!("{}.log", scratch.suffix));
        let mut cmd =
            scratch.waitroom_with_broker(&["serve"], &amqp_url(), &format!("127.0.0.1:{port}"));
        cmd.env("CONSOLE_ADDR", "off")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(token) = token {
            cmd.env("API_TOKEN", token);
        }
        let mut running = Running {
            child: cmd.spawn().expect("waitroom serve starts"),
            log,
        };
        let log = running
            .poll(
                Instant::now(),
                Duration::from_millis(50),
                "waitroom serve did not log whether /api needs a token",
                async |running| {
                    if let Some(status) = running.child.try_wait().expect("child status") {
                        panic!("waitroom serve exited: {status}; log:\n{}", running.log());
                    }
                    let log = running.log();
                    (log.contains("/api is open") || log.contains("/api requires a bearer token"))
                        .then_some(log)
                },
            )
            .await;
        let warning = log
            .lines()
            .find(|l| l.contains("/api is open to anyone who can reach HTTP_ADDR"));
        match token {
            None => {
                let line: Value = serde_json::from_str(warning.expect("the warning is logged"))
                    .expect("a JSON log line");
                assert_eq!(line["level"], "WARN", "{line}");
            }
            Some(token) => {
                assert!(warning.is_none(), "no warning with a token:\n{log}");
                assert!(log.contains("/api requires a bearer token"), "{log}");
                assert!(!log.contains(token), "the token is never logged:\n{log}");
            }
        }
    }
}

#[tokio::test]
async fn unusable_tokens_stop_the_start_with_one_line_and_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("waitroom-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("empty");
    std::fs::write(&empty, "# no token yet\n\n").expect("write");
    let short = dir.join("short");
    std::fs::write(&short, "good-token-000000000001\nsecret7\n").expect("write");
    let missing = dir.join("missing");
    let cases: [(&str, String, &str); 5] = [
        (
            "API_TOKENS_FILE",
            missing.display().to_string(),
            "cannot read API_TOKENS_FILE",
        ),
        (
            "API_TOKENS_FILE",
            empty.display().to_string(),
            "holds no token",
        ),
        ("API_TOKENS_FILE", short.display().to_string(), "line 2"),
        (
            "API_TOKEN",
            "has whitespace-0123456789".to_owned(),
            "whitespace",
        ),
        ("API_TOKEN", "secret7".to_owned(), "16 to 1024"),
    ];
    for (var, value, says) in &cases {
        for subcommand in ["serve", "run"] {
            let mut cmd = waitroom(&[subcommand]);
            // Checked before any service is touched: an unreachable Postgres is never reached.
            cmd.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
                .env("HTTP_ADDR", "127.0.0.1:0")
                .env(var, value);
            let output = output_within(cmd, EXIT_WITHIN).await;
            let line = assert_one_line_error(&output, &format!("{subcommand} {var}={value}"));
            assert!(line.contains(var), "names {var}: {line}");
            assert!(line.contains(says), "{var}={value}: says {says:?}: {line}");
            assert!(!line.contains("secret7"), "never repeats a token: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
