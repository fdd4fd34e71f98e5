//! `/metrics` after real traffic: the process, pool and database-derived gauges the alert
//! rules and dashboards read are there, `promtool check metrics` accepts the exposition
//! (OpenMetrics from the API, the classic format a relay serves on `Accept: text/plain`), and
//! relays and projectors running without the API serve the same on `METRICS_ADDR`.
//!
//! The scrape is written to `$WAITROOM_METRICS_DUMP` (default
//! `target/tmp/metrics-scrape.txt`): `scripts/check-dashboards.py` checks every dashboard and
//! alert query against it. `WAITROOM_REQUIRE_PROMTOOL=1` (set by scripts/test.sh) makes a
//! missing promtool a failure instead of a skipped check.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use waitroom::app::{Application, Roles};
use waitroom::config::ListenAddr;

use crate::helpers::TestApp;

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a sample {prefix}… in:\n{text}"))
}

fn dump_path() -> std::path::PathBuf {
    std::env::var_os("WAITROOM_METRICS_DUMP")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-scrape.txt")
        })
}

/// `promtool check metrics` on `text`: its exit code and report; None when promtool is not
/// installed.
fn promtool_check(text: &str) -> Option<(i32, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool starts: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("scrape written to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.code().unwrap_or(-1), report))
}

/// Asserts that promtool finds no problem in `text`. promtool reads the classic text format:
/// in OpenMetrics a counter family `x` is described by `# HELP x` and sampled as `x_total`,
/// which promtool reports as "x_total no help text". With `openmetrics`, exactly those
/// complaints are accepted, and only for families whose `# HELP` is in the text; the classic
/// format must pass with no complaint at all.
fn assert_promtool_accepts(text: &str, openmetrics: bool, what: &str) {
    let Some((code, report)) = promtool_check(text) else {
        if std::env::var_os("WAITROOM_REQUIRE_PROMTOOL").is_some() {
            panic!("promtool not found (apt-get install prometheus)");
        }
        eprintln!("promtool not found: `promtool check metrics` skipped for {what}");
        return;
    };
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let counter_help = l
                .strip_suffix(" no help text")
                .and_then(|name| name.strip_suffix("_total"))
                .is_some_and(|family| text.contains(&format!("# HELP {family} ")));
            !(openmetrics && counter_help)
        })
        .collect();
    assert!(
        problems.is_empty() && (code == 0 || (openmetrics && code == 3)),
        "promtool check metrics on {what}: exit {code}, problems {problems:#?}\n{text}"
    );
}

