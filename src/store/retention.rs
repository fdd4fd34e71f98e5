//! Idempotency-Key retention: a record older than `IDEMPOTENCY_TTL` is no longer honoured
//! (see [`super::Store::execute`]) and the API role's background job deletes it, a small
//! batch per statement, so no statement holds many row locks or runs long.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// `IDEMPOTENCY_TTL`'s default, as Stripe keeps keys: a day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Records deleted per statement.
pub const BATCH: i64 = 1000;

/// How often the job looks for expired records at most (more often when the TTL is shorter).
pub const EVERY: Duration = Duration::from_secs(5 * 60);

/// One batch of the oldest expired records (`$1`: the TTL in seconds, `$2`: the batch size),
/// found through `idempotency_keys_created` (V9). SKIP LOCKED: several API processes
/// share the work instead of queueing behind each other, and a record a request is
/// replacing right now is left for the next round. `now()`, not `clock_timestamp()`, so
/// that the bound is a constant the index scan can use.
pub const PURGE_BATCH: &str = "\
DELETE FROM idempotency_keys
 WHERE ctid = ANY (ARRAY(
       SELECT ctid FROM idempotency_keys
        WHERE created_at < now() - $1::float8 * interval '1 second'
        ORDER BY created_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED))";

/// Deletes one batch of at most `batch` records older than `ttl`; returns how many.
pub async fn purge_batch(pool: &Pool, ttl: Duration, batch: i64) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .execute(PURGE_BATCH, &[&ttl.as_secs_f64(), &batch])
        .await?)
}

/// Deletes every record older than `ttl`, batch by batch (each its own transaction);
/// returns how many. Stops early when `stop` is cancelled.
pub async fn purge_expired(
    pool: &Pool,
    ttl: Duration,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let n = purge_batch(pool, ttl, BATCH).await?;
        removed += n;
        if n < BATCH as u64 || stop.is_cancelled() {
            return Ok(removed);
        }
        // Let the requests that waited for a connection or a lock go first.
        tokio::task::yield_now().await;
    }
}

/// The interval of the job for a given TTL: [`EVERY`], or the TTL when shorter (at least
/// a second), so an expired record does not outlive its TTL by much more than the TTL.
pub fn interval(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_secs(1), EVERY)
}

/// The API role's retention job: purges expired records every [`interval`] until `stop`.
pub async fn run(store: Store, stop: CancellationToken) {
    let ttl = store.idempotency_ttl();
    let mut ticks = tokio::time::interval(interval(ttl));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match purge_expired(store.pool(), ttl, &stop).await {
            Ok(0) => tracing::debug!("idempotency retention: nothing expired"),
            Ok(removed) => {
                store.metrics.idempotency_keys_expired.inc_by(removed);
                tracing::info!(
                    removed,
                    ttl = %humantime::format_duration(ttl),
                    "idempotency retention: deleted expired keys"
                );
            }
            Err(e) => tracing::warn!(error = %e, "idempotency retention failed; retrying later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_every_five_minutes_or_once_per_shorter_ttl() {
        assert_eq!(interval(DEFAULT_TTL), EVERY);
        assert_eq!(interval(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(interval(Duration::from_millis(10)), Duration::from_secs(1));
    }
}
