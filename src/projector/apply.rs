//! One projector step: apply a batch of deliveries through the SQL projection functions
//! in ONE transaction (one statement), with per-(projection, stream) checkpoints.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use super::ProjectorError;

/// The statement applying a batch: `project_stream` for each distinct stream, in stream-id
/// order (a consistent lock order, so competing projectors never deadlock on checkpoints).
const APPLY: &str = "\
SELECT s.stream_id, r.applied, r.parked, coalesce(r.error, c.last_error), r.lag_ms, r.error IS NOT NULL
  FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS s(stream_id, up_to, ord)
 CROSS JOIN LATERAL project_stream($3, s.stream_id, s.up_to) r
  LEFT JOIN projection_checkpoints c ON c.projection = $3 AND c.stream_id = s.stream_id
 ORDER BY s.ord";

/// A stream whose projection function failed; it is parked until a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub stream_id: String,
    /// The projection function's error; for a stream parked earlier, its stored error.
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
    /// End-to-end lag (ms) of the events this batch marked PROCESSED.
    pub lag_ms: Vec<f64>,
}

/// Applies everything up to each stream's highest delivered version. Duplicates are no-ops,
/// gaps are read from the event store, failures park the stream. Commits before returning,
/// so the caller may ack every delivery of the batch.
pub async fn apply_batch(
    pool: &Pool,
    projection: &str,
    deliveries: &[(String, i32)],
) -> Result<ApplyOutcome, ProjectorError> {
    let mut highest: BTreeMap<&str, i32> = BTreeMap::new();
    for (stream, version) in deliveries {
        let v = highest.entry(stream.as_str()).or_insert(*version);
        *v = (*v).max(*version);
    }
    let streams: Vec<&str> = highest.keys().copied().collect();
    let versions: Vec<i32> = highest.values().copied().collect();
    let client = pool.get().await?;
    // A single statement is a single transaction: all streams commit or none do.
    let rows = client
        .query(APPLY, &[&streams, &versions, &projection])
        .await?;
    let mut outcome = ApplyOutcome::default();
    for row in rows {
        let applied: i32 = row.get(1);
        outcome.applied += u64::try_from(applied).unwrap_or(0);
        if row.get::<_, bool>(2) {
            outcome.parked.push(Parked {
                stream_id: row.get(0),
                error: row.get::<_, Option<String>>(3).unwrap_or_default(),
                newly: row.get(5),
            });
        }
        outcome.lag_ms.extend(row.get::<_, Vec<f64>>(4));
    }
    Ok(outcome)
}
