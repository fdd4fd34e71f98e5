//! `/api/queues`: commands (through the event store) and queries (over the read models and
//! the audit trail). A queue is one event stream; its version is the `ETag` of every response
//! about it, and commands accept `If-Match` with it.

mod commands;
mod queries;

pub use commands::CommandsApi;
pub use queries::QueriesApi;
