//! The measurement, in SQL on the target's database. The measured events are those with a
//! global position in (start, end], the maximum positions at the start and the end of the
//! measured window. End-to-end lag is judged the strict way:
//!
//! ```text
//! pg_xact_commit_timestamp(facts.xmin) - pg_xact_commit_timestamp(event.xmin)
//! ```
//!
//! the commit of the event's row to the commit of the transaction that wrote the lag-facts
//! row, which the projector writes in the same transaction as the read model. Without
//! `track_commit_timestamp` it falls back to the facts' in-transaction clock (`total_lag_ms`).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use super::BenchError;
use crate::store::DbConfig;

/// The lag facts: one row per projected event, inserted by the projecting transaction.
pub const LAG_FACTS: &str = "event_lag_facts";
/// How often the drain is polled.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Where the e2e lag figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagSource {
    /// Commit timestamps of the event's and the projection's transactions.
    CommitTimestamps,
    /// The facts table's `total_lag_ms` (clock inside the transactions, not commit times).
    LagTableClock,
}

/// p50, p90, p99, p99.9 and max, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// p50 and p99, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Split {
    pub p50: f64,
    pub p99: f64,
}

/// E2E lag of one event type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeLag {
    pub event_type: String,
    pub count: i64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// The database's verdict on the measured events.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// Where `e2e` comes from.
    pub source: LagSource,
    /// Events appended in (start, end].
    pub events: i64,
    /// Of those, projected (facts `PROCESSED`) and with a lag figure.
    pub measured: i64,
    /// Of those, marked `FAILED` (their streams are parked).
    pub failed: i64,
    /// E2E lag percentiles (`source`).
    pub e2e: Option<Percentiles>,
    /// The facts' in-transaction clock lag (`total_lag_ms`), for comparison.
    pub clock: Option<Percentiles>,
    /// `outbox_dispatch_duration_ms`.
    pub outbox_dispatch: Option<Split>,
    /// `projection_processing_duration_ms`.
    pub projection_processing: Option<Split>,
    /// E2E lag by event type.
    pub by_type: Vec<TypeLag>,
}

/// How the measured events reached the read model after the load stopped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Drain {
    /// Every measured event was projected (or failed) before the timeout.
    pub completed: bool,
    /// Load end → the last measured event projected (or the timeout).
    pub time_ms: f64,
    /// Measured events not yet projected when it gave up (0 when completed).
    pub left: i64,
}

/// One connection on the target's database.
pub struct Measurer {
    client: Client,
    source: LagSource,
}

impl Measurer {
    /// Connects, checks that it is a waitroom database (V8 or later), and picks the lag source.
    pub async fn connect(db: &DbConfig) -> Result<Self, BenchError> {
        let client = db
            .connect()
            .await
            .map_err(|e| crate::store::ConnectError::Unreachable {
                target: db.target(),
                reason: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
            })?;
        let row = client
            .query_one(
                "SELECT to_regclass('waiting_room_events') IS NOT NULL \
                        AND to_regclass($1) IS NOT NULL, \
                        current_setting('track_commit_timestamp') = 'on'",
                &[&LAG_FACTS],
            )
            .await
            .map_err(BenchError::query("inspect the database"))?;
        if !row.get::<_, bool>(0) {
            return Err(BenchError::NotWaitroom {
                target: db.target(),
            });
        }
        let source = if row.get(1) {
            LagSource::CommitTimestamps
        } else {
            LagSource::LagTableClock
        };
        Ok(Self { client, source })
    }

    /// Where the lag figures will come from.
    pub fn source(&self) -> LagSource {
        self.source
    }

