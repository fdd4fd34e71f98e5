//! No secret leaks: the real binary runs with a unique secret in every place one can be
//! given (the Postgres password, a throwaway RabbitMQ user's password, the console
//! password, API tokens), at `RUST_LOG=trace` in both log formats, and none of them may
//! appear in its output, `/health/ready`, `/metrics` or the console's answers. Startup
//! errors (a refused or unreachable service, a malformed URL) must not print them either.
//!
//! A secret is looked for as written and as the list of byte values `Debug` prints for a
//! byte string (how lapin's trace of the AMQP `StartOk` frame spelt the broker password).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{
    EXIT_WITHIN, Running, Scratch, assert_one_line_error, output_within, text, waitroom,
};
use crate::helpers::amqp_url;

/// A unique secret, e.g. `pg-3f9a…`.
fn secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// The spellings a secret is searched for in: as is, and as `Debug` bytes.
fn spellings(secret: &str) -> [String; 2] {
    let bytes = secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    [secret.to_owned(), bytes]
}

/// Fails if any secret appears in `haystack` (named `place`) in any spelling.
fn assert_no_secret(place: &str, haystack: &str, secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        for spelling in spellings(secret) {
            assert!(
                !haystack.contains(&spelling),
                "the {name} appears in {place}: {}",
                excerpt(haystack, &spelling)
            );
        }
    }
}

/// The text around the first `needle`, for the failure message.
fn excerpt(haystack: &str, needle: &str) -> String {
    let at = haystack.find(needle).unwrap_or(0);
    let mut start = at.saturating_sub(200);
    while !haystack.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + needle.len() + 200).min(haystack.len());
    while !haystack.is_char_boundary(end) {
        end += 1;
    }
    haystack[start..end].to_owned()
}

/// A RabbitMQ user of this test (`rabbitmqctl`), deleted at drop.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    /// `None` when `rabbitmqctl` is not available here.
    fn create() -> Option<Self> {
        let user = Self {
            name: format!(
                "waitroom_test_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            password: secret("amqp"),
        };
        let ctl = |args: &[&str]| {
            Command::new("rabbitmqctl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ctl(&["add_user", &user.name, &user.password]) {
            eprintln!("rabbitmqctl unavailable: the running-process leak test is skipped");
            return None;
        }
        assert!(
            ctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]),
            "rabbitmqctl set_permissions"
        );
        Some(user)
    }

    fn url(&self) -> String {
        let base = amqp_url();
        let host = base
            .rsplit_once('@')
            .map_or("127.0.0.1:5672/%2f", |(_, h)| h);
        format!("amqp://{}:{}@{host}", self.name, self.password)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `url` (a URL without a password) with `password` added to its user.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a URL with a user");
    format!("{scheme}://{user}:{password}@{host}")
}

/// Every row of the console's answer to `sql`, as text.
async fn console_answer(client: &tokio_postgres::Client, sql: &str) -> String {
    let mut out = String::new();
    for message in client.simple_query(sql).await.expect("the console answers") {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            for i in 0..row.len() {
                out.push_str(row.get(i).unwrap_or("NULL"));
                out.push('\t');
            }
            out.push('\n');
        }
    }
    out
}

