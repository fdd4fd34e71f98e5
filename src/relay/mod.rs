//! The outbox relay (`waitroom relay`): moves committed events to RabbitMQ. The event table
//! is the outbox; the relay publishes it in commit-safe order behind a cursor
//! ([`cursor`]), which it advances once RabbitMQ has confirmed a batch.
//!
//! One relay per database is active: it holds a session advisory lock on a dedicated
//! connection, which also LISTENs for the append trigger's wake-ups and runs the claims.
//! Others block on the lock and take over the moment the leader's session ends. The leader
//! drains in batches ([`Relay::publish_batch`]); with nothing past its cursor it raises the
//! "waiting" flag, waits for every transaction that could have missed the flag to end,
//! re-checks, and sleeps until a notification, a slow safety sweep, or shutdown.
//!
//! Failures are counted per event, never per batch: a refusal (nack) counts for the refused
//! event. A publish *error* (the channel or connection closed under a batch) names no event,
//! and is as likely the broker's fault as an event's, so the next round isolates it
//! (`isolate.rs`): after a successful reconnect, the batch at the cursor is sent alone,
//! and if it fails again it is bisected (a fresh channel after each failure) down to the one
//! event that breaks the channel by itself. Only that event gets an attempt counted. A broker
//! that is down fails the reconnect instead, and nothing is counted, so an outage kills no
//! event. After [`MAX_ATTEMPTS`] an event is dead: skipped, counted in `outbox_pending.failed`,
//! logged once, and healed from the store by the projectors.

pub mod cursor;
mod isolate;
mod listener;
mod publish;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

pub use cursor::{Claimed, Cursor, Outgoing, Partial, Queries};
pub use listener::{CHANNEL, Idle, LEADER_LOCK, Listener};
pub use publish::{
    BatchOutcome, Confirms, DISPATCHED_AT_HEADER, MAX_ATTEMPTS, Publisher, Settled,
    record_failures, settle,
};

use crate::broker::{BrokerNames, BrokerUnreachable};
use crate::state::{LiveState, RelayRole};
use crate::store::DbConfig;
use crate::telemetry::{EventTypeLabel, Metrics};

/// Most events per batch (one claim, one round of confirms, one cursor update).
pub const BATCH_SIZE: i64 = 500;
/// Batches sent before the oldest one's confirms are in.
pub const IN_FLIGHT: usize = 16;
/// While busy, how often the relay stores its cursor (always when it goes idle or stops).
const STORE_EVERY: Duration = Duration::from_millis(50);
/// While confirms are outstanding, how often the relay looks for new events.
const CLAIM_EVERY: Duration = Duration::from_millis(5);
/// How often an idle leader re-checks the outbox without a notification (lost-connection cover).
pub const SAFETY_SWEEP: Duration = Duration::from_secs(5);

/// What can stop a relay step.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    BrokerUnreachable(#[from] BrokerUnreachable),
    #[error("rabbitmq: {0}")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Db(#[from] crate::store::DbError),
    #[error("cannot encode envelope: {0}")]
    Encode(String),
    #[error(
        "RabbitMQ refused {0} message(s); they are retried and dead after {MAX_ATTEMPTS} attempts"
    )]
    Refused(usize),
    /// One event fails to publish by itself (it cannot be encoded, or sending it alone
    /// breaks a freshly opened channel); counted as an attempt.
    #[error(
        "event {event_id} (position {global_position}) cannot be published: {reason}; it is \
         retried and dead after {MAX_ATTEMPTS} attempts"
    )]
    Unpublishable {
        event_id: uuid::Uuid,
        global_position: i64,
        reason: String,
    },
}

crate::store::from_db_errors!(RelayError);

