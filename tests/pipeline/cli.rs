//! The `waitroom` binary: the OpenAPI document it prints, one-line errors with exit code 2,
//! migrations, and a full `waitroom run` that starts, serves and stops on SIGTERM.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use waitroom::broker::BrokerNames;

use crate::helpers::{amqp_url, pg_base, remove_isolated};

const BIN: &str = env!("CARGO_BIN_EXE_waitroom");
const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/waitroom.json");
const REGENERATE: &str = "cargo run -q -- openapi > openapi/waitroom.json";
/// How long a failing start or a graceful stop may take.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// `waitroom` with a controlled environment: no inherited service settings, JSON logs off,
/// so stderr holds only what the binary prints itself.
fn waitroom(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "HTTP_ADDR",
        "CONSOLE_ADDR",
        "BROKER_SUFFIX",
        "DATABASE_POOL_SIZE",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "off");
    cmd
}

/// Runs `cmd` to completion, failing the test when it takes longer than `timeout`.
async fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waitroom starts");
    let pid = child.id();
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(output) => output.expect("waitroom output is read"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("waitroom did not exit within {timeout:?}");
            }
        }
    })
    .await
    .expect("waiting thread does not panic")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts exit code 2 and exactly one stderr line starting with `error:`; returns the line.
fn assert_one_line_error(output: &Output, what: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: exit code 2; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one stderr line, got: {stderr}"
    );
    assert!(
        lines[0].starts_with("error:"),
        "{what}: starts with `error:`: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{what}: no panic: {stderr}"
    );
    lines[0].to_owned()
}

/// A database name and broker suffix of this test, removed (even on failure) at drop.
struct Scratch {
    database: String,
    suffix: String,
}

impl Scratch {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            database: format!("waitroom_test_cli_{}", &id[..16]),
            suffix: format!("test_cli_{}", &id[..16]),
        }
    }

    fn database_url(&self) -> String {
        format!("{}/{}", pg_base(), self.database)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url(), tokio_postgres::NoTls)
            .await
            .expect("scratch database is reachable");
        tokio::spawn(conn);
        client
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_isolated(
            &self.database_url(),
            &amqp_url(),
            &BrokerNames::with_suffix(&self.suffix),
        );
    }
}

/// A spawned `waitroom` logging to a file; killed if the test ends before it exits.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test]
async fn openapi_prints_exactly_the_checked_in_document() {
    let output = output_within(waitroom(&["openapi"]), EXIT_WITHIN).await;
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let printed = text(&output.stdout);
    serde_json::from_str::<serde_json::Value>(&printed).expect("the printed spec is JSON");
    let checked_in = std::fs::read_to_string(SPEC_FILE).unwrap_or_else(|e| {
        panic!("cannot read {SPEC_FILE} ({e}); generate it with `{REGENERATE}`")
    });
    if printed.trim() != checked_in.trim() {
        let first_difference = printed
            .trim()
            .lines()
            .zip(checked_in.trim().lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}: printed {a:?}, file {b:?}", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".to_owned());
        panic!(
            "openapi/waitroom.json differs from `waitroom openapi` ({first_difference}). \
             If the API change is intended, regenerate it with `{REGENERATE}` and review the diff."
        );
    }
}

#[tokio::test]
async fn help_prints_usage_and_exits_zero() {
    let output = output_within(waitroom(&["--help"]), EXIT_WITHIN).await;
    assert!(output.status.success());
    let usage = text(&output.stdout);
    for subcommand in [
        "run", "serve", "relay", "project", "migrate", "rebuild", "openapi",
    ] {
        assert!(
            usage.contains(subcommand),
            "--help lists {subcommand}: {usage}"
        );
    }
}

#[tokio::test]
async fn an_unknown_flag_or_subcommand_is_one_error_line_and_exit_code_2() {
    for args in [
        &["--no-such-flag"][..],
        &["frobnicate"],
        &["serve", "--bogus", "1"],
    ] {
        let output = output_within(waitroom(args), EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, &format!("{args:?}"));
        assert!(line.contains("--help"), "points to --help: {line}");
    }
}

