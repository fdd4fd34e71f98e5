//! Least privilege: the owner role (migrations) and the app role (every running role). Login
//! roles made for the test, IN ROLE waitroom_owner / waitroom_app, dropped at the end even
//! when the test fails.

use std::time::Duration;

use serde_json::json;
use tokio_postgres::error::SqlState;
use waitroom::app::Roles;

use crate::cli::{EXIT_WITHIN, Scratch, assert_one_line_error, output_within, text, waitroom};
use crate::helpers::{TestApp, block_on_own_thread, isolated_settings, pg_base};

/// `url` with `user` instead of its user (no password: the test cluster trusts local users).
fn as_user(url: &str, user: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_username(user).expect("a URL with a host");
    url.set_password(None).expect("a URL with a host");
    url.to_string()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Two LOGIN roles, one in each group, with names of their own; dropped at drop (declare
/// them before the databases they use, so that those are dropped first).
struct Logins {
    owner: String,
    app: String,
}

impl Logins {
    /// Needs the group roles: some database must have been migrated by a superuser.
    async fn create() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let logins = Self {
            owner: format!("waitroom_t_owner_{id}"),
            app: format!("waitroom_t_app_{id}"),
        };
        let admin = connect(&format!("{}/postgres", pg_base())).await;
        for (login, group) in [
            (&logins.owner, "waitroom_owner"),
            (&logins.app, "waitroom_app"),
        ] {
            admin
                .batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE {group}"))
                .await
                .unwrap_or_else(|e| panic!("create {login}: {e:?}"));
        }
        logins
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        drop(DropRoles(vec![self.owner.clone(), self.app.clone()]));
    }
}

/// Runs `sql` and expects SQLSTATE 42501 (insufficient_privilege).
async fn assert_denied(client: &tokio_postgres::Client, sql: &str) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("the app role may not run {sql:?}, but it did"),
        Err(e) => assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql:?} fails with 42501, not {e:?}"
        ),
    }
}

/// Objects of the schema not owned by waitroom_owner.
const NOT_OWNED: &str = "\
SELECT coalesce(string_agg(name, ', '), '') FROM (
    SELECT c.relname::text AS name FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'i')
       AND c.relowner <> 'waitroom_owner'::regrole
    UNION ALL
    SELECT p.proname::text FROM pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> 'waitroom_owner'::regrole) x";

