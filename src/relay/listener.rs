//! The leader's dedicated connection: holds the relay advisory lock, LISTENs for the
//! outbox trigger, and implements the "going idle" handshake with the trigger.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::DbConfig;

/// Advisory lock (two-key form) held by the active relay; `pg_locks` shows it as
/// classid 0x77616974 ("wait"), objid 0x72656c79 ("rely").
pub const LEADER_LOCK: (i32, i32) = (0x7761_6974, 0x7265_6c79);

/// The NOTIFY channel the outbox trigger uses.
pub const CHANNEL: &str = "waiting_room_outbox";

const SET_WAITING: &str = "UPDATE relay_state SET waiting = true, updated_at = clock_timestamp()";
/// The next transaction id to be assigned: every transaction at or above it started after
/// the flag was committed, so its trigger sees the flag and notifies.
const BARRIER: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint";
const RECHECK: &str = "\
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= $1,
       EXISTS (SELECT 1 FROM waiting_room_outbox
                WHERE published_at IS NULL AND failed_at IS NULL
                  AND txid < pg_snapshot_xmin(pg_current_snapshot()))";

/// The leader's connection. Dropping it releases leadership.
pub struct Listener {
    client: tokio_postgres::Client,
    wakeups: mpsc::UnboundedReceiver<()>,
    lost: bool,
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
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Self {
            client,
            wakeups,
            lost: false,
        })
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

    /// Going idle: discard stale wake-ups, raise the flag, wait until every transaction that
    /// could have missed it has ended, then re-check. Returns true when there is work after all.
    pub async fn idle(
        &mut self,
        pool: &deadpool_postgres::Pool,
    ) -> Result<bool, tokio_postgres::Error> {
        while let Ok(()) = self.wakeups.try_recv() {}
        self.client.batch_execute(SET_WAITING).await?;
        let barrier: i64 = self.client.query_one(BARRIER, &[]).await?.get(0);
        let client = match pool.get().await {
            Ok(c) => c,
            Err(_) => return Ok(true), // cannot check: treat as work, the drain will report the error
        };
        let mut delay = Duration::from_micros(500);
        loop {
            let row = client.query_one(RECHECK, &[&barrier]).await?;
            let (passed, pending): (bool, bool) = (row.get(0), row.get(1));
            if pending {
                return Ok(true);
            }
            if passed {
                return Ok(false);
            }
            // Only in-flight writers hold the barrier back, for the length of their transaction.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}
