//! The relay's failure paths, against the real broker: a nack and a publish error each count
//! an attempt, an event that keeps failing is retired as dead (visible in the API, metrics and
//! the event's lag row) and healed from the store; and what holds the relay back is visible:
//! the oldest transaction holding an xid, and the exact number of parked streams.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use waitroom::relay::MAX_ATTEMPTS;

use crate::helpers::{TestApp, body, wait_until};

/// Generous: ten attempts with a backoff that doubles from 50 ms up to 5 s (with jitter).
const RETIRE_WITHIN: Duration = Duration::from_secs(180);

/// The value of the first sample of `/metrics` starting with `prefix`.
async fn metric(app: &TestApp, prefix: &str) -> f64 {
    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

/// An extra queue bound to a test's exchange that makes RabbitMQ nack every event: it takes
/// one message and rejects further publishes (`x-overflow: reject-publish`). Deleted when
/// dropped, also when the test fails.
struct NackBlocker {
    amqp_url: String,
    name: String,
}

impl NackBlocker {
    async fn install(app: &TestApp) -> Self {
        let name = format!("nack-blocker.{}", app.settings.broker_suffix);
        let conn = waitroom::broker::connect(&app.settings.amqp_url, "waitroom-test-blocker")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-overflow"),
            AMQPValue::LongString("reject-publish".into()),
        );
        args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(1));
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        ch.queue_bind(
            name.as_str().into(),
            app.names.exchange.as_str().into(),
            "waiting.room.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Fill it through the default exchange, so the projector's queue never sees the filler.
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = ch
            .basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                b"filler",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the blocker takes its one message");
        let _ = conn.close(200, "bye".into()).await;
        Self {
            amqp_url: app.settings.amqp_url.clone(),
            name,
        }
    }
}

impl Drop for NackBlocker {
    fn drop(&mut self) {
        let (url, name) = (self.amqp_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: delete on a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let conn = waitroom::broker::connect(&url, "waitroom-test-blocker")
                    .await
                    .unwrap();
                let ch = conn.create_channel().await.unwrap();
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .unwrap();
                let _ = conn.close(200, "bye".into()).await;
            });
        })
        .join();
    }
}

/// Events of `stream` that the relay retired (dead), with their attempts and last error.
async fn dead_events(app: &TestApp, stream: &str) -> Vec<(i32, i32, String)> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT version, attempts, coalesce(last_error, '') FROM waiting_room_outbox o \
               JOIN waiting_room_events e USING (event_id) \
              WHERE e.stream_id = $1 AND o.failed_at IS NOT NULL ORDER BY version",
            &[&stream],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Events with other than exactly one PROCESSED lag fact (`stream` or every stream).