#[tokio::test]
async fn an_invalid_setting_value_is_one_error_line_and_exit_code_2() {
    let output = output_within(waitroom(&["--http-addr", "nonsense", "serve"]), EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "--http-addr nonsense");
    assert!(line.contains("nonsense"), "names the bad value: {line}");

    let mut cmd = waitroom(&["serve"]);
    cmd.env("HTTP_ADDR", "not-an-address");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "HTTP_ADDR=not-an-address");
    assert!(
        line.contains("not-an-address"),
        "names the bad value: {line}"
    );

    let output = output_within(
        waitroom(&["--database-pool-size", "1", "migrate"]),
        EXIT_WITHIN,
    )
    .await;
    assert_one_line_error(&output, "--database-pool-size 1");

    let output = output_within(waitroom(&["--log-format", "xml", "migrate"]), EXIT_WITHIN).await;
    assert_one_line_error(&output, "--log-format xml");
}

#[tokio::test]
async fn unreachable_postgres_is_one_line_saying_where_and_how_to_start_it() {
    for subcommand in ["migrate", "serve", "run"] {
        let mut cmd = waitroom(&[subcommand]);
        cmd.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
            .env("HTTP_ADDR", "127.0.0.1:0");
        let started = Instant::now();
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, subcommand);
        assert!(
            line.contains("PostgreSQL"),
            "{subcommand}: names PostgreSQL: {line}"
        );
        assert!(
            line.contains("127.0.0.1:1"),
            "{subcommand}: says where: {line}"
        );
        assert!(
            line.contains("scripts/services.sh") && line.contains("DATABASE_URL"),
            "{subcommand}: says how to start it or point elsewhere: {line}"
        );
        assert!(started.elapsed() < EXIT_WITHIN, "{subcommand}: fails fast");
    }
}

#[tokio::test]
async fn unreachable_rabbitmq_is_one_line_saying_where_and_how_to_start_it() {
    let scratch = Scratch::new();
    for subcommand in ["serve", "relay", "project"] {
        let mut cmd = waitroom(&[subcommand]);
        cmd.env("DATABASE_URL", scratch.database_url())
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .env("BROKER_SUFFIX", &scratch.suffix)
            .env("HTTP_ADDR", "127.0.0.1:0");
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, subcommand);
        assert!(
            line.contains("RabbitMQ"),
            "{subcommand}: names RabbitMQ: {line}"
        );
        assert!(
            line.contains("127.0.0.1:1"),
            "{subcommand}: says where: {line}"
        );
        assert!(
            line.contains("AMQP_URL"),
            "{subcommand}: says how to point elsewhere: {line}"
        );
        assert!(
            !line.contains("guest:guest"),
            "{subcommand}: no credentials: {line}"
        );
    }
    let mut cmd = waitroom(&["serve"]);
    cmd.env("DATABASE_URL", scratch.database_url())
        .env("AMQP_URL", "not-an-amqp-url")
        .env("BROKER_SUFFIX", &scratch.suffix)
        .env("HTTP_ADDR", "127.0.0.1:0");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "AMQP_URL=not-an-amqp-url");
    assert!(
        line.contains("RabbitMQ") && line.contains("AMQP_URL"),
        "{line}"
    );
}

#[tokio::test]
async fn an_invalid_database_url_is_one_error_line_and_exit_code_2() {
    let mut cmd = waitroom(&["migrate"]);
    cmd.env("DATABASE_URL", "definitely not a url");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "DATABASE_URL=definitely not a url");
    assert!(line.contains("DATABASE_URL"), "names the setting: {line}");
}

#[tokio::test]
async fn a_busy_http_address_and_an_unknown_projection_are_one_error_line_and_exit_code_2() {
    let scratch = Scratch::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let addr = busy.local_addr().expect("bound address").to_string();
    let mut cmd = waitroom(&["serve"]);
    cmd.env("DATABASE_URL", scratch.database_url())
        .env("AMQP_URL", amqp_url())
        .env("BROKER_SUFFIX", &scratch.suffix)
        .env("HTTP_ADDR", &addr);
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "HTTP_ADDR in use");
    assert!(line.contains(&addr), "says which address: {line}");
    assert!(line.contains("HTTP_ADDR"), "says how to change it: {line}");
    drop(busy);

    let mut cmd = waitroom(&["rebuild", "--projection", "nope"]);
    cmd.env("DATABASE_URL", scratch.database_url());
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "rebuild --projection nope");
    assert!(line.contains("nope"), "names the projection: {line}");
}

