//! RabbitMQ names, connection and topology: the topic exchange the relay publishes to, the
//! projector's durable queue, and the dead-letter exchange and queue for poison messages.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Why RabbitMQ could not be reached.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to RabbitMQ at {target}: {reason}. Start it with `scripts/services.sh` \
     (or `rabbitmq-server -detached`), or set AMQP_URL"
)]
pub struct BrokerUnreachable {
    pub target: String,
    pub reason: String,
}

/// Exchange and queue names. Defaults are the contract's; a suffix isolates test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNames {
    /// Topic exchange, default `waiting_room_events`.
    pub exchange: String,
    /// Projector queue, default `waiting-room-projection-queue`.
    pub queue: String,
    /// Dead-letter exchange, default `waiting_room_events.dlx`.
    pub dead_letter_exchange: String,
    /// Dead-letter queue, default `waiting-room-projection-dlq`.
    pub dead_letter_queue: String,
}

impl Default for BrokerNames {
    fn default() -> Self {
        Self::with_suffix("")
    }
}

impl BrokerNames {
    /// The contract's names, each followed by `.suffix` when `suffix` is not empty.
    pub fn with_suffix(suffix: &str) -> Self {
        let s = |base: &str| {
            if suffix.is_empty() {
                base.to_owned()
            } else {
                format!("{base}.{suffix}")
            }
        };
        Self {
            exchange: s("waiting_room_events"),
            queue: s("waiting-room-projection-queue"),
            dead_letter_exchange: s("waiting_room_events.dlx"),
            dead_letter_queue: s("waiting-room-projection-dlq"),
        }
    }
}

/// The routing-key pattern the projector queue is bound with.
pub const BINDING_KEY: &str = "waiting.room.*";

/// `host:port` of an AMQP URL, for messages (never the password).
pub fn target(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "(unparsable AMQP_URL)".to_owned(),
    }
}

/// Connects to RabbitMQ.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerUnreachable> {
    // Parsed here rather than by lapin, whose error for some malformed URLs quotes the
    // whole URL, password included.
    let uri = url
        .parse::<lapin::uri::AMQPUri>()
        .map_err(|e| BrokerUnreachable {
            target: target(url),
            reason: invalid_url(url, &e),
        })?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect_uri(uri, properties)
        .await
        .map_err(|e| BrokerUnreachable {
            target: target(url),
            reason: e.to_string(),
        })
}

/// Why `url` does not parse, without quoting it.
fn invalid_url(url: &str, error: &str) -> String {
    if error.contains(url) || url.is_empty() {
        "AMQP_URL is not a URL of the form amqp://user:password@host:port/vhost".to_owned()
    } else {
        format!("AMQP_URL is invalid: {error}")
    }
}

/// Declares the exchanges, queues and bindings (idempotent). Every role calls it at start,
/// so no event published before the projector first runs is dropped unrouted.
pub async fn declare_topology(channel: &Channel, names: &BrokerNames) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            durable_queue,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.dead_letter_queue.as_str().into(),
            names.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(names.dead_letter_exchange.as_str().into()),
    );
    channel
        .queue_declare(names.queue.as_str().into(), durable_queue, arguments)
        .await?;
    channel
        .queue_bind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            BINDING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// How many consumers the projector queue has (passive declare), for readiness.
pub async fn consumer_count(channel: &Channel, names: &BrokerNames) -> lapin::Result<u32> {
    let queue = channel
        .queue_declare(
            names.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.consumer_count())
}
