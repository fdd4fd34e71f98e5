//! The diagnostics console: tokio-postgres against a live console, over the simple and the
//! extended query protocol. Every SHOW command's columns, values that follow the pipeline's
//! real state, refusals with a SQLSTATE, password authentication, masked secrets.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage};
use waitroom::app::Roles;
use waitroom::config::{ConsoleAddr, Secret};

use crate::cli::{EXIT_WITHIN, Scratch, assert_one_line_error, output_within};
use crate::helpers::{TestApp, isolated_settings, wait_until};

const API_AND_PROJECTOR: Roles = Roles {
    api: true,
    relay: false,
    projector: true,
};

fn config(addr: SocketAddr) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("waitroom")
        .dbname("waitroom")
        .connect_timeout(Duration::from_secs(5));
    config
}

async fn connect_with(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A console session without a password.
async fn console(addr: SocketAddr) -> Client {
    connect_with(&config(addr))
        .await
        .expect("the console accepts a loopback client")
}

/// The columns a prepared statement describes: (name, type).
async fn described(client: &Client, sql: &str) -> Vec<(String, Type)> {
    let statement = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} prepares: {e}"));
    statement
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect()
}

/// Rows of `sql` over the extended protocol (prepared, binary results).
async fn rows(client: &Client, sql: &str) -> Vec<Row> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The single row of `sql`.
async fn row(client: &Client, sql: &str) -> Row {
    let mut rows = rows(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql} answers one row");
    rows.remove(0)
}

/// Rows of `sql` over the simple protocol (text), as column name → value maps.
async fn simple(client: &Client, sql: &str) -> Vec<Vec<(String, Option<String>)>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and hint of a console error.
fn sqlstate(error: &tokio_postgres::Error) -> (String, String) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error, got {error}"));
    (
        db.code().code().to_owned(),
        db.hint().unwrap_or_default().to_owned(),
    )
}

