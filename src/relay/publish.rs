//! One relay step: claim a batch of outbox rows in commit-safe order, publish them with
//! publisher confirms, then mark the confirmed ones published (+ lag "published") in one
//! transaction. Nothing is marked that RabbitMQ did not confirm.

use lapin::BasicProperties as AMQPProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};

use super::RelayError;
use crate::broker::{self, BrokerNames};
use crate::store::{ENVELOPE_COLUMNS, Envelope};

/// After this many failed publish attempts a row is dead: marked failed, skipped from then on
/// (projectors heal the gap from the event store).
pub const MAX_ATTEMPTS: i32 = 10;

/// Rows whose transaction ids are below the oldest in-flight transaction: no transaction
/// still running can add a row that would belong before them (ARCHITECTURE invariant 3).
fn claim_sql() -> String {
    format!(
        "SELECT {ENVELOPE_COLUMNS} FROM waiting_room_outbox o \
         JOIN waiting_room_events e ON e.global_position = o.global_position \
         WHERE o.published_at IS NULL AND o.failed_at IS NULL \
           AND o.txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY o.global_position LIMIT $1"
    )
}

const MARK_PUBLISHED: &str = "\
WITH pub AS (
    UPDATE waiting_room_outbox
       SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
     WHERE global_position = ANY($1) AND published_at IS NULL
    RETURNING event_id
), lag AS (
    -- SKIP LOCKED: a row locked here is one the projector is processing right now; it sets
    -- event_published_at itself when still empty. Waiting instead would deadlock (the two
    -- lock rows in different orders).
    UPDATE event_processing_lag l
       SET event_published_at = coalesce(l.event_published_at, clock_timestamp()),
           status = CASE WHEN l.status = 'CREATED' THEN 'PUBLISHED' ELSE l.status END
      FROM (SELECT event_id FROM event_processing_lag
             WHERE event_id IN (SELECT event_id FROM pub)
             ORDER BY event_id FOR UPDATE SKIP LOCKED) free
     WHERE l.event_id = free.event_id
    RETURNING l.outbox_dispatch_duration_ms
), busy AS (
    UPDATE relay_state SET waiting = false, updated_at = clock_timestamp() WHERE waiting
)
SELECT outbox_dispatch_duration_ms FROM lag";

const MARK_FAILED: &str = "\
WITH f AS (
    UPDATE waiting_room_outbox
       SET attempts = attempts + 1, last_error = $2,
           failed_at = CASE WHEN attempts + 1 >= $3 THEN clock_timestamp() END
     WHERE global_position = ANY($1) AND published_at IS NULL
    RETURNING event_id, failed_at
)
UPDATE event_processing_lag l SET status = 'FAILED', failure_reason = $2
  FROM f WHERE l.event_id = f.event_id AND f.failed_at IS NOT NULL AND l.status <> 'PROCESSED'";

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed from the outbox.
    pub claimed: usize,
    /// Rows confirmed by RabbitMQ and marked published.
    pub published: usize,
    /// Rows RabbitMQ refused (nack); retried later, dead after [`MAX_ATTEMPTS`].
    pub refused: usize,
}

/// A channel in confirm mode on its own connection.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    names: BrokerNames,
}

impl Publisher {
    /// Connects, declares the topology and enables publisher confirms.
    pub async fn connect(url: &str, names: &BrokerNames) -> Result<Self, RelayError> {
        let connection = broker::connect(url, "waitroom-relay").await?;
        let channel = connection.create_channel().await?;
        broker::declare_topology(&channel, names).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            channel,
            names: names.clone(),
        })
    }

    /// Whether the connection and channel are still usable.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes every envelope and waits for each confirm. `Ok(true)` = acked.
    /// An `Err` means the broker or connection failed: nothing can be trusted as confirmed.
    pub async fn publish(&self, batch: &[Envelope]) -> Result<Vec<bool>, RelayError> {
        let mut confirms = Vec::with_capacity(batch.len());
        for envelope in batch {
            let body =
                serde_json::to_vec(envelope).map_err(|e| RelayError::Encode(e.to_string()))?;
            let properties = AMQPProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(envelope.event_id.to_string().into())
                .with_type(envelope.event_type.as_str().into())
                .with_correlation_id(envelope.correlation_id.as_str().into())
                .with_timestamp(u64::try_from(envelope.occurred_at.timestamp()).unwrap_or(0))
                .with_app_id("waitroom".into());
            let confirm = self
                .channel
                .basic_publish(
                    self.names.exchange.as_str().into(),
                    envelope.routing_key().as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        let mut acked = Vec::with_capacity(confirms.len());
        for confirm in confirms {
            acked.push(confirm.await?.is_ack());
        }
        Ok(acked)
    }
}

/// Claims up to `limit` publishable rows, oldest first.
pub async fn claim(
    client: &deadpool_postgres::Client,
    limit: i64,
) -> Result<Vec<Envelope>, RelayError> {
    let rows = client.query(&claim_sql(), &[&limit]).await?;
    Ok(rows
        .iter()
        .map(Envelope::from_row)
        .collect::<Result<_, _>>()?)
}

/// Marks confirmed rows published (+ lag "published"), refused rows failed once more;
/// returns the outbox dispatch duration (ms) of each row marked.
pub async fn mark(
    client: &mut deadpool_postgres::Client,
    batch: &[Envelope],
    acked: &[bool],
) -> Result<Vec<f64>, RelayError> {
    let (ok, refused): (Vec<_>, Vec<_>) = batch.iter().zip(acked).partition(|(_, a)| **a);
    let ok: Vec<i64> = ok.into_iter().map(|(e, _)| e.global_position).collect();
    let refused: Vec<i64> = refused
        .into_iter()
        .map(|(e, _)| e.global_position)
        .collect();
    let tx = client.transaction().await?;
    let rows = tx.query(MARK_PUBLISHED, &[&ok]).await?;
    if !refused.is_empty() {
        tx.execute(
            MARK_FAILED,
            &[&refused, &"nacked by RabbitMQ", &MAX_ATTEMPTS],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<f64>>(0))
        .collect())
}
