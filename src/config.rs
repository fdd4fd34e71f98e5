//! Command line and environment. Every setting is a `--flag` and an environment variable;
//! the defaults work against local services with no setup.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

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
    /// Diagnostics console (Postgres wire protocol, `psql -p 6433`) listen address, or `off`
    /// (port 0 picks a free port). Without CONSOLE_PASSWORD it must be a loopback address.
    #[arg(
        long,
        env = "CONSOLE_ADDR",
        default_value = "127.0.0.1:6433",
        global = true
    )]
    pub console_addr: ConsoleAddr,
    /// Password for the diagnostics console (SCRAM-SHA-256). Unset: the console accepts
    /// loopback clients only, without a password. Prefer the variable to the flag, which
    /// other users can read in the process list.
    #[arg(long, env = "CONSOLE_PASSWORD", global = true, hide_env_values = true)]
    pub console_password: Option<Secret>,
    /// Bearer token that every `/api` operation then requires (`Authorization: Bearer …`):
    /// 16–1024 characters of `A–Z a–z 0–9 - . _ ~ + /` (then `=` padding). Unset (and
    /// API_TOKENS_FILE unset): `/api` is open, with a warning at start. Prefer the variable
    /// to the flag, which other users can read in the process list.
    #[arg(long, env = "API_TOKEN", global = true, hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// File of accepted bearer tokens, one per line (blank lines and `#` comment lines
    /// skipped), e.g. one per client so each can be rotated alone; with API_TOKEN, both are
    /// accepted. Read once at start.
    #[arg(long, env = "API_TOKENS_FILE", global = true)]
    pub api_tokens_file: Option<String>,
    /// Extra listener for `GET /metrics` and `GET /health`, or `off` (the default): lets
    /// Prometheus scrape and orchestrators probe relays and projectors, which serve no API.
    #[arg(long, env = "METRICS_ADDR", default_value = "off", global = true)]
    pub metrics_addr: ListenAddr,
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
    /// How the live board (`GET /`, `/board/{queueId}`) shows patient names: `full`, or
    /// `initials` for privacy (masked by the server: full names never reach the page).
    #[arg(
        long,
        env = "BOARD_NAMES",
        value_enum,
        default_value = "full",
        global = true
    )]
    pub board_names: BoardNames,
    /// How long an `Idempotency-Key` is honoured and kept (`24h`, `30m`, `90s`): a retry
    /// after that is a new request; the API deletes expired records in the background.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", global = true)]
    pub idempotency_ttl: Ttl,
}

/// A positive duration in humantime syntax (`24h`, `30m`, `1h 30m`, `500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(std::time::Duration);

impl Ttl {
    /// A TTL of `duration` (callers keep it positive).
    pub fn new(duration: std::time::Duration) -> Self {
        Self(duration)
    }

    /// The duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Ttl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match humantime::parse_duration(s.trim()) {
            Ok(d) if !d.is_zero() => Ok(Self(d)),
            Ok(_) => Err(format!("invalid duration {s:?}: must be more than zero")),
            Err(e) => Err(format!("invalid duration {s:?}: {e} (e.g. 24h, 30m, 90s)")),
        }
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// How the live board shows patient names (`BOARD_NAMES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BoardNames {
    /// The name as checked in.
    Full,
    /// Initials only (`Maria José García` shows as `M. J. G.`).
    Initials,
}

impl fmt::Display for BoardNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Initials => "initials",
        })
    }
}

impl Settings {
    /// The defaults, as if no flag or variable were set (for tests and embedding).
    pub fn defaults() -> Self {
        Cli::parse_from(["waitroom"]).settings
    }
}

/// Where the metrics listener listens (`METRICS_ADDR`): an address, or `off`. Same syntax
/// as [`ConsoleAddr`].
pub type ListenAddr = ConsoleAddr;

/// Where the diagnostics console listens (`CONSOLE_ADDR`): an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleAddr {
    /// No console in this process.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl FromStr for ConsoleAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse().map(Self::At).map_err(|_| {
            format!("invalid address {s:?}: expected host:port (e.g. 127.0.0.1:6433) or `off`")
        })
    }
}

impl fmt::Display for ConsoleAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => addr.fmt(f),
        }
    }
}

/// A secret setting: never shown by `Debug` or `Display`, only by [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_reads_humantime_and_must_be_positive() {
        let day = "24h".parse::<Ttl>().expect("24h parses");
        assert_eq!(day.get(), std::time::Duration::from_secs(86_400));
        assert_eq!(day.to_string(), "1day");
        assert_eq!(
            " 30m ".parse::<Ttl>().map(Ttl::get),
            Ok(std::time::Duration::from_secs(1800))
        );
        assert!("0s".parse::<Ttl>().unwrap_err().contains("more than zero"));
        assert!("soon".parse::<Ttl>().unwrap_err().contains("e.g. 24h"));
    }

    #[test]
    fn idempotency_keys_live_a_day_by_default() {
        assert_eq!(
            Settings::defaults().idempotency_ttl.get(),
            crate::store::retention::DEFAULT_TTL
        );
    }
}
