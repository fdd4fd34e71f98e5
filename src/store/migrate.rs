//! Applies the numbered migrations in `sql/` (refinery), then the function files in
//! `sql/functions/` (`CREATE OR REPLACE`, re-applied when their text changes), all under
//! one advisory lock so that several roles starting at once apply them exactly once.
//!
//! Every role calls this at start, often as the least-privileged app user (README,
//! "Security"), which may not run DDL. So it first reads what is applied; when nothing is
//! pending it changes nothing (refinery's own run would `CREATE TABLE IF NOT EXISTS` its
//! history table, which needs CREATE on the schema even when the table exists). When
//! something is pending it applies it as `waitroom_owner` when the login user is a member
//! (so any member can apply the next one); a user that may not gets one line saying to
//! run `waitroom migrate` as the owner.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;

use super::db::{ConnectError, DbConfig};
use super::error::describe;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory-lock key held while migrating (any constant unique to this app).
const MIGRATION_LOCK: i64 = 0x7761_6974_726f_6f6d; // "waitroom"

/// `sql/functions/`, in the order they are applied. Each file is idempotent; a changed file
/// is applied again on the next start (its text is recorded in `schema_functions`).
/// `roles` comes last: it hands every object the others created to the owner role.
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
    ("roles", include_str!("../../sql/functions/roles.sql")),
];

/// The owner and app group roles created by `sql/functions/roles.sql`.
pub const OWNER_ROLE: &str = "waitroom_owner";
/// See [`OWNER_ROLE`].
pub const APP_ROLE: &str = "waitroom_app";

const HISTORY_EXISTS: &str = "SELECT to_regclass('refinery_schema_history') IS NOT NULL, \
     to_regclass('schema_functions') IS NOT NULL";
const APPLIED_BODIES: &str = "SELECT name, body FROM schema_functions";
const RECORD_BODY: &str = "INSERT INTO schema_functions (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, applied_at = clock_timestamp()";
/// Whether this session should migrate as the owner role: it exists, the login user may
/// SET ROLE to it, it may create in the schema, and it owns what is there already (a
/// database migrated before the role existed is handed over by `roles.sql` first).
const CAN_BE_OWNER: &str = "\
SELECT coalesce(pg_has_role(r.oid, 'MEMBER')
                AND has_schema_privilege(r.oid, current_schema(), 'CREATE')
                AND coalesce((SELECT c.relowner = r.oid FROM pg_class c
                               WHERE c.oid = to_regclass('waiting_room_events')), true), false)
  FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = 'waitroom_owner') AS oid) r";
const SET_OWNER: &str = "SET ROLE waitroom_owner";
const RESET_ROLE: &str = "RESET ROLE";
const ROLES_EXIST: &str =
    "SELECT count(*) = 2 FROM pg_roles WHERE rolname IN ('waitroom_owner', 'waitroom_app')";

/// Why applying failed: a user without the privilege (an app user meeting a new
/// migration), or anything else.
enum Failure {
    Denied(String),
    Other(String),
}

impl Failure {
    fn from_pg(context: &str, e: &tokio_postgres::Error) -> Self {
        let text = format!("{context}: {}", describe(e));
        if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            Self::Denied(text)
        } else {
            Self::Other(text)
        }
    }
}

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
    } else {
        tracing::info!("migrations: the schema is up to date");
    }
    Ok(applied)
}

/// What is not applied yet: migration names and function file names.
struct Pending {
    migrations: Vec<String>,
    functions: Vec<(&'static str, &'static str)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.migrations.is_empty() && self.functions.is_empty()
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .migrations
            .iter()
            .cloned()
            .chain(
                self.functions
                    .iter()
                    .map(|(name, _)| format!("sql/functions/{name}.sql")),
            )
            .collect();
        names.join(", ")
    }
}

