//! Lag statistics over many events, slowest events, and the SQL diagnostics psql users run.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;

use crate::helpers::{TestApp, body};

async fn many_events(app: &TestApp, queues: usize, per_queue: usize) -> usize {
    for q in 0..queues {
        app.create_queue(&format!("lag-{q}"), 1000).await;
    }
    let statuses: Vec<u16> = stream::iter(0..queues * per_queue)
        .map(|i| async move {
            app.check_in(
                &format!("lag-{}", i % queues),
                &format!("p{i}"),
                ["Low", "High"][i % 2],
            )
            .await
            .status()
            .as_u16()
        })
        .buffer_unordered(6)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201));
    for q in 0..queues {
        let r = app
            .post(
                &format!("/api/queues/lag-{q}/call-next"),
                serde_json::json!({"consultingRoom": "R1"}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    app.wait_all_processed(Duration::from_secs(30)).await;
    queues + queues * per_queue + queues
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_statistics_over_many_events_are_ordered_and_counted_right() {
    let app = TestApp::spawn().await;
    let total = many_events(&app, 4, 30).await;

    let window = 600.0;
    let stats = body(
        app.get(&format!("/api/metrics/lag?windowSeconds={window}"))
            .await,
    )
    .await;
    let overall = &stats["overall"];
    assert_eq!(overall["count"], total as i64);
    let (min, p50, p95, p99, max, avg) = (
        f(overall, "minMs"),
        f(overall, "p50Ms"),
        f(overall, "p95Ms"),
        f(overall, "p99Ms"),
        f(overall, "maxMs"),
        f(overall, "avgMs"),
    );
    assert!(
        min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
        "{overall}"
    );
    assert!(min <= avg && avg <= max);
    assert!(min > 0.0);
    assert!((f(overall, "eventsPerSecond") - total as f64 / window).abs() < 1e-9);

    let by_event = stats["byEvent"].as_array().unwrap();
    let count = |t: &str| {
        by_event
            .iter()
            .find(|e| e["eventType"] == t)
            .map(|e| e["count"].as_i64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(count("WaitingQueueCreated"), 4);
    assert_eq!(count("PatientCheckedIn"), 120);
    assert_eq!(count("PatientCalled"), 4);
    assert_eq!(
        by_event
            .iter()
            .map(|e| e["count"].as_i64().unwrap())
            .sum::<i64>(),
        total as i64
    );
    for e in by_event {
        assert!(f(e, "minMs") <= f(e, "p50Ms") && f(e, "p95Ms") <= f(e, "maxMs"));
        assert!(f(e, "maxMs") <= max);
    }

    // The same numbers from psql's function.
    let sql_count: i64 = app
        .scalar("SELECT event_count FROM lag_statistics(interval '10 minutes') WHERE event_type IS NULL")
        .await;
    assert_eq!(sql_count, total as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowest_events_come_slowest_first_and_honour_the_limit() {
    let app = TestApp::spawn().await;
    many_events(&app, 2, 10).await;

    let slowest = body(app.get("/api/metrics/lag/slowest?limit=5").await).await;
    let rows = slowest.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let lags: Vec<f64> = rows.iter().map(|r| f(r, "totalLagMs")).collect();
    assert!(lags.windows(2).all(|w| w[0] >= w[1]), "{lags:?}");
    let max: f64 = app
        .scalar("SELECT max(total_lag_ms) FROM event_processing_lag")
        .await;
    assert_eq!(lags[0], max);
    for r in rows {
        assert_eq!(r["status"], "PROCESSED");
        assert!(
            (f(r, "outboxDispatchMs") + f(r, "projectionProcessingMs") - f(r, "totalLagMs")).abs()
                < 0.01
        );
    }

    let all = body(app.get("/api/metrics/lag/slowest?limit=1000").await).await;
    assert_eq!(all.as_array().unwrap().len(), 2 + 20 + 2);
    let sql: i64 = app.scalar("SELECT count(*) FROM slowest_events(3)").await;
    assert_eq!(sql, 3);
}

#[tokio::test]
async fn outbox_pending_reports_the_backlog_while_no_relay_runs() {
    let app = TestApp::spawn_with(
        crate::helpers::isolated_settings(),
        waitroom::app::Roles::API,
    )
    .await;
    app.create_queue("q", 5).await;
    assert_eq!(app.check_in("q", "p", "Low").await.status(), 201);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pending = body(app.get("/api/outbox/pending").await).await;
    assert_eq!(pending["count"], 2);
    assert_eq!(pending["failed"], 0);
    assert!(f(&pending, "oldestAgeMs") >= 50.0);
    let sql: i64 = app.scalar("SELECT pending FROM outbox_pending").await;
    assert_eq!(sql, 2);
    let lag = body(app.get("/api/metrics/lag/slowest").await).await;
    assert_eq!(
        lag.as_array().unwrap().len(),
        0,
        "unprocessed events have no total lag yet"
    );
}
