//! Live process state shared by the roles and read by health checks (and the console):
//! which roles run here, whether this relay leads, the last errors, counters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
        s.last_error = error;
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
}
