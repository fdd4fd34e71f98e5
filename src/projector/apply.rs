//! One projector step: apply a batch of deliveries in ONE statement (one transaction) through
//! `project_batch` in `sql/functions/projection.sql`, which locks the streams' checkpoints,
//! reads each stream's missing events from the store and hands them all to the projection's
//! set-based apply function. Why checkpoints give exactly-once effects:
//! docs/adr/0003-exactly-once-effects-through-checkpoints.md; why a failing stream is parked:
//! docs/adr/0005-parking-poison-streams.md.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::ProjectorError;

const APPLY: &str = "SELECT stream_id, applied, parked, error, newly_parked, lag_ms \
     FROM project_batch($1, $2, $3, $4, $5, $6)";

/// What a delivery says: stream `stream_id` has events up to `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub stream_id: String,
    pub version: i32,
    /// The event's global position, to match `dispatched_at` to it.
    pub global_position: Option<i64>,
    /// When the relay claimed the event for publishing (Postgres clock), if the message says.
    pub dispatched_at: Option<DateTime<Utc>>,
}

impl Delivered {
    /// A delivery of `stream_id` up to `version` with no relay timing.
    pub fn new(stream_id: impl Into<String>, version: i32) -> Self {
        Self {
            stream_id: stream_id.into(),
            version,
            global_position: None,
            dispatched_at: None,
        }
    }
}

/// A stream whose projection function failed; it is parked until a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub stream_id: String,
    /// The projection function's error (for a stream parked earlier, its stored error).
    pub error: String,
    /// Parked by this batch (not earlier).
    pub newly: bool,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// Events applied (including gap catch-up from the store).
    pub applied: u64,
    /// Streams that were parked (now or before).
    pub parked: Vec<Parked>,
    /// End-to-end lag (ms) of the events this batch projected.
    pub lag_ms: Vec<f64>,
}

/// Applies everything up to each stream's highest delivered version (`None`: the stream's
/// end). Duplicates are no-ops, gaps are read from the event store, failures park the
/// stream. Commits before returning, so the caller may ack every delivery of the batch.
pub async fn apply_batch(
    pool: &Pool,
    projection: &str,
    deliveries: &[Delivered],
) -> Result<ApplyOutcome, ProjectorError> {
    let streams: Vec<&str> = deliveries.iter().map(|d| d.stream_id.as_str()).collect();
    let versions: Vec<Option<i32>> = deliveries.iter().map(|d| Some(d.version)).collect();
    let (positions, dispatched): (Vec<i64>, Vec<DateTime<Utc>>) = deliveries
        .iter()
        .filter_map(|d| Some((d.global_position?, d.dispatched_at?)))
        .unzip();
    let client = pool.get().await?;
    let rows = project(
        &client,
        false,
        projection,
        &streams,
        &versions,
        &positions,
        &dispatched,
    )
    .await?;
    Ok(outcome(&rows))
}

/// Calls `project_batch`; when the projection function failed in a way it did not foresee
/// (a payload it cannot cast, a constraint), calls it again in isolation, so that exactly
/// the failing stream is parked. `in_transaction`: the client is inside a transaction, so
/// the first call runs under a savepoint that is rolled back before the second.
pub(crate) async fn project<C: deadpool_postgres::GenericClient>(
    client: &C,
    in_transaction: bool,
    projection: &str,
    streams: &[&str],
    versions: &[Option<i32>],
    positions: &[i64],
    dispatched: &[DateTime<Utc>],
) -> Result<Vec<tokio_postgres::Row>, ProjectorError> {
    let statement = client.prepare_cached(APPLY).await?;
    if in_transaction {
        client.batch_execute("SAVEPOINT project_batch").await?;
    }
    let fast = client
        .query(
            &statement,
            &[
                &projection,
                &streams,
                &versions,
                &positions,
                &dispatched,
                &false,
            ],
        )
        .await;
    if in_transaction {
        let end = if fast.is_ok() {
            "RELEASE"
        } else {
            "ROLLBACK TO"
        };
        client
            .batch_execute(&format!("{end} SAVEPOINT project_batch"))
            .await?;
    }
    match fast {
        Ok(rows) => Ok(rows),
        Err(e) if is_poison(&e) => {
            tracing::warn!(error = %crate::store::describe(&e), "projector: batch failed; applying stream by stream");
            Ok(client
                .query(
                    &statement,
                    &[
                        &projection,
                        &streams,
                        &versions,
                        &positions,
                        &dispatched,
                        &true,
                    ],
                )
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the error came from the data (retrying in isolation finds which stream), not from
/// a conflict, a cancellation or the connection (which a retry of the same batch may cure).
fn is_poison(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.as_db_error().is_some_and(|db| {
        ![
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
        ]
        .contains(db.code())
    })
}

/// Brings every stream up to the store's end (streams whose checkpoint trails it, e.g. after
/// a Postgres crash lost the last asynchronous projection commits, or events whose messages
/// never arrived), in batches of `chunk` streams. Returns what was applied.
pub async fn catch_up(
    pool: &Pool,
    projection: &str,
    chunk: usize,
) -> Result<ApplyOutcome, ProjectorError> {
    let client = pool.get().await?;
    let behind: Vec<String> = client
        .query("SELECT stream_id FROM streams_behind($1)", &[&projection])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut total = ApplyOutcome::default();
    for streams in behind.chunks(chunk.max(1)) {
        let streams: Vec<&str> = streams.iter().map(String::as_str).collect();
        let to_the_end: Vec<Option<i32>> = vec![None; streams.len()];
        let rows = project(&client, false, projection, &streams, &to_the_end, &[], &[]).await?;
        let done = outcome(&rows);
        total.applied += done.applied;
        total.parked.extend(done.parked);
        total.lag_ms.extend(done.lag_ms);
    }
    Ok(total)
}

fn outcome(rows: &[tokio_postgres::Row]) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    for row in rows {
        let applied: i32 = row.get(1);
        outcome.applied += u64::try_from(applied).unwrap_or(0);
        if row.get::<_, bool>(2) {
            outcome.parked.push(Parked {
                stream_id: row.get(0),
                error: row.get::<_, Option<String>>(3).unwrap_or_default(),
                newly: row.get(4),
            });
        }
        outcome
            .lag_ms
            .extend(row.get::<_, Vec<Option<f64>>>(5).into_iter().flatten());
    }
    outcome
}
