//! Publishing with confirms: every message of a batch goes out before the first confirm is
//! awaited (and the relay sends further batches while RabbitMQ persists earlier ones), then
//! batches are settled in order. Nothing is treated as published that
//! RabbitMQ did not confirm. Failures are counted per event and retried: a refusal (nack),
//! an event that cannot be encoded as an AMQP message, and an event found (by
//! isolation, see `super::Relay`) to break the channel or connection each time it is sent.
//! After [`MAX_ATTEMPTS`] the event is dead (skipped; projectors heal the gap from the store).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use lapin::BasicProperties as AMQPProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};

use super::RelayError;
use super::cursor::Outgoing;
use crate::broker::{self, BrokerNames};

/// After this many failed attempts (refusals or publish errors) an event is dead: skipped from then on (projectors heal the gap
/// from the event store).
pub const MAX_ATTEMPTS: i32 = 10;

/// AMQP header carrying when the relay claimed the event (µs since the Unix epoch, Postgres
/// clock): the projector records it as the event's publish time.
pub const DISPATCHED_AT_HEADER: &str = "waitroom-dispatched-at";

/// Counts one failed attempt for each event; returns (position, event id, attempts, dead).
const RECORD_FAILURES: &str = "\
INSERT INTO waiting_room_outbox_failures AS f (global_position, event_id, attempts, last_error, failed_at)
SELECT x.pos, x.id, 1, $3, CASE WHEN 1 >= $4 THEN clock_timestamp() END
  FROM unnest($1::bigint[], $2::uuid[]) AS x(pos, id)
ON CONFLICT (global_position) DO UPDATE
   SET attempts = f.attempts + 1,
       last_error = EXCLUDED.last_error,
       failed_at = CASE WHEN f.attempts + 1 >= $4 THEN clock_timestamp() END,
       updated_at = clock_timestamp()
RETURNING global_position, event_id, attempts, failed_at IS NOT NULL";

const CLEAR_REFUSALS: &str = "UPDATE waiting_room_outbox_failures SET last_error = NULL, \
     updated_at = clock_timestamp() WHERE global_position = ANY($1) AND last_error IS NOT NULL";

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events claimed from the store.
    pub claimed: usize,
    /// Events confirmed by RabbitMQ.
    pub published: usize,
    /// Events RabbitMQ refused (nack); retried later, dead after [`MAX_ATTEMPTS`].
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

    /// The channel's live status (for the console: open, closed, ...).
    pub fn channel_status(&self) -> lapin::ChannelStatus {
        self.channel.status().clone()
    }

    /// Whether the connection and channel are still usable.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes every event and waits for each confirm. `Ok(true)` = acked.
    /// An `Err` means the broker or connection failed: nothing can be trusted as confirmed.
    pub async fn publish(
        &self,
        batch: &[Outgoing],
        dispatched_at: DateTime<Utc>,
    ) -> Result<Vec<bool>, RelayError> {
        self.send(batch, dispatched_at).await?.await
    }

    /// Sends every event (the frames are on their way) and returns a future of their
    /// confirms, in batch order, so the caller can publish more while RabbitMQ persists these.
    /// An event that cannot be an AMQP message is found before anything is sent
    /// ([`RelayError::Unpublishable`]).
    pub async fn send(
        &self,
        batch: &[Outgoing],
        dispatched_at: DateTime<Utc>,
    ) -> Result<Confirms, RelayError> {
        let mut headers = FieldTable::default();
        headers.insert(
            DISPATCHED_AT_HEADER.into(),
            AMQPValue::LongLongInt(dispatched_at.timestamp_micros()),
        );
        // Checked up front (a few length comparisons): lapin's `ShortString::from` panics past
        // 255 bytes, and a row written by hand can carry such a correlation id or event type.
        for event in batch {
            encodable(event).map_err(|reason| RelayError::Unpublishable {
                event_id: event.event_id,
                global_position: event.global_position,
                reason,
            })?;
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for event in batch {
            let body = serde_json::to_vec(event).map_err(|e| RelayError::Encode(e.to_string()))?;
            let properties = AMQPProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event.event_id.to_string().into())
                .with_type(event.event_type.as_str().into())
                .with_correlation_id(event.correlation_id.as_str().into())
                .with_timestamp(u64::try_from(event.occurred_at.timestamp()).unwrap_or(0))
                .with_app_id("waitroom".into())
                .with_headers(headers.clone());
            let confirm = self
                .channel
                .basic_publish(
                    self.names.exchange.as_str().into(),
                    event.routing_key().as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        Ok(Box::pin(async move {
            let mut acked = Vec::with_capacity(confirms.len());
            for confirm in confirms {
                acked.push(confirm.await?.is_ack());
            }
            Ok(acked)
        }))
    }
}

/// Whether the event's AMQP short strings (routing key, type, correlation id) fit in 255 bytes.
fn encodable(event: &Outgoing) -> Result<(), String> {
    for (what, value) in [
        ("routing key", event.routing_key()),
        ("event type", event.event_type.clone()),
        ("correlation id", event.correlation_id.clone()),
    ] {
        if let Err(e) = ShortString::try_new(value) {
            return Err(format!(
                "its {what} does not fit an AMQP short string ({e})"
            ));
        }
    }
    Ok(())
}

/// The confirms of a sent batch, in order: `true` = acked.
pub type Confirms = Pin<Box<dyn Future<Output = Result<Vec<bool>, RelayError>> + Send>>;

/// What RabbitMQ's answers mean for a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Every event is confirmed or dead: the cursor may move past the batch.
    pub complete: bool,
    /// Positions refused and not yet dead (they keep the cursor where it is until published).
    pub retry: Vec<i64>,
}

/// Records refusals (`acked[i] == false`) and works out whether the batch is complete.
pub async fn settle(
    client: &tokio_postgres::Client,
    batch: &[Outgoing],
    acked: &[bool],
) -> Result<Settled, RelayError> {
    let refused: Vec<&Outgoing> = batch
        .iter()
        .zip(acked)
        .filter_map(|(e, ok)| (!ok).then_some(e))
        .collect();
    let retry = record_failures(client, &refused, "nacked by RabbitMQ").await?;
    Ok(Settled {
        complete: retry.is_empty(),
        retry,
    })
}

/// Counts one failed attempt for each event, with `error` as its `last_error`. Events that
/// reach [`MAX_ATTEMPTS`] are dead from now on (one warning each); returns the positions
/// of the others, still to be retried.
pub async fn record_failures(
    client: &tokio_postgres::Client,
    events: &[&Outgoing],
    error: &str,
) -> Result<Vec<i64>, RelayError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
    let mut retry = Vec::new();
    for row in client
        .query(RECORD_FAILURES, &[&positions, &ids, &error, &MAX_ATTEMPTS])
        .await?
    {
        let position: i64 = row.get(0);
        if row.get::<_, bool>(3) {
            let event_id: uuid::Uuid = row.get(1);
            let attempts: i32 = row.get(2);
            tracing::warn!(
                %event_id,
                global_position = position,
                attempts,
                last_error = error,
                "relay: event retired as dead (not published); projectors heal it from the \
                 event store with its stream's next event"
            );
        } else {
            retry.push(position);
        }
    }
    Ok(retry)
}

/// Clears `last_error` of events that were refused before and are now published.
pub async fn clear_refusals(
    client: &tokio_postgres::Client,
    positions: &[i64],
) -> Result<(), RelayError> {
    client.execute(CLEAR_REFUSALS, &[&positions]).await?;
    Ok(())
}
