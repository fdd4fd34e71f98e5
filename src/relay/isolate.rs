//! Finding the event behind a publish error. A nack names its event; a closed channel or
//! connection does not, and is as likely the broker's fault (an outage, a restart) as an
//! event's (too large for the broker, not encodable). So after a publish error the relay
//! reconnects and sends the batch at its cursor on its own; if that fails again it bisects
//! the batch, on a fresh connection after each failure, down to one event that fails by
//! itself, and blames that event only once the broker has taken yet another connection.
//! A broker that is down fails a reconnect, which counts nothing: an outage kills no event.

use chrono::{DateTime, Utc};

use super::cursor::{Claimed, Outgoing};
use super::publish::{self, Publisher};
use super::{Leader, Relay, RelayError};

impl Relay {
    /// The publisher, (re)connected if its channel or connection is gone.
    pub(super) async fn connected<'a>(
        &self,
        slot: &'a mut Option<Publisher>,
    ) -> Result<&'a Publisher, RelayError> {
        let publisher = match slot.take() {
            Some(p) if p.is_connected() => p,
            _ => {
                let connected = Publisher::connect(&self.amqp_url, &self.names).await?;
                self.live
                    .set_relay_channel(Some(connected.channel_status()));
                connected
            }
        };
        Ok(slot.insert(publisher))
    }

    /// After a publish error: finds out whether an event at the cursor breaks the channel
    /// by itself, and counts an attempt for that event only. The batch at the cursor is sent
    /// alone (the event found last time first, alone); if it fails it is bisected, on a fresh
    /// connection after each failure, down to one event that fails by itself, and the broker
    /// must then accept a new connection before the event is blamed. Returns `Ok` when the
    /// suspicion is cleared (the batch went through, or the failing event was retired) and
    /// [`RelayError::Unpublishable`] when the event was counted and stays to be retried.
    /// Events sent while probing are sent again later: duplicates, which projectors skip.
    pub(super) async fn isolate(
        &self,
        leader: &mut Leader,
        slot: &mut Option<Publisher>,
    ) -> Result<(), RelayError> {
        loop {
            let Claimed {
                events,
                claimed_at,
                next,
            } = leader.claim().await?;
            if events.is_empty() {
                leader.suspect = false;
                return Ok(());
            }
            let remembered = leader
                .culprit
                .and_then(|pos| events.iter().position(|e| e.global_position == pos));
            let (guilty, error) = if let Some(i) = remembered {
                match self.probe(slot, &events[i..=i], claimed_at).await? {
                    Err(e) => (i, e),
                    Ok(_) => {
                        // It goes through now: back to the batch as a whole.
                        leader.culprit = None;
                        continue;
                    }
                }
            } else {
                let error = match self.probe(slot, &events, claimed_at).await? {
                    Ok(acked) => {
                        // The error did not come back: the broker's, or a later batch's.
                        leader.suspect = false;
                        let outcome = self.settle_batch(leader, &events, &acked, next).await?;
                        if outcome.refused > 0 {
                            return Err(RelayError::Refused(outcome.refused));
                        }
                        return Ok(());
                    }
                    Err(e) => e,
                };
                match self.bisect(slot, &events, claimed_at, error).await? {
                    Some(found) => found,
                    None => {
                        // No single event fails by itself: nobody to blame.
                        leader.suspect = false;
                        return Ok(());
                    }
                }
            };
            // The broker is up (it takes a new connection): the failure was the event's.
            self.connected(slot).await?;
            let event = &events[guilty];
            let reason = match error {
                RelayError::Unpublishable { reason, .. } => reason,
                e => e.to_string(),
            };
            self.metrics.publish_failures.inc();
            let retry =
                publish::record_failures(leader.listener.client(), &[event], &reason).await?;
            if retry.is_empty() {
                // Retired: what follows it goes on (isolated again, in case of another).
                leader.culprit = None;
                leader.refused.remove(&event.global_position);
                continue;
            }
            leader.culprit = Some(event.global_position);
            leader.refused.insert(event.global_position);
            return Err(RelayError::Unpublishable {
                event_id: event.event_id,
                global_position: event.global_position,
                reason,
            });
        }
    }

    /// Narrows a failing batch down to one event whose publish fails by itself: its index
    /// and error, or `None` when both halves of a failing range go through.
    async fn bisect(
        &self,
        slot: &mut Option<Publisher>,
        events: &[Outgoing],
        claimed_at: DateTime<Utc>,
        error: RelayError,
    ) -> Result<Option<(usize, RelayError)>, RelayError> {
        let (mut lo, mut hi, mut error) = (0, events.len(), error);
        while hi - lo > 1 {
            // An event that cannot be encoded names itself.
            if let RelayError::Unpublishable {
                global_position, ..
            } = &error
                && let Some(i) = events
                    .iter()
                    .position(|e| e.global_position == *global_position)
            {
                return Ok(Some((i, error)));
            }
            let mid = lo + (hi - lo) / 2;
            match self.probe(slot, &events[lo..mid], claimed_at).await? {
                Err(e) => (hi, error) = (mid, e),
                Ok(_) => match self.probe(slot, &events[mid..hi], claimed_at).await? {
                    Err(e) => (lo, error) = (mid, e),
                    Ok(_) => return Ok(None),
                },
            }
        }
        Ok(Some((lo, error)))
    }

    /// Publishes `events` and waits for their confirms, on a connected publisher. The outer
    /// error: RabbitMQ cannot be reached (no event is to blame); the inner: this publish
    /// failed on a connection that had just been working.
    async fn probe(
        &self,
        slot: &mut Option<Publisher>,
        events: &[Outgoing],
        claimed_at: DateTime<Utc>,
    ) -> Result<Result<Vec<bool>, RelayError>, RelayError> {
        let p = self.connected(slot).await?;
        let result = p.publish(events, claimed_at).await;
        if result.is_err() {
            *slot = None;
            self.live.set_relay_channel(None);
        }
        Ok(result)
    }
}
