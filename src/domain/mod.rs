//! The waiting-room domain: value types, the queue aggregate, its commands,
//! events and rules. Pure and synchronous: no I/O, no async, no clock (callers pass `now`).

pub mod events;
pub mod queue;
pub mod values;

#[cfg(test)]
mod tests;

pub use events::{DecodeError, EVENT_TYPES, Event, SCHEMA_VERSION};
pub use queue::{ActivePatient, Command, QueueSettings, QueueState, Rejection};
pub use values::{
    Capacity, ConsultationType, ConsultingRoom, MaxNoShows, Notes, PatientId, PatientName,
    PatientStatus, Priority, QueueId, QueueName, ValidationError,
};
