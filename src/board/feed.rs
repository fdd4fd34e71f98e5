//! The board's one database listener per process: LISTENs for the projector's board
//! notifications and fans them out to every open page through a broadcast channel.
//!
//! NOTIFY costs the projector a database-wide lock at commit (docs/ARCHITECTURE.md,
//! invariant 4), so `project_batch` notifies only while some listener holds the board lock
//! in shared mode. This listener holds it exactly while pages are open ("armed"); arming
//! waits for any batch that skipped its notification to commit, then tells every page to
//! resync from the read model, so no change falls between the two.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::projector::WAITING_ROOM;
use crate::store::DbConfig;

/// The NOTIFY channel `project_batch` and `reset_projection` use.
pub const CHANNEL: &str = "waitroom_board";

/// Held in shared mode while this process has open pages; `project_batch` try-locks it
/// exclusively to learn whether anyone listens.
const ARM: &str = "SELECT pg_advisory_lock_shared(hashtext('waitroom.board'), hashtext($1))";
const DISARM: &str = "SELECT pg_advisory_unlock_shared(hashtext('waitroom.board'), hashtext($1))";

/// Pages this far behind the broadcast are told to resync instead.
const BACKLOG: usize = 256;

/// What the pages are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These queues changed (one projector batch).
    Queues(Arc<[String]>),
    /// Any queue may have changed (a rebuild, a payload past NOTIFY's limit).
    All,
    /// The feed is (again) live: resync from the read model.
    Live,
    /// The listener lost its connection: what the page shows may be stale.
    Stale,
}

impl Change {
    /// Reads a notification's payload: a JSON array of queue ids, or `*`.
    pub fn parse(payload: &str) -> Self {
        match serde_json::from_str::<Vec<String>>(payload) {
            Ok(ids) => Self::Queues(ids.into()),
            Err(_) => Self::All,
        }
    }

    /// Whether a page showing `queue` (every queue when `None`) must refetch.
    pub fn concerns(&self, queue: Option<&str>) -> bool {
        match (self, queue) {
            (Self::Queues(ids), Some(q)) => ids.iter().any(|id| id == q),
            _ => true,
        }
    }
}

/// Why a listener session ended early.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("{}", crate::store::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("the connection closed")]
    Closed,
}

/// The fan-out: one per process.
pub struct Feed {
    changes: broadcast::Sender<Change>,
    /// Open pages (SSE streams).
    watchers: watch::Sender<usize>,
    /// LISTENing and holding the board lock: every projected change will be announced.
    live: watch::Sender<bool>,
}

/// A page's subscription; dropping it counts the page out.
pub struct Subscription {
    pub changes: broadcast::Receiver<Change>,
    feed: Arc<Feed>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.watchers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Feed {
    /// A feed with no listener yet ([`Feed::run`] starts one).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            changes: broadcast::channel(BACKLOG).0,
            watchers: watch::channel(0).0,
            live: watch::channel(false).0,
        })
    }

    /// Subscribes a page. Subscribe before reading the read model: a change committed after
    /// that read is then announced to it.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let changes = self.changes.subscribe();
        self.watchers.send_modify(|n| *n += 1);
        Subscription {
            changes,
            feed: self.clone(),
        }
    }

    /// Whether changes are being announced now.
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Waits at most `timeout` for the feed to be live; returns whether it is.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        let mut live = self.live.subscribe();
        tokio::time::timeout(timeout, live.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Pages open now.
    pub fn watchers(&self) -> usize {
        *self.watchers.borrow()
    }

    fn announce(&self, change: Change) {
        // No receiver is not an error: no page is open.
        let _ = self.changes.send(change);
    }

    /// Keeps one LISTEN connection until `shutdown`, reconnecting with capped backoff. The
    /// API works without it; pages then show a "reconnecting" mark.
    pub async fn run(self: Arc<Self>, db: DbConfig, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut connected = false;
            let result = self.session(&db, &shutdown, &mut connected).await;
            if self.live.send_replace(false) {
                self.announce(Change::Stale);
            }
            match result {
                Ok(()) => break,
                Err(e) => {
                    if connected {
                        delay = Duration::from_millis(100);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                                   "board: listener connection lost");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("board: listener stopped");
    }

    /// One connection's life: LISTEN, then arm while pages are open and forward
    /// notifications. Returns `Ok` on shutdown, the error when the connection is lost.
    async fn session(
        &self,
        db: &DbConfig,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), Lost> {
        let (client, mut connection) = db.connect_raw().await?;
        let (tx, mut notifications) = mpsc::unbounded_channel::<Result<String, _>>();
        // Pooled connections swallow notifications; this one is driven here so they reach us.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(Ok(n.payload().to_owned()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!(
                "SET application_name = 'waitroom-board'; LISTEN {CHANNEL}"
            ))
            .await?;
        *connected = true;
        tracing::info!("board: listening");
        let mut watchers = self.watchers.subscribe();
        let mut armed = false;
        loop {
            let wanted = *watchers.borrow_and_update() > 0;
            if wanted != armed {
                client
                    .execute(if wanted { ARM } else { DISARM }, &[&WAITING_ROOM])
                    .await?;
                armed = wanted;
                // Armed: every batch from now on notifies, and those that did not have
                // committed (the lock waited for them): pages resync once.
                self.live.send_replace(armed);
                if armed {
                    self.announce(Change::Live);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = notifications.recv() => match n {
                    Some(Ok(payload)) => self.announce(Change::parse(&payload)),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Lost::Closed),
                },
                changed = watchers.changed() => if changed.is_err() { return Ok(()) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_queues_or_everything() {
        assert_eq!(
            Change::parse(r#"["a","b.c"]"#),
            Change::Queues(vec!["a".to_owned(), "b.c".to_owned()].into())
        );
        assert_eq!(Change::parse("*"), Change::All);
        assert_eq!(Change::parse("not json"), Change::All);
    }

    #[test]
    fn a_page_refetches_only_for_its_queue() {
        let change = Change::parse(r#"["a"]"#);
        assert!(change.concerns(Some("a")));
        assert!(!change.concerns(Some("b")));
        assert!(change.concerns(None));
        assert!(Change::All.concerns(Some("b")));
        assert!(Change::Live.concerns(Some("b")));
    }

    #[tokio::test]
    async fn subscriptions_count_open_pages() {
        let feed = Feed::new();
        let a = feed.subscribe();
        let b = feed.subscribe();
        assert_eq!(feed.watchers(), 2);
        drop(a);
        assert_eq!(feed.watchers(), 1);
        drop(b);
        assert_eq!(feed.watchers(), 0);
    }
}
