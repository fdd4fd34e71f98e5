//! The projector (`waitroom project`): consumes the projection queue (manual ack, prefetch)
//! and applies events to the read models through SQL functions in `sql/`, one transaction
//! per batch, acking only after commit. Poison messages go to the dead-letter queue;
//! a failing projection parks its stream; gaps are healed from the event store.

mod apply;
pub mod rebuild;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

pub use apply::{ApplyOutcome, Delivered, Parked, apply_batch, catch_up};

use crate::broker::{self, BrokerNames, BrokerUnreachable};
use crate::relay::DISPATCHED_AT_HEADER;
use crate::state::{LiveState, ProjectorRole};
use crate::telemetry::{Metrics, ProjectionLabel};

/// The projection maintaining `waiting_queue_view` and `waiting_patients_view`.
pub const WAITING_ROOM: &str = "waiting_room";
/// Unacked deliveries RabbitMQ may push ahead.
pub const PREFETCH: u16 = 1024;
/// Most deliveries applied per transaction. The batch is whatever has arrived (never waited
/// for), so it is one delivery when idle and grows with the load; the set-based apply costs
/// per event, not per call, so big batches only save commits.
pub const MAX_BATCH: usize = 512;
/// Streams per statement when catching up at start.
const CATCH_UP_CHUNK: usize = 500;

/// What can stop the projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    BrokerUnreachable(#[from] BrokerUnreachable),
    #[error("rabbitmq: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Db(#[from] crate::store::DbError),
    #[error("the RabbitMQ consumer was cancelled or its channel closed")]
    ConsumerEnded,
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("a rebuild of {0:?} is already running")]
    RebuildRunning(String),
}

crate::store::from_db_errors!(ProjectorError);

/// The projector role.
pub struct Projector {
    pool: Pool,
    amqp_url: String,
    names: BrokerNames,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
}

impl Projector {
    /// A projector applying to the database behind `pool`.
    pub fn new(
        pool: Pool,
        amqp_url: String,
        names: BrokerNames,
        metrics: Arc<Metrics>,
        live: Arc<LiveState>,
    ) -> Self {
        Self {
            pool,
            amqp_url,
            names,
            metrics,
            live,
        }
    }

    /// Runs until `shutdown`, reconnecting with capped backoff when RabbitMQ or Postgres fail.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            self.live
                .set_projector_role(ProjectorRole::Connecting, None);
            let consumed = self.consume(&shutdown).await;
            // The channel went with the connection.
            self.live.set_projector_channel(None);
            match consumed {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "projector: restarting");
                    self.live
                        .set_projector_role(ProjectorRole::Connecting, Some(e.to_string()));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.live.set_projector_role(ProjectorRole::Stopped, None);
        tracing::info!("projector: stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ProjectorError> {
        let connection: Connection = broker::connect(&self.amqp_url, "waitroom-projector").await?;
        let channel = connection.create_channel().await?;
        broker::declare_topology(&channel, &self.names).await?;
        // Deliveries are only a fast path: bring any stream the store is ahead on up to date
        // first (messages lost with a dead outbox row, projections lost in a crash).
        let caught_up = catch_up(&self.pool, WAITING_ROOM, CATCH_UP_CHUNK).await?;
        if caught_up.applied > 0 {
            tracing::info!(
                events = caught_up.applied,
                "projector: caught up from the event store"
            );
        }
        self.record(&caught_up);
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                self.names.queue.as_str().into(),
                "waitroom-projector".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.live.set_projector_role(ProjectorRole::Consuming, None);
        self.live
            .set_projector_channel(Some(channel.status().clone()));
        tracing::info!(queue = %self.names.queue, "projector: consuming");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                d = consumer.next() => d,
            };
            let Some(first) = first else {
                return Err(ProjectorError::ConsumerEnded);
            };
            let mut batch = vec![first?];
            // Take whatever else is already here, without waiting.
            while batch.len() < MAX_BATCH {
                match consumer.next().now_or_never() {
                    Some(Some(d)) => batch.push(d?),
                    _ => break,
                }
            }
            let settled = batch.len();
            let started = std::time::Instant::now();
            self.handle(&channel, batch).await?;
            self.live
                .projector_deliveries
                .fetch_add(settled as u64, std::sync::atomic::Ordering::Relaxed);
            self.live
                .projector_stats
                .record_batch(settled, started.elapsed());
        }
        // Unacked deliveries (none: every batch is settled before the next) return to the queue.
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = connection.close(200, "shutdown".into()).await;
        Ok(())
    }

    /// Decodes, applies and settles one batch of deliveries.
    async fn handle(
        &self,
        channel: &lapin::Channel,
        batch: Vec<Delivery>,
    ) -> Result<(), ProjectorError> {
        let mut items = Vec::with_capacity(batch.len());
        let mut last_tag = None;
        for delivery in &batch {
            match serde_json::from_slice::<Message>(&delivery.data) {
                Ok(message) => {
                    items.push(Delivered {
                        stream_id: message.stream_id,
                        version: message.version,
                        global_position: Some(message.global_position),
                        dispatched_at: dispatched_at(delivery),
                    });
                    last_tag = Some(delivery.delivery_tag);
                }
                Err(e) => {
                    tracing::warn!(error = %e, routing_key = %delivery.routing_key, "projector: poison message to dead-letter queue");
                    channel
                        .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false })
                        .await?;
                }
            }
        }
        let Some(last_tag) = last_tag else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        match apply_batch(&self.pool, WAITING_ROOM, &items).await {
            Ok(outcome) => {
                tracing::debug!(
                    deliveries = items.len(),
                    applied = outcome.applied,
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "projector: batch applied"
                );
                self.record(&outcome);
                channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
                Ok(())
            }
            Err(e) => {
                // Nothing committed: hand the deliveries back and let the caller back off.
                let _ = channel
                    .basic_nack(
                        last_tag,
                        BasicNackOptions {
                            multiple: true,
                            requeue: true,
                        },
                    )
                    .await;
                Err(e)
            }
        }
    }

    fn record(&self, outcome: &ApplyOutcome) {
        let label = ProjectionLabel::new(WAITING_ROOM);
        self.metrics
            .events_projected
            .get_or_create(&label)
            .inc_by(outcome.applied);
        for ms in &outcome.lag_ms {
            self.metrics.event_lag.observe(ms / 1000.0);
        }
        for parked in outcome.parked.iter().filter(|p| p.newly) {
            tracing::error!(stream_id = %parked.stream_id, error = %parked.error, "projector: stream parked");
        }
        self.metrics
            .projection_failures
            .get_or_create(&label)
            .inc_by(outcome.parked.iter().filter(|p| p.newly).count() as u64);
        self.live
            .projector_applied
            .fetch_add(outcome.applied, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the projector reads of a message: which stream, up to which version. The event
/// itself is read from the store.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    stream_id: String,
    version: i32,
    global_position: i64,
}

/// The relay's dispatch time from the message header, if present.
fn dispatched_at(delivery: &Delivery) -> Option<chrono::DateTime<chrono::Utc>> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(DISPATCHED_AT_HEADER)? {
        lapin::types::AMQPValue::LongLongInt(micros) => {
            chrono::DateTime::from_timestamp_micros(*micros)
        }
        _ => None,
    }
}