async fn pending(client: &mut tokio_postgres::Client) -> Result<Pending, Failure> {
    let runner = embedded::migrations::runner();
    let row = client
        .query_one(HISTORY_EXISTS, &[])
        .await
        .map_err(|e| Failure::from_pg("reading the schema history", &e))?;
    let (has_history, has_functions): (bool, bool) = (row.get(0), row.get(1));
    let applied: HashMap<i32, u64> = if has_history {
        runner
            .get_applied_migrations_async(client)
            .await
            .map_err(|e| match pg_source(&e) {
                Some(pg) => Failure::from_pg("reading refinery_schema_history", pg),
                None => Failure::Other(format!("reading refinery_schema_history: {e}")),
            })?
            .iter()
            .map(|m| (m.version(), m.checksum()))
            .collect()
    } else {
        HashMap::new()
    };
    // A migration applied with a different text is pending too: refinery, run as the
    // owner, then reports the divergence.
    let migrations = runner
        .get_migrations()
        .iter()
        .filter(|m| applied.get(&m.version()) != Some(&m.checksum()))
        .map(|m| m.to_string())
        .collect();
    let bodies: HashMap<String, String> = if has_functions {
        client
            .query(APPLIED_BODIES, &[])
            .await
            .map_err(|e| Failure::from_pg("reading schema_functions", &e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        HashMap::new()
    };
    let functions = FUNCTIONS
        .iter()
        .filter(|(name, body)| bodies.get(*name).map(String::as_str) != Some(*body))
        .copied()
        .collect();
    Ok(Pending {
        migrations,
        functions,
    })
}

/// The Postgres error inside a refinery error, if that is what it is.
fn pg_source(e: &refinery::Error) -> Option<&tokio_postgres::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(pg) = s.downcast_ref::<tokio_postgres::Error>() {
            return Some(pg);
        }
        source = s.source();
    }
    None
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<usize, String> {
    let denied = |pending: &Pending, reason: String| {
        format!(
            "pending migrations ({}) cannot be applied as this user ({reason}): run `waitroom migrate` \
             as the schema owner (a member of {OWNER_ROLE}) first",
            pending.describe()
        )
    };
    let pending = match pending(client).await {
        Ok(p) if p.is_empty() => return Ok(0),
        Ok(p) => p,
        Err(Failure::Denied(reason)) => {
            return Err(format!(
                "this user may not read the schema history ({reason}): connect as a member of \
                 {APP_ROLE} or {OWNER_ROLE}, and run `waitroom migrate` as the owner first"
            ));
        }
        Err(Failure::Other(reason)) => return Err(reason),
    };
    let as_owner: bool = client
        .query_one(CAN_BE_OWNER, &[])
        .await
        .map_err(|e| format!("checking the owner role: {}", describe(&e)))?
        .get(0);
    if as_owner {
        client
            .batch_execute(SET_OWNER)
            .await
            .map_err(|e| format!("SET ROLE {OWNER_ROLE}: {}", describe(&e)))?;
    }
    let result = apply_pending(client, &pending).await;
    if as_owner {
        let _ = client.batch_execute(RESET_ROLE).await;
    }
    match result {
        Ok(applied) => Ok(applied),
        Err(Failure::Denied(reason)) => Err(denied(&pending, reason)),
        Err(Failure::Other(reason)) => Err(reason),
    }
}

async fn apply_pending(
    client: &mut tokio_postgres::Client,
    pending: &Pending,
) -> Result<usize, Failure> {
    let mut applied = 0;
    if !pending.migrations.is_empty() {
        let report = embedded::migrations::runner()
            .set_abort_divergent(true)
            .run_async(client)
            .await
            .map_err(|e| match pg_source(&e) {
                Some(pg) if pg.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    Failure::Denied(describe(pg))
                }
                _ => Failure::Other(format!("migration failed: {e}")),
            })?;
        applied += report.applied_migrations().len();
    }
    for (name, body) in &pending.functions {
        let context = format!("sql/functions/{name}.sql");
        let tx = client
            .transaction()
            .await
            .map_err(|e| Failure::from_pg(&context, &e))?;
        tx.batch_execute(body)
            .await
            .map_err(|e| Failure::from_pg(&context, &e))?;
        // roles.sql is retried at every start until the roles exist (a DBA may create
        // them later); everything else is recorded once applied.
        let record = if *name == "roles" {
            let ready: bool = tx
                .query_one(ROLES_EXIST, &[])
                .await
                .map_err(|e| Failure::from_pg(&context, &e))?
                .get(0);
            if !ready {
                tracing::warn!(
                    "roles {OWNER_ROLE} and {APP_ROLE} do not exist and this user may not create \
                     them: running without least-privilege roles (a DBA creates them, see the \
                     README's Security section)"
                );
            }
            ready
        } else {
            true
        };
        if record {
            tx.execute(RECORD_BODY, &[name, body])
                .await
                .map_err(|e| Failure::from_pg(&format!("recording {context}"), &e))?;
            applied += 1;
        }
        tx.commit()
            .await
            .map_err(|e| Failure::from_pg(&context, &e))?;
    }
    Ok(applied)
}
