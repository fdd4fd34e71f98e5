//! Live process state shared by the roles and read by health checks (and the console):
//! which roles run here, whether this relay leads, the last errors, counters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where this process's relay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayRole {
    /// Not running in this process.
    Off,
    /// Waiting for the leader lock.
    Standby,
    /// The active relay.
    Leader,
    /// Shut down.
    Stopped,
}

/// A role's state: what it is doing and the last error it hit.
#[derive(Debug, Clone, Serialize)]
pub struct RoleSnapshot<R> {
    pub role: R,
    pub last_error: Option<String>,
    pub since: DateTime<Utc>,
}

/// Where this process's projector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorRole {
    /// Not running in this process.
    Off,
    /// Connecting to RabbitMQ or Postgres.
    Connecting,
    /// Consuming deliveries.
    Consuming,
    /// Shut down.
    Stopped,
}

/// Shared live state; one per process.
pub struct LiveState {
    relay: Mutex<RoleSnapshot<RelayRole>>,
    projector: Mutex<RoleSnapshot<ProjectorRole>>,
    /// Events this process's relay has published.
    pub relay_published: AtomicU64,
    /// Events this process's projector has applied.
    pub projector_applied: AtomicU64,
    /// Deliveries this process's projector has settled (applied, duplicate or poison).
    pub projector_deliveries: AtomicU64,
    /// A rebuild is running in this process.
    pub rebuilding: AtomicBool,
    /// When this process started.
    pub started_at: DateTime<Utc>,
    /// The relay's batches and wake-ups.
    pub relay_stats: RelayStats,
    /// The projector's batches.
    pub projector_stats: ProjectorStats,
    /// The relay's publishing channel, while it has one.
    relay_channel: Mutex<Option<lapin::ChannelStatus>>,
    /// The projector's consuming channel, while it has one.
    projector_channel: Mutex<Option<lapin::ChannelStatus>>,
}

/// Upper bounds (inclusive) of the relay batch-size buckets; the last is the batch limit.
pub const RELAY_BATCH_BUCKETS: [u64; 5] = [1, 10, 100, 499, crate::relay::BATCH_SIZE as u64];

/// Relay counters, written with one atomic operation each per batch or wake-up (the relay's
/// hot path must not take a lock or wait for a reader).
#[derive(Default)]
pub struct RelayStats {
    /// Batches settled (confirmed or refused by RabbitMQ).
    pub batches: AtomicU64,
    /// Events in those batches.
    pub batch_events: AtomicU64,
    /// The largest batch.
    pub batch_max: AtomicU64,
    /// Batches by size: at most 1, 10, 100, 499 events, and full ([`crate::relay::BATCH_SIZE`]).
    pub batch_sizes: [AtomicU64; 5],
    /// Events sent to RabbitMQ whose confirms are not in yet.
    pub confirms_pending: AtomicU64,
    /// Last wake-up, µs since the Unix epoch (0: never).
    last_wake_micros: AtomicI64,
    /// Its cause, an index into [`WAKE_CAUSES`] plus one (0: never).
    last_wake_cause: AtomicU8,
}

/// Causes of relay wake-ups, as in the `waitroom_relay_wakeups_total{cause}` metric.
pub const WAKE_CAUSES: [&str; 3] = ["notify", "sweep", "work"];

