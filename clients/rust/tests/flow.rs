//! The clinic flow through the generated client against a spawned server (the waitroom
//! binary on a database and broker names of its own, named like the main test suite's so
//! `scripts/test.sh` removes leftovers): create a queue, check two patients in, call the next
//! one (the Urgent one), complete, read the queue, read the lag statistics, and a 404 decoded
//! as the `Problem` type. The server requires an API token; the client sends it, and a client
//! without it gets the documented 401.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use waitroom_client::Client;
use waitroom_client::types;

/// The server's API token (`API_TOKEN`).
const TOKEN: &str = "client-flow-token-0123456789";

/// A `waitroom run` child process; killed, and its database dropped, on drop.
struct Server {
    child: Child,
    url: String,
    database: String,
    pg: String,
}

impl Server {
    async fn start() -> Self {
        let bin = std::env::var("WAITROOM_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug/waitroom").to_owned()
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run `cargo build --bin waitroom` first (or set WAITROOM_BIN)"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let id = format!("client_{}_{nanos}", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = std::env::var("WAITROOM_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let amqp = std::env::var("WAITROOM_TEST_AMQP")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let database = format!("waitroom_test_{id}");
        let child = Command::new(&bin)
            .arg("run")
            .env("DATABASE_URL", format!("{pg}/{database}"))
            .env("AMQP_URL", amqp)
            .env("BROKER_SUFFIX", format!("test_{id}"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CONSOLE_ADDR", "off")
            .env("API_TOKEN", TOKEN)
            .env_remove("API_TOKENS_FILE")
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .spawn()
            .expect("waitroom starts");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            database,
            pg,
        };
        let client = Client::new(&server.url);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.get_readiness().send().await.is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "waitroom not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Best effort; scripts/test.sh drops leftover waitroom_test_* databases too.
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", self.pg))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn the_generated_client_runs_the_clinic_flow() {
    let server = Server::start().await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().expect("header value"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client");
    let client = Client::new_with_client(&server.url, http);

    // Without the token: the documented 401, a Problem like every other error.
    let refused = Client::new(&server.url)
        .list_queues()
        .send()
        .await
        .expect_err("no token, no answer");
    let waitroom_client::Error::ErrorResponse(response) = refused else {
        panic!("expected a problem response, got {refused:?}");
    };
    assert_eq!(response.status(), 401);
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")),
        "a challenge"
    );
    let problem = decode_problem(response).await;
    assert!(
        problem.type_.ends_with("/unauthorized"),
        "{}",
        problem.type_
    );
    println!("401 without a token: {}", problem.detail);

    let created = client
        .create_queue()
        .x_actor("reception")
        .body(types::CreateQueueRequest {
            queue_id: Some("cardiology".parse().expect("valid queue id")),
            name: "Cardiology".parse().expect("valid name"),
            max_capacity: 20.try_into().expect("valid capacity"),
            max_no_shows: None,
        })
        .send()
        .await
        .expect("queue created");
    let etag = created.headers().get("etag").cloned();
    let created = created.into_inner();
    println!(
        "created queue {} at version {}",
        created.queue_id, created.version
    );
    assert_eq!(created.queue_id, "cardiology");
    assert_eq!(etag.as_ref().and_then(|v| v.to_str().ok()), Some("\"1\""));

    for (id, name, priority) in [
        ("p-1", "Grace Hopper", types::Priority::Low),
        ("p-2", "Ada Lovelace", types::Priority::Urgent),
    ] {
        let checked_in = client
            .check_in()
            .queue_id(created.queue_id.as_str())
            .body(types::CheckInRequest {
                patient_id: id.parse().expect("valid patient id"),
                patient_name: name.parse().expect("valid name"),
                priority,
                consultation_type: "General".parse().expect("valid type"),
                notes: None,
            })
            .send()
            .await
            .expect("patient checked in")
            .into_inner();
        println!(
            "checked in {id} ({priority}) at position {}, version {}",
            checked_in.position, checked_in.version
        );
    }

    let called = client
        .call_next()
        .queue_id("cardiology")
        .body(types::CallNextRequest {
            consulting_room: "Room 3".parse().expect("valid room"),
        })
        .send()
        .await
        .expect("next patient called")
        .into_inner();
    println!(
        "called {} ({}) to {}",
        called.patient_id, called.priority, called.consulting_room
    );
    assert_eq!(called.patient_id, "p-2");
    assert_eq!(called.priority, types::Priority::Urgent);

    let completed = client
        .complete_consultation()
        .queue_id("cardiology")
        .patient_id(called.patient_id.as_str())
        .if_match(format!("\"{}\"", called.version).as_str())
        .send()
        .await
        .expect("consultation completed")
        .into_inner();
    println!(
        "completed {} at version {}",
        called.patient_id, completed.version
    );

    // The read model trails the store by milliseconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let queue = loop {
        let queue = client
            .get_queue()
            .queue_id("cardiology")
            .send()
            .await
            .expect("queue read")
            .into_inner();
        if queue.version >= completed.version || Instant::now() > deadline {
            break queue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "read model: {} at version {}, waiting {:?}",
        queue.name,
        queue.version,
        queue
            .patients
            .iter()
            .map(|p| (p.patient_id.as_str(), p.status, p.position))
            .collect::<Vec<_>>()
    );
    assert_eq!(queue.version, completed.version);
    assert_eq!(queue.patients.len(), 1);
    assert_eq!(queue.patients[0].patient_id, "p-1");
    assert_eq!(queue.patients[0].status, types::PatientStatus::Waiting);

    let lag = client
        .get_lag_statistics()
        .window_seconds(3600.0)
        .send()
        .await
        .expect("lag statistics")
        .into_inner();
    println!(
        "lag: {} events, p95 {:?} ms, by type {:?}",
        lag.overall.count,
        lag.overall.p95_ms,
        lag.by_event
            .iter()
            .map(|e| (e.event_type, e.count))
            .collect::<Vec<_>>()
    );

    let missing = client
        .get_queue()
        .queue_id("radiology")
        .send()
        .await
        .expect_err("radiology does not exist");
    // progenitor types `application/json` bodies; errors are `application/problem+json`, so
    // it hands them over as bytes, which decode into the generated `Problem`.
    let waitroom_client::Error::ErrorResponse(response) = missing else {
        panic!("expected a problem response, got {missing:?}");
    };
    assert_eq!(response.status(), 404);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem = decode_problem(response).await;
    println!(
        "404: {} {} ({})",
        problem.status, problem.type_, problem.detail
    );
    assert_eq!(problem.status, 404);
    assert!(
        problem.type_.ends_with("/queue-not-found"),
        "{}",
        problem.type_
    );
}

/// A problem+json error body, which progenitor hands over as bytes, decoded.
async fn decode_problem(
    response: waitroom_client::ResponseValue<waitroom_client::ByteStream>,
) -> types::Problem {
    let bytes: Vec<u8> = response
        .into_inner()
        .into_inner()
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("problem body");
    serde_json::from_slice(&bytes).expect("body is a Problem")
}
