//! TLS to Postgres: `sslmode` and `sslrootcert` in `DATABASE_URL`, against the local server
//! (Debian's runs with `ssl = on` and the snakeoil certificate, self-signed for `localhost`).
//! What each connection really negotiated is read from `pg_stat_ssl`.

use std::time::Duration;

use waitroom::app::Roles;
use waitroom::store::{ConnectError, DbConfig};

use crate::cli::{EXIT_WITHIN, assert_one_line_error, output_within, waitroom};
use crate::helpers::{TestApp, isolated_settings, pg_base};

/// The certificate the local server presents (also its own root: it is self-signed).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// A CA that signed nothing the server has.
fn untrusted_root() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/untrusted-ca.pem"
    )
    .to_owned()
}

/// `pg_base()` (`postgres://postgres@127.0.0.1:5432`) on host `host` instead.
fn base_on(host: &str) -> String {
    pg_base().replace("127.0.0.1", host)
}

/// Whether the session of `db` runs over TLS, by the server's account.
async fn session_uses_tls(db: &DbConfig) -> bool {
    let client = db.connect().await.expect("connects");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl is readable")
        .get(0)
}

fn skip_without_server_tls() -> bool {
    if std::path::Path::new(SNAKEOIL).exists() {
        return false;
    }
    eprintln!("skipped: {SNAKEOIL} is missing (the local server has no TLS certificate)");
    true
}

#[tokio::test]
async fn the_whole_pipeline_runs_over_tls_with_sslmode_require() {
    if skip_without_server_tls() {
        return;
    }
    let mut settings = isolated_settings();
    settings.database_url.push_str("?sslmode=require");
    let app = TestApp::spawn_with(settings, Roles::ALL).await;
    app.create_queue("tls", 5).await;
    let r = app.check_in("tls", "p-1", "High").await;
    assert_eq!(r.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;
    let projected: i64 = app
        .scalar("SELECT count(*) FROM waiting_patients_view WHERE queue_id = 'tls'")
        .await;
    assert_eq!(projected, 1, "the check-in reached the read model");

    let own: bool = app
        .scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await;
    assert!(own, "the pool's session is encrypted");
    // Every session on the test database (pool, relay LISTEN connection, projector, API)
    // is encrypted, and the relay's own connection is among them.
    let client = app.pool.get().await.expect("pool connection");
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE NOT s.ssl), \
                    count(*) FILTER (WHERE a.application_name = 'waitroom-relay' AND s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database()",
            &[],
        )
        .await
        .expect("pg_stat_activity is readable");
    let (sessions, plain, relay): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(sessions >= 2, "sessions on the database: {sessions}");
    assert_eq!(plain, 0, "{plain} of {sessions} sessions are not encrypted");
    assert_eq!(relay, 1, "the relay's LISTEN connection is encrypted");
}

#[tokio::test]
async fn sslmode_disable_connects_in_plain_text_and_prefer_uses_tls_when_offered() {
    if skip_without_server_tls() {
        return;
    }
    let plain =
        DbConfig::parse(&format!("{}/postgres?sslmode=disable", pg_base())).expect("valid URL");
    assert!(!session_uses_tls(&plain).await, "sslmode=disable is plain");
    let preferred = DbConfig::parse(&format!("{}/postgres", pg_base())).expect("valid URL");
    assert!(
        session_uses_tls(&preferred).await,
        "no sslmode = prefer: TLS, since the server offers it"
    );
}

#[tokio::test]
async fn verify_ca_and_verify_full_accept_the_servers_own_root() {
    if skip_without_server_tls() {
        return;
    }
    // verify-ca checks the chain only, so the IP address the certificate does not name works.
    let ca = DbConfig::parse(&format!(
        "{}/postgres?sslmode=verify-ca&sslrootcert={SNAKEOIL}",
        pg_base()
    ))
    .expect("valid URL");
    assert!(session_uses_tls(&ca).await);
    // verify-full: by the name the certificate lists.
    let full = DbConfig::parse(&format!(
        "{}/postgres?sslmode=verify-full&sslrootcert={SNAKEOIL}",
        base_on("localhost")
    ))
    .expect("valid URL");
    assert!(session_uses_tls(&full).await);
    // require with a root verifies the chain like verify-ca (libpq's rule): it still connects.
    let required = DbConfig::parse(&format!(
        "{}/postgres?sslmode=require&sslrootcert={SNAKEOIL}",
        pg_base()
    ))
    .expect("valid URL");
    assert!(session_uses_tls(&required).await);
}

/// The startup error of `url`, which must be a TLS failure.
async fn tls_failure(url: &str) -> String {
    let db = DbConfig::parse(url).expect("valid URL");
    match db.ensure_database().await {
        Err(e @ ConnectError::Tls { .. }) => e.to_string(),
        other => panic!("expected a TLS failure for {url}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_root_that_did_not_sign_the_servers_certificate_is_refused_clearly() {
    if skip_without_server_tls() {
        return;
    }
    let root = untrusted_root();
    for mode in ["verify-ca", "verify-full", "require"] {
        let message = tls_failure(&format!(
            "{}/postgres?sslmode={mode}&sslrootcert={root}",
            base_on("localhost")
        ))
        .await;
        assert!(
            message.contains("certificate is not trusted")
                && message.contains(&root)
                && message.contains(&format!("sslmode={mode}")),
            "{mode}: {message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    if skip_without_server_tls() {
        return;
    }
    // The snakeoil certificate names `localhost`, not `127.0.0.1`.
    let message = tls_failure(&format!(
        "{}/postgres?sslmode=verify-full&sslrootcert={SNAKEOIL}",
        pg_base()
    ))
    .await;
    assert!(
        message.contains("not valid for host \"127.0.0.1\""),
        "{message}"
    );
}

#[tokio::test]
async fn the_cli_refuses_a_bad_sslmode_or_sslrootcert_in_one_line() {
    for (url, names) in [
        (
            format!("{}/waitroom_never?sslmode=bogus", pg_base()),
            "sslmode \"bogus\"",
        ),
        (
            format!(
                "{}/waitroom_never?sslmode=verify-ca&sslrootcert=/nonexistent/root.pem",
                pg_base()
            ),
            "sslrootcert /nonexistent/root.pem: cannot read it",
        ),
        (
            "host=127.0.0.1 dbname=waitroom_never sslmode=verify-everything".to_owned(),
            "sslmode \"verify-everything\"",
        ),
        (
            // Client certificates are not supported: the option is named, not ignored.
            format!(
                "{}/waitroom_never?sslmode=require&sslcert=/a.pem",
                pg_base()
            ),
            "unknown option `sslcert`",
        ),
    ] {
        let mut cmd = waitroom(&["migrate"]);
        cmd.env("DATABASE_URL", &url);
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, &url);
        assert!(line.contains("DATABASE_URL"), "{line}");
        assert!(line.contains(names), "{line}");
    }
}

#[tokio::test]
async fn the_cli_names_the_untrusted_certificate_in_one_line() {
    if skip_without_server_tls() {
        return;
    }
    let mut cmd = waitroom(&["migrate"]);
    cmd.env(
        "DATABASE_URL",
        format!(
            "{}/waitroom_never?sslmode=verify-ca&sslrootcert={}",
            pg_base(),
            untrusted_root()
        ),
    );
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "untrusted root");
    assert!(
        line.starts_with(
            "error: TLS to PostgreSQL at 127.0.0.1:5432/waitroom_never failed: \
             the server's certificate is not trusted"
        ),
        "{line}"
    );
}
