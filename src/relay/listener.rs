//! The leader's dedicated connection: holds the relay advisory lock, LISTENs for the
//! append trigger's wake-up, reads and advances the relay cursor, and implements the
//! "going idle" handshake with the trigger.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::cursor::{self, Cursor};
use crate::store::DbConfig;

/// Advisory lock (two-key form) held by the active relay; `pg_locks` shows it as
/// classid 0x77616974 ("wait"), objid 0x72656c79 ("rely").
pub const LEADER_LOCK: (i32, i32) = (0x7761_6974, 0x7265_6c79);

/// The NOTIFY channel the append trigger uses.
pub const CHANNEL: &str = "waiting_room_outbox";

const SET_WAITING: &str = "UPDATE relay_state SET waiting = true, updated_at = clock_timestamp()";
const CLEAR_WAITING: &str =
    "UPDATE relay_state SET waiting = false, updated_at = clock_timestamp() WHERE waiting";
/// The next transaction id to be assigned: every transaction at or above it started after
/// the flag was committed, so its trigger sees the flag and notifies.
const BARRIER: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint";
const PASSED: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= $1";

/// Whether going idle found work after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Events arrived while the flag went up: drain again.
    Work,
    /// Nothing to do; a notification will wake the relay.
    Asleep,
}

/// The leader's connection. Dropping it releases leadership.
pub struct Listener {
    client: tokio_postgres::Client,
    wakeups: mpsc::UnboundedReceiver<()>,
    lost: bool,
    /// The "waiting" flag was raised by this relay and may still be up.
    flag_up: bool,
}

impl Listener {
    /// Connects, waits for the leader lock (blocking while another relay leads), then LISTENs.
    pub async fn acquire(db: &DbConfig) -> Result<Self, tokio_postgres::Error> {
        let (client, mut connection) = db.config().connect(NoTls).await?;
        let (tx, wakeups) = mpsc::unbounded_channel();
        // Pooled connections swallow notifications; this one is driven here so they reach us.
        // When the connection ends, `tx` drops and the receiver reports the loss.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "relay: listener connection lost");
                        break;
                    }
                }
            }
        });
        client
            .execute(
                "SELECT pg_advisory_lock($1, $2)",
                &[&LEADER_LOCK.0, &LEADER_LOCK.1],
            )
            .await?;
        // The cursor and the flag are the relay's own bookkeeping: losing their last update
        // in a Postgres crash only re-publishes a batch (duplicates are no-ops downstream),
        // so they need not wait for the WAL flush.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = off; SET application_name = 'waitroom-relay'; LISTEN {CHANNEL}"
            ))
            .await?;
        Ok(Self {
            client,
            wakeups,
            lost: false,
            flag_up: false,
        })
    }

    /// The connection, for claims and cursor updates.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Whether the connection (and with it leadership) is gone.
    pub fn is_lost(&self) -> bool {
        self.lost || self.client.is_closed()
    }

    /// Waits for a notification (or the connection's loss, which also returns).
    pub async fn notified(&mut self) {
        if self.wakeups.recv().await.is_none() {
            self.lost = true;
        }
    }

    /// Moves the cursor after a batch, and lowers the flag if this relay raised it and no
    /// append has lowered it yet (so appends stop notifying a relay that is awake).
    pub async fn advance(&mut self, to: &Cursor) -> Result<(), tokio_postgres::Error> {
        cursor::advance(&self.client, to).await?;
        if self.flag_up {
            self.client.execute(CLEAR_WAITING, &[]).await?;
            self.flag_up = false;
        }
        Ok(())
    }

    /// Going idle: discard stale wake-ups, raise the flag, wait until every transaction that
    /// could have missed it has ended, then re-check for events past `at`.
    pub async fn idle(&mut self, at: &Cursor) -> Result<Idle, tokio_postgres::Error> {
        while let Ok(()) = self.wakeups.try_recv() {}
        self.client.batch_execute(SET_WAITING).await?;
        self.flag_up = true;
        let barrier: i64 = self.client.query_one(BARRIER, &[]).await?.get(0);
        let mut delay = Duration::from_micros(500);
        loop {
            if cursor::pending(&self.client, at).await? {
                return Ok(Idle::Work);
            }
            let passed: bool = self.client.query_one(PASSED, &[&barrier]).await?.get(0);
            if passed {
                // One last look: a writer that ended between the two queries.
                if cursor::pending(&self.client, at).await? {
                    return Ok(Idle::Work);
                }
                return Ok(Idle::Asleep);
            }
            // Only in-flight writers hold the barrier back, for the length of their transaction.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}
