//! Command line and environment. Every setting is a `--flag` and an environment variable;
//! the defaults work against local services with no setup.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// waitroom: a Postgres-native event pipeline for clinic waiting rooms.
#[derive(Debug, Parser)]
#[command(name = "waitroom", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// What to run (default: `run`).
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Cmd {
    /// API + outbox relay + projector in one process (the default).
    Run,
    /// The HTTP API alone.
    Serve,
    /// The outbox relay alone (one leader per database; others stand by).
    Relay,
    /// The projector alone (competing consumers are safe).
    Project,
    /// Apply the `sql/` migrations and exit.
    Migrate,
    /// Replay the event store into empty read models, with a progress bar.
    Rebuild {
        /// The projection to rebuild.
        #[arg(long, default_value = crate::projector::WAITING_ROOM)]
        projection: String,
    },
    /// Load generator: drives the API and reports throughput, command latency and
    /// end-to-end lag percentiles (from commit timestamps).
    Bench(crate::bench::BenchArgs),
    /// Print the OpenAPI document.
    Openapi,
}

/// Connection and runtime settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/waitroom",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        global = true,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// HTTP listen address (port 0 picks a free port).
    #[arg(
        long,
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:5000",
        global = true
    )]
    pub http_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(
        long = "rust-log",
        env = "RUST_LOG",
        default_value = "info",
        global = true
    )]
    pub rust_log: String,
    /// Log format: pretty on a terminal, else json.
    #[arg(long, env = "LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    /// Suffix appended (after a dot) to every exchange and queue name, to run isolated
    /// pipelines on one broker (tests, staging). Empty = the contract's names.
    #[arg(long, env = "BROKER_SUFFIX", default_value = "", global = true)]
    pub broker_suffix: String,
    /// Maximum pooled Postgres connections per process.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16, global = true,
          value_parser = clap::value_parser!(u16).range(2..=512))]
    pub database_pool_size: u16,
}

impl Settings {
    /// The defaults, as if no flag or variable were set (for tests and embedding).
    pub fn defaults() -> Self {
        Cli::parse_from(["waitroom"]).settings
    }
}