async fn no_secret_leaks_from_a_running_process(log_format: &str) {
    let Some(broker_user) = BrokerUser::create() else {
        return;
    };
    let scratch = Scratch::new();
    let pg_password = secret("pg");
    let console_password = secret("console");
    let api_token = secret("token");
    let file_tokens = [secret("filetoken"), secret("filetoken")];
    let tokens_file = std::env::temp_dir().join(format!("{}.tokens", scratch.suffix));
    std::fs::write(
        &tokens_file,
        format!("{}\n{}\n", file_tokens[0], file_tokens[1]),
    )
    .expect("tokens file");
    let secrets = [
        ("Postgres password", pg_password.as_str()),
        ("RabbitMQ password", broker_user.password.as_str()),
        ("console password", console_password.as_str()),
        ("API token", api_token.as_str()),
        ("first API token of the file", file_tokens[0].as_str()),
        ("second API token of the file", file_tokens[1].as_str()),
    ];

    let (http_port, console_port) = (crate::helpers::free_port(), crate::helpers::free_port());
    let database_url = format!(
        "{}?sslmode=require",
        with_password(&scratch.database_url(), &pg_password)
    );
    let log = std::env::temp_dir().join(format!("{}.log", scratch.suffix));
    let stdout = std::env::temp_dir().join(format!("{}.out", scratch.suffix));
    let mut cmd = waitroom(&["run"]);
    cmd.env("DATABASE_URL", &database_url)
        .env("AMQP_URL", broker_user.url())
        .env("BROKER_SUFFIX", &scratch.suffix)
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("CONSOLE_ADDR", format!("127.0.0.1:{console_port}"))
        .env("CONSOLE_PASSWORD", &console_password)
        .env("API_TOKEN", &api_token)
        .env("API_TOKENS_FILE", &tokens_file)
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", log_format)
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut running = Running {
        child: cmd.spawn().expect("waitroom run starts"),
        log,
    };
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let bearer = format!("Bearer {api_token}");

    // Ready: Postgres and RabbitMQ answer (with the secrets), a relay leads, a projector consumes.
    let ready = running
        .poll(
            Instant::now(),
            Duration::from_millis(100),
            "waitroom run did not become ready",
            async |running| {
                if let Some(status) = running.child.try_wait().expect("child status") {
                    panic!(
                        "waitroom run exited early: {status}; log:\n{}",
                        running.log()
                    );
                }
                let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
                (r.status() == 200).then_some(())?;
                r.text().await.ok()
            },
        )
        .await;

    // Traffic through every stage: a command, the relay, the projector, a query.
    let r = http
        .post(format!("{base}/api/queues"))
        .header("authorization", &bearer)
        .json(&json!({"queueId": "secrets", "name": "Secrets", "maxCapacity": 5}))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = http
        .post(format!("{base}/api/queues/secrets/check-ins"))
        .header("authorization", &bearer)
        .json(
            &json!({"patientId": "p-1", "patientName": "Ada", "priority": "High",
                      "consultationType": "General"}),
        )
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let queue = format!("{base}/api/queues/secrets");
    running
        .poll(
            Instant::now(),
            Duration::from_millis(50),
            "the check-in was not projected",
            async |_| {
                let r = http
                    .get(&queue)
                    .header("authorization", &bearer)
                    .send()
                    .await
                    .ok()?;
                let body: serde_json::Value = r.json().await.ok()?;
                (body["currentPatientCount"] == 1).then_some(())
            },
        )
        .await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("waitroom_"), "metrics are served");

    let (console, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={console_port} user=waitroom dbname=waitroom \
             password={console_password} sslmode=disable"
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the console accepts its password");
    tokio::spawn(connection);
    let config = console_answer(&console, "SHOW CONFIG").await;
    assert!(
        config.contains("amqp_url\tamqp://") && config.contains(":********@"),
        "SHOW CONFIG shows the URLs, masked: {config}"
    );
    let mut answers = config;
    for show in ["SHOW RELAY", "SHOW PROJECTOR", "SHOW ROLES"] {
        answers.push_str(&console_answer(&console, show).await);
    }
    drop(console);

    let pid = running.child.id();
    let stopping = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs")
            .success()
    );
    let status = running
        .poll(
            stopping,
            Duration::from_millis(50),
            "waitroom run did not exit after SIGTERM",
            async |running| running.child.try_wait().expect("child status"),
        )
        .await;
    let log = running.log();
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let _ = std::fs::remove_file(&stdout);
    let _ = std::fs::remove_file(&tokens_file);
    assert_eq!(status.code(), Some(0), "clean exit");

    // The log really is at trace level, down to the AMQP handshake frames that used to
    // carry the broker password (a test that saw no such line would prove nothing).
    assert!(
        log.contains("StartOk"),
        "the trace log shows the AMQP handshake; log starts:\n{}",
        &log[..log.len().min(2000)]
    );
    assert!(log.lines().count() > 100, "a trace log has many lines");
    for (place, haystack) in [
        ("the log (stderr)", log.as_str()),
        ("stdout", out.as_str()),
        ("/health/ready", ready.as_str()),
        ("/metrics", metrics.as_str()),
        ("the console's answers", answers.as_str()),
    ] {
        assert_no_secret(place, haystack, &secrets);
    }
}