/// The active relay's state: its connection (leader lock, LISTEN), its cursor, and the
/// events it saw refused (whose `last_error` it clears once they are published).
pub struct Leader {
    listener: Listener,
    /// Published up to here (confirmed by RabbitMQ).
    cursor: Cursor,
    /// What the database holds; trails `cursor` by at most [`STORE_EVERY`] while busy.
    stored: Cursor,
    stored_at: Instant,
    refused: HashSet<i64>,
    /// A publish error happened since the last clean batch: isolate before draining again.
    suspect: bool,
    /// The event last found to break the channel by itself: tried alone first next time.
    culprit: Option<i64>,
}

impl Leader {
    /// Claims the next batch (at most [`BATCH_SIZE`] events) past the cursor.
    async fn claim(&self) -> Result<Claimed, tokio_postgres::Error> {
        self.listener
            .queries()
            .claim(self.listener.client(), &self.cursor, BATCH_SIZE)
            .await
    }

    /// Waits for the leader lock (blocking while another relay leads), then reads the cursor.
    pub async fn acquire(db: &DbConfig) -> Result<Self, tokio_postgres::Error> {
        let listener = Listener::acquire(db).await?;
        let cursor = listener.queries().load(listener.client()).await?;
        Ok(Self {
            listener,
            stored: cursor.clone(),
            cursor,
            stored_at: Instant::now(),
            refused: HashSet::new(),
            suspect: false,
            culprit: None,
        })
    }

    /// How far this leader has published.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Stores the cursor if it moved. Storing it is bookkeeping: a relay that stops
    /// without storing only publishes the last batches again (duplicates are no-ops).
    pub async fn store(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.stored != self.cursor {
            self.listener
                .queries()
                .advance(self.listener.client(), &self.cursor)
                .await?;
            self.stored = self.cursor.clone();
        }
        self.stored_at = Instant::now();
        Ok(())
    }
}

/// The relay role.
pub struct Relay {
    db: DbConfig,
    amqp_url: String,
    names: BrokerNames,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
}

impl Relay {
    /// A relay on `db` (its dedicated leader connection).
    pub fn new(
        db: DbConfig,
        amqp_url: String,
        names: BrokerNames,
        metrics: Arc<Metrics>,
        live: Arc<LiveState>,
    ) -> Self {
        Self {
            db,
            amqp_url,
            names,
            metrics,
            live,
        }
    }

    /// One step: claim the next events, publish them, wait for their confirms, move the
    /// cursor past what RabbitMQ confirmed (and what is dead). Returns what happened.
    pub async fn publish_batch(
        &self,
        leader: &mut Leader,
        publisher: &Publisher,
    ) -> Result<BatchOutcome, RelayError> {
        let Claimed {
            events,
            claimed_at,
            next,
        } = leader.claim().await?;
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let acked = match publisher.publish(&events, claimed_at).await {
            Ok(acked) => acked,
            Err(e) => {
                self.metrics.publish_failures.inc_by(events.len() as u64);
                return Err(e);
            }
        };
        let outcome = self.settle_batch(leader, &events, &acked, next).await?;
        leader.store().await?;
        Ok(outcome)
    }

    /// Records what RabbitMQ said about a batch and, when every event is confirmed or dead,
    /// moves the cursor to `next` (see [`settle`]).
    async fn settle_batch(
        &self,
        leader: &mut Leader,
        events: &[Outgoing],
        acked: &[bool],
        next: Cursor,
    ) -> Result<BatchOutcome, RelayError> {
        let client = leader.listener.client();
        let settled = settle(client, events, acked).await?;
        if !leader.refused.is_empty() {
            let now_published: Vec<i64> = events
                .iter()
                .zip(acked)
                .filter(|(e, ok)| **ok && leader.refused.contains(&e.global_position))
                .map(|(e, _)| e.global_position)
                .collect();
            if !now_published.is_empty() {
                publish::clear_refusals(client, &now_published).await?;
                for p in &now_published {
                    leader.refused.remove(p);
                }
            }
        }
        leader.refused.extend(&settled.retry);
        if settled.complete {
            leader.cursor = next;
            if leader.stored_at.elapsed() >= STORE_EVERY {
                leader.store().await?;
            }
        }
        let mut outcome = BatchOutcome {
            claimed: events.len(),
            ..BatchOutcome::default()
        };
        for (event, ok) in events.iter().zip(acked) {
            if *ok {
                outcome.published += 1;
                self.metrics
                    .outbox_dispatch
                    .observe(event.dispatch_ms / 1000.0);
                self.metrics
                    .events_published
                    .get_or_create(&EventTypeLabel::new(&event.event_type))
                    .inc();
            } else {
                outcome.refused += 1;
                self.metrics.publish_failures.inc();
            }
        }
        self.live.count_published(outcome.published as u64);
        self.live.relay_stats.record_batch(events.len());
        Ok(outcome)
    }

