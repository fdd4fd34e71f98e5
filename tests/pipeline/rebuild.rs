//! Rebuild: replaying the event store into empty read models yields the live rows.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, body, wait_until};

const SNAPSHOT: &str = "\
SELECT (SELECT json_agg(q ORDER BY queue_id) FROM waiting_queue_view q)::text,
       (SELECT json_agg(p ORDER BY queue_id, patient_id) FROM waiting_patients_view p)::text,
       (SELECT json_agg(json_build_array(stream_id, last_version, events_applied, status) ORDER BY stream_id)
          FROM projection_checkpoints)::text";

async fn snapshot(app: &TestApp) -> (String, String, String) {
    let c = app.pool.get().await.unwrap();
    let r = c.query_one(SNAPSHOT, &[]).await.unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn busy_day(app: &TestApp) {
    for q in ["a", "b"] {
        app.create_queue(q, 10).await;
        for (i, prio) in ["Low", "Urgent", "Medium", "High", "Low", "High"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                app.check_in(q, &format!("{q}{i}"), prio).await.status(),
                201
            );
        }
        let call_path = format!("/api/queues/{q}/call-next");
        let call = |room: &'static str| app.post(&call_path, json!({"consultingRoom": room}));
        let first = body(call("R1").await).await;
        let p = first["patientId"].as_str().unwrap().to_owned();
        assert_eq!(
            app.post_empty(&format!("/api/queues/{q}/patients/{p}/complete"))
                .await
                .status(),
            200
        );
        let second = body(call("R2").await).await;
        let p = second["patientId"].as_str().unwrap().to_owned();
        assert_eq!(
            app.post_empty(&format!("/api/queues/{q}/patients/{p}/no-show"))
                .await
                .status(),
            200
        );
        assert_eq!(
            app.post_empty(&format!("/api/queues/{q}/patients/{q}4/cancel"))
                .await
                .status(),
            200
        );
        assert_eq!(
            app.post_empty(&format!("/api/queues/{q}/patients/{q}0/cancel"))
                .await
                .status(),
            200
        );
        assert_eq!(
            app.check_in(q, &format!("{q}0"), "Urgent").await.status(),
            201
        );
        body(call("R3").await).await;
    }
    app.wait_all_processed(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replays_the_event_store_into_the_same_rows_as_the_live_projection() {
    let app = TestApp::spawn().await;
    busy_day(&app).await;
    let live = snapshot(&app).await;
    assert!(
        live.1.contains("COMPLETED") && live.1.contains("CANCELLED") && live.1.contains("CALLED")
    );

    let report = waitroom::projector::rebuild::rebuild(&app.pool, "waiting_room", |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.streams, 2);
    let events: i64 = app.scalar("SELECT count(*) FROM waiting_room_events").await;
    assert_eq!(report.events as i64, events);
    assert_eq!(snapshot(&app).await, live);

    // The live pipeline carries on after the rebuild without applying anything twice.
    assert_eq!(app.check_in("a", "late", "Low").await.status(), 201);
    app.wait_all_processed(Duration::from_secs(10)).await;
    let applied: i64 = app
        .scalar("SELECT sum(events_applied)::bigint FROM projection_checkpoints")
        .await;
    assert_eq!(applied, events + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_endpoint_accepts_once_and_answers_404_for_unknown_projections() {
    let app = TestApp::spawn().await;
    busy_day(&app).await;
    let live = snapshot(&app).await;
    // Damage the read model; the rebuild restores it.
    app.pool
        .get()
        .await
        .unwrap()
        .batch_execute("UPDATE waiting_patients SET patient_name = 'wrong'")
        .await
        .unwrap();

    let r = app
        .post_empty("/api/projections/waiting_room/rebuild")
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(body(r).await["status"], "started");
    wait_until(
        Duration::from_secs(20),
        "rebuild restores the read model",
        || async { snapshot(&app).await == live },
    )
    .await;

    let r = app.post_empty("/api/projections/nope/rebuild").await;
    assert_eq!(r.status(), 404);
    assert!(
        body(r).await["type"]
            .as_str()
            .unwrap()
            .ends_with("projection-not-found")
    );
}

#[tokio::test]
async fn the_rebuild_command_prints_what_it_replayed() {
    let app = TestApp::spawn().await;
    app.create_queue("q", 5).await;
    app.check_in("q", "p", "Low").await;
    app.wait_all_processed(Duration::from_secs(10)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args(["rebuild", "--projection", "waiting_room"])
        .env("DATABASE_URL", &app.settings.database_url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rebuilt waiting_room: 2 events in 1 streams"),
        "{stdout}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waitroom"))
        .args(["rebuild", "--projection", "nope"])
        .env("DATABASE_URL", &app.settings.database_url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
