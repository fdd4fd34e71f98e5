//! Wiring: build the roles a subcommand asks for (checking every dependency first, so a
//! missing service is one clear line), run them until shutdown, stop them cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::auth::TokenError;
use crate::api::{self, ApiTokens, AppState};
use crate::board::{Board, Feed};
use crate::broker::{self, BrokerNames, BrokerUnreachable};
use crate::config::Settings;
use crate::console::{self, ConsoleStartError};
use crate::projector::Projector;
use crate::relay::Relay;
use crate::state::LiveState;
use crate::store::{self, ConnectError, DbConfig, Store};
use crate::telemetry::Metrics;

/// How long running roles get to finish their batch after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Which roles run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub relay: bool,
    pub projector: bool,
}

impl Roles {
    /// API + relay + projector.
    pub const ALL: Roles = Roles {
        api: true,
        relay: true,
        projector: true,
    };
    /// Only the API.
    pub const API: Roles = Roles {
        api: true,
        relay: false,
        projector: false,
    };
    /// Only the relay.
    pub const RELAY: Roles = Roles {
        api: false,
        relay: true,
        projector: false,
    };
    /// Only the projector.
    pub const PROJECTOR: Roles = Roles {
        api: false,
        relay: false,
        projector: true,
    };
}

/// Why the process could not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error(transparent)]
    Broker(#[from] BrokerUnreachable),
    #[error("cannot declare RabbitMQ exchanges and queues: {0}")]
    Topology(#[from] lapin::Error),
    #[error("cannot listen on {addr}: {source} (set HTTP_ADDR or --http-addr to a free address)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Console(#[from] ConsoleStartError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(
        "cannot listen on {addr} for metrics: {source} (set METRICS_ADDR or --metrics-addr to a free address, or `off`)"
    )]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Connects to Postgres (creating the database when missing), applies migrations and
/// returns a checked pool.
pub async fn connect_database(
    settings: &Settings,
) -> Result<(DbConfig, deadpool_postgres::Pool), ConnectError> {
    let db = DbConfig::parse(&settings.database_url)?;
    db.ensure_database().await?;
    store::migrate::run(&db).await?;
    let pool = db.pool(usize::from(settings.database_pool_size));
    db.check(&pool).await?;
    Ok((db, pool))
}

/// Connects to RabbitMQ and declares the topology, then disconnects.
pub async fn check_broker(settings: &Settings, names: &BrokerNames) -> Result<(), StartupError> {
    let connection = broker::connect(&settings.amqp_url, "waitroom-startup").await?;
    let channel = connection.create_channel().await?;
    broker::declare_topology(&channel, names).await?;
    let _ = connection.close(200, "startup check done".into()).await;
    Ok(())
}

/// A built, not yet running, set of roles.
pub struct Application {
    roles: Roles,
    store: Store,
    db: DbConfig,
    settings: Settings,
    names: BrokerNames,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
    listener: Option<tokio::net::TcpListener>,
    console: Option<tokio::net::TcpListener>,
    metrics_listener: Option<tokio::net::TcpListener>,
    tokens: ApiTokens,
}