    /// Runs until `shutdown`: stand by for leadership, then relay; on losing the listener
    /// connection go back to standing by. A batch in hand is finished before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = new_backoff();
        while !shutdown.is_cancelled() {
            self.live.set_relay_role(RelayRole::Standby, None);
            let leader = tokio::select! {
                _ = shutdown.cancelled() => break,
                l = Leader::acquire(&self.db) => l,
            };
            let mut leader = match leader {
                Ok(l) => l,
                Err(e) => {
                    let e = crate::store::describe(&e);
                    self.live
                        .set_relay_role(RelayRole::Standby, Some(e.clone()));
                    tracing::warn!(error = %e, "relay: cannot hold leadership; retrying");
                    sleep_or_cancel(&shutdown, backoff.next().unwrap_or(Duration::from_secs(5)))
                        .await;
                    continue;
                }
            };
            tracing::info!("relay: leader");
            self.metrics.relay_leader.set(1);
            self.live.set_relay_role(RelayRole::Leader, None);
            backoff = new_backoff();
            self.lead(&mut leader, &shutdown).await;
            self.metrics.relay_leader.set(0);
            // The publisher went with the leadership.
            self.live.set_relay_channel(None);
        }
        self.live.set_relay_role(RelayRole::Stopped, None);
        tracing::info!("relay: stopped");
    }

    /// The leader's loop; returns on shutdown or when the listener connection is lost.
    async fn lead(&self, leader: &mut Leader, shutdown: &CancellationToken) {
        let mut publisher: Option<Publisher> = None;
        let mut backoff = new_backoff();
        // Woken from sleep with the idle flag still up: the first claim lowers it.
        let mut woken = false;
        loop {
            if shutdown.is_cancelled() || leader.listener.is_lost() {
                let _ = leader.store().await;
                return;
            }
            let drained = self.drain(leader, &mut publisher, shutdown, woken).await;
            // Whatever was in flight has been settled or abandoned with the drain.
            self.live.relay_stats.set_confirms_pending(0);
            let drained = match drained {
                Ok(()) => leader.store().await.map_err(RelayError::from),
                Err(e) => Err(e),
            };
            match drained {
                Ok(()) => {
                    woken = false;
                    backoff = new_backoff();
                    self.live.set_relay_error(None);
                }
                Err(e) => {
                    woken = false;
                    let _ = leader.listener.awake().await;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "relay: batch failed");
                    self.live.set_relay_error(Some(e.to_string()));
                    if matches!(e, RelayError::Broker(_) | RelayError::BrokerUnreachable(_)) {
                        publisher = None;
                        self.live.set_relay_channel(None);
                    }
                    sleep_or_cancel(shutdown, delay).await;
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            // Going idle waits out transactions that were in flight; stay stoppable.
            let cursor = leader.cursor.clone();
            let idle = tokio::select! {
                _ = shutdown.cancelled() => return,
                idle = leader.listener.idle(&cursor) => idle,
            };
            match idle {
                Ok(Idle::Work) => {
                    self.wake("work");
                    continue;
                }
                Ok(Idle::Asleep) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::store::describe(&e), "relay: idle check failed");
                    sleep_or_cancel(shutdown, Duration::from_millis(200)).await;
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Nobody should notify a relay that is gone.
                    let _ = leader.listener.awake().await;
                }
                _ = leader.listener.notified() => self.wake("notify"),
                _ = tokio::time::sleep(SAFETY_SWEEP) => self.wake("sweep"),
            }
            // Awake: the next claim lowers the flag, so appends stop notifying.
            woken = true;
        }
    }

    fn wake(&self, cause: &'static str) {
        self.metrics
            .relay_wakeups
            .get_or_create(&crate::telemetry::WakeLabel { cause })
            .inc();
        self.live.relay_stats.record_wake(cause);
    }

    /// Publishes until nothing is past the cursor. Up to [`IN_FLIGHT`] batches are sent
    /// before the oldest is confirmed (RabbitMQ persists before it confirms, which takes
    /// milliseconds to tens of milliseconds under load), and batches are settled in order,
    /// so the stored cursor only ever passes confirmed events.
    async fn drain(
        &self,
        leader: &mut Leader,
        publisher: &mut Option<Publisher>,
        shutdown: &CancellationToken,
        mut wake: bool,
    ) -> Result<(), RelayError> {
        if leader.suspect {
            self.isolate(leader, publisher).await?;
        }
        let p = self.connected(publisher).await?;
        let mut in_flight: VecDeque<(Vec<Outgoing>, Confirms, Cursor)> = VecDeque::new();
        // Claimed (and sent) up to here; the stored cursor trails it by the batches in flight.
        let mut ahead = leader.cursor.clone();
        // Events sent and not yet confirmed, for the console.
        let mut unconfirmed = 0;
        loop {
            if in_flight.len() < IN_FLIGHT && !shutdown.is_cancelled() {
                let listener = &leader.listener;
                let Claimed {
                    events,
                    claimed_at,
                    next,
                } = listener
                    .queries()
                    .claim_waking(listener.client(), &ahead, BATCH_SIZE, wake)
                    .await?;
                wake = false;
                ahead = next.clone();
                if !events.is_empty() {
                    let confirms = match p.send(&events, claimed_at).await {
                        Ok(c) => c,
                        Err(e) => {
                            self.metrics.publish_failures.inc_by(events.len() as u64);
                            // Which event (if any) is to blame is for the next round to find.
                            leader.suspect = true;
                            return Err(e);
                        }
                    };
                    unconfirmed += events.len();
                    self.live.relay_stats.set_confirms_pending(unconfirmed);
                    in_flight.push_back((events, confirms, next));
                }
            }
            let window_open = in_flight.len() < IN_FLIGHT;
            let Some((_, confirms, _)) = in_flight.front_mut() else {
                // Nothing in flight and nothing new: every committed event is published.
                return Ok(());
            };
            // Keep claiming while confirms are outstanding, unless the window is full.
            let acked = if window_open {
                match tokio::time::timeout(CLAIM_EVERY, confirms).await {
                    Ok(acked) => acked,
                    Err(_) => continue,
                }
            } else {
                confirms.await
            };
            let (events, _, next) = in_flight.pop_front().expect("the front batch exists");
            unconfirmed -= events.len();
            self.live.relay_stats.set_confirms_pending(unconfirmed);
            let acked = match acked {
                Ok(acked) => acked,
                Err(e) => {
                    self.metrics.publish_failures.inc_by(events.len() as u64);
                    leader.suspect = true;
                    return Err(e);
                }
            };
            let outcome = self.settle_batch(leader, &events, &acked, next).await?;
            if outcome.refused > 0 {
                // Later batches were sent past a refused event: let their confirms arrive,
                // keep the cursor where it stopped, and back off instead of hammering a broker
                // that is refusing messages. They are sent again from the cursor.
                for (_, confirms, _) in in_flight.drain(..) {
                    let _ = confirms.await;
                }
                return Err(RelayError::Refused(outcome.refused));
            }
        }
    }
}

/// Capped exponential backoff: 50 ms doubling to 5 s, with jitter, forever.
fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_or_cancel(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
