//! Idempotency-Key retention (`IDEMPOTENCY_TTL`): an expired key is not honoured even before
//! it is deleted, and the API's job deletes expired records, batch by batch, keeping fresh ones.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use waitroom::app::Roles;
use waitroom::config::Ttl;
use waitroom::store::retention;

use crate::api_support::{check_in_body, post_with_headers, status_and_body};
use crate::cli::{EXIT_WITHIN, assert_one_line_error, output_within, waitroom};
use crate::helpers::{TestApp, isolated_settings, wait_until};

async fn call_next(app: &TestApp, key: &str) -> (u16, Value) {
    let payload = json!({"consultingRoom": "Room 1"});
    status_and_body(
        post_with_headers(
            app,
            "/api/queues/ttl/call-next",
            &[("Idempotency-Key", key)],
            Some(&payload),
        )
        .await,
    )
    .await
}

async fn called_events(app: &TestApp) -> i64 {
    app.scalar("SELECT count(*) FROM waiting_room_events WHERE event_type = 'PatientCalled'")
        .await
}

/// `n` records created `age` ago (keys `prefix-0` …), written as the store would.
async fn insert_records(app: &TestApp, prefix: &str, n: i64, age: &str) {
    let client = app.pool.get().await.expect("pool connection");
    client
        .execute(
            "INSERT INTO idempotency_keys (idempotency_key, request, stream_id, response, created_at) \
             SELECT $1 || '-' || i, '{}', 'ttl', '{\"response\": {}}', clock_timestamp() - $3::text::interval \
               FROM generate_series(0, $2::int8 - 1) i",
            &[&prefix, &n, &age],
        )
        .await
        .expect("records are inserted");
}

async fn records(app: &TestApp, prefix: &str) -> i64 {
    let client = app.pool.get().await.expect("pool connection");
    client
        .query_one(
            "SELECT count(*) FROM idempotency_keys WHERE idempotency_key LIKE $1 || '-%'",
            &[&prefix],
        )
        .await
        .expect("query runs")
        .get(0)
}

#[tokio::test]
async fn a_key_retried_after_its_ttl_is_a_new_request_even_before_the_job_deletes_it() {
    // The default TTL (24 h): the retention job ran once at start and next runs in five
    // minutes, so the record below is still there when the key comes back.
    let app = TestApp::spawn().await;
    app.create_queue("ttl", 10).await;
    for p in ["p1", "p2"] {
        let r = app
            .post("/api/queues/ttl/check-ins", check_in_body(p, "Medium"))
            .await;
        assert_eq!(r.status(), 201);
    }
    let first = call_next(&app, "call-once").await;
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["patientId"], "p1");
    assert_eq!(
        call_next(&app, "call-once").await,
        first,
        "within the TTL: the first response"
    );
    assert_eq!(called_events(&app).await, 1, "a replay appends nothing");

    // A day and an hour later, as far as the record is concerned.
    let client = app.pool.get().await.expect("pool connection");
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' \
              WHERE idempotency_key = 'call-once'",
            &[],
        )
        .await
        .expect("the record ages");
    let after = call_next(&app, "call-once").await;
    assert_eq!(after.0, 200, "{after:?}");
    assert_eq!(after.1["patientId"], "p2", "decided anew: the next patient");
    assert_eq!(called_events(&app).await, 2, "the retry appended");
    // The key now stands for the new request, for a new TTL.
    assert_eq!(call_next(&app, "call-once").await, after);
    assert_eq!(called_events(&app).await, 2);
}

#[tokio::test]
async fn purging_deletes_expired_records_in_batches_and_keeps_fresh_ones() {
    let app = TestApp::spawn().await;
    let expired = retention::BATCH * 2 + 500;
    insert_records(&app, "old", expired, "25 hours").await;
    insert_records(&app, "fresh", 20, "23 hours").await;

    // One batch deletes at most BATCH records.
    let one = retention::purge_batch(&app.pool, retention::DEFAULT_TTL, retention::BATCH)
        .await
        .expect("a batch runs");
    assert_eq!(one, retention::BATCH as u64);
    let rest =
        retention::purge_expired(&app.pool, retention::DEFAULT_TTL, &CancellationToken::new())
            .await
            .expect("the purge runs");
    assert_eq!(one + rest, expired as u64, "every expired record, once");
    assert_eq!(records(&app, "old").await, 0);
    assert_eq!(records(&app, "fresh").await, 20, "fresh records stay");

    // The batch's range is an index condition, not a filter over the whole table.
    let client = app.pool.get().await.expect("pool connection");
    client
        .batch_execute("ANALYZE idempotency_keys")
        .await
        .expect("analyze");
    let explain = format!(
        "EXPLAIN {}",
        retention::PURGE_BATCH
            .replace("$1", "86400")
            .replace("$2", "1000")
    );
    let plan: Vec<String> = client
        .query(&explain, &[])
        .await
        .expect("explain runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("idempotency_keys_created") && plan.contains("Index Cond: (created_at <"),
        "the purge reads the created_at index:\n{plan}"
    );
    let lookup: Vec<String> = client
        .query(
            "EXPLAIN SELECT request, response FROM idempotency_keys WHERE idempotency_key = 'k'",
            &[],
        )
        .await
        .expect("explain runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        lookup.join("\n").contains("idempotency_keys_pkey"),
        "a key is found through the primary key: {lookup:?}"
    );
}

#[tokio::test]
async fn the_api_role_deletes_expired_records_in_the_background_and_counts_them() {
    let mut settings = isolated_settings();
    // The job runs once per TTL when the TTL is under five minutes.
    settings.idempotency_ttl = Ttl::new(Duration::from_secs(1));
    let app = TestApp::spawn_with(settings, Roles::API).await;
    insert_records(&app, "bg", 30, "1 hour").await;
    wait_until(
        Duration::from_secs(20),
        "the job deletes the expired records",
        || async { records(&app, "bg").await == 0 },
    )
    .await;
    let metrics = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    let removed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("waitroom_idempotency_keys_expired_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the counter is exported:\n{metrics}"));
    assert!(removed >= 30.0, "counted {removed} of 30");
}

#[tokio::test]
async fn an_invalid_idempotency_ttl_is_one_error_line_and_exit_code_2() {
    for bad in ["soon", "0s", "-5m"] {
        let mut cmd = waitroom(&["serve"]);
        cmd.env("IDEMPOTENCY_TTL", bad);
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, &format!("IDEMPOTENCY_TTL={bad}"));
        assert!(line.contains(bad), "names the bad value: {line}");
    }
}
