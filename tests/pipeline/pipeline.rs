//! RLAPP's end-to-end scenarios: a command travels store → outbox → RabbitMQ → read model,
//! with its lag row going CREATED → PUBLISHED → PROCESSED; and the sub-second SLO.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, body, wait_until};

#[tokio::test]
async fn a_check_in_is_persisted_published_projected_and_its_lag_row_is_processed() {
    let app = TestApp::spawn().await;
    app.create_queue("cardiology", 5).await;

    let r = app.check_in("cardiology", "p-1", "high").await;
    assert_eq!(r.status(), 201);
    let created = body(r).await;
    let event_id: Uuid = created["eventId"].as_str().unwrap().parse().unwrap();
    assert_eq!(created["version"], 2);
    assert_eq!(created["position"], 1);

    // Persisted in the event store with camelCase payload and metadata.
    let client = app.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT stream_id, version, event_type, payload, correlation_id, actor FROM waiting_room_events WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cardiology");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "PatientCheckedIn");
    let payload: serde_json::Value = row.get(3);
    assert_eq!(payload["queueId"], "cardiology");
    assert_eq!(payload["patientId"], "p-1");
    assert_eq!(payload["priority"], "High");
    assert!(!row.get::<_, String>(4).is_empty());
    assert_eq!(row.get::<_, String>(5), "api");

    // It appeared in the outbox (same transaction) and gets published.
    let outbox_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM waiting_room_outbox WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(outbox_rows, 1);
    wait_until(Duration::from_secs(10), "outbox row published", || async {
        let published: bool = app
            .pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT published_at IS NOT NULL FROM waiting_room_outbox WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap()
            .get(0);
        published
    })
    .await;

    // It reaches the read model.
    app.wait_all_processed(Duration::from_secs(10)).await;
    let patient = client
        .query_one(
            "SELECT status, priority, position_in_queue, updated_by_event_version FROM waiting_patients_view \
             WHERE queue_id = 'cardiology' AND patient_id = 'p-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(patient.get::<_, String>(0), "WAITING");
    assert_eq!(patient.get::<_, String>(1), "High");
    assert_eq!(patient.get::<_, Option<i32>>(2), Some(1));
    assert_eq!(patient.get::<_, i32>(3), 2);
    let count: i32 = app
        .scalar(
            "SELECT current_patient_count FROM waiting_queue_view WHERE queue_id = 'cardiology'",
        )
        .await;
    assert_eq!(count, 1);

    // Its lag row is PROCESSED with consistent stage durations.
    let lag = body(app.get(&format!("/api/metrics/lag/{event_id}")).await).await;
    assert_eq!(lag["status"], "PROCESSED");
    let dispatch = lag["outboxDispatchMs"].as_f64().unwrap();
    let processing = lag["projectionProcessingMs"].as_f64().unwrap();
    let total = lag["totalLagMs"].as_f64().unwrap();
    assert!(dispatch >= 0.0 && processing >= 0.0, "{lag}");
    assert!((dispatch + processing - total).abs() < 0.01, "{lag}");
    assert!(lag["publishedAt"].is_string() && lag["processedAt"].is_string());
}

#[tokio::test]
async fn the_amqp_message_carries_the_envelope_and_correlation_id() {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let app = TestApp::spawn().await;
    // A second queue on the test exchange, to look at what the relay publishes.
    let conn = waitroom::broker::connect(&app.settings.amqp_url, "test-tap")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let tap = format!("tap.{}", app.settings.broker_suffix);
    ch.queue_declare(
        tap.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        tap.as_str().into(),
        app.names.exchange.as_str().into(),
        "waiting.room.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let r = app
        .http
        .post(format!("{}/api/queues", app.address))
        .header("X-Correlation-Id", "corr-123")
        .json(&json!({"queueId": "q1", "name": "Q1", "maxCapacity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-correlation-id"], "corr-123");

    let mut message = None;
    for _ in 0..500 {
        if let Some(m) = ch
            .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            message = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let message = message.expect("the relay published to the exchange");
    let props = &message.delivery.properties;
    assert_eq!(
        message.delivery.routing_key.as_str(),
        "waiting.room.WaitingQueueCreated"
    );
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-123")
    );
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        props.kind().as_ref().map(|s| s.as_str()),
        Some("WaitingQueueCreated")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    let envelope: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(
        props.message_id().as_ref().map(|s| s.to_string()),
        envelope["eventId"].as_str().map(str::to_owned)
    );
    for field in [
        "eventId",
        "streamId",
        "version",
        "globalPosition",
        "eventType",
        "occurredAt",
        "correlationId",
        "causationId",
        "actor",
        "data",
    ] {
        assert!(
            envelope.get(field).is_some(),
            "envelope lacks {field}: {envelope}"
        );
    }
    assert_eq!(envelope["correlationId"], "corr-123");
    assert_eq!(envelope["data"]["queueId"], "q1");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn an_idle_relay_is_woken_by_notify_not_by_its_safety_sweep() {
    let app = TestApp::spawn().await;
    app.create_queue("q", 5).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    // Let the relay go idle (flag raised, sleeping on LISTEN).
    wait_until(Duration::from_secs(5), "relay idle", || async {
        app.scalar::<bool>("SELECT waiting FROM relay_state").await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = app.check_in("q", "p", "Low").await;
    let event_id: Uuid = body(r).await["eventId"].as_str().unwrap().parse().unwrap();
    app.wait_all_processed(Duration::from_secs(10)).await;
    let total: f64 = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT total_lag_ms FROM event_processing_lag WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap()
        .get(0);
    // The safety sweep runs every 5 s; a wake-up by NOTIFY takes milliseconds.
    assert!(
        total < waitroom::relay::SAFETY_SWEEP.as_millis() as f64 / 2.0,
        "lag {total} ms: the relay was not woken by NOTIFY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_check_ins_have_p95_end_to_end_lag_under_one_second() {
    let app = TestApp::spawn().await;
    for q in 0..10 {
        app.create_queue(&format!("slo-{q}"), 100).await;
    }
    let results: Vec<u16> = stream::iter(0..200)
        .map(|i| {
            let app = &app;
            async move {
                app.check_in(&format!("slo-{}", i % 10), &format!("p{i}"), "Medium")
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    app.wait_all_processed(Duration::from_secs(30)).await;

    let stats = body(app.get("/api/metrics/lag?windowSeconds=600").await).await;
    let checked_in = stats["byEvent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["eventType"] == "PatientCheckedIn")
        .expect("check-in statistics")
        .clone();
    assert_eq!(checked_in["count"], 200);
    let p95 = stats["overall"]["p95Ms"].as_f64().unwrap();
    println!(
        "SLO test: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events",
        stats["overall"]["p50Ms"].as_f64().unwrap(),
        p95,
        stats["overall"]["p99Ms"].as_f64().unwrap(),
        stats["overall"]["maxMs"].as_f64().unwrap(),
        stats["overall"]["count"]
    );
    assert!(
        p95 < 1000.0,
        "p95 end-to-end lag {p95} ms breaks the 1 s bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_mid_traffic_loses_nothing_after_a_restart() {
    let mut app = TestApp::spawn().await;
    app.create_queue("q", 100).await;
    let statuses: Vec<u16> = stream::iter(0..30)
        .map(|i| {
            let app = &app;
            async move {
                app.check_in("q", &format!("p{i}"), "Low")
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201));
    // Stop while the relay and projector may still be busy, then start again.
    app.stop().await;
    app.start(waitroom::app::Roles::ALL).await;
    app.wait_all_processed(Duration::from_secs(20)).await;
    let applied: i64 = app
        .scalar("SELECT events_applied FROM projection_checkpoints WHERE stream_id = 'q'")
        .await;
    assert_eq!(applied, 31);
    let view = body(app.get("/api/queues/q").await).await;
    assert_eq!(view["currentPatientCount"], 30);
    assert_eq!(view["version"], 31);
}
