//! The relay cursor: how far the event table (which is the outbox) has been published.
//!
//! A sequence value (the global position) is taken before commit, so a later-committing
//! transaction can hold a smaller position, and reading by position alone can skip an
//! event (docs/ARCHITECTURE.md, invariant 3). The relay reads by visibility instead, as PgQ does: a
//! batch is the events that became visible between two snapshots, "visible now, not visible
//! in the last snapshot published" (docs/adr/0002-commit-safe-ordering.md). Every committed
//! event is in exactly one such batch, the moment it commits; no in-flight transaction, long
//! or short, holds anything back.
//!
//! The candidates are found through the index on (txid, global_position): events not
//! visible in a snapshot are those at or past its xmax plus those of the transactions it saw
//! in flight. A batch larger than the limit is published in parts, in (txid, position)
//! order within the snapshot that bounds it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

/// How far the relay has published: every event visible in `done`, plus (mid-batch) the
/// events visible in `partial`'s snapshot up to its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// A `pg_snapshot` in its text form (`xmin:xmax:xip,...`).
    pub done: String,
    pub partial: Option<Partial>,
}

/// A batch published in part: events visible in `upper` (and not in `done`) up to
/// (`txid`, `global_position`) are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub upper: String,
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
    /// The writing transaction id.
    #[serde(skip)]
    pub txid: i64,
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

/// A claimed batch, when it was claimed (Postgres clock), and the cursor once it is published.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub events: Vec<Outgoing>,
    pub claimed_at: DateTime<Utc>,
    pub next: Cursor,
}

const LOAD: &str = "SELECT done::text, upper::text, after_txid::text::bigint, after_position \
     FROM relay_cursor";

const ADVANCE: &str = "UPDATE relay_cursor SET done = $1::text::pg_snapshot, \
     upper = $2::text::pg_snapshot, after_txid = $3::bigint::text::xid8, after_position = $4, \
     advanced_at = clock_timestamp()";

/// The next events after cursor (`$1` done, `$2`/`$3`/`$4` the partial batch), at most `$5`.
/// Without a partial batch the bounding snapshot is the statement's own: returned in every
/// row, and in a row of NULLs when there is no event, so the caller always learns it. Dead
/// events (the relay gave up on them) are skipped.
const CLAIM: &str = "\
WITH now AS (SELECT pg_current_snapshot() AS snapshot, now() AS at,
                    -- $6: lower the idle flag on the way (the first claim after a wake-up).
                    CASE WHEN $6 THEN setval('relay_wakeup', 0) END AS woke),
     bound AS (SELECT coalesce($2::text::pg_snapshot, now.snapshot) AS upper FROM now)
SELECT e.event_id, e.stream_id, e.version, e.global_position, e.event_type, e.occurred_at,
       e.correlation_id, e.causation_id, e.actor, e.payload::text, e.txid::text::bigint,
       (extract(epoch FROM now.at - e.recorded_at) * 1000)::double precision,
       now.at, bound.upper::text
  FROM now CROSS JOIN bound
  LEFT JOIN LATERAL (
       SELECT e.*
         FROM (-- Not visible in `done`: at or past its xmax, or of a transaction it saw in
               -- flight. Two index ranges, not one OR (which no index serves).
               SELECT e.* FROM waiting_room_events e
                WHERE e.txid >= pg_snapshot_xmax($1::text::pg_snapshot)
               UNION ALL
               SELECT e.* FROM waiting_room_events e
                WHERE e.txid = ANY (ARRAY(SELECT pg_snapshot_xip($1::text::pg_snapshot)))) e
        WHERE pg_visible_in_snapshot(e.txid, bound.upper)
          AND ($3::bigint IS NULL
               OR (e.txid, e.global_position) > ($3::bigint::text::xid8, $4::bigint))
          AND NOT EXISTS (SELECT 1 FROM waiting_room_outbox_failures f
                           WHERE f.global_position = e.global_position AND f.failed_at IS NOT NULL)
        ORDER BY e.txid, e.global_position
        LIMIT $5) e ON true
 ORDER BY e.txid, e.global_position";

/// Whether every transaction `$1` saw in flight has ended.
const SETTLED: &str = "SELECT coalesce(bool_and(pg_xact_status(x) IS DISTINCT FROM 'in progress'), true) \
     FROM unnest(ARRAY(SELECT pg_snapshot_xip($1::text::pg_snapshot))) AS x";

