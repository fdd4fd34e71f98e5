//! The projector: duplicates skipped, restarts lose nothing and apply nothing twice,
//! poison goes to the dead-letter queue, a failing projection parks only its stream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use waitroom::app::Roles;
use waitroom::projector::{Delivered, WAITING_ROOM, apply_batch};

use crate::helpers::{TestApp, body, isolated_settings, wait_until};

const API_AND_RELAY: Roles = Roles {
    api: true,
    relay: true,
    projector: false,
};

/// Publishes `body` to the app's exchange as a PatientCheckedIn message, with confirms.
async fn publish_raw(app: &TestApp, body: &[u8]) -> (lapin::Connection, lapin::Channel) {
    let conn = waitroom::broker::connect(&app.settings.amqp_url, "test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            app.names.exchange.as_str().into(),
            "waiting.room.PatientCheckedIn".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
    (conn, ch)
}

async fn checkpoint(app: &TestApp, stream: &str) -> (i32, i64, String) {
    let c = app.pool.get().await.unwrap();
    let r = c
        .query_one(
            "SELECT last_version, events_applied, status FROM projection_checkpoints \
             WHERE projection = 'waiting_room' AND stream_id = $1",
            &[&stream],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_delivered_twice_produces_the_same_state_and_one_application() {
    let app = TestApp::spawn().await;
    app.create_queue("q", 5).await;
    assert_eq!(app.check_in("q", "p1", "High").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;
    let before: serde_json::Value = body(app.get("/api/queues/q").await).await;

    // Re-publish the stored envelope of version 2, as a redelivery would.
    let envelope = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT json_build_object('eventId', event_id, 'streamId', stream_id, 'version', version, \
             'globalPosition', global_position, 'eventType', event_type, 'occurredAt', occurred_at, \
             'correlationId', correlation_id, 'causationId', causation_id, 'actor', actor, 'data', payload)::text \
             FROM waiting_room_events WHERE stream_id = 'q' AND version = 2",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let (conn, _) = publish_raw(&app, envelope.as_bytes()).await;
    let live = app.live();
    wait_until(
        Duration::from_secs(10),
        "the duplicate is consumed",
        || async { live.projector_deliveries.load(Ordering::Relaxed) >= 3 },
    )
    .await;

    assert_eq!(checkpoint(&app, "q").await, (2, 2, "ACTIVE".to_owned()));
    assert_eq!(live.projector_applied.load(Ordering::Relaxed), 2);
    let after: serde_json::Value = body(app.get("/api/queues/q").await).await;
    assert_eq!(before, after);
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn apply_batch_skips_duplicates_and_fills_gaps_from_the_event_store() {
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    app.create_queue("q", 5).await;
    for p in ["a", "b", "c"] {
        assert_eq!(app.check_in("q", p, "Low").await.status(), 201);
    }
    // Version 3 arrives before 1 and 2: the projector reads 1..3 from the store.
    let outcome = apply_batch(&app.pool, WAITING_ROOM, &[Delivered::new("q", 3)])
        .await
        .unwrap();
    assert_eq!(outcome.applied, 3);
    assert_eq!(outcome.lag_ms.len(), 3);
    // Duplicates (1, 2, 3) and the next one (4) in one batch: only 4 is applied.
    let outcome = apply_batch(
        &app.pool,
        WAITING_ROOM,
        &[
            Delivered::new("q", 1),
            Delivered::new("q", 4),
            Delivered::new("q", 2),
            Delivered::new("q", 3),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcome.applied, 1);
    assert!(outcome.parked.is_empty());
    assert_eq!(checkpoint(&app, "q").await, (4, 4, "ACTIVE".to_owned()));
    let positions: Vec<i32> = app
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT position_in_queue FROM waiting_patients_view WHERE queue_id = 'q' ORDER BY patient_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_projector_loses_nothing_and_applies_nothing_twice() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_RELAY).await;
    let projector = app.spawn_roles(Roles::PROJECTOR).await;
    app.create_queue("q", 100).await;
    for i in 0..10 {
        assert_eq!(
            app.check_in("q", &format!("a{i}"), "Medium").await.status(),
            201
        );
    }
    app.wait_all_processed(Duration::from_secs(10)).await;
    projector.stop().await;

    for i in 0..10 {
        assert_eq!(
            app.check_in("q", &format!("b{i}"), "High").await.status(),
            201
        );
    }
    // Published, but nobody projects them.
    wait_until(Duration::from_secs(10), "published", || async {
        app.scalar::<i64>("SELECT count(*) FROM event_processing_lag WHERE status = 'PUBLISHED'")
            .await
            == 10
    })
    .await;

    // A killed projector (no clean shutdown) in the middle does not matter either.
    let killed = app.spawn_roles(Roles::PROJECTOR).await;
    killed.kill();
    let projector = app.spawn_roles(Roles::PROJECTOR).await;
    app.wait_all_processed(Duration::from_secs(20)).await;
    assert_eq!(checkpoint(&app, "q").await, (21, 21, "ACTIVE".to_owned()));
    let view = body(app.get("/api/queues/q").await).await;
    let positions: Vec<i64> = view["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (1..=20).collect::<Vec<_>>());
    assert_eq!(view["patients"][0]["priority"], "High");
    assert_eq!(view["currentPatientCount"], 20);
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_goes_to_the_dead_letter_queue_and_the_pipeline_keeps_flowing() {
    let app = TestApp::spawn().await;
    let (conn, ch) = publish_raw(&app, b"{not json").await;

    let mut dead = None;
    for _ in 0..500 {
        dead = ch
            .basic_get(
                app.names.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        dead.expect("poison reached the DLQ").delivery.data,
        b"{not json"
    );

    app.create_queue("q", 5).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    assert_eq!(body(app.get("/api/queues/q").await).await["queueId"], "q");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projection_parks_its_stream_while_other_streams_keep_flowing() {
    let app = TestApp::spawn().await;
    app.create_queue("bad", 5).await;
    app.create_queue("good", 5).await;
    app.wait_all_processed(Duration::from_secs(10)).await;

    // An event the projection cannot apply (a call for a patient who never checked in),
    // appended as the store would (the event row is the outbox).
    let client = app.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO waiting_room_events (event_id, stream_id, version, event_type, occurred_at, correlation_id, actor, payload)
             VALUES (gen_random_uuid(), 'bad', 2, 'PatientCalled', now(), 'test', 'test',
                     '{\"queueId\":\"bad\",\"patientId\":\"ghost\",\"patientName\":\"G\",\"priority\":\"Low\",
                       \"consultationType\":\"GP\",\"consultingRoom\":\"R\",\"calledAt\":\"2026-01-01T00:00:00Z\"}')",
        )
        .await
        .unwrap();

    wait_until(Duration::from_secs(10), "the stream is parked", || async {
        checkpoint(&app, "bad").await.2 == "PARKED"
    })
    .await;
    let failed = client
        .query_one(
            "SELECT status, failure_reason FROM event_processing_lag WHERE stream_id = 'bad' AND version = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failed.get::<_, String>(0), "FAILED");
    assert!(failed.get::<_, String>(1).contains("ghost"));

    // Other streams keep flowing.
    assert_eq!(app.check_in("good", "p1", "Low").await.status(), 201);
    wait_until(Duration::from_secs(10), "good stream projected", || async {
        checkpoint(&app, "good").await.0 == 2
    })
    .await;

    // Visible in health and metrics.
    let r = app.get("/api/projections/health").await;
    assert_eq!(r.status(), 503);
    let health = body(r).await;
    assert_eq!(health["status"], "unhealthy");
    let p = &health["projections"][0];
    assert_eq!(p["name"], "waiting_room");
    assert_eq!(p["parkedStreams"], 1);
    assert_eq!(p["parked"][0]["streamId"], "bad");
    assert_eq!(p["parked"][0]["parkedVersion"], 2);
    assert!(p["parked"][0]["error"].as_str().unwrap().contains("ghost"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("waitroom_projection_parked_streams{projection=\"waiting_room\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("waitroom_projection_failures_total{projection=\"waiting_room\"} 1"));
}

#[tokio::test]
async fn a_plan_cached_on_empty_read_models_still_looks_rows_up_by_key_on_a_big_queue_among_many() {
    // A generic plan cached in the long-lived projector session once made one event on a
    // queue of a few hundred patients take seconds (it scanned the whole table per event).
    // The projection functions pin nested loops over the indexes: cache the plans on empty
    // read models, grow a queue to thousands of patients, and look at the plan that runs.
    let app = TestApp::spawn_with(isolated_settings(), Roles::API).await;
    app.create_queue("big", 10_000).await;
    let db = waitroom::store::DbConfig::parse(&app.settings.database_url).unwrap();
    let (client, mut connection) = db.config().connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    // Cache the plans while the read models are nearly empty, with statistics that say so
    // (plpgsql keeps a statement's plan after five executions, so apply another queue's
    // events one at a time).
    client
        .batch_execute(
            "ANALYZE waiting_patients, waiting_queue_view, waiting_room_events, event_lag_facts, \
             projection_checkpoints",
        )
        .await
        .unwrap();
    app.create_queue("warm", 100).await;
    for p in 0..7 {
        assert_eq!(
            app.check_in("warm", &format!("w{p}"), "High")
                .await
                .status(),
            201
        );
    }
    for version in 1..=8 {
        client
            .query(
                "SELECT * FROM project_batch('waiting_room', ARRAY['warm', 'big'], ARRAY[$1::int, 1])",
                &[&version],
            )
            .await
            .unwrap();
    }
    // Thousands of patients in the queue and thousands of other queues' checkpoints (the
    // statistics still say both are nearly empty), then six more events through the same
    // session.
    client
        .batch_execute(
            "INSERT INTO waiting_patients (queue_id, patient_id, patient_name, priority, priority_rank, \
               consultation_type, status, queued_at, queue_seq, checked_in_at, updated_by_event_version) \
             SELECT 'big', 'old-' || i, 'P', 'Low', 1, 'GP', 'COMPLETED', now(), 0, now(), 1 \
               FROM generate_series(1, 5000) i; \
             INSERT INTO projection_checkpoints (projection, stream_id) \
             SELECT 'waiting_room', 'other-' || i FROM generate_series(1, 5000) i",
        )
        .await
        .unwrap();
    for p in 0..6 {
        assert_eq!(
            app.check_in("big", &format!("p{p}"), "Low").await.status(),
            201
        );
    }
    client
        .batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
             SET auto_explain.log_nested_statements = on; SET auto_explain.log_analyze = on; SET auto_explain.log_level = notice; \
             SET client_min_messages = notice",
        )
        .await
        .unwrap();
    let applied: i32 = client
        .query_one(
            "SELECT applied FROM project_batch('waiting_room', ARRAY['big'], ARRAY[7])",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 6);
    let mut plans = String::new();
    while let Ok(n) = notices.try_recv() {
        plans.push_str(&n);
        plans.push('\n');
    }
    assert!(
        plans.contains("Index Scan using waiting_patients_pkey"),
        "the plan looks patients up by key: {plans}"
    );
    // A plan that scans the queue's patients for every event discards thousands of rows.
    let most_discarded = plans
        .lines()
        .filter_map(|l| l.split("Rows Removed by ").nth(1))
        .filter_map(|rest| rest.split(": ").nth(1))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        most_discarded < 100,
        "no plan scans a read model to find a few rows ({most_discarded} rows discarded): {plans}"
    );
}