impl RelayStats {
    /// Counts a settled batch of `events`.
    pub fn record_batch(&self, events: usize) {
        let n = events as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_events.fetch_add(n, Ordering::Relaxed);
        self.batch_max.fetch_max(n, Ordering::Relaxed);
        let bucket = RELAY_BATCH_BUCKETS
            .iter()
            .position(|upper| n <= *upper)
            .unwrap_or(RELAY_BATCH_BUCKETS.len() - 1);
        self.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a wake-up and its cause (one of [`WAKE_CAUSES`]).
    pub fn record_wake(&self, cause: &str) {
        let index = WAKE_CAUSES.iter().position(|c| *c == cause).unwrap_or(0);
        self.last_wake_micros
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
        self.last_wake_cause
            .store(index as u8 + 1, Ordering::Relaxed);
    }

    /// The last wake-up and its cause, if any.
    pub fn last_wake(&self) -> Option<(DateTime<Utc>, &'static str)> {
        let cause = self.last_wake_cause.load(Ordering::Relaxed);
        let at = DateTime::from_timestamp_micros(self.last_wake_micros.load(Ordering::Relaxed))?;
        let cause = WAKE_CAUSES.get(usize::from(cause).checked_sub(1)?)?;
        Some((at, cause))
    }

    /// Sets the number of events awaiting confirms.
    pub fn set_confirms_pending(&self, events: usize) {
        self.confirms_pending
            .store(events as u64, Ordering::Relaxed);
    }
}

/// Projector counters, written once per batch.
#[derive(Default)]
pub struct ProjectorStats {
    /// Batches settled (applied and acked, or rejected as poison).
    pub batches: AtomicU64,
    /// Deliveries in the last batch.
    pub last_batch_size: AtomicU64,
    /// How long the last batch took, µs.
    pub last_batch_micros: AtomicU64,
    /// When the last batch was settled, µs since the Unix epoch (0: never).
    last_batch_at_micros: AtomicI64,
}

impl ProjectorStats {
    /// Counts a settled batch of `deliveries` that took `elapsed`.
    pub fn record_batch(&self, deliveries: usize, elapsed: std::time::Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.last_batch_size
            .store(deliveries as u64, Ordering::Relaxed);
        self.last_batch_micros.store(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_batch_at_micros
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    /// When the last batch was settled, if any.
    pub fn last_batch_at(&self) -> Option<DateTime<Utc>> {
        match self.last_batch_at_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => DateTime::from_timestamp_micros(micros),
        }
    }
}

/// An AMQP channel's state, for the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// The role holds no channel (not running, standing by, or between connections).
    None,
    /// Opening.
    Opening,
    /// Open and usable.
    Open,
    /// Waiting for the connection to be recovered.
    Recovering,
    /// Closing.
    Closing,
    /// Closed (by us, the broker, or a lost connection).
    Closed,
}

impl ChannelState {
    fn of(status: Option<&lapin::ChannelStatus>) -> Self {
        match status {
            None => Self::None,
            Some(s) if s.connected() => Self::Open,
            Some(s) if s.reconnecting() => Self::Recovering,
            Some(s) if s.initializing() => Self::Opening,
            Some(s) if s.closing() => Self::Closing,
            Some(_) => Self::Closed,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Opening => "opening",
            Self::Open => "open",
            Self::Recovering => "recovering",
            Self::Closing => "closing",
            Self::Closed => "closed",
        }
    }
}

impl Default for LiveState {
    fn default() -> Self {
        let now = Utc::now();
        Self {
            relay: Mutex::new(RoleSnapshot {
                role: RelayRole::Off,
                last_error: None,
                since: now,
            }),
            projector: Mutex::new(RoleSnapshot {
                role: ProjectorRole::Off,
                last_error: None,
                since: now,
            }),
            relay_published: AtomicU64::new(0),
            projector_applied: AtomicU64::new(0),
            projector_deliveries: AtomicU64::new(0),
            rebuilding: AtomicBool::new(false),
            started_at: now,
            relay_stats: RelayStats::default(),
            projector_stats: ProjectorStats::default(),
            relay_channel: Mutex::new(None),
            projector_channel: Mutex::new(None),
        }
    }
}

fn set<R: PartialEq + Copy>(
    slot: &Mutex<RoleSnapshot<R>>,
    role: Option<R>,
    error: Option<Option<String>>,
) {
    // A poisoned lock only means a panic elsewhere mid-update; the data is still usable.
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(role) = role
        && s.role != role
    {
        s.role = role;
        s.since = Utc::now();
    }
    if let Some(error) = error {
        // Shown by readiness and the console: no secret may pass.
        s.last_error = error.map(|e| crate::telemetry::redact::scrub(&e).into_owned());
    }
}

impl LiveState {
    /// The relay's state.
    pub fn relay(&self) -> RoleSnapshot<RelayRole> {
        self.relay.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The projector's state.
    pub fn projector(&self) -> RoleSnapshot<ProjectorRole> {
        self.projector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the relay's role and last error.
    pub fn set_relay_role(&self, role: RelayRole, error: Option<String>) {
        set(&self.relay, Some(role), Some(error));
    }

    /// Records (or clears) the relay's last error.
    pub fn set_relay_error(&self, error: Option<String>) {
        set(&self.relay, None, Some(error));
    }

    /// Counts published events.
    pub fn count_published(&self, n: u64) {
        self.relay_published.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the projector's role and last error.
    pub fn set_projector_role(&self, role: ProjectorRole, error: Option<String>) {
        set(&self.projector, Some(role), Some(error));
    }

    /// Records (or forgets) the relay's publishing channel. Called when it connects or
    /// drops its connection, never per batch.
    pub fn set_relay_channel(&self, status: Option<lapin::ChannelStatus>) {
        *self.relay_channel.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Records (or forgets) the projector's consuming channel.
    pub fn set_projector_channel(&self, status: Option<lapin::ChannelStatus>) {
        *self
            .projector_channel
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The relay's publishing channel's state.
    pub fn relay_channel(&self) -> ChannelState {
        ChannelState::of(
            self.relay_channel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref(),
        )
    }

    /// The projector's consuming channel's state and its prefetch as RabbitMQ confirmed it.
    pub fn projector_channel(&self) -> (ChannelState, Option<u16>) {
        let slot = self
            .projector_channel
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (
            ChannelState::of(slot.as_ref()),
            slot.as_ref().and_then(|s| s.qos().prefetch_count),
        )
    }
}