    /// Waits until every queue in `queues` is in the read model.
    pub async fn wait_queues_visible(
        &self,
        queues: &[String],
        within: Duration,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + within;
        loop {
            let seen: i64 = self
                .client
                .query_one(
                    "SELECT count(*) FROM waiting_queue_view WHERE queue_id = ANY($1)",
                    &[&queues],
                )
                .await
                .map_err(BenchError::query("count the created queues"))?
                .get(0);
            if seen >= queues.len() as i64 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::QueuesNotProjected(within));
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// The highest global position appended so far.
    pub async fn position(&self) -> Result<i64, BenchError> {
        Ok(self
            .client
            .query_one(
                "SELECT coalesce(max(global_position), 0) FROM waiting_room_events",
                &[],
            )
            .await
            .map_err(BenchError::query("read the last global position"))?
            .get(0))
    }

    /// Polls until every event in (start, end] is projected (or failed) or `timeout` passed, timing from
    /// `load_end`. Call it once no request is in flight: a command still running could add
    /// an event to the range after a poll said it was done.
    pub async fn drain(
        &self,
        start: i64,
        end: i64,
        load_end: Instant,
        timeout: Duration,
    ) -> Result<Drain, BenchError> {
        let sql = format!(
            "SELECT count(*) FROM waiting_room_events e \
              WHERE e.global_position > $1 AND e.global_position <= $2 \
                AND NOT EXISTS (SELECT 1 FROM {} f WHERE f.event_id = e.event_id \
                                   AND f.status IN ('PROCESSED', 'FAILED'))",
            LAG_FACTS
        );
        let statement = self
            .client
            .prepare(&sql)
            .await
            .map_err(BenchError::query("prepare the drain check"))?;
        loop {
            let left: i64 = self
                .client
                .query_one(&statement, &[&start, &end])
                .await
                .map_err(BenchError::query("count unprojected events"))?
                .get(0);
            let elapsed = load_end.elapsed();
            if left == 0 || elapsed >= timeout {
                return Ok(Drain {
                    completed: left == 0,
                    time_ms: elapsed.as_secs_f64() * 1000.0,
                    left,
                });
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Lag percentiles, stage split and per-type figures of the events in (start, end].
    pub async fn lag(&self, start: i64, end: i64) -> Result<Lag, BenchError> {
        let counts = self
            .client
            .query_one(&counts_sql(LAG_FACTS), &[&start, &end])
            .await
            .map_err(BenchError::query("count the measured events"))?;
        let rows = self
            .client
            .query(&lag_sql(LAG_FACTS, self.source), &[&start, &end])
            .await
            .map_err(BenchError::query("compute the lag percentiles"))?;
        let mut lag = Lag {
            source: self.source,
            events: counts.get(0),
            failed: counts.get(1),
            measured: 0,
            e2e: None,
            clock: None,
            outbox_dispatch: None,
            projection_processing: None,
            by_type: Vec::new(),
        };
        for row in rows {
            let event_type: Option<String> = row.get("event_type");
            let e2e = percentiles(row.get("e2e"), row.get("e2e_max"));
            match event_type {
                None => {
                    lag.measured = row.get("n");
                    lag.e2e = e2e;
                    lag.clock = percentiles(row.get("clock"), row.get("clock_max"));
                    lag.outbox_dispatch = split(row.get("dispatch"));
                    lag.projection_processing = split(row.get("projection"));
                }
                Some(event_type) => lag.by_type.push(TypeLag {
                    event_type,
                    count: row.get("n"),
                    p50: e2e.map(|p| p.p50),
                    p99: e2e.map(|p| p.p99),
                }),
            }
        }
        Ok(lag)
    }
}

fn counts_sql(table: &str) -> String {
    format!(
        "SELECT count(*), count(*) FILTER (WHERE f.status = 'FAILED') \
           FROM waiting_room_events e LEFT JOIN {table} f ON f.event_id = e.event_id \
          WHERE e.global_position > $1 AND e.global_position <= $2"
    )
}

/// One row for all types (`event_type` NULL), then one per type.
fn lag_sql(table: &str, source: LagSource) -> String {
    let e2e = match source {
        LagSource::CommitTimestamps => {
            "(extract(epoch FROM pg_xact_commit_timestamp(f.xmin) \
                                - pg_xact_commit_timestamp(e.xmin)) * 1000)::float8"
        }
        LagSource::LagTableClock => "f.total_lag_ms",
    };
    format!(
        "WITH x AS (
            SELECT e.event_type, {e2e} AS e2e, f.total_lag_ms AS clock,
                   f.outbox_dispatch_duration_ms AS dispatch,
                   f.projection_processing_duration_ms AS projection
              FROM waiting_room_events e JOIN {table} f ON f.event_id = e.event_id
             WHERE e.global_position > $1 AND e.global_position <= $2
               AND f.status = 'PROCESSED')
         SELECT event_type, count(e2e) AS n,
                percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY e2e) AS e2e,
                max(e2e) AS e2e_max,
                percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY clock) AS clock,
                max(clock) AS clock_max,
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY dispatch) AS dispatch,
                percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY projection) AS projection
           FROM x GROUP BY GROUPING SETS ((), (event_type))
          ORDER BY event_type NULLS FIRST"
    )
}

fn percentiles(quantiles: Option<Vec<f64>>, max: Option<f64>) -> Option<Percentiles> {
    match (quantiles.as_deref(), max) {
        (Some(&[p50, p90, p99, p999]), Some(max)) => Some(Percentiles {
            p50,
            p90,
            p99,
            p999,
            max,
        }),
        _ => None,
    }
}

fn split(quantiles: Option<Vec<f64>>) -> Option<Split> {
    match quantiles.as_deref() {
        Some(&[p50, p99]) => Some(Split { p50, p99 }),
        _ => None,
    }
}
