//! Applies the numbered migrations in `sql/` (refinery), under an advisory lock so that
//! several roles starting at once apply them exactly once.

use super::db::{ConnectError, DbConfig};

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory-lock key held while migrating (any constant unique to this app).
const MIGRATION_LOCK: i64 = 0x7761_6974_726f_6f6d; // "waitroom"

/// Applies pending migrations; returns how many were applied.
pub async fn run(db: &DbConfig) -> Result<usize, ConnectError> {
    let setup = |reason: String| ConnectError::Setup {
        target: db.target(),
        reason,
    };
    let mut client = db.connect().await.map_err(|e| setup(e.to_string()))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| setup(format!("migration lock: {e}")))?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    // Unlock whatever happened; closing the connection would release it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report.map_err(|e| setup(format!("migration failed: {e}")))?;
    let applied = report.applied_migrations().len();
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    Ok(applied)
}
