//! Applies the numbered migrations in `sql/` (refinery), then the function files in
//! `sql/functions/` (`CREATE OR REPLACE`, re-applied when their text changes), all under
//! one advisory lock so that several roles starting at once apply them exactly once.

use super::db::{ConnectError, DbConfig};
use super::error::describe;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory-lock key held while migrating (any constant unique to this app).
const MIGRATION_LOCK: i64 = 0x7761_6974_726f_6f6d; // "waitroom"

/// `sql/functions/`, in the order they are applied. Each file is idempotent; a changed file
/// is applied again on the next start (its text is recorded in `schema_functions`).
const FUNCTIONS: &[(&str, &str)] = &[
    ("relay", include_str!("../../sql/functions/relay.sql")),
    (
        "waiting_room",
        include_str!("../../sql/functions/waiting_room.sql"),
    ),
    (
        "projection",
        include_str!("../../sql/functions/projection.sql"),
    ),
    (
        "diagnostics",
        include_str!("../../sql/functions/diagnostics.sql"),
    ),
];

const APPLIED_BODY: &str = "SELECT body FROM schema_functions WHERE name = $1";
const RECORD_BODY: &str = "INSERT INTO schema_functions (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, applied_at = clock_timestamp()";

/// Applies pending migrations and changed function files; returns how many were applied.
pub async fn run(db: &DbConfig) -> Result<usize, ConnectError> {
    let setup = |reason: String| ConnectError::Setup {
        target: db.target(),
        reason,
    };
    let mut client = db.connect().await.map_err(|e| setup(describe(&e)))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| setup(format!("migration lock: {}", describe(&e))))?;
    let result = apply(&mut client).await;
    // Unlock whatever happened; closing the connection would release it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result.map_err(setup)?;
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    Ok(applied)
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<usize, String> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let mut applied = report.applied_migrations().len();
    for (name, body) in FUNCTIONS {
        let current: Option<String> = client
            .query_opt(APPLIED_BODY, &[name])
            .await
            .map_err(|e| format!("reading schema_functions: {}", describe(&e)))?
            .map(|r| r.get(0));
        if current.as_deref() == Some(*body) {
            continue;
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| format!("sql/functions/{name}.sql: {}", describe(&e)))?;
        tx.batch_execute(body)
            .await
            .map_err(|e| format!("sql/functions/{name}.sql: {}", describe(&e)))?;
        tx.execute(RECORD_BODY, &[name, body])
            .await
            .map_err(|e| format!("recording sql/functions/{name}.sql: {}", describe(&e)))?;
        tx.commit()
            .await
            .map_err(|e| format!("sql/functions/{name}.sql: {}", describe(&e)))?;
        applied += 1;
    }
    Ok(applied)
}
