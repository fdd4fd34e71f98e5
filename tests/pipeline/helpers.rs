//! Test harness: every test gets its own database and its own exchange/queue names, and a
//! full in-process pipeline (API on port 0, relay, projector) against the real Postgres and
//! RabbitMQ, so tests run in parallel and never see each other.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use waitroom::app::{Application, Roles};
use waitroom::broker::BrokerNames;
use waitroom::config::{ConsoleAddr, Settings};
use waitroom::state::LiveState;
use waitroom::store::DbConfig;

/// Postgres server URL without a database (override with `WAITROOM_TEST_PG`).
pub fn pg_base() -> String {
    std::env::var("WAITROOM_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// RabbitMQ URL (override with `WAITROOM_TEST_AMQP`).
pub fn amqp_url() -> String {
    std::env::var("WAITROOM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Isolated settings: a fresh database name and broker suffix, HTTP on a free port.
pub fn isolated_settings() -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = Settings::defaults();
    settings.database_url = format!("{}/waitroom_test_{}", pg_base(), &id[..16]);
    settings.amqp_url = amqp_url();
    settings.broker_suffix = format!("test_{}", &id[..16]);
    settings.http_addr = "127.0.0.1:0".parse().expect("valid address");
    settings.console_addr = ConsoleAddr::At("127.0.0.1:0".parse().expect("valid address"));
    settings.database_pool_size = 8;
    if std::env::var("TEST_LOG").is_ok() {
        waitroom::telemetry::init_logging(
            "info,waitroom=debug",
            Some(waitroom::telemetry::LogFormat::Pretty),
        );
    }
    settings
}

/// A running pipeline. Dropping it stops the roles and removes its database and broker names.
pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    pub names: BrokerNames,
    /// A pool on the test database for assertions.
    pub pool: Pool,
    roles: Option<RunningRoles>,
    cleanup: bool,
}

/// Roles running on a test app's database and broker names.
pub struct RunningRoles {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    /// The process-level live state of these roles.
    pub live: Arc<LiveState>,
    /// Where these roles' diagnostics console listens (unless it is off).
    pub console: Option<std::net::SocketAddr>,
}

impl RunningRoles {
    /// Stops the roles cleanly (as SIGTERM would) and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("roles stop within 30 s")
            .expect("roles task does not panic");
    }

    /// Kills the roles without a clean shutdown (like SIGKILL: nothing finishes).
    pub fn kill(self) {
        self.handle.abort();
    }
}

impl TestApp {
    /// API + relay + projector.
    pub async fn spawn() -> Self {
        Self::spawn_with(isolated_settings(), Roles::ALL).await
    }

    /// The given roles with the given settings.
    pub async fn spawn_with(settings: Settings, roles: Roles) -> Self {
        let names = BrokerNames::with_suffix(&settings.broker_suffix);
        let (_, pool) = waitroom::app::connect_database(&settings)
            .await
            .expect("test database is reachable");
        let mut app = Self {
            address: String::new(),
            http: client_for(&settings),
            settings,
            names,
            pool,
            roles: None,
            cleanup: true,
        };
        app.start(roles).await;
        app
    }

    /// Starts (or restarts) the app's main roles on its database and broker names.
    pub async fn start(&mut self, roles: Roles) {
        assert!(self.roles.is_none(), "stop the running roles first");
        let running = self.spawn_roles(roles).await;
        self.roles = Some(running);
    }

    /// Stops the main roles cleanly (as SIGTERM would) and waits for them.
    pub async fn stop(&mut self) {
        if let Some(r) = self.roles.take() {
            r.stop().await;
        }
    }

    /// The main roles' live state.
    pub fn live(&self) -> Arc<LiveState> {
        self.roles.as_ref().expect("roles are running").live.clone()
    }

    /// Where the main roles' diagnostics console listens.
    pub fn console_addr(&self) -> std::net::SocketAddr {
        self.roles
            .as_ref()
            .expect("roles are running")
            .console
            .expect("the console is on")
    }

    /// Starts more roles (another "process") on the same database and broker names.
    pub async fn spawn_roles(&mut self, roles: Roles) -> RunningRoles {
        let application = Application::build(self.settings.clone(), roles)
            .await
            .expect("application builds");
        if let Some(addr) = application.http_addr() {
            self.address = format!("http://{addr}");
            // Keep the port for restarts.
            self.settings.http_addr = addr;
        }
        let live = application.live();
        let console = application.console_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        RunningRoles {
            shutdown,
            handle,
            live,
            console,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request is sent")
    }

    /// Creates a queue and asserts 201.
    pub async fn create_queue(&self, queue_id: &str, capacity: i64) {
        let r = self
            .post(
                "/api/queues",
                json!({"queueId": queue_id, "name": format!("Queue {queue_id}"), "maxCapacity": capacity}),
            )
            .await;
        assert_eq!(
            r.status(),
            201,
            "create queue: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Checks a patient in and returns the response.
    pub async fn check_in(
        &self,
        queue_id: &str,
        patient_id: &str,
        priority: &str,
    ) -> reqwest::Response {
        self.post(
            &format!("/api/queues/{queue_id}/check-ins"),
            json!({
                "patientId": patient_id,
                "patientName": format!("Patient {patient_id}"),
                "priority": priority,
                "consultationType": "General",
            }),
        )
        .await
    }

    /// Runs a scalar SQL query on the test database.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let client = self.pool.get().await.expect("pool connection");
        client.query_one(sql, &[]).await.expect("query runs").get(0)
    }

    /// Waits until every event's lag row is PROCESSED (or panics after `timeout`).
    pub async fn wait_all_processed(&self, timeout: Duration) {
        wait_until(timeout, "all events processed", || async {
            let pending: i64 = self
                .scalar("SELECT count(*) FROM event_processing_lag WHERE status <> 'PROCESSED'")
                .await;
            pending == 0
        })
        .await;
    }

    /// Waits until the relay has marked every outbox row published (or given up on it).
    /// Marking follows the broker's confirm, so it can trail the projection.
    pub async fn wait_outbox_published(&self) {
        wait_until(
            Duration::from_secs(10),
            "outbox marked published",
            || async {
                self.scalar::<i64>("SELECT pending FROM outbox_pending")
                    .await
                    == 0
            },
        )
        .await;
    }

    /// Keeps the database and broker names after the test (for debugging).
    #[allow(dead_code)]
    pub fn keep(&mut self) {
        self.cleanup = false;
    }
}

/// An HTTP client that sends the settings' `API_TOKEN` as a bearer token, if there is one.
pub fn client_for(settings: &Settings) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = settings
        .api_token
        .as_ref()
        .filter(|t| !t.expose().is_empty())
    {
        let value = format!("Bearer {}", token.expose());
        headers.insert(
            reqwest::header::AUTHORIZATION,
            value.parse().expect("a token is a valid header value"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = self.roles.take() {
            r.kill();
        }
        if !self.cleanup {
            return;
        }
        self.pool.close();
        remove_isolated(
            &self.settings.database_url,
            &self.settings.amqp_url,
            &self.names,
        );
    }
}

/// Drops a test database and deletes a test's queues and exchanges. Callable from `Drop`
/// inside a runtime: it works on a thread with its own.
pub fn remove_isolated(database_url: &str, amqp_url: &str, names: &BrokerNames) {
    let (database_url, amqp_url, names) =
        (database_url.to_owned(), amqp_url.to_owned(), names.clone());
    block_on_own_thread(move || cleanup(database_url, amqp_url, names));
}

/// Runs `work` to its end on a thread with a runtime of its own and waits for it, so cleanup
/// can run from `Drop` inside a test's runtime. Best effort: no runtime, no cleanup.
pub fn block_on_own_thread<F, Fut>(work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(work());
    })
    .join();
}

/// A free TCP port on the loopback interface (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn cleanup(database_url: String, amqp_url: String, names: BrokerNames) {
    if let Ok(db) = DbConfig::parse(&database_url) {
        let name = db.dbname().to_owned();
        if let Ok((client, conn)) =
            tokio_postgres::connect(&format!("{}/postgres", pg_base()), tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
    if let Ok(conn) = waitroom::broker::connect(&amqp_url, "waitroom-test-cleanup").await
        && let Ok(ch) = conn.create_channel().await
    {
        for q in [&names.queue, &names.dead_letter_queue] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for e in [&names.exchange, &names.dead_letter_exchange] {
            let _ = ch
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
}

/// The JSON body of a response.
pub async fn body(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}
