//! The outbox relay (`waitroom relay`): moves committed outbox rows to RabbitMQ.
//!
//! One relay per database is active: it holds a session advisory lock on a dedicated
//! connection, which also LISTENs for the outbox trigger's wake-ups. Others block on the
//! lock and take over the moment the leader's session ends. The leader drains the outbox
//! in batches ([`Relay::publish_batch`]); when empty it raises the "waiting" flag, waits for
//! every transaction that could have missed the flag to end, re-checks, and sleeps until a
//! notification, a slow safety sweep, or shutdown.

mod listener;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

pub use listener::{CHANNEL, LEADER_LOCK, Listener};
pub use publish::{BatchOutcome, MAX_ATTEMPTS, Publisher, claim, mark};

use crate::broker::{BrokerNames, BrokerUnreachable};
use crate::state::{LiveState, RelayRole};
use crate::store::DbConfig;
use crate::telemetry::{EventTypeLabel, Metrics};

/// Rows per batch.
pub const BATCH_SIZE: i64 = 256;
/// How often an idle leader re-checks the outbox without a notification (lost-connection cover).
pub const SAFETY_SWEEP: Duration = Duration::from_secs(5);

/// What can stop a relay step.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    BrokerUnreachable(#[from] BrokerUnreachable),
    #[error("rabbitmq: {0}")]
    Broker(#[from] lapin::Error),
    #[error("database: {}", crate::store::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot encode envelope: {0}")]
    Encode(String),
    #[error(
        "RabbitMQ refused {0} message(s); they are retried and dead after {MAX_ATTEMPTS} attempts"
    )]
    Refused(usize),
}

/// The relay role.
pub struct Relay {
    pool: Pool,
    db: DbConfig,
    amqp_url: String,
    names: BrokerNames,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
}

impl Relay {
    /// A relay over `pool` (claims and marks) and `db` (its dedicated leader/listener connection).
    pub fn new(
        pool: Pool,
        db: DbConfig,
        amqp_url: String,
        names: BrokerNames,
        metrics: Arc<Metrics>,
        live: Arc<LiveState>,
    ) -> Self {
        Self {
            pool,
            db,
            amqp_url,
            names,
            metrics,
            live,
        }
    }

    /// One step: claim, publish with confirms, mark. Returns what happened.
    pub async fn publish_batch(&self, publisher: &Publisher) -> Result<BatchOutcome, RelayError> {
        let mut client = self.pool.get().await?;
        let batch = claim(&client, BATCH_SIZE).await?;
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let acked = match publisher.publish(&batch).await {
            Ok(acked) => acked,
            Err(e) => {
                self.metrics.publish_failures.inc_by(batch.len() as u64);
                return Err(e);
            }
        };
        let dispatch_ms = mark(&mut client, &batch, &acked).await?;
        for ms in dispatch_ms {
            self.metrics.outbox_dispatch.observe(ms / 1000.0);
        }
        let mut outcome = BatchOutcome {
            claimed: batch.len(),
            ..BatchOutcome::default()
        };
        for (envelope, ok) in batch.iter().zip(&acked) {
            if *ok {
                outcome.published += 1;
                self.metrics
                    .events_published
                    .get_or_create(&EventTypeLabel::new(&envelope.event_type))
                    .inc();
            } else {
                outcome.refused += 1;
                self.metrics.publish_failures.inc();
            }
        }
        self.live.count_published(outcome.published as u64);
        Ok(outcome)
    }

    /// Runs until `shutdown`: stand by for leadership, then relay; on losing the listener
    /// connection go back to standing by. A batch in hand is finished before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = new_backoff();
        while !shutdown.is_cancelled() {
            self.live.set_relay_role(RelayRole::Standby, None);
            let listener = tokio::select! {
                _ = shutdown.cancelled() => break,
                l = Listener::acquire(&self.db) => l,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    self.live
                        .set_relay_role(RelayRole::Standby, Some(e.to_string()));
                    tracing::warn!(error = %e, "relay: cannot hold leadership; retrying");
                    sleep_or_cancel(&shutdown, backoff.next().unwrap_or(Duration::from_secs(5)))
                        .await;
                    continue;
                }
            };
            tracing::info!("relay: leader");
            self.metrics.relay_leader.set(1);
            self.live.set_relay_role(RelayRole::Leader, None);
            backoff = new_backoff();
            self.lead(&mut listener, &shutdown).await;
            self.metrics.relay_leader.set(0);
        }
        self.live.set_relay_role(RelayRole::Stopped, None);
        tracing::info!("relay: stopped");
    }

    /// The leader's loop; returns on shutdown or when the listener connection is lost.
    async fn lead(&self, listener: &mut Listener, shutdown: &CancellationToken) {
        let mut publisher: Option<Publisher> = None;
        let mut backoff = new_backoff();
        loop {
            if shutdown.is_cancelled() || listener.is_lost() {
                return;
            }
            match self.drain(&mut publisher, shutdown).await {
                Ok(()) => {
                    backoff = new_backoff();
                    self.live.set_relay_error(None);
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "relay: batch failed");
                    self.live.set_relay_error(Some(e.to_string()));
                    if matches!(e, RelayError::Broker(_) | RelayError::BrokerUnreachable(_)) {
                        publisher = None;
                    }
                    sleep_or_cancel(shutdown, delay).await;
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            // The barrier can be held by any long writing transaction on the cluster; stay stoppable.
            let idle = tokio::select! {
                _ = shutdown.cancelled() => return,
                idle = listener.idle(&self.pool) => idle,
            };
            match idle {
                Ok(true) => continue, // rows arrived while going idle
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "relay: idle check failed");
                    sleep_or_cancel(shutdown, Duration::from_millis(200)).await;
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = listener.notified() => {}
                _ = tokio::time::sleep(SAFETY_SWEEP) => {}
            }
        }
    }

    /// Publishes batches until the outbox has nothing claimable.
    async fn drain(
        &self,
        publisher: &mut Option<Publisher>,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        loop {
            let p = match publisher {
                Some(p) if p.is_connected() => p,
                _ => {
                    *publisher = None;
                    publisher.insert(Publisher::connect(&self.amqp_url, &self.names).await?)
                }
            };
            let outcome = self.publish_batch(p).await?;
            if outcome.refused > 0 {
                // Back off instead of hammering a broker that is refusing messages.
                return Err(RelayError::Refused(outcome.refused));
            }
            if outcome.claimed == 0 || shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Capped exponential backoff: 50 ms doubling to 5 s, with jitter, forever.
fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_or_cancel(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