fn names(columns: &[(String, Type)]) -> Vec<&str> {
    columns.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_command_describes_typed_columns_and_answers_over_both_protocols() {
    let app = TestApp::spawn().await;
    let client = console(app.console_addr()).await;
    let expected: &[(&str, &[(&str, Type)])] = &[
        (
            "SHOW HELP",
            &[("command", Type::TEXT), ("description", Type::TEXT)],
        ),
        (
            "SHOW LAG",
            &[
                ("event_type", Type::TEXT),
                ("count", Type::INT8),
                ("p50_ms", Type::FLOAT8),
                ("p95_ms", Type::FLOAT8),
                ("p99_ms", Type::FLOAT8),
                ("max_ms", Type::FLOAT8),
                ("events_per_second", Type::FLOAT8),
            ],
        ),
        (
            "SHOW OUTBOX",
            &[
                ("pending", Type::INT8),
                ("oldest_age_ms", Type::FLOAT8),
                ("dead", Type::INT8),
                ("last_error", Type::TEXT),
                ("last_error_at", Type::TIMESTAMPTZ),
            ],
        ),
        (
            "SHOW PROJECTIONS",
            &[
                ("projection", Type::TEXT),
                ("streams", Type::INT8),
                ("streams_behind", Type::INT8),
                ("events_behind", Type::INT8),
                ("parked_streams", Type::INT8),
                ("last_applied_at", Type::TIMESTAMPTZ),
                ("rebuilding", Type::BOOL),
            ],
        ),
        (
            "SHOW PARKED",
            &[
                ("projection", Type::TEXT),
                ("stream_id", Type::TEXT),
                ("parked_version", Type::INT4),
                ("error", Type::TEXT),
                ("parked_at", Type::TIMESTAMPTZ),
            ],
        ),
        (
            "SHOW RELAY",
            &[
                ("role", Type::TEXT),
                ("since", Type::TIMESTAMPTZ),
                ("leader", Type::TEXT),
                ("wakeups_notify", Type::INT8),
                ("wakeups_sweep", Type::INT8),
                ("wakeups_work", Type::INT8),
                ("last_wakeup_at", Type::TIMESTAMPTZ),
                ("last_wakeup_cause", Type::TEXT),
                ("batches", Type::INT8),
                ("events_published", Type::INT8),
                ("batch_avg", Type::FLOAT8),
                ("batch_max", Type::INT8),
                ("batches_of_1", Type::INT8),
                ("batches_of_2_10", Type::INT8),
                ("batches_of_11_100", Type::INT8),
                ("batches_of_101_499", Type::INT8),
                ("batches_of_500", Type::INT8),
                ("confirms_pending", Type::INT8),
                ("broker", Type::TEXT),
                ("cursor_advanced_at", Type::TIMESTAMPTZ),
                ("cursor_age_ms", Type::FLOAT8),
                ("last_error", Type::TEXT),
            ],
        ),
        (
            "SHOW PROJECTOR",
            &[
                ("state", Type::TEXT),
                ("since", Type::TIMESTAMPTZ),
                ("queue", Type::TEXT),
                ("broker", Type::TEXT),
                ("prefetch", Type::INT4),
                ("max_batch", Type::INT4),
                ("batches", Type::INT8),
                ("deliveries", Type::INT8),
                ("events_applied", Type::INT8),
                ("last_batch_at", Type::TIMESTAMPTZ),
                ("last_batch_size", Type::INT8),
                ("last_batch_ms", Type::FLOAT8),
                ("last_error", Type::TEXT),
            ],
        ),
        (
            "SHOW CONFIG",
            &[
                ("setting", Type::TEXT),
                ("value", Type::TEXT),
                ("env", Type::TEXT),
            ],
        ),
        (
            "SHOW ROLES",
            &[
                ("roles", Type::TEXT),
                ("http_addr", Type::TEXT),
                ("console_addr", Type::TEXT),
                ("pid", Type::INT4),
                ("started_at", Type::TIMESTAMPTZ),
                ("uptime_s", Type::FLOAT8),
                ("version", Type::TEXT),
            ],
        ),
    ];
    for (sql, columns) in expected {
        let want: Vec<(String, Type)> = columns
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect();
        assert_eq!(described(&client, sql).await, want, "{sql}: Describe");
        // Extended protocol: decoding every column as its described type must succeed.
        let extended = rows(&client, sql).await;
        for r in &extended {
            for (i, (_, ty)) in want.iter().enumerate() {
                let ok = match *ty {
                    Type::TEXT => r.try_get::<_, Option<String>>(i).is_ok(),
                    Type::INT4 => r.try_get::<_, Option<i32>>(i).is_ok(),
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).is_ok(),
                    Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).is_ok(),
                    Type::BOOL => r.try_get::<_, Option<bool>>(i).is_ok(),
                    Type::TIMESTAMPTZ => r.try_get::<_, Option<DateTime<Utc>>>(i).is_ok(),
                    _ => false,
                };
                assert!(ok, "{sql}: column {i} decodes as {ty}");
            }
        }
        // Simple protocol, lower case and a semicolon: the same columns, as many rows.
        let texts = simple(&client, &format!("{};", sql.to_lowercase())).await;
        assert_eq!(texts.len(), extended.len(), "{sql}: same rows both ways");
        for r in &texts {
            let got: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(got, names(&want), "{sql}: simple-protocol columns");
        }
    }

    // SHOW HELP lists every command; SHOW ROLES is this very process.
    let help = rows(&client, "SHOW HELP").await;
    let commands: Vec<String> = help.iter().map(|r| r.get(0)).collect();
    for command in [
        "SHOW HELP",
        "SHOW LAG",
        "SHOW OUTBOX",
        "SHOW PROJECTIONS",
        "SHOW PARKED",
        "SHOW RELAY",
        "SHOW PROJECTOR",
        "SHOW CONFIG",
        "SHOW ROLES",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(command)),
            "{command} in {commands:?}"
        );
    }
    let roles = row(&client, "SHOW ROLES").await;
    assert_eq!(roles.get::<_, String>(0), "api, relay, projector, console");
    assert_eq!(
        roles.get::<_, Option<String>>(1),
        Some(app.settings.http_addr.to_string())
    );
    assert_eq!(roles.get::<_, String>(2), app.console_addr().to_string());
    assert_eq!(
        roles.get::<_, i32>(3),
        i32::try_from(std::process::id()).expect("a pid")
    );
    assert!(roles.get::<_, DateTime<Utc>>(4) <= Utc::now());
    assert!(roles.get::<_, f64>(5) >= 0.0);
    assert_eq!(roles.get::<_, String>(6), env!("CARGO_PKG_VERSION"));

    // Several statements in one simple query: one result set each, in order.
    let messages = client
        .simple_query("show help; SHOW ROLES")
        .await
        .expect("two statements run");
    let completed: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completed, vec![help.len() as u64, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_outbox_pending_rises_while_no_relay_runs_and_drains_once_one_leads() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    let client = console(app.console_addr()).await;
    let outbox = row(&client, "SHOW OUTBOX").await;
    assert_eq!(outbox.get::<_, i64>("pending"), 0);
    assert_eq!(outbox.get::<_, Option<f64>>("oldest_age_ms"), None);
    assert_eq!(outbox.get::<_, i64>("dead"), 0);
    assert_eq!(outbox.get::<_, Option<String>>("last_error"), None);

    app.create_queue("q", 5).await;
    assert_eq!(app.check_in("q", "p1", "High").await.status(), 201);
    assert_eq!(app.check_in("q", "p2", "Low").await.status(), 201);
    let outbox = row(&client, "SHOW OUTBOX").await;
    assert_eq!(outbox.get::<_, i64>("pending"), 3, "nobody publishes");
    assert!(
        outbox
            .get::<_, Option<f64>>("oldest_age_ms")
            .is_some_and(|ms| ms >= 0.0)
    );
    // This process runs no relay.
    let relay = row(&client, "SHOW RELAY").await;
    assert_eq!(relay.get::<_, String>("role"), "off");
    assert_eq!(relay.get::<_, Option<String>>("leader"), None);
    assert_eq!(relay.get::<_, String>("broker"), "none");
    assert_eq!(relay.get::<_, i64>("batches"), 0);

    let relay_process = app.spawn_roles(Roles::RELAY).await;
    wait_until(Duration::from_secs(10), "the outbox drains", || async {
        row(&client, "SHOW OUTBOX").await.get::<_, i64>("pending") == 0
    })
    .await;
    let leader = console(relay_process.console.expect("console on")).await;
    // The relay counts a batch just after storing its cursor.
    wait_until(
        Duration::from_secs(10),
        "the relay counts 3 events",
        || async {
            row(&leader, "SHOW RELAY")
                .await
                .get::<_, i64>("events_published")
                == 3
        },
    )
    .await;
    let relay = row(&leader, "SHOW RELAY").await;
    assert_eq!(relay.get::<_, String>("role"), "leader");
    assert!(
        relay
            .get::<_, Option<String>>("leader")
            .is_some_and(|l| l.starts_with("this process")),
        "{:?}",
        relay.get::<_, Option<String>>("leader")
    );
    assert_eq!(relay.get::<_, i64>("events_published"), 3);
    let batches = relay.get::<_, i64>("batches");
    assert!(batches >= 1);
    let by_size: i64 = [
        "batches_of_1",
        "batches_of_2_10",
        "batches_of_11_100",
        "batches_of_101_499",
        "batches_of_500",
    ]
    .iter()
    .map(|c| relay.get::<_, i64>(*c))
    .sum();
    assert_eq!(by_size, batches, "every batch is in one size bucket");
    assert!(relay.get::<_, i64>("batch_max") >= 1);
    assert_eq!(relay.get::<_, i64>("confirms_pending"), 0);
    assert_eq!(relay.get::<_, String>("broker"), "open");
    assert!(
        relay
            .get::<_, Option<f64>>("cursor_age_ms")
            .is_some_and(|ms| ms >= 0.0)
    );
    let roles = row(&leader, "SHOW ROLES").await;
    assert_eq!(roles.get::<_, String>("roles"), "relay, console");
    assert_eq!(roles.get::<_, Option<String>>("http_addr"), None);
    relay_process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_relay_says_standby_in_a_second_relay_and_names_the_leader() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    let first = app.spawn_roles(Roles::RELAY).await;
    let first_console = console(first.console.expect("console on")).await;
    wait_until(Duration::from_secs(10), "the first relay leads", || async {
        row(&first_console, "SHOW RELAY")
            .await
            .get::<_, String>("role")
            == "leader"
    })
    .await;
    let second = app.spawn_roles(Roles::RELAY).await;
    let second_console = console(second.console.expect("console on")).await;
    wait_until(
        Duration::from_secs(10),
        "the second relay stands by",
        || async {
            row(&second_console, "SHOW RELAY")
                .await
                .get::<_, String>("role")
                == "standby"
        },
    )
    .await;
    let standby = row(&second_console, "SHOW RELAY").await;
    let leader = standby
        .get::<_, Option<String>>("leader")
        .expect("the standby names the leader");
    assert!(
        leader.contains("pid") && leader.contains("waitroom-relay"),
        "{leader}"
    );
    assert_eq!(standby.get::<_, String>("broker"), "none");

    // The leader wakes up for new events and publishes them; the standby does not.
    let before = row(&first_console, "SHOW RELAY").await;
    let wakeups = |r: &Row| {
        ["wakeups_notify", "wakeups_sweep", "wakeups_work"]
            .iter()
            .map(|c| r.get::<_, i64>(*c))
            .sum::<i64>()
    };
    app.create_queue("q", 5).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    wait_until(
        Duration::from_secs(10),
        "the leader counts its wake-up",
        || async { wakeups(&row(&first_console, "SHOW RELAY").await) > wakeups(&before) },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the leader counts the event",
        || async {
            row(&first_console, "SHOW RELAY")
                .await
                .get::<_, i64>("events_published")
                >= 1
        },
    )
    .await;
    let after = row(&first_console, "SHOW RELAY").await;
    assert!(
        after
            .get::<_, Option<DateTime<Utc>>>("last_wakeup_at")
            .is_some()
    );
    let cause = after
        .get::<_, Option<String>>("last_wakeup_cause")
        .expect("a cause");
    assert!(
        ["notify", "sweep", "work"].contains(&cause.as_str()),
        "{cause}"
    );
    assert_eq!(
        row(&second_console, "SHOW RELAY")
            .await
            .get::<_, i64>("events_published"),
        0
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_projections_parked_and_lag_follow_the_pipeline() {
    let app = TestApp::spawn().await;
    let client = console(app.console_addr()).await;
    app.create_queue("bad", 5).await;
    app.create_queue("good", 5).await;
    assert_eq!(app.check_in("good", "p1", "Urgent").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;

    // A projector that started late caught up from the store before consuming; the
    // deliveries of those events still arrive (as duplicates) and make a batch.
    wait_until(
        Duration::from_secs(10),
        "the projector consumes",
        || async {
            let projector = row(&client, "SHOW PROJECTOR").await;
            projector.get::<_, String>("state") == "consuming"
                && projector.get::<_, i64>("batches") >= 1
        },
    )
    .await;
    let projector = row(&client, "SHOW PROJECTOR").await;
    assert_eq!(projector.get::<_, String>("queue"), app.names.queue);
    assert_eq!(projector.get::<_, String>("broker"), "open");
    assert_eq!(
        projector.get::<_, Option<i32>>("prefetch"),
        Some(i32::from(waitroom::projector::PREFETCH))
    );
    assert!(projector.get::<_, i64>("batches") >= 1);
    assert!(projector.get::<_, i64>("events_applied") >= 3);
    assert!(
        projector
            .get::<_, Option<DateTime<Utc>>>("last_batch_at")
            .is_some()
    );

    let lag = rows(&client, "SHOW LAG").await;
    assert_eq!(lag[0].get::<_, String>("event_type"), "(all)");
    assert_eq!(lag[0].get::<_, i64>("count"), 3);
    let types: Vec<String> = lag[1..].iter().map(|r| r.get("event_type")).collect();
    assert_eq!(types, vec!["PatientCheckedIn", "WaitingQueueCreated"]);
    assert!(
        lag[0]
            .get::<_, Option<f64>>("p99_ms")
            .is_some_and(|ms| ms >= 0.0)
    );
    let windowed = rows(&client, "show lag '15 minutes';").await;
    assert_eq!(windowed[0].get::<_, i64>("count"), 3);
    // A malformed interval is Postgres's own error; the session goes on.
    let e = client
        .query("SHOW LAG 'fortnight-ish'", &[])
        .await
        .expect_err("not an interval");
    assert_eq!(sqlstate(&e).0, "22007", "{e}");
    assert_eq!(rows(&client, "SHOW HELP").await.len(), 9);

    let projections = row(&client, "SHOW PROJECTIONS").await;
    assert_eq!(projections.get::<_, String>("projection"), "waiting_room");
    assert_eq!(projections.get::<_, i64>("streams"), 2);
    assert_eq!(projections.get::<_, i64>("events_behind"), 0);
    assert_eq!(projections.get::<_, i64>("parked_streams"), 0);
    assert!(!projections.get::<_, bool>("rebuilding"));
    assert!(rows(&client, "SHOW PARKED").await.is_empty());

    // An event the projection cannot apply parks its stream.
    let db = app.pool.get().await.expect("pool connection");
    db.batch_execute(
        "INSERT INTO waiting_room_events (event_id, stream_id, version, event_type, occurred_at, correlation_id, actor, payload)
         VALUES (gen_random_uuid(), 'bad', 2, 'PatientCalled', now(), 'test', 'test',
                 '{\"queueId\":\"bad\",\"patientId\":\"ghost\",\"patientName\":\"G\",\"priority\":\"Low\",
                   \"consultationType\":\"GP\",\"consultingRoom\":\"R\",\"calledAt\":\"2026-01-01T00:00:00Z\"}')",
    )
    .await
    .expect("event appended");
    wait_until(Duration::from_secs(10), "the stream is parked", || async {
        !rows(&client, "SHOW PARKED").await.is_empty()
    })
    .await;
    let parked = row(&client, "SHOW PARKED").await;
    assert_eq!(parked.get::<_, String>("projection"), "waiting_room");
    assert_eq!(parked.get::<_, String>("stream_id"), "bad");
    assert_eq!(parked.get::<_, Option<i32>>("parked_version"), Some(2));
    assert!(
        parked
            .get::<_, Option<String>>("error")
            .is_some_and(|e| e.contains("ghost"))
    );
    assert_eq!(
        row(&client, "SHOW PROJECTIONS")
            .await
            .get::<_, i64>("parked_streams"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_show_is_refused_with_a_sqlstate_and_a_hint_and_the_session_goes_on() {
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    let client = console(app.console_addr()).await;
    for (sql, code) in [
        ("SELECT 1", "0A000"),
        ("DROP TABLE waiting_room_events", "0A000"),
        ("SET x = 1", "0A000"),
        ("delete from waiting_queue_view", "0A000"),
        ("hello there", "42601"),
        ("SHOW LAG 15 minutes", "42601"),
        ("SHOW TABLES", "42704"),
    ] {
        // Simple protocol.
        let e = client.simple_query(sql).await.expect_err(sql);
        let (got, hint) = sqlstate(&e);
        assert_eq!(got, code, "{sql} (simple): {e}");
        assert!(
            hint.contains("SHOW RELAY") && hint.contains("SHOW LAG"),
            "{sql}: the hint lists the commands: {hint}"
        );
        assert_eq!(
            simple(&client, "SHOW HELP").await.len(),
            9,
            "usable after {sql}"
        );
        // Extended protocol: refused when prepared.
        let e = client.prepare(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).0, code, "{sql} (extended): {e}");
        assert_eq!(
            rows(&client, "SHOW HELP").await.len(),
            9,
            "usable after {sql}"
        );
    }
    // Nothing reached the database.
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(events, 0);
    // An empty query is not an error.
    assert!(simple(&client, ";").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_console_password_set_the_console_requires_it_and_shows_no_secret() {
    let mut settings = isolated_settings();
    // Postgres trusts local connections, so the password in the URL is never checked; it
    // is a secret the console must not show all the same.
    settings.database_url =
        settings
            .database_url
            .replacen("postgres@", "postgres:db-secret-31@", 1);
    settings.console_password = Some(Secret::new("console-secret-47"));
    // With a password the console may listen beyond loopback.
    settings.console_addr = ConsoleAddr::At("0.0.0.0:0".parse().expect("an address"));
    let app = TestApp::spawn_with(settings, Roles::API).await;
    let addr: SocketAddr = ([127, 0, 0, 1], app.console_addr().port()).into();

    let e = connect_with(&config(addr))
        .await
        .expect_err("no password, no session");
    // The console asked for a password the client does not have.
    assert!(format!("{e:?}").contains("password missing"), "{e:?}");
    let e = connect_with(config(addr).password("wrong"))
        .await
        .expect_err("a wrong password, no session");
    assert_eq!(sqlstate(&e).0, "28P01", "{e}");

    let client = connect_with(config(addr).password("console-secret-47"))
        .await
        .expect("the right password opens a session");
    let config_rows = simple(&client, "SHOW CONFIG").await;
    let everything = format!("{config_rows:?}");
    for secret in ["db-secret-31", "console-secret-47", ":guest@"] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
    let value = |setting: &str| {
        config_rows
            .iter()
            .find(|r| r[0].1.as_deref() == Some(setting))
            .unwrap_or_else(|| panic!("{setting} listed"))[1]
            .1
            .clone()
    };
    assert_eq!(value("console_password").as_deref(), Some("********"));
    assert!(
        value("database_url").is_some_and(|u| u.contains("postgres:********@")),
        "{:?}",
        value("database_url")
    );
    assert_eq!(value("http_addr"), Some(app.settings.http_addr.to_string()));
    assert_eq!(
        value("broker_suffix"),
        Some(app.settings.broker_suffix.clone())
    );
    // The extended protocol works behind the password too.
    assert_eq!(rows(&client, "SHOW CONFIG").await.len(), config_rows.len());
}

#[tokio::test]
async fn a_console_beyond_loopback_without_a_password_is_refused_at_start() {
    let scratch = Scratch::new();
    let mut cmd =
        scratch.waitroom_with_broker(&["serve"], &crate::helpers::amqp_url(), "127.0.0.1:0");
    cmd.env("CONSOLE_ADDR", "0.0.0.0:0");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "CONSOLE_ADDR=0.0.0.0:0 without a password");
    assert!(
        line.contains("CONSOLE_ADDR") && line.contains("CONSOLE_PASSWORD"),
        "says what to set: {line}"
    );

    let mut cmd = scratch.waitroom(&["serve"]);
    cmd.env("CONSOLE_ADDR", "nowhere");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "CONSOLE_ADDR=nowhere");
    assert!(line.contains("nowhere"), "names the bad value: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_addr_off_binds_no_console() {
    let mut settings = isolated_settings();
    settings.console_addr = ConsoleAddr::Off;
    let mut app = TestApp::spawn_with(settings, Roles::API).await;
    let projector = app.spawn_roles(Roles::PROJECTOR).await;
    assert_eq!(projector.console, None);
    projector.stop().await;
}

#[tokio::test]
async fn every_sql_function_and_view_explains_itself_in_psql() {
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    let client = app.pool.get().await.expect("pool connection");
    let undocumented: Vec<String> = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND obj_description(p.oid, 'pg_proc') IS NULL
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
                AND obj_description(c.oid, 'pg_class') IS NULL",
            &[],
        )
        .await
        .expect("catalog query runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        undocumented.is_empty(),
        "\\df+ and \\dv+ explain every function and view; no COMMENT ON: {undocumented:?}"
    );
}
