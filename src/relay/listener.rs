//! The leader's dedicated connection: holds the relay advisory lock, LISTENs for the
//! append trigger's wake-up, reads and advances the relay cursor, and implements the
//! "going idle" handshake with the trigger.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::cursor::{Cursor, Queries};
use crate::store::DbConfig;

/// Advisory lock (two-key form) held by the active relay; `pg_locks` shows it as
/// classid 0x77616974 ("wait"), objid 0x72656c79 ("rely"). Why one leader:
/// docs/adr/0004-leader-relay.md.
pub const LEADER_LOCK: (i32, i32) = (0x7761_6974, 0x7265_6c79);

/// The NOTIFY channel the append trigger uses.
pub const CHANNEL: &str = "waiting_room_outbox";

/// The idle flag is a sequence: setting it is not transactional, so appends see it at once
/// (see `sql/functions/relay.sql`).
const SET_FLAG: &str = "SELECT setval('relay_wakeup', $1)";

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
    queries: Queries,
    set_flag: tokio_postgres::Statement,
    wakeups: mpsc::UnboundedReceiver<()>,
    lost: bool,
}

impl Listener {
    /// Connects, waits for the leader lock (blocking while another relay leads), then LISTENs.
    pub async fn acquire(db: &DbConfig) -> Result<Self, tokio_postgres::Error> {
        let (client, mut connection) = db.connect_raw().await?;
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
        let queries = Queries::prepare(&client).await?;
        let set_flag = client.prepare(SET_FLAG).await?;
        Ok(Self {
            client,
            queries,
            set_flag,
            wakeups,
            lost: false,
        })
    }

    /// The connection, for claims and cursor updates.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// The cursor statements, prepared on [`Listener::client`].
    pub fn queries(&self) -> &Queries {
        &self.queries
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

    /// Lowers the flag: appends stop notifying. Call it as soon as the relay is awake.
    pub async fn awake(&mut self) -> Result<(), tokio_postgres::Error> {
        self.client
            .execute(&self.set_flag, &[&0i64])
            .await
            .map(|_| ())
    }

    /// Going idle: discard stale wake-ups, raise the flag, then look for events past `at`
    /// until every transaction that was in flight when the flag went up has ended (one that
    /// read the flag before it went up may still commit events). On [`Idle::Asleep`] the
    /// flag stays up; call [`Listener::awake`] after the wake-up. Why NOTIFY only while idle:
    /// docs/adr/0001-notify-wake-up.md.
    pub async fn idle(&mut self, at: &Cursor) -> Result<Idle, tokio_postgres::Error> {
        if at.partial.is_some() {
            return Ok(Idle::Work);
        }
        while let Ok(()) = self.wakeups.try_recv() {}
        self.client.execute(&self.set_flag, &[&1i64]).await?;
        // A claim taken after the flag went up: its snapshot is the one to wait out.
        let first = self.queries.claim(&self.client, at, 1).await?;
        if !first.events.is_empty() {
            self.awake().await?;
            return Ok(Idle::Work);
        }
        let flagged = first.next.done;
        if flagged.ends_with(':') {
            // `xmin:xmax:` with no transaction in flight: every append that read the flag
            // down had committed, and the claim saw its events.
            return Ok(Idle::Asleep);
        }
        let mut delay = Duration::from_micros(500);
        loop {
            let settled = self.queries.settled(&self.client, &flagged).await?;
            // One more look, in a snapshot taken after that check.
            if !self
                .queries
                .claim(&self.client, at, 1)
                .await?
                .events
                .is_empty()
            {
                self.awake().await?;
                return Ok(Idle::Work);
            }
            if settled {
                return Ok(Idle::Asleep);
            }
            // Only transactions that were in flight hold this back, for as long as they run.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}