impl Application {
    /// Checks Postgres and RabbitMQ, applies migrations, and binds the HTTP port when the API
    /// runs and the console's unless it is `off`.
    pub async fn build(settings: Settings, roles: Roles) -> Result<Self, StartupError> {
        // A console exposed without a password is a configuration error: say so before
        // touching any service.
        console::check(&settings)?;
        // So are unusable API tokens; only the API reads them.
        let tokens = if roles.api {
            ApiTokens::load(&settings)?
        } else {
            ApiTokens::open()
        };
        let names = BrokerNames::with_suffix(&settings.broker_suffix);
        let (db, pool) = connect_database(&settings).await?;
        check_broker(&settings, &names).await?;
        let listener = if roles.api {
            let addr = settings.http_addr;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            )
        } else {
            None
        };
        let console = console::bind(&settings).await?;
        let metrics_listener = match settings.metrics_addr {
            crate::config::ListenAddr::Off => None,
            crate::config::ListenAddr::At(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::MetricsBind { addr, source })?,
            ),
        };
        let metrics = Arc::new(Metrics::new());
        metrics.pools.register("store", pool.clone());
        Ok(Self {
            roles,
            store: Store::new(pool, metrics.clone())
                .with_idempotency_ttl(settings.idempotency_ttl.get()),
            db,
            settings,
            names,
            metrics,
            live: Arc::new(LiveState::default()),
            listener,
            console,
            metrics_listener,
            tokens,
        })
    }

    /// The bound HTTP address, when the API runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound console address, unless the console is `off`.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound metrics address, unless `METRICS_ADDR` is `off`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The process's live state.
    pub fn live(&self) -> Arc<LiveState> {
        self.live.clone()
    }

    /// The event store.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Runs the roles until `shutdown` is cancelled, then waits (bounded) for them to stop.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let http_addr = self.http_addr();
        if let Some(listener) = self.console
            && let Ok(console_addr) = listener.local_addr()
        {
            // SHOW CONFIG shows the effective addresses (port 0 resolved).
            let mut settings = self.settings.clone();
            settings.http_addr = http_addr.unwrap_or(settings.http_addr);
            settings.console_addr = crate::config::ConsoleAddr::At(console_addr);
            let context = Arc::new(console::Context {
                pool: self.store.pool().clone(),
                live: self.live.clone(),
                metrics: self.metrics.clone(),
                settings,
                roles: self.roles,
                names: self.names.clone(),
                http_addr,
                console_addr,
            });
            tasks.spawn(console::serve(
                listener,
                context,
                shutdown.clone().cancelled_owned(),
            ));
        }
        if self.roles.relay {
            let relay = Relay::new(
                self.db.clone(),
                self.settings.amqp_url.clone(),
                self.names.clone(),
                self.metrics.clone(),
                self.live.clone(),
            );
            tasks.spawn(relay.run(shutdown.clone()));
        }
        if self.roles.projector {
            // Its own two sessions: batches never wait behind API requests for a pooled
            // connection, and pg_stat_activity shows them as waitroom-projector.
            let pool = self.db.pool_named(2, Some("waitroom-projector"));
            self.metrics.pools.register("projector", pool.clone());
            let projector = Projector::new(
                pool,
                self.settings.amqp_url.clone(),
                self.names.clone(),
                self.metrics.clone(),
                self.live.clone(),
            );
            tasks.spawn(projector.run(shutdown.clone()));
        }
        if let Some(listener) = self.metrics_listener {
            let state = AppState::new(
                self.store.clone(),
                self.metrics.clone(),
                self.live.clone(),
                self.settings.amqp_url.clone(),
                self.names.clone(),
            );
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = api::serve_metrics(listener, state, stop.cancelled_owned()).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        if let Some(listener) = self.listener {
            // Idempotency-Keys past IDEMPOTENCY_TTL, deleted by every API process (they
            // share the work: SKIP LOCKED).
            tasks.spawn(store::retention::run(self.store.clone(), shutdown.clone()));
            if self.tokens.is_open() {
                tracing::warn!(
                    http_addr = %http_addr.unwrap_or(self.settings.http_addr),
                    "api: no API_TOKEN or API_TOKENS_FILE: /api is open to anyone who can reach \
                     HTTP_ADDR; set a token to require `Authorization: Bearer`"
                );
            } else {
                tracing::info!(
                    tokens = self.tokens.len(),
                    "api: /api requires a bearer token"
                );
            }
            // One database listener for every open board page of this process.
            let feed = Feed::new();
            tasks.spawn(feed.clone().run(self.db.clone(), shutdown.clone()));
            let board = Board {
                pool: self.store.pool().clone(),
                feed,
                names: self.settings.board_names,
                shutdown: shutdown.clone(),
            };
            let state = AppState::new(
                self.store.clone(),
                self.metrics.clone(),
                self.live.clone(),
                self.settings.amqp_url.clone(),
                self.names.clone(),
            )
            .with_tokens(self.tokens.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = api::serve(listener, state, board, stop.cancelled_owned()).await {
                    tracing::error!(error = %e, "http server failed");
                }
                tracing::info!("api: stopped");
            });
        }
        shutdown.cancelled().await;
        tracing::info!("shutting down");
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                "roles did not stop within {} s; aborting them",
                SHUTDOWN_GRACE.as_secs()
            );
            tasks.abort_all();
        }
        self.store.pool().close();
    }
}
