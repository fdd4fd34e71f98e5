//! The API under load. With `--url`, a running service and the database it writes (the
//! global `DATABASE_URL`). Without it, an in-process pipeline (every role, HTTP on a free
//! loopback port) on a fresh database `waitroom_bench_<runid>` and broker suffix
//! `bench_<runid>`, both removed when the run ends.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use tokio_util::sync::CancellationToken;

use super::{BenchArgs, BenchError};
use crate::app::{Application, Roles, StartupError};
use crate::broker::{self, BrokerNames};
use crate::config::Settings;
use crate::store::{ConnectError, DbConfig};

/// Bounds the in-process pipeline's stop (it has its own grace period inside).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Where the load goes and where it is measured.
pub struct Target {
    /// Base URL of the API, without a trailing slash.
    pub url: String,
    /// The database the API writes, read for the measurement.
    pub database: DbConfig,
    /// The pipeline this run started, if any.
    in_process: Option<InProcess>,
}

struct InProcess {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    amqp_url: String,
    names: BrokerNames,
}

impl Target {
    /// Checks `--url`, or builds and starts the in-process pipeline.
    pub async fn start(
        settings: &Settings,
        args: &BenchArgs,
        run_id: &str,
    ) -> Result<Self, BenchError> {
        if let Some(url) = &args.url {
            let url = url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BenchError::InvalidUrl(url));
            }
            return Ok(Self {
                url,
                database: DbConfig::parse(&settings.database_url)?,
                in_process: None,
            });
        }
        let mut own = settings.clone();
        own.database_url = with_database(
            &settings.database_url,
            &format!("waitroom_bench_{run_id}"),
        )
        .ok_or_else(|| {
            ConnectError::InvalidUrl(
                "the in-process bench needs a postgres:// URL to name its own database".into(),
            )
        })?;
        own.broker_suffix = format!("bench_{run_id}");
        own.http_addr = ([127, 0, 0, 1], 0).into();
        // The pipeline under load is measured, not inspected; and a console on the default
        // port would collide with a running waitroom's.
        own.console_addr = crate::config::ConsoleAddr::Off;
        let names = BrokerNames::with_suffix(&own.broker_suffix);
        let database = DbConfig::parse(&own.database_url)?;
        let application = match Application::build(own.clone(), Roles::ALL).await {
            Ok(a) => a,
            Err(e) => {
                // Build may have created the database (and topology) before failing; when it
                // could not reach a service there is nothing to remove, and nothing to say.
                let quiet = matches!(
                    e,
                    StartupError::Database(ConnectError::Unreachable { .. })
                        | StartupError::Broker(_)
                );
                remove(&database, &own.amqp_url, &names, !quiet).await;
                return Err(e.into());
            }
        };
        let addr = application
            .http_addr()
            .ok_or_else(|| BenchError::Driver("the in-process API has no address".into()))?;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Ok(Self {
            url: format!("http://{addr}"),
            database,
            in_process: Some(InProcess {
                shutdown,
                handle,
                amqp_url: own.amqp_url,
                names,
            }),
        })
    }

    /// `in-process` or the `--url`.
    pub fn describe(&self) -> String {
        if self.in_process.is_some() {
            format!("in-process ({})", self.database.dbname())
        } else {
            self.url.clone()
        }
    }

    /// Whether this run started the pipeline itself (its RSS then includes the generator).
    pub fn is_in_process(&self) -> bool {
        self.in_process.is_some()
    }

    /// Stops the in-process pipeline and removes its database and broker names.
    pub async fn stop(self) {
        let Some(p) = self.in_process else {
            return;
        };
        p.shutdown.cancel();
        let _ = tokio::time::timeout(STOP_WITHIN, p.handle).await;
        remove(&self.database, &p.amqp_url, &p.names, true).await;
    }
}

/// Drops the database and deletes the queues and exchanges of `names`; best effort, since
/// it runs on the way out (a leftover is named `waitroom_bench_*` / `*.bench_*`). Failures
/// are logged when `report` is set.
async fn remove(database: &DbConfig, amqp_url: &str, names: &BrokerNames, report: bool) {
    match database.connect_to("postgres").await {
        Ok(client) => {
            // Identifiers cannot be bound; the name is ours (`waitroom_bench_<hex>`).
            let drop = format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                database.dbname()
            );
            if let Err(e) = client.batch_execute(&drop).await
                && report
            {
                tracing::warn!(error = %e, database = database.dbname(), "bench: cannot drop database");
            }
        }
        Err(e) if report => {
            tracing::warn!(error = %e, "bench: cannot connect to drop the database")
        }
        Err(_) => {}
    }
    let Ok(connection) = broker::connect(amqp_url, "waitroom-bench-cleanup").await else {
        if report {
            tracing::warn!("bench: cannot connect to RabbitMQ to delete the bench queues");
        }
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in [&names.queue, &names.dead_letter_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&names.exchange, &names.dead_letter_exchange] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        // Closed before the connection: a channel dropped mid-close logs a spurious error.
        let _ = channel.close(200, "bench done".into()).await;
    }
    let _ = connection.close(200, "bench done".into()).await;
}

/// `url` with its database (the path) replaced by `name`, keeping the query string;
/// `None` for key=value connection strings.
fn with_database(url: &str, name: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return None;
    }
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = base.split_once('/').map_or(base, |(a, _)| a);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_options_kept() {
        let cases = [
            ("postgres://u@h:5432/waitroom", "postgres://u@h:5432/b"),
            ("postgres://u@h:5432", "postgres://u@h:5432/b"),
            (
                "postgresql://h/x?sslmode=disable",
                "postgresql://h/b?sslmode=disable",
            ),
            (
                "postgres://u:p@h/?application_name=a",
                "postgres://u:p@h/b?application_name=a",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "b").as_deref(), Some(expected), "{url}");
        }
        assert_eq!(with_database("host=h dbname=x", "b"), None);
    }
}