#[tokio::test]
async fn metrics_after_traffic_pass_promtool_and_carry_process_pool_and_database_gauges() {
    let app = TestApp::spawn().await;
    app.create_queue("scraped", 50).await;
    for i in 0..20 {
        let r = app.check_in("scraped", &format!("p-{i}"), "Medium").await;
        assert_eq!(r.status(), 201);
    }
    // A rejection and a 404, so HTTP metrics have more than one status.
    assert_eq!(app.check_in("scraped", "p-0", "Low").await.status(), 409);
    assert_eq!(app.get("/api/queues/nowhere").await.status(), 404);
    app.wait_all_processed(Duration::from_secs(20)).await;

    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    let path = dump_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dump directory");
    }
    std::fs::write(&path, &text).expect("scrape dumped");

    // What the alerts and the Infrastructure dashboard read.
    assert_eq!(
        sample(
            &text,
            "waitroom_events_appended_total{event_type=\"PatientCheckedIn\"}"
        ),
        20.0
    );
    assert_eq!(sample(&text, "waitroom_events_projected_total{"), 21.0);
    assert!(sample(&text, "waitroom_event_lag_seconds_count") >= 21.0);
    assert_eq!(sample(&text, "waitroom_outbox_pending "), 0.0);
    assert_eq!(sample(&text, "waitroom_relay_leader "), 1.0);
    assert_eq!(sample(&text, "waitroom_relay_leader_present "), 1.0);
    let oldest = sample(&text, "waitroom_oldest_transaction_age_seconds ");
    assert!(oldest >= 0.0, "oldest transaction age {oldest}");
    assert_eq!(
        sample(
            &text,
            "waitroom_projection_parked_streams{projection=\"waiting_room\"}"
        ),
        0.0
    );
    for pool in ["store", "projector"] {
        let max = sample(
            &text,
            &format!("waitroom_db_pool_max_connections{{pool=\"{pool}\"}}"),
        );
        let open = sample(
            &text,
            &format!("waitroom_db_pool_connections{{pool=\"{pool}\",state=\"idle\"}}"),
        ) + sample(
            &text,
            &format!("waitroom_db_pool_connections{{pool=\"{pool}\",state=\"in_use\"}}"),
        );
        assert!(
            open >= 1.0 && open <= max,
            "pool {pool}: {open} open of {max}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("waitroom_db_pool_waiting{{pool=\"{pool}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(
        sample(&text, "waitroom_db_pool_max_connections{pool=\"store\"}"),
        8.0
    );
    #[cfg(target_os = "linux")]
    {
        let fds = sample(&text, "process_open_fds ");
        let sockets = sample(&text, "waitroom_open_sockets ");
        // Listeners, pooled Postgres sessions, the relay's and projector's AMQP connections.
        assert!(
            sockets >= 5.0 && sockets < fds,
            "{sockets} sockets of {fds} fds"
        );
        assert!(sample(&text, "process_max_fds ") >= fds);
        assert!(sample(&text, "process_resident_memory_bytes ") > 1e6);
        assert!(sample(&text, "process_cpu_seconds_total ") > 0.0);
        assert!(sample(&text, "process_threads ") >= 2.0);
        assert!(sample(&text, "process_start_time_seconds ") > 1.6e9);
    }

    assert_promtool_accepts(&text, true, "the API's OpenMetrics scrape");
}

#[tokio::test]
async fn a_relay_without_the_api_serves_metrics_and_liveness_on_metrics_addr() {
    let app = TestApp::spawn().await;
    app.create_queue("standby", 5).await;
    let mut settings = app.settings.clone();
    settings.http_addr = "127.0.0.1:0".parse().expect("address");
    settings.console_addr = ListenAddr::Off;
    settings.metrics_addr = ListenAddr::At("127.0.0.1:0".parse().expect("address"));
    let relay = Application::build(settings, Roles::RELAY)
        .await
        .expect("relay builds");
    assert_eq!(relay.http_addr(), None, "no API in a relay");
    let addr = relay.metrics_addr().expect("metrics listener bound");
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(stop.clone()));

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status(), 200);
    let r = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("metrics text");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics by default:\n{text}");
    // What promtool and older scrapers ask for: the classic text format, which promtool
    // must accept without a single complaint.
    let classic = http
        .get(format!("http://{addr}/metrics"))
        .header("accept", "text/plain; version=0.0.4")
        .send()
        .await
        .expect("metrics answer");
    assert!(
        classic
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        classic.headers()
    );
    let classic = classic.text().await.expect("metrics text");
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(
        classic.contains("# TYPE waitroom_publish_failures_total counter"),
        "{classic}"
    );
    assert_promtool_accepts(&classic, false, "a relay's classic-format scrape");
    // The test app's relay leads; this one stands by, and both know a leader exists.
    assert_eq!(sample(&text, "waitroom_relay_leader "), 0.0);
    assert_eq!(sample(&text, "waitroom_relay_leader_present "), 1.0);
    assert_eq!(
        sample(&text, "waitroom_db_pool_max_connections{pool=\"store\"}"),
        8.0
    );
    assert!(
        !text.contains("pool=\"projector\""),
        "no projector pool in a relay:\n{text}"
    );
    assert_eq!(
        http.get(format!("http://{addr}/api/queues"))
            .send()
            .await
            .expect("answers")
            .status(),
        404,
        "the metrics listener serves no API"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("relay stops")
        .expect("no panic");
}