#[tokio::test]
async fn the_app_role_runs_the_pipeline_and_rebuilds_but_cannot_change_events_or_the_schema() {
    // Migrated by the superuser (the default set-up): roles created, objects handed over.
    let settings = isolated_settings();
    waitroom::app::connect_database(&settings)
        .await
        .expect("the superuser migrates");
    let logins = Logins::create().await;
    let admin = connect(&settings.database_url).await;
    let not_owned: String = admin.query_one(NOT_OWNED, &[]).await.unwrap().get(0);
    assert_eq!(not_owned, "", "waitroom_owner owns every object");

    let mut app_settings = settings.clone();
    app_settings.database_url = as_user(&settings.database_url, &logins.app);
    let app = TestApp::spawn_with(app_settings.clone(), Roles::ALL).await;
    let user: String = app.scalar("SELECT current_user::text").await;
    assert_eq!(user, logins.app, "the pipeline runs as the app login");

    app.create_queue("least", 5).await;
    let r = app
        .http
        .post(format!("{}/api/queues/least/check-ins", app.address))
        .header("Idempotency-Key", "least-p1")
        .json(&json!({"patientId": "p1", "patientName": "Ada", "priority": "High", "consultationType": "General"}))
        .send()
        .await
        .expect("request is sent");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = app
        .post(
            "/api/queues/least/call-next",
            json!({"consultingRoom": "Room 2"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_empty("/api/queues/least/patients/p1/complete")
        .await;
    assert_eq!(r.status(), 200);
    app.wait_all_processed(Duration::from_secs(30)).await;
    app.wait_outbox_published().await;
    let status: String = app
        .scalar("SELECT status FROM waiting_patients_view WHERE queue_id = 'least' AND patient_id = 'p1'")
        .await;
    assert_eq!(status, "COMPLETED", "check-in → processed as the app user");

    // Retention and rebuild run as the app user too.
    waitroom::store::retention::purge_batch(&app.pool, Duration::from_secs(1), 10)
        .await
        .expect("the app role deletes expired idempotency keys");
    let report = waitroom::projector::rebuild::rebuild(&app.pool, "waiting_room", |_, _| {})
        .await
        .expect("the app role rebuilds");
    assert_eq!(report.events, 4);
    let mut rebuild = waitroom(&["rebuild"]);
    rebuild.env("DATABASE_URL", &app_settings.database_url);
    let output = output_within(rebuild, EXIT_WITHIN).await;
    assert!(
        output.status.success(),
        "`waitroom rebuild` as the app user: {}",
        text(&output.stderr)
    );

    let client = connect(&app_settings.database_url).await;
    assert_denied(&client, "UPDATE waiting_room_events SET actor = 'mallory'").await;
    assert_denied(&client, "DELETE FROM waiting_room_events").await;
    assert_denied(&client, "TRUNCATE waiting_room_events").await;
    assert_denied(&client, "CREATE TABLE mallory (id int)").await;
    assert_denied(
        &client,
        "ALTER TABLE waiting_room_events DISABLE TRIGGER ALL",
    )
    .await;
    assert_denied(&client, "DELETE FROM refinery_schema_history").await;
    let events: i64 = client
        .query_one("SELECT count(*) FROM waiting_room_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 4, "the events are untouched");
    drop(app);
    drop(logins);
}

#[tokio::test]
async fn migrations_are_the_owners_and_an_app_user_meeting_one_gets_one_line_and_exit_2() {
    // The group roles exist once any database was migrated by a superuser.
    let dev = Scratch::new();
    let out = output_within(dev.waitroom(&["migrate"]), EXIT_WITHIN).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logins = Logins::create().await;

    // A DBA's set-up: a database owned by the owner role, migrated by an owner login that
    // may not create roles or databases.
    let db = Scratch::new();
    let admin = connect(&format!("{}/postgres", pg_base())).await;
    let name = db.database_url().rsplit('/').next().unwrap().to_owned();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER waitroom_owner"))
        .await
        .expect("database created");
    let owner_url = as_user(&db.database_url(), &logins.owner);
    let app_url = as_user(&db.database_url(), &logins.app);
    let migrate_as = |url: &str| {
        let mut cmd = waitroom(&["migrate"]);
        cmd.env("DATABASE_URL", url);
        output_within(cmd, EXIT_WITHIN)
    };

    // Nothing applied yet: the app user may not apply it.
    let out = migrate_as(&app_url).await;
    let line = assert_one_line_error(&out, "app user on an empty database");
    assert!(
        line.contains("run `waitroom migrate`") && line.contains("waitroom_owner"),
        "says what to do: {line}"
    );

    let out = migrate_as(&owner_url).await;
    assert!(
        out.status.success(),
        "the owner login migrates: {}",
        text(&out.stderr)
    );
    let client = connect(&db.database_url()).await;
    let not_owned: String = client.query_one(NOT_OWNED, &[]).await.unwrap().get(0);
    assert_eq!(
        not_owned, "",
        "objects belong to waitroom_owner, not the login"
    );

    // Everything applied: the app user starts (no DDL, not even refinery's).
    let out = migrate_as(&app_url).await;
    assert!(
        out.status.success(),
        "nothing pending: {}",
        text(&out.stderr)
    );

    // A new release's migration and function file: pending for the app, applied by the owner.
    client
        .batch_execute(
            "DELETE FROM refinery_schema_history WHERE version = 9; \
             DROP INDEX idempotency_keys_created; \
             UPDATE schema_functions SET body = '' WHERE name = 'diagnostics';",
        )
        .await
        .expect("history rewound");
    let out = migrate_as(&app_url).await;
    let line = assert_one_line_error(&out, "app user with pending migrations");
    assert!(
        line.contains("V9__idempotency_expiry")
            && line.contains("sql/functions/diagnostics.sql")
            && line.contains("run `waitroom migrate` as the schema owner"),
        "names what is pending and who applies it: {line}"
    );
    let out = migrate_as(&owner_url).await;
    assert!(
        out.status.success(),
        "the owner applies them: {}",
        text(&out.stderr)
    );
    let index: bool = client
        .query_one(
            "SELECT to_regclass('idempotency_keys_created') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(index, "V9 applied again");
    let not_owned: String = client.query_one(NOT_OWNED, &[]).await.unwrap().get(0);
    assert_eq!(not_owned, "", "still all the owner's");
    let out = migrate_as(&app_url).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(client);
    drop(db);
    drop(dev);
    drop(logins);
}

/// Throwaway cluster roles, dropped at drop.
struct DropRoles(Vec<String>);

impl Drop for DropRoles {
    fn drop(&mut self) {
        let roles = std::mem::take(&mut self.0);
        block_on_own_thread(move || async move {
            let admin = connect(&format!("{}/postgres", pg_base())).await;
            for role in roles {
                let _ = admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                    .await;
            }
        });
    }
}

#[tokio::test]
async fn many_first_migrates_at_once_create_each_role_once_without_an_error() {
    // The real function from roles.sql, creating roles of this test's own names (the
    // cluster's waitroom roles exist already), called by ten sessions at once.
    let file = include_str!("../../sql/functions/roles.sql");
    let start = file
        .find("CREATE OR REPLACE FUNCTION waitroom_create_roles()")
        .expect("the function is in roles.sql");
    let end = start + file[start..].find("\n$$;").expect("its end") + "\n$$;".len();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (owner, app) = (format!("wr_race_owner_{id}"), format!("wr_race_app_{id}"));
    let _cleanup = DropRoles(vec![owner.clone(), app.clone()]);
    let function = file[start..end]
        .replace("waitroom_owner", &owner)
        .replace("waitroom_app", &app);
    let settings = isolated_settings();
    let app_db = TestApp::spawn_with(settings, Roles::PROJECTOR).await;
    let client = app_db.pool.get().await.expect("pool connection");
    client
        .batch_execute(&function.replace("waitroom_create_roles", "race_create_roles"))
        .await
        .expect("function created");
    // Each session keeps its transaction open a moment after creating (as a migration
    // does): the others do not see its role yet, try to create it too, wait on
    // pg_authid's unique index and fail with unique_violation once it commits. Without
    // that handler this test fails with "duplicate key value violates unique constraint".
    let clients =
        futures_util::future::join_all((0..8).map(|_| connect(&app_db.settings.database_url)))
            .await;
    let sessions = futures_util::future::join_all(clients.iter().map(|client| async move {
        client.batch_execute("BEGIN").await?;
        let both: bool = client
            .query_one("SELECT race_create_roles()", &[])
            .await?
            .get(0);
        client.batch_execute("SELECT pg_sleep(0.5); COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(both)
    }))
    .await;
    for (i, result) in sessions.into_iter().enumerate() {
        match result {
            Ok(both) => assert!(both, "session {i}: both roles exist afterwards"),
            Err(e) => panic!("session {i} failed: {e:?}"),
        }
    }
    let roles: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $2)",
            &[&owner, &app],
        )
        .await
        .expect("query runs")
        .get(0);
    assert_eq!(roles, 2);
}
