//! Rebuilding a projection: empty its read models and checkpoints and replay the event
//! store through the same set-based SQL functions, in ONE transaction, a slice of the store
//! (by global position) per statement. Readers keep seeing the old rows until it commits;
//! live projectors wait on the projection's advisory lock and then find every event
//! already applied.

use deadpool_postgres::Pool;

use super::ProjectorError;

const TRY_REBUILD_LOCK: &str =
    "SELECT pg_try_advisory_xact_lock(hashtext('waitroom.rebuild'), hashtext($1))";
const PROJECTION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('waitroom.projection'), hashtext($1))";
const EXTENT: &str = "SELECT coalesce(min(global_position), 1), coalesce(max(global_position), 0), count(*) \
     FROM waiting_room_events";
/// Each stream's highest version within a slice of the store: events are appended in
/// version order, so replaying slices in position order replays every stream in order.
const SLICE: &str = "SELECT stream_id, max(version), count(*) FROM waiting_room_events \
     WHERE global_position >= $1 AND global_position < $2 GROUP BY stream_id";
const RUNNING: &str = "SELECT advisory_lock_held(hashtext('waitroom.rebuild'), hashtext($1))";

/// Global positions replayed per statement (one progress step).
const SLICE_POSITIONS: i64 = 10_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub streams: u64,
    pub events: u64,
}

/// Whether the projection exists in the registry.
pub async fn exists(pool: &Pool, projection: &str) -> Result<bool, ProjectorError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT 1 FROM projections WHERE name = $1", &[&projection])
        .await?;
    Ok(row.is_some())
}

/// Whether a rebuild of `projection` is running anywhere (any process).
pub async fn is_running(pool: &Pool, projection: &str) -> Result<bool, ProjectorError> {
    let client = pool.get().await?;
    Ok(client.query_one(RUNNING, &[&projection]).await?.get(0))
}

/// Rebuilds `projection`. `progress(done_events, total_events)` is called after each chunk.
pub async fn rebuild(
    pool: &Pool,
    projection: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, ProjectorError> {
    if !exists(pool, projection).await? {
        return Err(ProjectorError::UnknownProjection(projection.to_owned()));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let acquired: bool = tx.query_one(TRY_REBUILD_LOCK, &[&projection]).await?.get(0);
    if !acquired {
        return Err(ProjectorError::RebuildRunning(projection.to_owned()));
    }
    tx.execute(PROJECTION_LOCK, &[&projection]).await?;
    tx.execute("SELECT reset_projection($1)", &[&projection])
        .await?;
    let extent = tx.query_one(EXTENT, &[]).await?;
    let (first, last, total): (i64, i64, i64) = (extent.get(0), extent.get(1), extent.get(2));
    let total = u64::try_from(total).unwrap_or(0);
    progress(0, total);
    let mut report = RebuildReport::default();
    let mut streams = std::collections::HashSet::new();
    let mut done = 0u64;
    let mut from = first;
    while from <= last {
        let to = from.saturating_add(SLICE_POSITIONS);
        let slice = tx.query(SLICE, &[&from, &to]).await?;
        let ids: Vec<&str> = slice.iter().map(|r| r.get(0)).collect();
        let versions: Vec<Option<i32>> = slice.iter().map(|r| Some(r.get(1))).collect();
        if !ids.is_empty() {
            let rows =
                super::apply::project(&tx, true, projection, &ids, &versions, &[], &[]).await?;
            report.events += rows
                .iter()
                .map(|r| u64::try_from(r.get::<_, i32>(1)).unwrap_or(0))
                .sum::<u64>();
        }
        streams.extend(ids.iter().map(|s| s.to_string()));
        done += slice
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(2)).unwrap_or(0))
            .sum::<u64>();
        progress(done, total);
        from = to;
    }
    report.streams = streams.len() as u64;
    tx.commit().await?;
    Ok(report)
}
