//! The fault-injection suite (issue 7): the real binary as five processes (an API, two
//! relays, two projectors) started together on a database that does not exist yet, thousands
//! of commands over hundreds of queues, and during that load: SIGKILLs with restarts,
//! RabbitMQ `stop_app`/`start_app` and a full node restart, a Postgres restart, a network cut
//! and a poison message. Afterwards every guarantee in the README's "Guarantees" section is
//! checked against the store, the read models and the broker.
//!
//! It restarts its Postgres and RabbitMQ, so it runs against a private cluster and a private
//! node that `scripts/faults.sh` starts (never the machine's services, never in parallel with
//! the rest of the suite). `#[ignore]` keeps it out of a plain `cargo test`; the script runs
//! it with `--ignored`, and `.ci/run` runs the script after everything else.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use waitroom::broker::BrokerNames;

const BIN: &str = env!("CARGO_BIN_EXE_waitroom");
/// Concurrent clients of the API.
const WORKERS: usize = 16;
/// Queues the load spreads over.
const QUEUES: usize = 200;
/// SIGKILLs injected (each followed by a restart of the same process).
const KILLS: usize = 6;
/// How long the queue drains after the load stops, at most.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);

/// The private services `scripts/faults.sh` started, and how to disturb them.
struct Services {
    /// Postgres server URL without a database.
    pg: String,
    /// Postgres host:port the proxy forwards to.
    pg_addr: String,
    /// RabbitMQ URL (direct, for the test's own checks).
    amqp: String,
    /// RabbitMQ host:port the proxy forwards to.
    amqp_addr: String,
    /// Shell command restarting Postgres.
    pg_restart: String,
    /// `rabbitmqctl` with its node argument.
    mq_ctl: String,
    /// Shell command stopping the RabbitMQ node (returns once its process has exited).
    mq_stop: String,
    /// Shell command starting the stopped RabbitMQ node (returns once it is up).
    mq_start: String,
}

impl Services {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the fault suite with `bash scripts/faults.sh`")
            })
        };
        Self {
            pg: var("WAITROOM_FAULTS_PG"),
            pg_addr: var("WAITROOM_FAULTS_PG_ADDR"),
            amqp: var("WAITROOM_FAULTS_AMQP"),
            amqp_addr: var("WAITROOM_FAULTS_AMQP_ADDR"),
            pg_restart: var("WAITROOM_FAULTS_PG_RESTART"),
            mq_ctl: var("WAITROOM_FAULTS_MQ_CTL"),
            mq_stop: var("WAITROOM_FAULTS_MQ_STOP"),
            mq_start: var("WAITROOM_FAULTS_MQ_START"),
        }
    }
}

