//! The floor: what the pipeline's hops cost with nothing else in them. One sample, taken
//! sequentially ~200 times, is the client time from just before (2) to (4):
//!
//! 1. a connection LISTENs on `waitroom_bench_floor_<runid>`;
//! 2. another connection INSERTs one row into a TEMP table and NOTIFYs, in one transaction;
//! 3. on receipt, one persistent message is published with publisher confirms to a durable
//!    queue `waitroom.bench.floor.<runid>` (default exchange) and its confirm awaited;
//! 4. a consumer on that queue receives it.
//!
//! The queue is deleted afterwards.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::BenchError;
use crate::broker;
use crate::store::DbConfig;

/// Samples taken.
const SAMPLES: usize = 200;
/// One hop that takes longer than this means something is broken.
const HOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The floor's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Floor {
    /// Samples taken.
    pub samples: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

fn failed(what: &str) -> impl FnOnce(String) -> BenchError {
    move |e| BenchError::Floor(format!("{what}: {e}"))
}

/// Takes the samples on `db` and the broker at `amqp_url`.
pub async fn measure(db: &DbConfig, amqp_url: &str, run_id: &str) -> Result<Floor, BenchError> {
    let channel_name = format!("waitroom_bench_floor_{run_id}");
    let queue = format!("waitroom.bench.floor.{run_id}");
    let connection = broker::connect(amqp_url, "waitroom-bench-floor")
        .await
        .map_err(|e| BenchError::Floor(e.to_string()))?;
    let result = sample(db, &connection, &channel_name, &queue).await;
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = channel.close(200, "floor done".into()).await;
    }
    let _ = connection.close(200, "floor done".into()).await;
    let mut samples = result?;
    samples.sort_by(f64::total_cmp);
    Ok(Floor {
        samples: samples.len(),
        p50_ms: quantile(&samples, 0.5),
        p99_ms: quantile(&samples, 0.99),
    })
}

async fn sample(
    db: &DbConfig,
    amqp: &Connection,
    channel_name: &str,
    queue: &str,
) -> Result<Vec<f64>, BenchError> {
    let open = || async {
        amqp.create_channel()
            .await
            .map_err(|e| failed("channel")(e.to_string()))
    };
    let publisher = open().await?;
    let consuming = match open().await {
        Ok(c) => c,
        Err(e) => {
            let _ = publisher.close(200, "floor failed".into()).await;
            return Err(e);
        }
    };
    let result = take_samples(db, &publisher, &consuming, channel_name, queue).await;
    // Closed before the connection is: a channel still open then logs a spurious error.
    let _ = publisher.close(200, "floor done".into()).await;
    let _ = consuming.close(200, "floor done".into()).await;
    result
}

async fn take_samples(
    db: &DbConfig,
    publisher: &Channel,
    consuming: &Channel,
    channel_name: &str,
    queue: &str,
) -> Result<Vec<f64>, BenchError> {
    let pg = |e: tokio_postgres::Error| BenchError::Floor(format!("PostgreSQL: {e}"));
    let (_listener, mut notifications) = listen(db, channel_name).await.map_err(pg)?;
    let writer = db.connect().await.map_err(pg)?;
    writer
        .batch_execute(
            "CREATE TEMP TABLE bench_floor (n int, at timestamptz DEFAULT clock_timestamp())",
        )
        .await
        .map_err(pg)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| failed("confirm mode")(e.to_string()))?;
    declare(publisher, queue).await?;
    let mut deliveries = consume(consuming, queue).await?;

    // Identifiers cannot be bound; the channel name is ours (`waitroom_bench_floor_<hex>`).
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let write = format!(
            "BEGIN; INSERT INTO bench_floor (n) VALUES ({n}); NOTIFY {channel_name}, '{n}'; COMMIT"
        );
        let started = Instant::now();
        writer.batch_execute(&write).await.map_err(pg)?;
        within("the notification", notifications.recv()).await?;
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .map_err(|e| failed("publish")(e.to_string()))?;
        let confirmation = within("the publisher confirm", async { Some(confirm.await) })
            .await?
            .map_err(|e| failed("confirm")(e.to_string()))?;
        if !confirmation.is_ack() {
            return Err(BenchError::Floor(
                "RabbitMQ refused (nacked) a message".into(),
            ));
        }
        let arrived = within("the delivery", deliveries.recv()).await?;
        samples.push((arrived - started).as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// A dedicated connection LISTENing on `channel`, driven here so its notifications reach
/// us; keep the client as long as it should listen.
async fn listen(
    db: &DbConfig,
    channel: &str,
) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    let (client, mut connection) = db.connect_raw().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message
                && tx.send(()).is_err()
            {
                break;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok((client, rx))
}

async fn declare(channel: &Channel, queue: &str) -> Result<(), BenchError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| failed("declare the floor queue")(e.to_string()))?;
    Ok(())
}

/// A consumer task that stamps each delivery's arrival and acks it; it ends when `channel`
/// closes.
async fn consume(
    channel: &Channel,
    queue: &str,
) -> Result<mpsc::UnboundedReceiver<Instant>, BenchError> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "waitroom-bench-floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| failed("consume")(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            if tx.send(Instant::now()).is_err() {
                break;
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
    Ok(rx)
}

async fn within<T>(what: &str, step: impl Future<Output = Option<T>>) -> Result<T, BenchError> {
    match tokio::time::timeout(HOP_TIMEOUT, step).await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(BenchError::Floor(format!(
            "lost the connection waiting for {what}"
        ))),
        Err(_) => Err(BenchError::Floor(format!(
            "no {what} within {HOP_TIMEOUT:?}"
        ))),
    }
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
