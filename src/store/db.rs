//! Connecting to Postgres: the pool, creating the database when it is missing, and
//! turning "cannot connect" into one line that says what, where and how to fix it.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Config;

use super::tls::{Connection, Connector, TlsSettings};

/// Why the database could not be reached or prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(String),
    /// The TLS handshake or the server's certificate failed (`sslmode`, `sslrootcert`).
    #[error(
        "TLS to PostgreSQL at {target} failed: {reason}. Check sslmode and sslrootcert in DATABASE_URL"
    )]
    Tls { target: String, reason: String },
    /// Nothing answered, or the server refused us.
    #[error(
        "cannot connect to PostgreSQL at {target}: {reason}. Start it with `scripts/services.sh` \
         (or `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`), or set DATABASE_URL"
    )]
    Unreachable { target: String, reason: String },
    /// Connected, but preparing the database failed.
    #[error("PostgreSQL at {target}: {reason}")]
    Setup { target: String, reason: String },
}

/// Parsed connection settings plus a printable, password-free description.
#[derive(Clone)]
pub struct DbConfig {
    config: Config,
    dbname: String,
    tls: TlsSettings,
    connector: Connector,
}

impl DbConfig {
    /// Parses a `postgres://` URL (or a `key=value` string); the database defaults to
    /// `waitroom`. `sslmode` and `sslrootcert` follow libpq (see [`super::tls`]); a bad
    /// value, or a root certificate file that cannot be read, is an error here.
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let (url, tls) = TlsSettings::split(url).map_err(ConnectError::InvalidUrl)?;
        // tokio-postgres's message is only "invalid connection string"; the cause (which
        // names the option, never its value) is its source.
        let mut config = Config::from_str(&url).map_err(|e| {
            ConnectError::InvalidUrl(match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })
        })?;
        config.ssl_mode(tls.wire_mode());
        let connector = tls.connector().map_err(ConnectError::InvalidUrl)?;
        let dbname = config.get_dbname().unwrap_or("waitroom").to_owned();
        config.dbname(&dbname);
        if config.get_user().is_none() {
            config.user("postgres");
        }
        if config.get_application_name().is_none() {
            config.application_name("waitroom");
        }
        // JIT compilation pays off for long analytical queries, never for these: after a
        // burst the planner's estimates made `outbox_pending` compile for 0.4 s to run for
        // 40 ms. A URL's own `options` come first and can turn it back on.
        let options = match config.get_options() {
            Some(own) => format!("-c jit=off {own}"),
            None => "-c jit=off".to_owned(),
        };
        config.options(&options);
        config.connect_timeout(Duration::from_secs(5));
        Ok(Self {
            config,
            dbname,
            tls,
            connector,
        })
    }

    /// The TLS settings taken from the URL.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The TLS connector for `sslmode` / `sslrootcert`: every connection uses it.
    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The underlying tokio-postgres config (without `sslrootcert`, and with the wire side
    /// of `sslmode` only: connect with [`DbConfig::connector`], or through [`DbConfig::connect`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `host:port/dbname`, for messages (never the password).
    pub fn target(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{}:{port}/{}", self.host(), self.dbname)
    }

    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        }
    }

    /// A single connection whose driver the caller polls (for LISTEN: notifications reach
    /// only the one who drives the connection).
    pub async fn connect_raw(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.connector()).await
    }

    /// A connection to another database of the same server (with the same TLS), e.g.
    /// `postgres` to create or drop this one; its driver is spawned onto the runtime.
    pub async fn connect_to(
        &self,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = self.config.clone();
        config.dbname(dbname);
        let (client, connection) = config.connect(self.connector()).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A single connection, its driver spawned onto the runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(client)
    }

    fn unreachable(&self, error: &tokio_postgres::Error) -> ConnectError {
        if let Some(reason) = self.tls.describe_failure(error, &self.host()) {
            return ConnectError::Tls {
                target: self.target(),
                reason,
            };
        }
        let reason = match error.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => std::error::Error::source(error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.to_string()),
        };
        ConnectError::Unreachable {
            target: self.target(),
            reason,
        }
    }

    /// Creates the database when it does not exist (connecting to `postgres` to do so).
    pub async fn ensure_database(&self) -> Result<(), ConnectError> {
        match self.connect().await {
            Ok(_) => return Ok(()),
            Err(e) if !is_missing_database(&e) => return Err(self.unreachable(&e)),
            Err(_) => {}
        }
        let client = self
            .connect_to("postgres")
            .await
            .map_err(|e| self.unreachable(&e))?;
        // Identifiers cannot be bound as parameters; quote it as Postgres would.
        let create = format!("CREATE DATABASE \"{}\"", self.dbname.replace('"', "\"\""));
        match client.batch_execute(&create).await {
            Ok(()) => {
                tracing::info!(database = %self.dbname, "created database");
                Ok(())
            }
            // Created meanwhile by another process starting at the same time: a concurrent
            // CREATE DATABASE fails on pg_database's unique index (23505) rather than with
            // 42P04, and only once the other one has committed, so the database is there.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(ConnectError::Setup {
                target: self.target(),
                reason: format!("cannot create database: {}", super::describe(&e)),
            }),
        }
    }

    /// A connection pool of at most `size` connections.
    pub fn pool(&self, size: usize) -> Pool {
        self.pool_named(size, None)
    }

    /// A pool whose sessions show `application_name` in `pg_stat_activity` (default:
    /// the URL's, else `waitroom`), so operators can tell the roles' sessions apart.
    pub fn pool_named(&self, size: usize, application_name: Option<&str>) -> Pool {
        let mut config = self.config.clone();
        if let Some(name) = application_name {
            config.application_name(name);
        }
        let manager = Manager::from_config(
            config,
            self.connector(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .expect("a pool with a runtime and a manager always builds")
    }

    /// Checks that the pool can hand out a working connection, for startup errors.
    pub async fn check(&self, pool: &Pool) -> Result<(), ConnectError> {
        let client = pool.get().await.map_err(|e| ConnectError::Unreachable {
            target: self.target(),
            reason: e.to_string(),
        })?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.unreachable(&e))?;
        Ok(())
    }
}

fn is_missing_database(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
}
