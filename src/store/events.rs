//! Stored events as they come back out of `waiting_room_events`, the message envelope
//! the relay publishes, and the reads the API and projector need.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};

/// One row of `waiting_room_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i32,
    pub global_position: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: String,
    /// The event payload (camelCase JSON).
    pub data: serde_json::Value,
}

/// The column list every envelope query selects, in [`Envelope::from_row`] order.
pub const ENVELOPE_COLUMNS: &str = "e.event_id, e.stream_id, e.version, e.global_position, e.event_type, \
     e.occurred_at, e.correlation_id, e.causation_id, e.actor, e.payload";

impl Envelope {
    /// Reads a row selected with [`ENVELOPE_COLUMNS`].
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            event_id: row.try_get(0)?,
            stream_id: row.try_get(1)?,
            version: row.try_get(2)?,
            global_position: row.try_get(3)?,
            event_type: row.try_get(4)?,
            occurred_at: row.try_get(5)?,
            correlation_id: row.try_get(6)?,
            causation_id: row.try_get(7)?,
            actor: row.try_get(8)?,
            data: row.try_get(9)?,
        })
    }

    /// The AMQP routing key: `waiting.room.<EventType>`.
    pub fn routing_key(&self) -> String {
        format!("waiting.room.{}", self.event_type)
    }
}

const STREAM_EVENTS: &str = "SELECT e.event_id, e.stream_id, e.version, e.global_position, e.event_type, \
     e.occurred_at, e.correlation_id, e.causation_id, e.actor, e.payload \
     FROM waiting_room_events e WHERE e.stream_id = $1 AND e.version > $2 ORDER BY e.version LIMIT $3";

impl Store {
    /// A stream's events after `after_version`, oldest first, at most `limit`.
    pub async fn stream_events(
        &self,
        stream_id: &str,
        after_version: i32,
        limit: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(STREAM_EVENTS, &[&stream_id, &after_version, &limit])
            .await?;
        rows.iter()
            .map(|r| Envelope::from_row(r).map_err(StoreError::from))
            .collect()
    }

    /// The stream's current version, or `None` when the stream does not exist.
    pub async fn stream_version(&self, stream_id: &str) -> Result<Option<i32>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT max(version) FROM waiting_room_events WHERE stream_id = $1",
                &[&stream_id],
            )
            .await?;
        Ok(row.get(0))
    }
}
