//! Integration tests against the real Postgres and RabbitMQ. Each test has its own database
//! and exchange/queue names (see `helpers`), so they run in parallel.

mod api;
mod cli;
mod helpers;
mod idempotency;
mod lag;
mod pipeline;
mod projector;
mod rebuild;
mod relay;
