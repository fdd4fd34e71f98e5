//! The write model in memory: each stream's aggregate state, kept between commands so a
//! command costs one statement instead of loading and rewriting the queue every time.
//!
//! A slot is an async mutex, so commands on one queue in this process run one at a time
//! (they would serialise on the stream row in Postgres anyway) and never race each other.
//! Several processes may write the same queue: the append statement only succeeds when the
//! stream row still has the version the command was decided on, so a stale slot is detected,
//! reloaded and the command decided again. With the snapshots the append writes, this is
//! docs/adr/0006-snapshots.md.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::Mutex as AsyncMutex;

use crate::domain::QueueState;

/// One stream's cached state; `None` until loaded, and again after a failed append.
pub type Slot = Arc<AsyncMutex<Option<QueueState>>>;

/// Streams kept in memory per process, least recently used evicted first. A queue's state
/// holds only its active patients, so even 10,000 busy queues fit in a few tens of MB.
pub const CACHED_STREAMS: usize = 10_000;

/// Bounded map from stream id to its slot.
pub struct StreamCache {
    slots: Mutex<LruCache<String, Slot>>,
}

impl Default for StreamCache {
    fn default() -> Self {
        Self::new(CACHED_STREAMS)
    }
}

impl StreamCache {
    /// A cache of at most `capacity` streams (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            slots: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The slot of `stream_id`, created empty when missing. An evicted slot that a command
    /// still holds stays valid for that command; the next one loads a fresh slot.
    pub fn slot(&self, stream_id: &str) -> Slot {
        // A poisoned lock only means another thread panicked while touching the LRU order;
        // the map itself is still consistent.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(stream_id) {
            return slot.clone();
        }
        let slot = Slot::default();
        slots.put(stream_id.to_owned(), slot.clone());
        slot
    }
}
