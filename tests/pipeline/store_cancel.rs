//! A command whose request is cancelled mid-append (the client hung up, a timeout fired) must
//! leave nothing half-done in the process: the fault suite found a stream with a missing
//! version after a network cut, because the cached state had moved on for an append that
//! never committed, and the next command appended past the gap.

use std::sync::Arc;
use std::time::Duration;

use waitroom::app::Roles;
use waitroom::domain::{
    Capacity, Command, ConsultationType, MaxNoShows, PatientId, PatientName, Priority, QueueId,
    QueueName,
};
use waitroom::store::{CommandContext, IdempotencyRequest, Store};
use waitroom::telemetry::Metrics;

use crate::helpers::{TestApp, isolated_settings, wait_until};

fn context(key: Option<&str>) -> CommandContext {
    CommandContext {
        correlation_id: "cancel-test".into(),
        causation_id: "cancel-test".into(),
        actor: "test".into(),
        idempotency: key.map(|k| IdempotencyRequest {
            key: k.to_owned(),
            request: serde_json::json!({ "key": k }),
        }),
        if_match: None,
    }
}

fn check_in(patient: &str) -> Command {
    Command::CheckIn {
        patient_id: PatientId::parse(patient).unwrap(),
        patient_name: PatientName::parse("Patient").unwrap(),
        priority: Priority::parse("Low").unwrap(),
        consultation_type: ConsultationType::parse("General").unwrap(),
        notes: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cancelled_before_it_commits_leaves_no_gap_in_the_stream() {
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    let store = Store::new(app.pool.clone(), Arc::new(Metrics::new()));
    let create = Command::CreateQueue {
        queue_id: QueueId::parse("q").unwrap(),
        name: QueueName::parse("Cancel").unwrap(),
        max_capacity: Capacity::parse(10).unwrap(),
        max_no_shows: MaxNoShows::parse(2).unwrap(),
    };
    store
        .execute("q", &create, &context(None), |_| ())
        .await
        .unwrap();
    store
        .execute("q", &check_in("p1"), &context(None), |_| ())
        .await
        .unwrap();

    // Hold every insert into the event table, so the next append waits in Postgres.
    let (locker, connection) =
        tokio_postgres::connect(&app.settings.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE waiting_room_events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    // With an Idempotency-Key the append runs on a pooled connection of its own.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        store.execute("q", &check_in("p2"), &context(Some("k-p2")), |_| ()),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the append waited on the lock and was cancelled"
    );
    // Its statement never commits: end the session that waits for the lock.
    let waiting: Vec<i32> = locker
        .query(
            "SELECT pid FROM pg_locks WHERE relation = 'waiting_room_events'::regclass AND NOT granted",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(waiting.len(), 1, "one append waits on the lock");
    locker
        .execute("SELECT pg_terminate_backend($1)", &[&waiting[0]])
        .await
        .unwrap();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let pid = waiting[0];
    wait_until(
        Duration::from_secs(5),
        "the cancelled session ends",
        || async {
            locker
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;

    // The next command is decided on what the store holds: p2 was never checked in.
    for attempt in 0.. {
        match store
            .execute("q", &check_in("p3"), &context(None), |_| ())
            .await
        {
            Ok(_) => break,
            // The pool may hand out the terminated session once before noticing it is gone.
            Err(e) if e.is_unavailable() && attempt < 3 => continue,
            Err(e) => panic!("check-in p3: {e}"),
        }
    }
    let rows = app
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT version, payload->>'patientId' FROM waiting_room_events
              WHERE stream_id = 'q' ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let stream: Vec<(i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stream,
        vec![(1, None), (2, Some("p1".into())), (3, Some("p3".into()))],
        "versions stay contiguous and p2, never committed, is not in the stream"
    );
}
