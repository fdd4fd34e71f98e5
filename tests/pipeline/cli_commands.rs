//! The `waitroom` binary's commands: the OpenAPI document it prints, its usage, migrations,
//! and a full `waitroom run` that starts, serves and stops on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;
use tokio_postgres::types::{FromSqlOwned, ToSql};

use crate::cli::{EXIT_WITHIN, Running, Scratch, output_within, text, waitroom};
use crate::helpers::amqp_url;

const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/waitroom.json");
const REGENERATE: &str = "cargo run -q -- openapi > openapi/waitroom.json";

/// The one value `sql` selects.
async fn select_one<T: FromSqlOwned>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    client
        .query_one(sql, params)
        .await
        .expect("query runs")
        .get(0)
}

/// Whether GET `url` answers 200.
async fn answers_ok(http: &reqwest::Client, url: &str) -> bool {
    http.get(url).send().await.is_ok_and(|r| r.status() == 200)
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
        "run", "serve", "relay", "project", "migrate", "rebuild", "bench", "openapi",
    ] {
        assert!(
            usage.contains(subcommand),
            "--help lists {subcommand}: {usage}"
        );
    }
}
#[tokio::test]
async fn version_prints_the_crate_version_and_exits_zero() {
    let output = output_within(waitroom(&["--version"]), EXIT_WITHIN).await;
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout).trim(),
        format!("waitroom {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn migrate_and_rebuild_print_only_their_result_unless_rust_log_asks() {
    let scratch = Scratch::new();
    for (args, result) in [
        (&["migrate"][..], "migrations applied"),
        (&["rebuild"][..], "rebuilt waiting_room: 0 events"),
    ] {
        let mut cmd = scratch.waitroom(args);
        cmd.env_remove("RUST_LOG");
        let output = output_within(cmd, EXIT_WITHIN).await;
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{args:?}: stderr: {stderr}");
        assert_eq!(stderr, "", "{args:?}: no library log lines");
        let stdout = text(&output.stdout);
        assert_eq!(stdout.lines().count(), 1, "{args:?}: one line: {stdout}");
        assert!(stdout.starts_with(result), "{args:?}: {stdout}");
    }
    // Asked for, the log lines are there.
    let mut cmd = scratch.waitroom(&["migrate"]);
    cmd.env("RUST_LOG", "info");
    let output = output_within(cmd, EXIT_WITHIN).await;
    assert!(output.status.success());
    assert!(
        text(&output.stderr).contains("\"level\":\"INFO\""),
        "RUST_LOG=info shows INFO lines: {}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn roles_started_together_on_a_database_that_does_not_exist_all_come_up() {
    // Compose and orchestrators start every role at once: each finds the database missing
    // and creates it; all but one lose that race and must carry on.
    let scratch = Scratch::new();
    let runs = (0..6).map(|_| output_within(scratch.waitroom(&["migrate"]), EXIT_WITHIN));
    for (i, output) in futures_util::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(
            output.status.success(),
            "migrate {i} of 6 started together: {:?}; stderr: {}",
            output.status,
            text(&output.stderr)
        );
    }
    let client = scratch.client().await;
    let events: bool = select_one(
        &client,
        "SELECT to_regclass('waiting_room_events') IS NOT NULL",
        &[],
    )
    .await;
    assert!(events, "the schema is there");
}

#[tokio::test]
async fn migrate_creates_the_schema_in_a_fresh_database_and_can_run_again() {
    let scratch = Scratch::new();
    for run in 1..=2 {
        let cmd = scratch.waitroom(&["migrate"]);
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
        let exists: bool =
            select_one(&client, "SELECT to_regclass($1) IS NOT NULL", &[&relation]).await;
        assert!(exists, "migrate creates {relation}");
    }
    let functions: i64 = select_one(
        &client,
        "SELECT count(DISTINCT proname) FROM pg_proc WHERE proname IN ('lag_statistics', 'slowest_events')",
        &[],
    )
    .await;
    assert_eq!(functions, 2, "diagnostic functions exist");
    let projections: i64 = select_one(
        &client,
        "SELECT count(*) FROM projections WHERE name = 'waiting_room'",
        &[],
    )
    .await;
    assert_eq!(
        projections, 1,
        "seed rows are not duplicated by a second run"
    );
}

#[tokio::test]
async fn run_serves_the_whole_pipeline_and_exits_zero_on_sigterm() {
    let scratch = Scratch::new();
    let port = crate::helpers::free_port();
    let log = std::env::temp_dir().join(format!("{}.log", scratch.suffix));
    let mut cmd = scratch.waitroom_with_broker(&["run"], &amqp_url(), &format!("127.0.0.1:{port}"));
    cmd.env("CONSOLE_ADDR", "127.0.0.1:0")
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

    let health = format!("{base}/health");
    running
        .poll(
            Instant::now(),
            Duration::from_millis(50),
            &format!("waitroom run did not answer /health within {EXIT_WITHIN:?}"),
            async |running| {
                if let Some(status) = running.child.try_wait().expect("child status") {
                    panic!(
                        "waitroom run exited early: {status}; log:\n{}",
                        running.log()
                    );
                }
                answers_ok(&http, &health).await.then_some(())
            },
        )
        .await;

    // The relay and projector run in the same process: a command reaches the read model.
    let r = http
        .post(format!("{base}/api/queues"))
        .json(&json!({"queueId": "cli-run", "name": "CLI", "maxCapacity": 3}))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201);
    let queue = format!("{base}/api/queues/cli-run");
    running
        .poll(
            Instant::now(),
            Duration::from_millis(20),
            &format!("the queue was not projected within {EXIT_WITHIN:?}"),
            async |_| answers_ok(&http, &queue).await.then_some(()),
        )
        .await;

    let pid = running.child.id();
    let stopping = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "SIGTERM sent");
    let status = running
        .poll(
            stopping,
            Duration::from_millis(50),
            &format!("waitroom run did not exit within {EXIT_WITHIN:?} of SIGTERM"),
            async |running| running.child.try_wait().expect("child status"),
        )
        .await;
    let log = running.log();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM; log:\n{log}");
    assert!(!log.contains("panicked"), "no panic; log:\n{log}");
    assert!(
        http.get(format!("{base}/health")).send().await.is_err(),
        "the port is closed after exit"
    );
}
