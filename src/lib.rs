//! waitroom: a Postgres-native event pipeline for clinic waiting rooms.
//!
//! Data flows one way, one module per stage:
//!
//! - [`domain`]: the queue aggregate: commands, events, rules. Pure and synchronous.
//! - [`store`]: appends a command's events with their outbox rows, lag "created" facts,
//!   stream snapshot and idempotency record in one transaction; migrations.
//! - [`relay`]: outbox → RabbitMQ. LISTEN/NOTIFY wake-ups, commit-safe claims, publisher
//!   confirms, one advisory-lock leader.
//! - [`projector`]: RabbitMQ → read models through SQL functions, per-stream checkpoints,
//!   gap healing from the store, parking, rebuild.
//! - [`lag`]: per-event lag statistics, slowest events, lifecycles.
//! - [`api`]: poem-openapi HTTP API with problem+json errors.
//! - [`board`]: the live waiting-room board (`GET /`), updated through Server-Sent Events
//!   from the projector's NOTIFY.
//! - [`console`]: the diagnostics console, `psql -p 6433` into the running process (SHOW
//!   commands over the Postgres wire protocol, read-only).
//! - [`telemetry`]: logs and Prometheus metrics; [`state`]: live process state.
//! - [`broker`]: RabbitMQ names and topology; [`app`]: wiring of roles; [`config`]: CLI.
//! - [`bench`]: `waitroom bench`, a load generator that reports end-to-end lag from commit
//!   timestamps.
//!
//! Postgres is the source of truth; RabbitMQ is the fast path. See `docs/ARCHITECTURE.md`
//! for the invariants, `docs/adr/` for why each mechanism, `docs/DEPLOYMENT.md` and
//! `docs/RUNBOOK.md` for running it, and the README for a first start.

pub mod api;
pub mod app;
pub mod bench;
pub mod board;
pub mod broker;
pub mod config;
pub mod console;
pub mod domain;
pub mod lag;
pub mod projector;
pub mod relay;
pub mod state;
pub mod store;
pub mod telemetry;
