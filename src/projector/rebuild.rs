//! Rebuilding a projection: empty its read models and checkpoints and replay the event
//! store through the same SQL functions, in ONE transaction. Readers keep seeing the old
//! rows until it commits; live projectors wait on the projection's advisory lock and then
//! find every event already applied.

use deadpool_postgres::Pool;

use super::ProjectorError;

const TRY_REBUILD_LOCK: &str =
    "SELECT pg_try_advisory_xact_lock(hashtext('waitroom.rebuild'), hashtext($1))";
const PROJECTION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('waitroom.projection'), hashtext($1))";
const STREAMS: &str = "SELECT stream_id, max(version), count(*) FROM waiting_room_events \
                       GROUP BY stream_id ORDER BY stream_id";
const REPLAY: &str = "\
SELECT coalesce(sum(r.applied), 0)::bigint
  FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS s(stream_id, up_to, ord)
 CROSS JOIN LATERAL project_stream($3, s.stream_id, s.up_to) r";
const RUNNING: &str = "SELECT advisory_lock_held(hashtext('waitroom.rebuild'), hashtext($1))";

/// Streams replayed per statement (one progress step).
const CHUNK: usize = 200;

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
    let streams = tx.query(STREAMS, &[]).await?;
    let total: u64 = streams
        .iter()
        .map(|r| u64::try_from(r.get::<_, i64>(2)).unwrap_or(0))
        .sum();
    progress(0, total);
    let mut report = RebuildReport::default();
    let mut done = 0u64;
    for chunk in streams.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.get(0)).collect();
        let versions: Vec<i32> = chunk.iter().map(|r| r.get(1)).collect();
        let applied: i64 = tx
            .query_one(REPLAY, &[&ids, &versions, &projection])
            .await?
            .get(0);
        report.streams += chunk.len() as u64;
        report.events += u64::try_from(applied).unwrap_or(0);
        done += chunk
            .iter()
            .map(|r| u64::try_from(r.get::<_, i64>(2)).unwrap_or(0))
            .sum::<u64>();
        progress(done, total);
    }
    tx.commit().await?;
    Ok(report)
}
