//! Lag queries: statistics over a window, the slowest events, one event's lifecycle and the
//! outbox backlog. The SQL lives in `sql/` as `lag_statistics`, `slowest_events` and
//! `outbox_pending`, so psql users see exactly what the API reports.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::store::DbError;

/// End-to-end lag statistics (ms) of processed events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LagStats {
    pub count: i64,
    pub min_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub events_per_second: f64,
}

/// Overall statistics and one entry per event type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LagReport {
    pub overall: LagStats,
    pub by_event: Vec<(String, LagStats)>,
}

fn stats(r: &Row) -> LagStats {
    LagStats {
        count: r.get(1),
        min_ms: r.get(2),
        avg_ms: r.get(3),
        p50_ms: r.get(4),
        p95_ms: r.get(5),
        p99_ms: r.get(6),
        max_ms: r.get(7),
        events_per_second: r.get(8),
    }
}

fn report(rows: &[Row]) -> LagReport {
    let mut report = LagReport::default();
    for r in rows {
        match r.get::<_, Option<String>>(0) {
            None => report.overall = stats(r),
            Some(event_type) => report.by_event.push((event_type, stats(r))),
        }
    }
    report
}

/// Statistics over events created in the last `window_seconds`.
pub async fn statistics(pool: &Pool, window_seconds: f64) -> Result<LagReport, DbError> {
    statistics_query(
        pool,
        "SELECT * FROM lag_statistics(make_interval(secs => $1))",
        &window_seconds,
    )
    .await
}

/// Statistics over events created within `window`, in Postgres interval syntax
/// (`15 minutes`, `1 hour`); Postgres rejects a malformed one (SQLSTATE 22007).
pub async fn statistics_over(pool: &Pool, window: &str) -> Result<LagReport, DbError> {
    statistics_query(
        pool,
        "SELECT * FROM lag_statistics($1::text::interval)",
        &window,
    )
    .await
}

/// `lag_statistics` over the window `sql` makes of `window`.
async fn statistics_query(
    pool: &Pool,
    sql: &str,
    window: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<LagReport, DbError> {
    let client = pool.get().await?;
    let rows = client.query(sql, &[window]).await?;
    Ok(report(&rows))
}

/// One event's way through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub version: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
    pub outbox_dispatch_ms: Option<f64>,
    pub projection_processing_ms: Option<f64>,
    pub total_lag_ms: Option<f64>,
    pub failure_reason: Option<String>,
}

const LIFECYCLE_COLUMNS: &str = "event_id, event_type, stream_id, version, status, event_created_at, \
     event_published_at, projection_processed_at, outbox_dispatch_duration_ms, \
     projection_processing_duration_ms, total_lag_ms";

fn lifecycle(r: &Row, failure_reason: Option<String>) -> Lifecycle {
    Lifecycle {
        event_id: r.get(0),
        event_type: r.get(1),
        stream_id: r.get(2),
        version: r.get(3),
        status: r.get(4),
        created_at: r.get(5),
        published_at: r.get(6),
        processed_at: r.get(7),
        outbox_dispatch_ms: r.get(8),
        projection_processing_ms: r.get(9),
        total_lag_ms: r.get(10),
        failure_reason,
    }
}

/// The `limit` events with the largest end-to-end lag, slowest first.
pub async fn slowest(pool: &Pool, limit: i32) -> Result<Vec<Lifecycle>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT {LIFECYCLE_COLUMNS} FROM slowest_events($1)"),
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| lifecycle(r, None)).collect())
}

/// One event's lifecycle, or `None` when no such event exists.
pub async fn event(pool: &Pool, event_id: Uuid) -> Result<Option<Lifecycle>, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {LIFECYCLE_COLUMNS}, failure_reason FROM event_processing_lag WHERE event_id = $1"),
            &[&event_id],
        )
        .await?;
    Ok(row.map(|r| {
        let reason = r.get(11);
        lifecycle(&r, reason)
    }))
}

/// The outbox backlog.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutboxBacklog {
    pub count: i64,
    pub oldest_age_ms: Option<f64>,
    pub failed: i64,
}

/// Reads `outbox_pending`.
pub async fn outbox_backlog(pool: &Pool) -> Result<OutboxBacklog, DbError> {
    let client = pool.get().await?;
    let r = client
        .query_one(
            "SELECT pending, oldest_age_ms, failed FROM outbox_pending",
            &[],
        )
        .await?;
    Ok(OutboxBacklog {
        count: r.get(0),
        oldest_age_ms: r.get(1),
        failed: r.get(2),
    })
}

/// The most recent publish refusal still on record: its error and when it happened.
pub async fn last_refusal(pool: &Pool) -> Result<Option<(String, DateTime<Utc>)>, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT last_error, updated_at FROM waiting_room_outbox_failures \
             WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