#[tokio::test]
async fn migrate_creates_the_schema_in_a_fresh_database_and_can_run_again() {
    let scratch = Scratch::new();
    for run in 1..=2 {
        let mut cmd = waitroom(&["migrate"]);
        cmd.env("DATABASE_URL", scratch.database_url());
        let output = output_within(cmd, EXIT_WITHIN).await;
        assert!(
            output.status.success(),
            "migrate run {run}: {:?}; stderr: {}",
            output.status,
            text(&output.stderr)
        );
        assert!(
            text(&output.stdout).contains("migrations applied"),
            "run {run}"
        );
    }
    let client = scratch.client().await;
    for relation in [
        "waiting_room_events",
        "waiting_room_outbox",
        "event_processing_lag",
        "projection_checkpoints",
        "waiting_queue_view",
        "waiting_patients_view",
        "outbox_pending",
    ] {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation])
            .await
            .expect("query runs")
            .get(0);
        assert!(exists, "migrate creates {relation}");
    }
    let functions: i64 = client
        .query_one(
            "SELECT count(DISTINCT proname) FROM pg_proc WHERE proname IN ('lag_statistics', 'slowest_events')",
            &[],
        )
        .await
        .expect("query runs")
        .get(0);
    assert_eq!(functions, 2, "diagnostic functions exist");
    let projections: i64 = client
        .query_one(
            "SELECT count(*) FROM projections WHERE name = 'waiting_room'",
            &[],
        )
        .await
        .expect("query runs")
        .get(0);
    assert_eq!(
        projections, 1,
        "seed rows are not duplicated by a second run"
    );
}

#[tokio::test]
async fn run_serves_the_whole_pipeline_and_exits_zero_on_sigterm() {
    let scratch = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::env::temp_dir().join(format!("{}.log", scratch.suffix));
    let mut cmd = waitroom(&["run"]);
    cmd.env("DATABASE_URL", scratch.database_url())
        .env("AMQP_URL", amqp_url())
        .env("BROKER_SUFFIX", &scratch.suffix)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CONSOLE_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut running = Running {
        child: cmd.spawn().expect("waitroom run starts"),
        log,
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");

    let starting = Instant::now();
    loop {
        if let Some(status) = running.child.try_wait().expect("child status") {
            panic!(
                "waitroom run exited early: {status}; log:\n{}",
                running.log()
            );
        }
        let healthy = http
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if healthy {
            break;
        }
        assert!(
            starting.elapsed() < EXIT_WITHIN,
            "waitroom run did not answer /health within {EXIT_WITHIN:?}; log:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The relay and projector run in the same process: a command reaches the read model.
    let r = http
        .post(format!("{base}/api/queues"))
        .json(&json!({"queueId": "cli-run", "name": "CLI", "maxCapacity": 3}))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201);
    let projecting = Instant::now();
    loop {
        let projected = http
            .get(format!("{base}/api/queues/cli-run"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if projected {
            break;
        }
        assert!(
            projecting.elapsed() < EXIT_WITHIN,
            "the queue was not projected within {EXIT_WITHIN:?}; log:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = running.child.id();
    let stopping = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "SIGTERM sent");
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("child status") {
            break status;
        }
        assert!(
            stopping.elapsed() < EXIT_WITHIN,
            "waitroom run did not exit within {EXIT_WITHIN:?} of SIGTERM; log:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = running.log();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM; log:\n{log}");
    assert!(!log.contains("panicked"), "no panic; log:\n{log}");
    assert!(
        http.get(format!("{base}/health")).send().await.is_err(),
        "the port is closed after exit"
    );
}
