//! The relay cursor: how far the event table (which is the outbox) has been published.
//!
//! Events are read in (txid, global_position) order, and only those whose writing
//! transaction id is below the oldest event writer still in flight (ARCHITECTURE invariant 3,
//! `event_writers_horizon()` in `sql/functions/relay.sql`): every event writer below that id
//! has ended, so no event can ever appear behind the cursor. A sequence value is taken
//! before commit, so position order alone could skip an event that commits late; xid order
//! below the horizon cannot.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

/// A position in publish order: every event at or before it has been handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// The writing transaction id (`xid8`; below 2^63 for any database that will ever exist).
    pub txid: i64,
    pub global_position: i64,
}

/// An event as it goes onto the wire: the contract's envelope, with the payload passed
/// through as stored (no parse and re-encode).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i32,
    pub global_position: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: String,
    pub data: Box<RawValue>,
    /// Where this event sits in publish order.
    #[serde(skip)]
    pub cursor: Cursor,
    /// Created → claimed by the relay, in ms (Postgres clock).
    #[serde(skip)]
    pub dispatch_ms: f64,
}

impl Outgoing {
    /// The AMQP routing key: `waiting.room.<EventType>`.
    pub fn routing_key(&self) -> String {
        format!("waiting.room.{}", self.event_type)
    }
}

/// A claimed batch and when it was claimed (Postgres clock).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub events: Vec<Outgoing>,
    pub claimed_at: DateTime<Utc>,
}

const LOAD: &str = "SELECT txid::text::bigint, global_position FROM relay_cursor";

const ADVANCE: &str = "UPDATE relay_cursor SET txid = $1::bigint::text::xid8, global_position = $2, \
     advanced_at = clock_timestamp()";

/// Its own statement, before the claim's snapshot is taken (see the function's comment).
const HORIZON: &str = "SELECT event_writers_horizon()";

/// Events after the cursor and below the horizon (`$4`), oldest first. Dead events (the
/// relay gave up on them) are skipped; the cursor passes them with the next batch. `now()`
/// is the claim time.
const CLAIM: &str = "\
SELECT e.event_id, e.stream_id, e.version, e.global_position, e.event_type, e.occurred_at,
       e.correlation_id, e.causation_id, e.actor, e.payload::text, e.txid::text::bigint,
       (extract(epoch FROM now() - e.recorded_at) * 1000)::double precision, now()
  FROM waiting_room_events e
 WHERE (e.txid, e.global_position) > ($1::bigint::text::xid8, $2)
   AND e.txid < $4::bigint::text::xid8
   AND NOT EXISTS (SELECT 1 FROM waiting_room_outbox_failures f
                    WHERE f.global_position = e.global_position AND f.failed_at IS NOT NULL)
 ORDER BY e.txid, e.global_position
 LIMIT $3";

/// Whether any committed, not dead event is past the cursor, claimable yet or not.
const PENDING: &str = "\
SELECT EXISTS (SELECT 1 FROM waiting_room_events e
                WHERE (e.txid, e.global_position) > ($1::bigint::text::xid8, $2)
                  AND NOT EXISTS (SELECT 1 FROM waiting_room_outbox_failures f
                                   WHERE f.global_position = e.global_position
                                     AND f.failed_at IS NOT NULL))";

/// The cursor's statements, prepared once on the connection that runs them.
pub struct Queries {
    load: Statement,
    advance: Statement,
    horizon: Statement,
    claim: Statement,
    pending: Statement,
}

impl Queries {
    /// Prepares the statements on `client`.
    pub async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            load: client.prepare(LOAD).await?,
            advance: client.prepare(ADVANCE).await?,
            horizon: client.prepare(HORIZON).await?,
            claim: client.prepare(CLAIM).await?,
            pending: client.prepare(PENDING).await?,
        })
    }

    /// The stored cursor.
    pub async fn load(&self, client: &Client) -> Result<Cursor, tokio_postgres::Error> {
        let row = client.query_one(&self.load, &[]).await?;
        Ok(Cursor {
            txid: row.try_get(0)?,
            global_position: row.try_get(1)?,
        })
    }

    /// Stores `to` as the cursor.
    pub async fn advance(&self, client: &Client, to: &Cursor) -> Result<(), tokio_postgres::Error> {
        client
            .execute(&self.advance, &[&to.txid, &to.global_position])
            .await?;
        Ok(())
    }

    /// The oldest transaction id that may still add events.
    pub async fn horizon(&self, client: &Client) -> Result<i64, tokio_postgres::Error> {
        client.query_one(&self.horizon, &[]).await?.try_get(0)
    }

    /// Up to `limit` events after `after` that no in-flight event writer can precede, in
    /// publish order.
    pub async fn claim(
        &self,
        client: &Client,
        after: &Cursor,
        limit: i64,
    ) -> Result<Claimed, tokio_postgres::Error> {
        let horizon = self.horizon(client).await?;
        let rows = client
            .query(
                &self.claim,
                &[&after.txid, &after.global_position, &limit, &horizon],
            )
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut claimed_at = Utc::now();
        for row in &rows {
            let global_position: i64 = row.try_get(3)?;
            let payload: String = row.try_get(9)?;
            events.push(Outgoing {
                event_id: row.try_get(0)?,
                stream_id: row.try_get(1)?,
                version: row.try_get(2)?,
                global_position,
                event_type: row.try_get(4)?,
                occurred_at: row.try_get(5)?,
                correlation_id: row.try_get(6)?,
                causation_id: row.try_get(7)?,
                actor: row.try_get(8)?,
                // Postgres produced this text from a jsonb value, so it is valid JSON.
                data: RawValue::from_string(payload).unwrap_or_else(|_| null_payload()),
                cursor: Cursor {
                    txid: row.try_get(10)?,
                    global_position,
                },
                dispatch_ms: row.try_get(11)?,
            });
            claimed_at = row.try_get(12)?;
        }
        Ok(Claimed { events, claimed_at })
    }

    /// Whether any committed, not dead event is past `after`.
    pub async fn pending(
        &self,
        client: &Client,
        after: &Cursor,
    ) -> Result<bool, tokio_postgres::Error> {
        client
            .query_one(&self.pending, &[&after.txid, &after.global_position])
            .await?
            .try_get(0)
    }
}

fn null_payload() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}
