//! Integration tests against the real Postgres and RabbitMQ. Each test has its own database
//! and exchange/queue names (see `helpers`), so they run in parallel.

mod api_audit;
mod api_auth;
mod api_concurrency;
mod api_errors;
mod api_etag;
mod api_malformed;
mod api_ops;
mod api_ordering;
mod api_support;
mod bench;
mod board;
mod board_browser;
mod cli;
mod cli_commands;
mod cli_errors;
mod console;
mod db_errors;
mod helpers;
mod idempotency;
mod lag;
mod metrics;
mod model;
mod pipeline;
mod projector;
mod rebuild;
mod relay;
mod relay_failures;
mod retention;
mod roles;
mod secrets;
mod shutdown;
mod store_cancel;
mod tls;
