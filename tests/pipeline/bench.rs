//! `waitroom bench` run as a binary in its in-process mode (its own fresh database and broker
//! names, removed afterwards): the JSON report holds real, plausible figures.

use std::time::Duration;

use serde_json::Value;

use crate::cli::{EXIT_WITHIN, Scratch, assert_one_line_error, output_within, text};
use crate::helpers::amqp_url;

/// Setup, two seconds of load, drain, floor and teardown.
const BENCH_WITHIN: Duration = Duration::from_secs(60);

/// Runs `waitroom bench <args> --json` and returns its report.
async fn bench(args: &[&str]) -> Value {
    let scratch = Scratch::new();
    let mut cmd = scratch.waitroom(&[&["bench", "--json"], args].concat());
    cmd.env("AMQP_URL", amqp_url());
    let output = output_within(cmd, BENCH_WITHIN).await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "bench succeeds; stderr: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON document ({e}): {}",
            text(&output.stdout)
        )
    })
}

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is a number in {report:#}"))
}

#[tokio::test]
async fn a_closed_loop_bench_reports_commands_events_and_commit_time_lag_without_errors() {
    let report = bench(&[
        "--duration",
        "2",
        "--warmup",
        "0",
        "--queues",
        "3",
        "--connections",
        "4",
    ])
    .await;
    assert_eq!(report["mode"], "closed", "{report:#}");
    assert!(number(&report, "/commands") > 0.0, "{report:#}");
    assert!(number(&report, "/events") > 0.0, "{report:#}");
    assert_eq!(number(&report, "/errors"), 0.0, "{report:#}");
    assert_eq!(report["drain"]["completed"], true, "{report:#}");
    assert_eq!(report["lag_source"], "commit_timestamps", "{report:#}");
    let p50 = number(&report, "/e2e_lag_ms/p50");
    assert!(p50 > 0.0 && p50 < 1000.0, "e2e p50 {p50} ms: {report:#}");
    assert!(
        number(&report, "/e2e_lag_events") >= number(&report, "/events"),
        "every measured event has a lag figure: {report:#}"
    );
    assert!(
        number(&report, "/command_latency_ms/p50") > 0.0,
        "{report:#}"
    );
    // The in-process target exports process_resident_memory_bytes on /metrics.
    assert!(number(&report, "/peak_rss_bytes") > 0.0, "{report:#}");
}

#[tokio::test]
async fn an_open_loop_bench_with_compare_floor_measures_the_floor() {
    let report = bench(&[
        "--duration",
        "2",
        "--warmup",
        "0",
        "--queues",
        "3",
        "--rate",
        "50",
        "--compare-floor",
    ])
    .await;
    assert_eq!(report["mode"], "open", "{report:#}");
    assert_eq!(number(&report, "/rate"), 50.0, "{report:#}");
    assert!(number(&report, "/commands") > 0.0, "{report:#}");
    assert_eq!(number(&report, "/errors"), 0.0, "{report:#}");
    assert_eq!(report["drain"]["completed"], true, "{report:#}");
    assert!(number(&report, "/floor/p50_ms") > 0.0, "{report:#}");
    assert!(
        number(&report, "/floor/p99_ms") >= number(&report, "/floor/p50_ms"),
        "{report:#}"
    );
    assert!(number(&report, "/lag_to_floor_ratio") > 0.0, "{report:#}");
}

#[tokio::test]
async fn a_bad_bench_option_is_one_error_line_and_exit_code_2() {
    for args in [
        &["bench", "--rate", "0"][..],
        &["bench", "--workload", "nope"],
        &["bench", "--url", "ftp://example"],
        &["bench", "--max-in-flight", "5"],
    ] {
        let output = output_within(crate::cli::waitroom(args), EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, &format!("{args:?}"));
        assert!(
            ["--rate", "--workload", "--url"]
                .iter()
                .any(|flag| line.contains(flag)),
            "names the option at fault: {line}"
        );
    }
}