#[tokio::test]
async fn no_secret_appears_in_json_trace_logs_readiness_metrics_or_the_console() {
    no_secret_leaks_from_a_running_process("json").await;
}

#[tokio::test]
async fn no_secret_appears_in_pretty_trace_logs_readiness_metrics_or_the_console() {
    no_secret_leaks_from_a_running_process("pretty").await;
}

#[tokio::test]
async fn startup_errors_do_not_print_passwords() {
    let scratch = Scratch::new();
    let amqp_password = secret("amqp");
    let pg_password = secret("pg");
    let amqp_host = amqp_url()
        .rsplit_once('@')
        .map(|(_, h)| h.to_owned())
        .unwrap_or_else(|| "127.0.0.1:5672/%2f".to_owned());
    let cases = [
        (
            "a wrong RabbitMQ password",
            scratch.database_url(),
            format!("amqp://guest:{amqp_password}@{amqp_host}"),
            "RabbitMQ",
        ),
        (
            "an unreachable RabbitMQ",
            scratch.database_url(),
            format!("amqp://guest:{amqp_password}@127.0.0.1:1/%2f"),
            "cannot connect to RabbitMQ at 127.0.0.1:1",
        ),
        (
            "an AMQP URL that does not parse",
            scratch.database_url(),
            format!("amqp:guest:{amqp_password}@127.0.0.1"),
            "AMQP_URL",
        ),
        (
            "a Postgres role that does not exist",
            with_password(
                &scratch
                    .database_url()
                    .replacen("postgres@", "waitroom_no_such_role@", 1),
                &pg_password,
            ),
            amqp_url(),
            "waitroom_no_such_role",
        ),
        (
            "an unreachable Postgres",
            format!("postgres://postgres:{pg_password}@127.0.0.1:1/waitroom_never"),
            amqp_url(),
            "cannot connect to PostgreSQL at 127.0.0.1:1",
        ),
    ];
    let secrets = [
        ("RabbitMQ password", amqp_password.as_str()),
        ("Postgres password", pg_password.as_str()),
    ];
    for format in ["json", "pretty"] {
        for (what, database_url, amqp, expected) in &cases {
            let mut cmd = waitroom(&["run"]);
            cmd.env("DATABASE_URL", database_url)
                .env("AMQP_URL", amqp)
                .env("BROKER_SUFFIX", &scratch.suffix)
                .env("HTTP_ADDR", "127.0.0.1:0")
                .env("CONSOLE_ADDR", "off")
                .env("RUST_LOG", "trace")
                .env("LOG_FORMAT", format);
            let output = output_within(cmd, EXIT_WITHIN).await;
            let stderr = text(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{what}: exit 2; stderr: {stderr}"
            );
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with("error: ") && l.contains(expected)),
                "{what}: an error line names the cause ({expected}); stderr ends: {}",
                &stderr[stderr.len().saturating_sub(2000)..]
            );
            assert_no_secret(&format!("{what} ({format})"), &stderr, &secrets);
            assert_no_secret(
                &format!("{what} ({format}), stdout"),
                &text(&output.stdout),
                &secrets,
            );
        }
    }
    // And without logs, the error is the only line.
    let mut cmd = waitroom(&["run"]);
    cmd.env("DATABASE_URL", scratch.database_url())
        .env(
            "AMQP_URL",
            format!("amqp://guest:{amqp_password}@{amqp_host}"),
        )
        .env("BROKER_SUFFIX", &scratch.suffix)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("CONSOLE_ADDR", "off");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "a wrong RabbitMQ password");
    assert!(!line.contains(&amqp_password), "{line}");
}