/// The cursor's statements, prepared once on the connection that runs them.
pub struct Queries {
    load: Statement,
    advance: Statement,
    claim: Statement,
    settled: Statement,
}

impl Queries {
    /// Prepares the statements on `client`.
    pub async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            load: client.prepare(LOAD).await?,
            advance: client.prepare(ADVANCE).await?,
            claim: client.prepare(CLAIM).await?,
            settled: client.prepare(SETTLED).await?,
        })
    }

    /// The stored cursor.
    pub async fn load(&self, client: &Client) -> Result<Cursor, tokio_postgres::Error> {
        let row = client.query_one(&self.load, &[]).await?;
        let upper: Option<String> = row.try_get(1)?;
        let txid: Option<i64> = row.try_get(2)?;
        let global_position: Option<i64> = row.try_get(3)?;
        Ok(Cursor {
            done: row.try_get(0)?,
            partial: match (upper, txid, global_position) {
                (Some(upper), Some(txid), Some(global_position)) => Some(Partial {
                    upper,
                    txid,
                    global_position,
                }),
                _ => None,
            },
        })
    }

    /// Stores `to` as the cursor.
    pub async fn advance(&self, client: &Client, to: &Cursor) -> Result<(), tokio_postgres::Error> {
        let partial = to.partial.as_ref();
        client
            .execute(
                &self.advance,
                &[
                    &to.done,
                    &partial.map(|p| p.upper.as_str()),
                    &partial.map(|p| p.txid),
                    &partial.map(|p| p.global_position),
                ],
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` events after `after`, in publish order, and the cursor past them.
    pub async fn claim(
        &self,
        client: &Client,
        after: &Cursor,
        limit: i64,
    ) -> Result<Claimed, tokio_postgres::Error> {
        self.claim_waking(client, after, limit, false).await
    }

    /// [`Queries::claim`], lowering the idle flag in the same statement when `wake`.
    pub async fn claim_waking(
        &self,
        client: &Client,
        after: &Cursor,
        limit: i64,
        wake: bool,
    ) -> Result<Claimed, tokio_postgres::Error> {
        let partial = after.partial.as_ref();
        let rows = client
            .query(
                &self.claim,
                &[
                    &after.done,
                    &partial.map(|p| p.upper.as_str()),
                    &partial.map(|p| p.txid),
                    &partial.map(|p| p.global_position),
                    &limit,
                    &wake,
                ],
            )
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut claimed_at = Utc::now();
        let mut upper = after.done.clone();
        for row in &rows {
            claimed_at = row.try_get(12)?;
            upper = row.try_get(13)?;
            let Some(event_id) = row.try_get::<_, Option<Uuid>>(0)? else {
                continue;
            };
            let payload: String = row.try_get(9)?;
            events.push(Outgoing {
                event_id,
                stream_id: row.try_get(1)?,
                version: row.try_get(2)?,
                global_position: row.try_get(3)?,
                event_type: row.try_get(4)?,
                occurred_at: row.try_get(5)?,
                correlation_id: row.try_get(6)?,
                causation_id: row.try_get(7)?,
                actor: row.try_get(8)?,
                // Postgres produced this text from a jsonb value, so it is valid JSON.
                data: RawValue::from_string(payload).unwrap_or_else(|_| null_payload()),
                txid: row.try_get(10)?,
                dispatch_ms: row.try_get(11)?,
            });
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = match events.last() {
            // A full batch: the snapshot may hold more; continue inside it.
            Some(last) if events.len() >= limit => Cursor {
                done: after.done.clone(),
                partial: Some(Partial {
                    upper,
                    txid: last.txid,
                    global_position: last.global_position,
                }),
            },
            // Everything visible in the bounding snapshot is in hand.
            _ => Cursor {
                done: upper,
                partial: None,
            },
        };
        Ok(Claimed {
            events,
            claimed_at,
            next,
        })
    }

    /// Whether every transaction that was in flight in `snapshot` has ended.
    pub async fn settled(
        &self,
        client: &Client,
        snapshot: &str,
    ) -> Result<bool, tokio_postgres::Error> {
        client
            .query_one(&self.settled, &[&snapshot])
            .await?
            .try_get(0)
    }
}

fn null_payload() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}