/// Runs a shell command, panicking with its output when it fails.
async fn shell(command: &str) {
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .expect("sh runs");
    assert!(
        output.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A TCP proxy every process connects through, so the test can cut the network: a cut
/// closes every proxied connection and refuses new ones until it is lifted.
struct Proxy {
    port: u16,
    blocked: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blocked = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (b, g) = (blocked.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if b.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let mut cut = g.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            blocked,
            generation,
        }
    }

    fn cut(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

/// One of the five processes, restarted with the same arguments after a kill.
struct Process {
    name: String,
    role: &'static str,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Child,
    /// Exits nobody asked for (a crash, or a start that gave up).
    unexpected_exits: Vec<String>,
}

impl Process {
    fn spawn(name: &str, role: &'static str, env: Vec<(String, String)>, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let child = Self::start(role, &env, &log);
        Self {
            name: name.to_owned(),
            role,
            env,
            log,
            child,
            unexpected_exits: Vec::new(),
        }
    }

    fn start(role: &str, env: &[(String, String)], log: &Path) -> Child {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        Command::new(BIN)
            .arg(role)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("waitroom starts")
    }

    fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        self.child = Self::start(self.role, &self.env, &self.log);
    }

    /// Restarts the process when it exited on its own, remembering that it did.
    fn check(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.unexpected_exits
                .push(format!("{} exited on its own: {status}", self.name));
            self.child = Self::start(self.role, &self.env, &self.log);
        }
    }

    /// SIGTERM, then the exit status (None: still running after `grace`, then killed).
    async fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

/// A failed run must not leave processes retrying against stopped services.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the load saw: every 2xx answer with the version it names, and the other outcomes.
#[derive(Default)]
struct Outcomes {
    /// (queue id, version, event id when the answer names one) of every 2xx.
    accepted: Vec<(String, i64, Option<String>)>,
    /// Answers by status.
    statuses: BTreeMap<u16, u64>,
    /// Attempts that got no answer (connection refused or reset, timeout) or a 5xx, retried.
    retried: u64,
    /// Commands that never got an answer within their retries.
    abandoned: u64,
}

struct Load {
    http: reqwest::Client,
    base: String,
    outcomes: Mutex<Outcomes>,
    stop: AtomicBool,
    sent: AtomicU64,
}

impl Load {
    /// Sends one command, retrying with the same Idempotency-Key through faults, so a command
    /// whose first answer was lost is answered (from the idempotency record) instead of
    /// duplicated. Returns the final answer's status and body.
    async fn command(&self, path: &str, body: Value) -> Option<(u16, Value)> {
        let key = uuid::Uuid::new_v4().to_string();
        self.sent.fetch_add(1, Ordering::Relaxed);
        for _ in 0..240 {
            let response = self
                .http
                .post(format!("{}/api{path}", self.base))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            match response {
                Ok(r) if r.status().as_u16() < 500 => {
                    let status = r.status().as_u16();
                    let value: Value = r.json().await.unwrap_or(Value::Null);
                    let mut outcomes = self.outcomes.lock().await;
                    *outcomes.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
                        let queue = path.split('/').nth(2).unwrap_or_default().to_owned();
                        let queue = if queue.is_empty() {
                            value["queueId"].as_str().unwrap_or_default().to_owned()
                        } else {
                            queue
                        };
                        outcomes.accepted.push((
                            queue,
                            value["version"].as_i64().expect("2xx names a version"),
                            value["eventId"].as_str().map(str::to_owned),
                        ));
                    }
                    return Some((status, value));
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    *self
                        .outcomes
                        .lock()
                        .await
                        .statuses
                        .entry(status)
                        .or_default() += 1;
                }
                Err(_) => {}
            }
            self.outcomes.lock().await.retried += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.outcomes.lock().await.abandoned += 1;
        None
    }

    /// A clinic desk on random queues: check-ins, then call next and complete, no-show or
    /// cancel the called patient.
    async fn worker(self: Arc<Self>, worker: usize) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let queue = format!("fq-{}", fastrand::usize(..QUEUES));
            for _ in 0..2 {
                n += 1;
                let priority = ["Low", "Medium", "High", "Urgent"][fastrand::usize(..4)];
                self.command(
                    &format!("/queues/{queue}/check-ins"),
                    json!({"patientId": format!("w{worker}-{n}"), "patientName": format!("Patient {n}"),
                           "priority": priority, "consultationType": "General"}),
                )
                .await;
            }
            let called = self
                .command(
                    &format!("/queues/{queue}/call-next"),
                    json!({"consultingRoom": format!("Room {}", worker % 9 + 1)}),
                )
                .await;
            if let Some((200, body)) = called {
                let patient = body["patientId"]
                    .as_str()
                    .expect("called patient")
                    .to_owned();
                let action = ["complete", "complete", "no-show", "cancel"][fastrand::usize(..4)];
                self.command(
                    &format!("/queues/{queue}/patients/{patient}/{action}"),
                    json!({}),
                )
                .await;
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The read models as JSON text, ordered, for comparing with a rebuild.
async fn read_models(client: &tokio_postgres::Client) -> (String, String) {
    let queues: String = client
        .query_one(
            "SELECT coalesce(json_agg(q ORDER BY queue_id), '[]')::text FROM waiting_queue_view q",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let patients: String = client
        .query_one(
            "SELECT coalesce(json_agg(p ORDER BY queue_id, patient_id), '[]')::text
               FROM waiting_patients_view p",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (queues, patients)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts Postgres and RabbitMQ: run by scripts/faults.sh against private instances"]
async fn guarantees_hold_through_kills_broker_and_database_restarts_network_cuts_and_poison() {
    let services = Services::from_env();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let database = format!("waitroom_faults_{id}");
    let suffix = format!("faults_{id}");
    let names = BrokerNames::with_suffix(&suffix);
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{id}"));
    std::fs::create_dir_all(&logs).unwrap();
    println!("faults: logs in {}", logs.display());

    let pg_proxy = Proxy::start(services.pg_addr.clone()).await;
    let mq_proxy = Proxy::start(services.amqp_addr.clone()).await;
    let proxied_pg = format!("postgres://postgres@127.0.0.1:{}/{database}", pg_proxy.port);
    let proxied_amqp = format!("amqp://guest:guest@127.0.0.1:{}/%2f", mq_proxy.port);
    let http_port = free_port();
    let common = |extra: &[(&str, String)]| {
        let mut env = vec![
            ("DATABASE_URL".to_owned(), proxied_pg.clone()),
            ("AMQP_URL".to_owned(), proxied_amqp.clone()),
            ("BROKER_SUFFIX".to_owned(), suffix.clone()),
            ("CONSOLE_ADDR".to_owned(), "off".to_owned()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("DATABASE_POOL_SIZE".to_owned(), "8".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };

    // Concurrent first start: all five at once, on a database that does not exist yet.
    let started = Instant::now();
    let mut processes = vec![
        Process::spawn(
            "api",
            "serve",
            common(&[("HTTP_ADDR", format!("127.0.0.1:{http_port}"))]),
            &logs,
        ),
        Process::spawn("relay-1", "relay", common(&[]), &logs),
        Process::spawn("relay-2", "relay", common(&[]), &logs),
        Process::spawn("projector-1", "project", common(&[]), &logs),
        Process::spawn("projector-2", "project", common(&[]), &logs),
    ];
    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{http_port}"),
        outcomes: Mutex::new(Outcomes::default()),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
    });
    let ready = format!("{}/health/ready", load.base);
    let mut up = false;
    for _ in 0..600 {
        if let Ok(r) = load.http.get(&ready).send().await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in &mut processes {
        p.check();
    }
    let first_start: Vec<String> = processes
        .iter()
        .flat_map(|p| p.unexpected_exits.clone())
        .collect();
    assert!(
        first_start.is_empty(),
        "all five processes survive a concurrent first start: {first_start:?} (logs in {})",
        logs.display()
    );
    assert!(
        up,
        "the API is ready within 60 s of a concurrent first start"
    );
    println!(
        "faults: five processes started together on a new database, API ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for q in 0..QUEUES {
        let answer = load
            .command(
                "/queues",
                json!({"queueId": format!("fq-{q}"), "name": format!("Queue {q}"), "maxCapacity": 10000}),
            )
            .await;
        assert!(matches!(answer, Some((201, _))), "queue fq-{q} created");
    }

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(load.clone().worker(w)))
        .collect();

    // The faults, one after another (each service is back before the next fault), with the
    // SIGKILLs spread between them. Every fault is logged with what it took.
    let mut faults: Vec<String> = Vec::new();
    let mut kills = 0;
    let poison_id = uuid::Uuid::new_v4().to_string();
    let broker_faults = 6;
    for step in 0..(KILLS + broker_faults) {
        tokio::time::sleep(Duration::from_millis(2500 + fastrand::u64(..2000))).await;
        for p in &mut processes {
            p.check();
        }
        let t = Instant::now();
        // Kills at even steps, the other faults at odd ones.
        if step % 2 == 0 && kills < KILLS {
            kills += 1;
            let victim = fastrand::usize(..processes.len());
            processes[victim].kill_and_restart();
            faults.push(format!("SIGKILL {} and restart", processes[victim].name));
            continue;
        }
        match step / 2 {
            0 => {
                // A message no projector can decode, straight to the exchange.
                let conn = Connection::connect(&services.amqp, ConnectionProperties::default())
                    .await
                    .expect("broker");
                let channel = conn.create_channel().await.unwrap();
                channel
                    .basic_publish(
                        names.exchange.as_str().into(),
                        "waiting.room.PatientCheckedIn".into(),
                        BasicPublishOptions::default(),
                        b"{ this is not an event",
                        BasicProperties::default()
                            .with_message_id(poison_id.as_str().into())
                            .with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                conn.close(0, "done".into()).await.ok();
                faults.push(format!("poison message {poison_id}"));
            }
            1 => {
                shell(&format!("{} stop_app", services.mq_ctl)).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                shell(&format!("{} start_app", services.mq_ctl)).await;
                faults.push(format!(
                    "RabbitMQ stop_app, 3 s, start_app ({:.1} s)",
                    t.elapsed().as_secs_f64()
                ));
            }
            2 => {
                pg_proxy.cut();
                mq_proxy.cut();
                tokio::time::sleep(Duration::from_secs(4)).await;
                pg_proxy.restore();
                mq_proxy.restore();
                faults.push("network cut: every Postgres and RabbitMQ connection of the five processes closed, new ones refused, for 4 s".to_owned());
            }
            3 => {
                shell(&services.mq_stop).await;
                shell(&services.mq_start).await;
                faults.push(format!(
                    "RabbitMQ node stopped and started again ({:.1} s)",
                    t.elapsed().as_secs_f64()
                ));
            }
            4 => {
                shell(&services.pg_restart).await;
                faults.push(format!(
                    "Postgres restarted ({:.1} s)",
                    t.elapsed().as_secs_f64()
                ));
            }
            _ => {
                // One more kill of whoever leads or projects: the relays and projectors.
                kills += 1;
                let victim = 1 + fastrand::usize(..processes.len() - 1);
                processes[victim].kill_and_restart();
                faults.push(format!("SIGKILL {} and restart", processes[victim].name));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let load_secs = started.elapsed().as_secs_f64();
    let outcomes = load.outcomes.lock().await;
    println!(
        "faults: {} commands sent over {QUEUES} queues by {WORKERS} clients in {load_secs:.1} s; answers by status {:?}; {} attempts retried through faults; {} abandoned",
        load.sent.load(Ordering::Relaxed),
        outcomes.statuses,
        outcomes.retried,
        outcomes.abandoned
    );
    println!("faults: {} faults injected:", faults.len());
    for f in &faults {
        println!("faults:   - {f}");
    }

    // Drain: the relays publish everything and the projectors apply it.
    let direct = format!("{}/{database}", services.pg);
    let db = connect(&direct).await;
    let drain = Instant::now();
    loop {
        for p in &mut processes {
            p.check();
        }
        let pending = scalar(
            &db,
            "SELECT count(*) FROM waiting_room_outbox WHERE published_at IS NULL",
        )
        .await;
        let unprocessed = scalar(
            &db,
            "SELECT count(*) FROM waiting_room_events e WHERE NOT EXISTS (
                 SELECT 1 FROM event_processing_lag l
                  WHERE l.event_id = e.event_id AND l.status = 'PROCESSED')",
        )
        .await;
        if pending == 0 && unprocessed == 0 {
            break;
        }
        // A parked stream never drains: say which and why at once.
        let parked: Vec<String> = db
            .query(
                "SELECT stream_id || ' at v' || parked_version || ': ' || last_error
                   FROM projection_checkpoints WHERE status = 'PARKED'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            parked.is_empty(),
            "no stream is parked: {parked:?} (logs in {})",
            logs.display()
        );
        assert!(
            drain.elapsed() < DRAIN_LIMIT,
            "drained within {DRAIN_LIMIT:?}: {pending} unpublished, {unprocessed} unprocessed (logs in {})",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = drain.elapsed();

    // Graceful shutdown of all five: SIGTERM, exit 0 within the grace period.
    let mut exits = Vec::new();
    for p in &mut processes {
        let status = p.terminate(Duration::from_secs(30)).await;
        exits.push((p.name.clone(), status));
    }

    let events = scalar(&db, "SELECT count(*) FROM waiting_room_events").await;
    println!(
        "faults: {events} events; drained {:.2} s after the load stopped",
        drained.as_secs_f64()
    );

    // Every process survived every fault (restarted only when the test killed it) and
    // stopped cleanly.
    let unexpected: Vec<String> = processes
        .iter()
        .flat_map(|p| p.unexpected_exits.clone())
        .collect();
    assert!(
        unexpected.is_empty(),
        "no process exits unless killed: {unexpected:?} (logs in {})",
        logs.display()
    );
    for (name, status) in &exits {
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} exits 0 within 30 s of SIGTERM, got {status:?} (logs in {})",
            logs.display()
        );
    }
    assert_eq!(outcomes.abandoned, 0, "every command got an answer");
    assert!(
        !outcomes.statuses.contains_key(&400),
        "no command was malformed: {:?}",
        outcomes.statuses
    );
    assert!(
        outcomes.accepted.len() > 1000,
        "thousands of commands accepted"
    );

    // Every command answered 2xx is in the store, at the version it was told.
    let mut missing = Vec::new();
    for (queue, version, event_id) in &outcomes.accepted {
        let row = db
            .query_opt(
                "SELECT event_id::text FROM waiting_room_events WHERE stream_id = $1 AND version = $2",
                &[queue, &(*version as i32)],
            )
            .await
            .unwrap();
        match (row, event_id) {
            (None, _) => missing.push(format!("{queue}@{version}")),
            (Some(r), Some(id)) if r.get::<_, String>(0) != *id => {
                missing.push(format!("{queue}@{version} is not event {id}"))
            }
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "every 2xx is stored: {} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Exactly one PROCESSED lag row per event, and each stream applied exactly once.
    let lag_rows = scalar(&db, "SELECT count(*) FROM event_processing_lag").await;
    let processed = scalar(
        &db,
        "SELECT count(DISTINCT event_id) FROM event_processing_lag WHERE status = 'PROCESSED'",
    )
    .await;
    assert_eq!(lag_rows, events, "one lag row per event");
    assert_eq!(processed, events, "every event PROCESSED");
    let misapplied = scalar(
        &db,
        "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, max(version) AS v
                                 FROM waiting_room_events GROUP BY stream_id) s
           LEFT JOIN projection_checkpoints c USING (stream_id)
          WHERE c.events_applied IS DISTINCT FROM s.n OR c.last_version IS DISTINCT FROM s.v
             OR c.status <> 'ACTIVE'",
    )
    .await;
    assert_eq!(
        misapplied, 0,
        "every stream's events applied exactly once, none parked"
    );
    let outbox = scalar(
        &db,
        "SELECT count(*) FROM waiting_room_outbox WHERE published_at IS NULL",
    )
    .await;
    assert_eq!(outbox, 0, "the outbox is empty");

    // The read models equal a rebuild from the store.
    let before = read_models(&db).await;
    let rebuild = Command::new(BIN)
        .arg("rebuild")
        .env("DATABASE_URL", &direct)
        .env("AMQP_URL", &services.amqp)
        .env("BROKER_SUFFIX", &suffix)
        .output()
        .expect("rebuild runs");
    assert!(
        rebuild.status.success(),
        "rebuild: {}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    let after = read_models(&db).await;
    assert!(before.0 == after.0, "waiting_queue_view equals its rebuild");
    assert!(
        before.1 == after.1,
        "waiting_patients_view equals its rebuild"
    );

    // The poison message is in the dead-letter queue.
    let conn = Connection::connect(&services.amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut found = false;
    while let Some(message) = channel
        .basic_get(
            names.dead_letter_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        if message.properties.message_id().as_ref().map(|m| m.as_str()) == Some(&poison_id) {
            found = true;
        }
    }
    assert!(
        found,
        "the poison message is in {}",
        names.dead_letter_queue
    );
    println!(
        "faults: all guarantees held: {} accepted commands stored, {events} events each PROCESSED once, read models equal a rebuild, outbox empty, poison in the DLQ, five clean SIGTERM exits",
        outcomes.accepted.len()
    );

    // Clean up the broker names and the database.
    for q in [&names.queue, &names.dead_letter_queue] {
        let _ = channel
            .queue_delete(q.as_str().into(), Default::default())
            .await;
    }
    for e in [&names.exchange, &names.dead_letter_exchange] {
        let _ = channel
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    drop(db);
    let admin = connect(&format!("{}/postgres", services.pg)).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
}
