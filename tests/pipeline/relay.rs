//! The relay: at-least-once publishing (a crash between publish and mark re-publishes,
//! the projector applies once), one leader with standby takeover, dead rows healed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use waitroom::app::Roles;
use waitroom::relay::{Leader, Publisher, Queries, Relay};
use waitroom::state::{LiveState, RelayRole};
use waitroom::store::DbConfig;
use waitroom::telemetry::Metrics;

use crate::helpers::{TestApp, isolated_settings, wait_until};

const API_AND_PROJECTOR: Roles = Roles {
    api: true,
    relay: false,
    projector: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_redelivers_and_the_event_is_applied_once() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    app.create_queue("q", 5).await;
    assert_eq!(app.check_in("q", "p1", "Low").await.status(), 201);

    // A relay's first half: claim and publish with confirms, then "crash" before marking.
    let publisher = Publisher::connect(&app.settings.amqp_url, &app.names)
        .await
        .unwrap();
    let client = app.pool.get().await.unwrap();
    let queries = Queries::prepare(&client).await.unwrap();
    let cursor = queries.load(&client).await.unwrap();
    let mut batch = queries.claim(&client, &cursor, 100).await.unwrap();
    for _ in 0..500 {
        if batch.events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        batch = queries.claim(&client, &cursor, 100).await.unwrap();
    }
    assert_eq!(batch.events.len(), 2);
    let acked = publisher
        .publish(&batch.events, batch.claimed_at)
        .await
        .unwrap();
    assert_eq!(acked, vec![true, true]);
    drop(publisher);
    drop(client);

    // The projector applied both; the outbox still says unpublished.
    app.wait_all_processed(Duration::from_secs(10)).await;
    let unpublished: i64 = app
        .scalar("SELECT count(*) FROM waiting_room_outbox WHERE published_at IS NULL")
        .await;
    assert_eq!(unpublished, 2);

    // A new relay publishes them again and marks them.
    let relay = app.spawn_roles(Roles::RELAY).await;
    app.wait_outbox_published().await;
    let live = app.live();
    wait_until(Duration::from_secs(10), "duplicates delivered", || async {
        live.projector_deliveries.load(Ordering::Relaxed) >= 4
    })
    .await;

    // Four deliveries, two applications.
    assert_eq!(live.projector_deliveries.load(Ordering::Relaxed), 4);
    assert_eq!(live.projector_applied.load(Ordering::Relaxed), 2);
    let (last, applied): (i32, i64) = {
        let c = app.pool.get().await.unwrap();
        let r = c
            .query_one(
                "SELECT last_version, events_applied FROM projection_checkpoints WHERE stream_id = 'q'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((last, applied), (2, 2));
    let patients: i64 = app
        .scalar("SELECT count(*) FROM waiting_patients_view")
        .await;
    assert_eq!(patients, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_relay_leads_and_a_standby_takes_over_when_the_leader_stops() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    let first = app.spawn_roles(Roles::RELAY).await;
    let second = app.spawn_roles(Roles::RELAY).await;
    let leaders = |a: &Arc<LiveState>, b: &Arc<LiveState>| {
        [a, b]
            .iter()
            .filter(|l| l.relay().role == RelayRole::Leader)
            .count()
    };
    wait_until(Duration::from_secs(10), "a leader", || async {
        leaders(&first.live, &second.live) == 1
    })
    .await;
    // Still exactly one a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leaders(&first.live, &second.live), 1);

    app.create_queue("q", 5).await;
    app.wait_all_processed(Duration::from_secs(10)).await;

    let (leader, standby) = if first.live.relay().role == RelayRole::Leader {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(standby.live.relay().role, RelayRole::Standby);
    leader.stop().await;
    wait_until(Duration::from_secs(10), "the standby leads", || async {
        standby.live.relay().role == RelayRole::Leader
    })
    .await;
    assert_eq!(app.check_in("q", "p1", "Urgent").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;
    assert!(standby.live.relay_published.load(Ordering::Relaxed) >= 1);
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_outbox_row_is_healed_by_the_projector_from_the_event_store() {
    let mut app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    app.create_queue("q", 5).await;
    assert_eq!(app.check_in("q", "p1", "Low").await.status(), 201);
    assert_eq!(app.check_in("q", "p2", "High").await.status(), 201);
    // The relay gave up on version 2 (e.g. the broker refused it ten times).
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO waiting_room_outbox_failures (global_position, event_id, attempts, last_error, failed_at) \
             SELECT global_position, event_id, 10, 'test', now() FROM waiting_room_events \
              WHERE stream_id = 'q' AND version = 2",
            &[],
        )
        .await
        .unwrap();

    let relay = app.spawn_roles(Roles::RELAY).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    let row = client
        .query_one(
            "SELECT last_version, events_applied FROM projection_checkpoints WHERE stream_id = 'q'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (3, 3));
    let positions = client
        .query(
            "SELECT patient_id, position_in_queue FROM waiting_patients_view WHERE queue_id = 'q' ORDER BY position_in_queue",
            &[],
        )
        .await
        .unwrap();
    let positions: Vec<(String, i32)> = positions.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(positions, vec![("p2".to_owned(), 1), ("p1".to_owned(), 2)]);
    app.wait_outbox_published().await;
    let outbox = crate::helpers::body(app.get("/api/outbox/pending").await).await;
    assert_eq!(outbox["failed"], 1);
    assert_eq!(outbox["count"], 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_batch_publishes_each_committed_event_once_even_when_commits_overtake_positions() {
    let app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    app.create_queue("q", 5).await;
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(LiveState::default());
    let db = DbConfig::parse(&app.settings.database_url).unwrap();
    let relay = Relay::new(
        db.clone(),
        app.settings.amqp_url.clone(),
        app.names.clone(),
        metrics.clone(),
        live,
    );
    let mut leader = Leader::acquire(&db).await.unwrap();
    let publisher = Publisher::connect(&app.settings.amqp_url, &app.names)
        .await
        .unwrap();

    // The queue's creation.
    let outcome = relay.publish_batch(&mut leader, &publisher).await.unwrap();
    assert_eq!(
        (outcome.claimed, outcome.published, outcome.refused),
        (1, 1, 0)
    );

    // A writer takes a global position, then a check-in takes a later one and commits first.
    let mut slow = app.pool.get().await.unwrap();
    let tx = slow.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO waiting_room_events (event_id, stream_id, version, event_type, occurred_at, \
         correlation_id, actor, payload) VALUES (gen_random_uuid(), 'slow', 1, \
         'WaitingQueueCreated', now(), 't', 't', \
         '{\"queueId\":\"slow\",\"name\":\"Slow\",\"maxCapacity\":5,\"maxNoShows\":2,\"createdAt\":\"2026-01-01T00:00:00Z\"}')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(app.check_in("q", "p1", "Low").await.status(), 201);
    // What has committed is published at once; the slow writer holds nothing back.
    let outcome = relay.publish_batch(&mut leader, &publisher).await.unwrap();
    assert_eq!(
        (outcome.claimed, outcome.published, outcome.refused),
        (1, 1, 0)
    );
    let outcome = relay.publish_batch(&mut leader, &publisher).await.unwrap();
    assert_eq!(outcome.claimed, 0, "nothing new is visible");

    // The slow writer commits with the smaller position: it is published next, not skipped.
    tx.commit().await.unwrap();
    let outcome = relay.publish_batch(&mut leader, &publisher).await.unwrap();
    assert_eq!(
        (outcome.claimed, outcome.published, outcome.refused),
        (1, 1, 0),
        "an event that commits after a later position was published is still published"
    );
    let outcome = relay.publish_batch(&mut leader, &publisher).await.unwrap();
    assert_eq!(outcome.claimed, 0, "each event is published once");
    assert!(
        metrics
            .encode()
            .contains("waitroom_events_published_total{event_type=\"PatientCheckedIn\"} 1")
    );
    app.wait_all_processed(Duration::from_secs(10)).await;
    app.wait_outbox_published().await;
}

/// A TCP proxy to RabbitMQ that a test can cut and restore, to play "broker down".
struct BrokerProxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BrokerProxy {
    async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                conns.spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }

    /// Drops the listener and every proxied connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_nothing_is_marked_published_and_everything_flows_when_it_returns() {
    let app = TestApp::spawn_with(isolated_settings(), API_AND_PROJECTOR).await;
    app.create_queue("q", 10).await;
    let mut proxy = BrokerProxy::start(0).await;
    let port = proxy.port;
    let mut relay_settings = app.settings.clone();
    relay_settings.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let mut relay_app = TestApp::spawn_with(relay_settings, Roles::RELAY).await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    // RabbitMQ may deliver before it confirms: the queue's creation is projected before the
    // relay has its confirm. Start from a fully published outbox.
    app.wait_outbox_published().await;

    proxy.cut();
    // Give lapin a moment to notice the dead socket.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        assert_eq!(
            app.check_in("q", &format!("p{i}"), "Low").await.status(),
            201
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let unpublished: i64 = app
        .scalar("SELECT count(*) FROM waiting_room_outbox WHERE published_at IS NULL")
        .await;
    assert_eq!(
        unpublished, 3,
        "nothing is marked published while the broker is unreachable"
    );
    let live = relay_app.live();
    assert!(
        live.relay().last_error.is_some(),
        "the relay reports the broker failure"
    );

    let _proxy = BrokerProxy::start(port).await;
    app.wait_all_processed(Duration::from_secs(20)).await;
    // Marking follows the confirm; the projector may have been faster.
    app.wait_outbox_published().await;
    let applied: i64 = app
        .scalar("SELECT events_applied FROM projection_checkpoints WHERE stream_id = 'q'")
        .await;
    assert_eq!(applied, 4);
    relay_app.stop().await;
}
