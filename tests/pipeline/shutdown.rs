//! Graceful shutdown under load: `waitroom run` gets SIGTERM while commands pour in, exits 0
//! within the grace period, and after a restart every answered command is in the store,
//! published and projected exactly once.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::cli::{Running, Scratch};
use crate::helpers::amqp_url;

/// Concurrent clients and the queues they spread over.
const CLIENTS: usize = 12;
const QUEUES: usize = 12;
/// How long the load runs before SIGTERM.
const LOAD_BEFORE_SIGTERM: Duration = Duration::from_secs(3);
/// `waitroom run` must exit within the grace period (src/app.rs `SHUTDOWN_GRACE`) plus
/// start-up slack for the process itself.
const EXIT_BOUND: Duration = Duration::from_secs(waitroom::app::SHUTDOWN_GRACE.as_secs() + 5);

/// Starts `waitroom run` on the scratch database and broker names, logging to a file.
fn start(scratch: &Scratch, port: u16, tag: &str) -> Running {
    let log = std::env::temp_dir().join(format!("{}-{tag}.log", scratch.suffix));
    let mut cmd = scratch.waitroom_with_broker(&["run"], &amqp_url(), &format!("127.0.0.1:{port}"));
    cmd.env("CONSOLE_ADDR", "off")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    Running {
        child: cmd.spawn().expect("waitroom run starts"),
        log,
    }
}

async fn wait_healthy(running: &mut Running, http: &reqwest::Client, base: &str) {
    let health = format!("{base}/health/ready");
    let since = Instant::now();
    loop {
        if let Some(status) = running.child.try_wait().expect("child status") {
            panic!(
                "waitroom run exited early: {status}; log:\n{}",
                running.log()
            );
        }
        if http
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "not ready within 60 s; log:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let scratch = Scratch::new();
    let port = crate::helpers::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut running = start(&scratch, port, "first");
    wait_healthy(&mut running, &http, &base).await;
    for q in 0..QUEUES {
        let r = http
            .post(format!("{base}/api/queues"))
            .json(&json!({"queueId": format!("q{q}"), "name": format!("Queue {q}"), "maxCapacity": 10000}))
            .send()
            .await
            .expect("request is sent");
        assert_eq!(r.status(), 201, "create queue q{q}");
    }

    // Clients check patients in until the server stops answering. Every 2xx answer names
    // the event it appended.
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (http, base, stop, answered, failed) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            answered.clone(),
            failed.clone(),
        );
        clients.spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let queue = format!("q{}", (c + n) % QUEUES);
                let priority = ["Low", "Medium", "High", "Urgent"][n % 4];
                let sent = http
                    .post(format!("{base}/api/queues/{queue}/check-ins"))
                    .json(&json!({
                        "patientId": format!("c{c}-{n}"),
                        "patientName": format!("Patient {c} {n}"),
                        "priority": priority,
                        "consultationType": "General",
                    }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.expect("2xx body is JSON");
                        let id = body["eventId"]
                            .as_str()
                            .and_then(|s| Uuid::parse_str(s).ok())
                            .expect("201 names its eventId");
                        answered.lock().await.push(id);
                    }
                    Ok(r) => {
                        // 503 while stopping is allowed; anything else is a bug.
                        assert_eq!(r.status(), 503, "only 2xx or 503 under load");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(LOAD_BEFORE_SIGTERM).await;
    let before_sigterm = answered.lock().await.len();
    assert!(
        before_sigterm > 0,
        "the load reached the server; log:\n{}",
        running.log()
    );

    let pid = running.child.id();
    let stopping = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "SIGTERM sent");
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("child status") {
            break status;
        }
        assert!(
            stopping.elapsed() < EXIT_BOUND,
            "waitroom run did not exit within {EXIT_BOUND:?} of SIGTERM; log:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_in = stopping.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = clients.join_next().await {
        r.expect("client task does not panic");
    }
    let log = running.log();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM; log:\n{log}");
    assert!(!log.contains("panicked"), "no panic; log:\n{log}");
    assert!(
        !log.contains("aborting them"),
        "every role stopped by itself within the grace period; log:\n{log}"
    );
    drop(running);

    // Restart: the events appended before the stop are published and projected.
    let mut restarted = start(&scratch, port, "second");
    wait_healthy(&mut restarted, &http, &base).await;
    let client = scratch.client().await;
    let since = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM event_processing_lag WHERE status <> 'PROCESSED'), \
                        (SELECT pending + failed FROM outbox_pending)",
                &[],
            )
            .await
            .expect("query runs");
        let (unprocessed, unpublished): (i64, i64) = (row.get(0), row.get(1));
        if unprocessed == 0 && unpublished == 0 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "after restart {unprocessed} events unprocessed, {unpublished} unpublished; log:\n{}",
            restarted.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let answered: Vec<Uuid> = answered.lock().await.clone();
    let stored: HashSet<Uuid> = client
        .query(
            "SELECT event_id FROM waiting_room_events WHERE event_id = ANY($1)",
            &[&answered],
        )
        .await
        .expect("query runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&Uuid> = answered.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "every 2xx command is in the store; missing {missing:?}"
    );
    let row = client
        .query_one(
            "SELECT count(*), \
                    count(*) FILTER (WHERE (SELECT count(*) FROM event_lag_facts f \
                                             WHERE f.event_id = e.event_id AND f.status = 'PROCESSED') <> 1), \
                    count(*) FILTER (WHERE e.event_type = 'PatientCheckedIn') \
               FROM waiting_room_events e",
            &[],
        )
        .await
        .expect("query runs");
    let (events, not_once, check_ins): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(not_once, 0, "every event has exactly one PROCESSED lag row");
    let outbox: i64 = client
        .query_one(
            "SELECT count(*) FROM waiting_room_outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .expect("query runs")
        .get(0);
    assert_eq!(outbox, 0, "every event is published: the outbox is empty");
    // A check-in whose answer was lost in the stop may be stored too, never the reverse.
    assert!(check_ins >= answered.len() as i64);
    let projected: i64 = client
        .query_one("SELECT count(*) FROM waiting_patients_view", &[])
        .await
        .expect("query runs")
        .get(0);
    assert_eq!(projected, check_ins, "the read model holds every check-in");
    println!(
        "shutdown under load: {} commands answered 2xx ({before_sigterm} before SIGTERM), {} refused or cut, \
         {events} events stored; exit 0 in {:.2} s of SIGTERM (grace {} s)",
        answered.len(),
        failed.load(Ordering::Relaxed),
        stopped_in.as_secs_f64(),
        waitroom::app::SHUTDOWN_GRACE.as_secs()
    );

    let kill = Command::new("kill")
        .args(["-TERM", &restarted.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let since = Instant::now();
    while restarted.child.try_wait().expect("child status").is_none() {
        assert!(since.elapsed() < EXIT_BOUND, "the restarted run stops too");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