async fn not_processed_once(app: &TestApp) -> i64 {
    app.scalar(
        "SELECT count(*) FROM waiting_room_events e \
          WHERE (SELECT count(*) FROM event_lag_facts f \
                  WHERE f.event_id = e.event_id AND f.status = 'PROCESSED') <> 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_events_count_attempts_are_retired_dead_and_heal_from_the_store() {
    let app = TestApp::spawn().await;
    app.create_queue("q", 10).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    app.wait_outbox_published().await;
    let failures_before = metric(&app, "waitroom_publish_failures_total").await;

    let blocker = NackBlocker::install(&app).await;
    for p in ["p1", "p2"] {
        assert_eq!(app.check_in("q", p, "Low").await.status(), 201);
    }
    // Attempts are counted, one per refusal...
    wait_until(Duration::from_secs(30), "a refusal counted", || async {
        app.scalar::<i64>(
            "SELECT count(*) FROM waiting_room_outbox WHERE attempts > 0 AND published_at IS NULL \
               AND last_error = 'nacked by RabbitMQ'",
        )
        .await
            > 0
    })
    .await;
    // ...until both events are retired after the limit.
    wait_until(RETIRE_WITHIN, "both refused events retired", || async {
        dead_events(&app, "q").await.len() == 2
    })
    .await;
    let dead = dead_events(&app, "q").await;
    assert_eq!(
        dead,
        vec![
            (2, MAX_ATTEMPTS, "nacked by RabbitMQ".to_owned()),
            (3, MAX_ATTEMPTS, "nacked by RabbitMQ".to_owned())
        ]
    );
    let outbox = body(app.get("/api/outbox/pending").await).await;
    assert_eq!(
        (outbox["count"].as_i64(), outbox["failed"].as_i64()),
        (Some(0), Some(2)),
        "{outbox}"
    );
    assert_eq!(metric(&app, "waitroom_outbox_failed ").await, 2.0);
    let failures = metric(&app, "waitroom_publish_failures_total").await - failures_before;
    assert!(
        failures >= f64::from(2 * MAX_ATTEMPTS),
        "every refusal is a publish failure: {failures}"
    );
    // (A nack says not every queue took the message: the projector's queue may have, so the
    // events may be projected already. Each refused publish was such a duplicate; below,
    // every event still has exactly one PROCESSED lag row.)

    // The broker accepts again: the stream's next event is published, and the projector
    // reads the two dead ones from the store before it.
    drop(blocker);
    assert_eq!(app.check_in("q", "p3", "Low").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(30)).await;
    app.wait_outbox_published().await;
    assert_eq!(not_processed_once(&app).await, 0);
    let waiting: i64 = app
        .scalar("SELECT count(*) FROM waiting_patients_view WHERE queue_id = 'q' AND status = 'WAITING'")
        .await;
    assert_eq!(waiting, 3);
    let published: Option<String> = app
        .scalar(
            "SELECT published_at::text FROM waiting_room_outbox o JOIN waiting_room_events e \
             USING (event_id) WHERE e.stream_id = 'q' AND e.version = 4",
        )
        .await;
    assert!(
        published.is_some(),
        "the event after the dead ones is published"
    );
}

/// Bigger than RabbitMQ's default `max_message_size` (128 MiB): the broker closes the
/// channel when it has received the message.
const OVERSIZED_PADDING: i64 = 128 * 1024 * 1024 + 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_breaks_the_channel_is_isolated_counted_and_retired_while_others_flow() {
    let app = TestApp::spawn().await;
    app.create_queue("q", 10).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    let client = app.pool.get().await.unwrap();
    // Written by hand (the API caps bodies far below this): a queue creation padded past
    // RabbitMQ's message size limit, on its own stream.
    client
        .execute(
            "INSERT INTO waiting_room_events (event_id, stream_id, version, event_type, occurred_at, \
             correlation_id, actor, payload) SELECT gen_random_uuid(), 'huge', 1, \
             'WaitingQueueCreated', now(), 'huge', 'test', jsonb_build_object('queueId', 'huge', \
             'name', 'Huge', 'maxCapacity', 5, 'maxNoShows', 2, \
             'createdAt', '2026-01-01T00:00:00Z', 'padding', repeat('x', $1::int))",
            &[&(OVERSIZED_PADDING as i32)],
        )
        .await
        .unwrap();
    assert_eq!(app.check_in("q", "p1", "Low").await.status(), 201);

    wait_until(RETIRE_WITHIN, "the oversized event retired", || async {
        !dead_events(&app, "huge").await.is_empty()
    })
    .await;
    let dead = dead_events(&app, "huge").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, MAX_ATTEMPTS, "{dead:?}");
    assert!(
        dead[0].2.contains("max size") || dead[0].2.contains("PRECONDITION_FAILED"),
        "the broker's reason is recorded: {dead:?}"
    );
    // Nothing else was blamed, and the rest flows: the check-in that followed it and a new one.
    assert_eq!(
        app.scalar::<i64>("SELECT failed FROM outbox_pending").await,
        1
    );
    assert_eq!(
        app.scalar::<i64>("SELECT count(*) FROM waiting_room_outbox_failures")
            .await,
        1
    );
    assert_eq!(app.check_in("q", "p2", "Low").await.status(), 201);
    wait_until(Duration::from_secs(30), "q's events processed", || async {
        app.scalar::<i64>(
            "SELECT count(*) FROM event_processing_lag WHERE stream_id = 'q' AND status = 'PROCESSED'",
        )
        .await
            == 3
    })
    .await;
    app.wait_outbox_published().await;
    let outbox = body(app.get("/api/outbox/pending").await).await;
    assert_eq!(
        (outbox["count"].as_i64(), outbox["failed"].as_i64()),
        (Some(0), Some(1)),
        "{outbox}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_cannot_be_an_amqp_message_is_retired_without_stopping_the_relay() {
    let app = TestApp::spawn().await;
    app.create_queue("long", 10).await;
    assert_eq!(app.check_in("long", "p1", "Low").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;
    let client = app.pool.get().await.unwrap();
    // Another check-in, written by hand with a correlation id longer than an AMQP short string
    // (255 bytes; the API takes at most 128 characters). Encoding it used to panic the relay.
    client
        .execute(
            "INSERT INTO waiting_room_events (event_id, stream_id, version, event_type, occurred_at, \
             correlation_id, actor, payload) \
             SELECT gen_random_uuid(), stream_id, 3, event_type, now(), repeat('c', 300), actor, \
                    jsonb_set(jsonb_set(payload, '{patientId}', '\"p9\"'), '{patientName}', \
                              '\"Patient p9\"') \
               FROM waiting_room_events WHERE stream_id = 'long' AND version = 2",
            &[],
        )
        .await
        .unwrap();
    wait_until(RETIRE_WITHIN, "the unencodable event retired", || async {
        !dead_events(&app, "long").await.is_empty()
    })
    .await;
    let dead = dead_events(&app, "long").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, MAX_ATTEMPTS);
    assert!(dead[0].2.contains("correlation id"), "{dead:?}");

    let status: String = app
        .scalar("SELECT status FROM event_processing_lag WHERE stream_id = 'long' AND version = 3")
        .await;
    assert_eq!(status, "FAILED", "never delivered: its lag row says so");

    // The relay still runs; the stream's next event heals the dead one from the store.
    assert_eq!(app.check_in("long", "p2", "High").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(30)).await;
    assert_eq!(not_processed_once(&app).await, 0);
    let queue = body(app.get("/api/queues/long").await).await;
    let patients: Vec<&str> = queue["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patientId"].as_str().unwrap())
        .collect();
    assert_eq!(patients, ["p2", "p1", "p9"], "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_writing_transaction_shows_in_readiness_and_metrics_with_its_age_and_pid() {
    let app = TestApp::spawn().await;
    let mut holder = app.pool.get().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // A write: the transaction takes an xid, which every snapshot lists in flight until it ends.
    tx.batch_execute("CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The report is cluster-wide: wait until ours is the oldest (other tests' are brief).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r = app.get("/health/ready").await;
        assert_eq!(r.status(), 200);
        let ready = body(r).await;
        if ready["oldestTransaction"]["pid"].as_i64() == Some(i64::from(pid)) {
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "our transaction (pid {pid}) is not reported: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let age = ready["oldestTransaction"]["ageSeconds"].as_f64().unwrap();
    assert!(age >= 1.5, "{ready}");
    assert_eq!(
        ready["oldestTransaction"]["state"], "idle in transaction",
        "{ready}"
    );
    let check = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "transactions")
        .cloned()
        .unwrap_or_else(|| panic!("a transactions check: {ready}"));
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {pid}")),
        "{ready}"
    );
    // Below the 60 s threshold it is not a warning yet; readiness is 200 either way.
    assert_eq!(check["status"], "up", "{ready}");
    assert!(metric(&app, "waitroom_oldest_transaction_age_seconds ").await >= 1.5);

    tx.rollback().await.unwrap();
    wait_until(Duration::from_secs(20), "our transaction gone", || async {
        let ready = body(app.get("/health/ready").await).await;
        ready["oldestTransaction"]["pid"].as_i64() != Some(i64::from(pid))
    })
    .await;
}

#[tokio::test]
async fn parked_stream_counts_are_exact_past_the_hundred_listed() {
    let app = TestApp::spawn().await;
    // Parking as project_batch records it: the checkpoint's status, version and error.
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO projection_checkpoints (projection, stream_id, last_version, status, \
             parked_version, last_error, parked_at) \
             SELECT 'waiting_room', 'parked-' || i, 0, 'PARKED', 1, 'poison ' || i, \
                    clock_timestamp() FROM generate_series(1, 150) i",
            &[],
        )
        .await
        .unwrap();
    let r = app.get("/api/projections/health").await;
    assert_eq!(r.status(), 503);
    let health = body(r).await;
    let projection = &health["projections"][0];
    assert_eq!(projection["parkedStreams"], 150, "{health}");
    assert_eq!(
        projection["parked"].as_array().map(Vec::len),
        Some(100),
        "the list stays capped"
    );
    assert_eq!(
        metric(
            &app,
            "waitroom_projection_parked_streams{projection=\"waiting_room\"}"
        )
        .await,
        150.0
    );
}
