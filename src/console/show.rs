//! Answers to the SHOW commands: rows of typed values from the process's live state and,
//! for the database-backed ones, the same queries the HTTP API and psql users run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use pgwire::api::Type;

use super::command::{Column, Command, HELP};
use super::error::ConsoleError;
use crate::app::Roles;
use crate::broker::BrokerNames;
use crate::config::Settings;
use crate::relay::LEADER_LOCK;
use crate::state::{LiveState, ProjectorRole, RELAY_BATCH_BUCKETS, RelayRole, WAKE_CAUSES};
use crate::telemetry::redact::scrub;
use crate::telemetry::{Metrics, WakeLabel};

/// How long a diagnostics query may take before the console gives up on it.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One value of a result row, typed as its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Int4(Option<i32>),
    Int8(Option<i64>),
    Float8(Option<f64>),
    Bool(Option<bool>),
    Timestamptz(Option<DateTime<Utc>>),
}

impl Value {
    /// The Postgres type of the value.
    pub fn ty(&self) -> Type {
        match self {
            Self::Text(_) => Type::TEXT,
            Self::Int4(_) => Type::INT4,
            Self::Int8(_) => Type::INT8,
            Self::Float8(_) => Type::FLOAT8,
            Self::Bool(_) => Type::BOOL,
            Self::Timestamptz(_) => Type::TIMESTAMPTZ,
        }
    }
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(Some(s.into()))
}

fn count(n: u64) -> Value {
    Value::Int8(Some(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// Milliseconds and rates to the microsecond: psql shows every digit it is sent.
fn rounded(x: Option<f64>) -> Value {
    Value::Float8(x.map(|x| (x * 1000.0).round() / 1000.0))
}

/// A result: one row per entry, each as long as the command's columns.
pub type Rows = Vec<Vec<Value>>;

/// What the console reads: this process's state and its database.
pub struct Context {
    pub pool: Pool,
    pub live: Arc<LiveState>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub roles: Roles,
    pub names: BrokerNames,
    pub http_addr: Option<SocketAddr>,
    pub console_addr: SocketAddr,
}

/// Runs `command`; the rows match its columns (checked, so a mismatch is an error, not a
/// garbled row on the wire).
pub async fn run(context: &Context, command: &Command) -> Result<Rows, ConsoleError> {
    let rows = match command {
        Command::Help => help(),
        Command::Lag { window } => timed(lag(context, window)).await?,
        Command::Outbox => timed(outbox(context)).await?,
        Command::Projections => timed(projections(context)).await?,
        Command::Parked => timed(parked(context)).await?,
        Command::Relay => timed(relay(context)).await?,
        Command::Projector => projector(context),
        Command::Config => config(&context.settings),
        Command::Roles => roles(context),
    };
    check(command.columns(), &rows)?;
    Ok(rows)
}

fn check(columns: &[Column], rows: &Rows) -> Result<(), ConsoleError> {
    for row in rows {
        let fits = row.len() == columns.len()
            && row
                .iter()
                .zip(columns)
                .all(|(value, column)| value.ty() == column.ty);
        if !fits {
            return Err(ConsoleError::Internal(format!(
                "a row does not fit the columns {:?}",
                columns.iter().map(|c| c.name).collect::<Vec<_>>()
            )));
        }
    }
    Ok(())
}

async fn timed<T>(query: impl Future<Output = Result<T, ConsoleError>>) -> Result<T, ConsoleError> {
    tokio::time::timeout(QUERY_TIMEOUT, query)
        .await
        .map_err(|_| ConsoleError::Timeout(QUERY_TIMEOUT.as_secs()))?
}

fn help() -> Rows {
    HELP.iter()
        .map(|(syntax, what)| vec![text(*syntax), text(*what)])
        .collect()
}

async fn lag(context: &Context, window: &str) -> Result<Rows, ConsoleError> {
    let report = crate::lag::statistics_over(&context.pool, window).await?;
    let row = |event_type: &str, s: &crate::lag::LagStats| {
        vec![
            text(event_type),
            Value::Int8(Some(s.count)),
            rounded(s.p50_ms),
            rounded(s.p95_ms),
            rounded(s.p99_ms),
            rounded(s.max_ms),
            rounded(Some(s.events_per_second)),
        ]
    };
    let mut rows = vec![row("(all)", &report.overall)];
    rows.extend(report.by_event.iter().map(|(t, s)| row(t, s)));
    Ok(rows)
}

async fn outbox(context: &Context) -> Result<Rows, ConsoleError> {
    let backlog = crate::lag::outbox_backlog(&context.pool).await?;
    let refusal = crate::lag::last_refusal(&context.pool).await?;
    let (error, at) = refusal.unzip();
    Ok(vec![vec![
        Value::Int8(Some(backlog.count)),
        rounded(backlog.oldest_age_ms),
        Value::Int8(Some(backlog.failed)),
        Value::Text(error),
        Value::Timestamptz(at),
    ]])
}

async fn projections(context: &Context) -> Result<Rows, ConsoleError> {
    let pool = &context.pool;
    let mut rows = Vec::new();
    for h in crate::projector::views::projection_health(pool).await? {
        let rebuilding = crate::projector::rebuild::is_running(pool, &h.name).await?;
        rows.push(vec![
            text(h.name),
            Value::Int8(Some(h.streams)),
            Value::Int8(Some(h.streams_behind)),
            Value::Int8(Some(h.events_behind)),
            Value::Int8(Some(h.parked_count)),
            Value::Timestamptz(h.last_applied_at),
            Value::Bool(Some(rebuilding)),
        ]);
    }
    Ok(rows)
}

async fn parked(context: &Context) -> Result<Rows, ConsoleError> {
    let mut rows = Vec::new();
    for h in crate::projector::views::projection_health(&context.pool).await? {
        for p in h.parked {
            rows.push(vec![
                text(h.name.clone()),
                text(p.stream_id),
                Value::Int4(p.parked_version),
                Value::Text(p.error),
                Value::Timestamptz(p.parked_at),
            ]);
        }
    }
    Ok(rows)
}

/// The relay cursor's age and which session holds the leader lock (any process).
const RELAY_DATABASE: &str = "\
SELECT c.advanced_at,
       (extract(epoch FROM clock_timestamp() - c.advanced_at) * 1000)::double precision,
       (SELECT format('pid %s %s%s, connected %s', a.pid, a.application_name,
                      coalesce(' from ' || host(a.client_addr), ''),
                      to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'))
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid::int = $1 AND l.objid::int = $2
         LIMIT 1)
  FROM relay_cursor c";

fn relay_role(role: RelayRole) -> &'static str {
    match role {
        RelayRole::Off => "off",
        RelayRole::Standby => "standby",
        RelayRole::Leader => "leader",
        RelayRole::Stopped => "stopped",
    }
}

async fn relay(context: &Context) -> Result<Rows, ConsoleError> {
    let client = context.pool.get().await?;
    let db = client
        .query_opt(RELAY_DATABASE, &[&LEADER_LOCK.0, &LEADER_LOCK.1])
        .await?;
    let (advanced_at, age_ms, holder): (Option<DateTime<Utc>>, Option<f64>, Option<String>) =
        match &db {
            Some(r) => (r.get(0), r.get(1), r.get(2)),
            None => (None, None, None),
        };
    let live = &context.live;
    let snapshot = live.relay();
    let leader = match (snapshot.role, holder) {
        (RelayRole::Leader, Some(h)) => Some(format!("this process ({h})")),
        (RelayRole::Leader, None) => Some("this process".to_owned()),
        (_, holder) => holder,
    };
    let stats = &live.relay_stats;
    let batches = stats.batches.load(Ordering::Relaxed);
    let events = stats.batch_events.load(Ordering::Relaxed);
    let last_wake = stats.last_wake();
    let mut row = vec![
        text(relay_role(snapshot.role)),
        Value::Timestamptz(Some(snapshot.since)),
        Value::Text(leader),
    ];
    for cause in WAKE_CAUSES {
        let n = context
            .metrics
            .relay_wakeups
            .get(&WakeLabel { cause })
            .map_or(0, |c| c.get());
        row.push(count(n));
    }
    row.extend([
        Value::Timestamptz(last_wake.map(|(at, _)| at)),
        Value::Text(last_wake.map(|(_, cause)| cause.to_owned())),
        count(batches),
        count(live.relay_published.load(Ordering::Relaxed)),
        rounded((batches > 0).then(|| events as f64 / batches as f64)),
        count(stats.batch_max.load(Ordering::Relaxed)),
    ]);
    debug_assert_eq!(stats.batch_sizes.len(), RELAY_BATCH_BUCKETS.len());
    row.extend(
        stats
            .batch_sizes
            .iter()
            .map(|b| count(b.load(Ordering::Relaxed))),
    );
    row.extend([
        count(stats.confirms_pending.load(Ordering::Relaxed)),
        text(live.relay_channel().as_str()),
        Value::Timestamptz(advanced_at),
        rounded(age_ms),
        Value::Text(snapshot.last_error),
    ]);
    Ok(vec![row])
}

fn projector(context: &Context) -> Rows {
    let live = &context.live;
    let snapshot = live.projector();
    let state = match snapshot.role {
        ProjectorRole::Off => "off",
        ProjectorRole::Connecting => "connecting",
        ProjectorRole::Consuming => "consuming",
        ProjectorRole::Stopped => "stopped",
    };
    let (channel, prefetch) = live.projector_channel();
    let stats = &live.projector_stats;
    let batches = stats.batches.load(Ordering::Relaxed);
    vec![vec![
        text(state),
        Value::Timestamptz(Some(snapshot.since)),
        text(context.names.queue.clone()),
        text(channel.as_str()),
        Value::Int4(prefetch.map(i32::from)),
        Value::Int4(Some(
            i32::try_from(crate::projector::MAX_BATCH).unwrap_or(i32::MAX),
        )),
        count(batches),
        count(live.projector_deliveries.load(Ordering::Relaxed)),
        count(live.projector_applied.load(Ordering::Relaxed)),
        Value::Timestamptz(stats.last_batch_at()),
        Value::Int8((batches > 0).then(|| stats.last_batch_size.load(Ordering::Relaxed) as i64)),
        rounded(
            (batches > 0).then(|| stats.last_batch_micros.load(Ordering::Relaxed) as f64 / 1000.0),
        ),
        Value::Text(snapshot.last_error),
    ]]
}

/// Every setting as (name, value, environment variable), secrets masked.
pub fn config_entries(settings: &Settings) -> Vec<(&'static str, Option<String>, &'static str)> {
    vec![
        (
            "database_url",
            Some(scrub(&mask_secrets(&settings.database_url)).into_owned()),
            "DATABASE_URL",
        ),
        (
            "amqp_url",
            Some(scrub(&mask_secrets(&settings.amqp_url)).into_owned()),
            "AMQP_URL",
        ),
        (
            "http_addr",
            Some(settings.http_addr.to_string()),
            "HTTP_ADDR",
        ),
        (
            "console_addr",
            Some(settings.console_addr.to_string()),
            "CONSOLE_ADDR",
        ),
        (
            "metrics_addr",
            Some(settings.metrics_addr.to_string()),
            "METRICS_ADDR",
        ),
        (
            "console_password",
            super::password(settings).map(|_| MASK.to_owned()),
            "CONSOLE_PASSWORD",
        ),
        (
            "api_token",
            settings
                .api_token
                .as_ref()
                .filter(|t| !t.expose().is_empty())
                .map(|_| MASK.to_owned()),
            "API_TOKEN",
        ),
        (
            "api_tokens_file",
            settings
                .api_tokens_file
                .clone()
                .filter(|path| !path.is_empty()),
            "API_TOKENS_FILE",
        ),
        ("rust_log", Some(settings.rust_log.clone()), "RUST_LOG"),
        (
            "log_format",
            Some(match settings.log_format {
                Some(crate::telemetry::LogFormat::Pretty) => "pretty".to_owned(),
                Some(crate::telemetry::LogFormat::Json) => "json".to_owned(),
                None => "auto (pretty on a terminal, else json)".to_owned(),
            }),
            "LOG_FORMAT",
        ),
        (
            "broker_suffix",
            Some(settings.broker_suffix.clone()),
            "BROKER_SUFFIX",
        ),
        (
            "database_pool_size",
            Some(settings.database_pool_size.to_string()),
            "DATABASE_POOL_SIZE",
        ),
        (
            "board_names",
            Some(settings.board_names.to_string()),
            "BOARD_NAMES",
        ),
        (
            "idempotency_ttl",
            Some(settings.idempotency_ttl.to_string()),
            "IDEMPOTENCY_TTL",
        ),
    ]
}

fn config(settings: &Settings) -> Rows {
    config_entries(settings)
        .into_iter()
        .map(|(name, value, env)| vec![text(name), Value::Text(value), text(env)])
        .collect()
}

fn roles(context: &Context) -> Rows {
    let r = context.roles;
    let mut names: Vec<&str> = [
        (r.api, "api"),
        (r.relay, "relay"),
        (r.projector, "projector"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    names.push("console");
    let started = context.live.started_at;
    let uptime = (Utc::now() - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
    vec![vec![
        text(names.join(", ")),
        Value::Text(context.http_addr.map(|a| a.to_string())),
        text(context.console_addr.to_string()),
        Value::Int4(i32::try_from(std::process::id()).ok()),
        Value::Timestamptz(Some(started)),
        rounded(Some(uptime)),
        text(env!("CARGO_PKG_VERSION")),
    ]]
}

/// What a masked secret shows as.
pub const MASK: &str = "********";

const SECRET_KEYS: &[&str] = &["password", "sslpassword", "sslkey_password"];

/// `value` with its secrets masked: the password of a `scheme://user:password@host` URL, and
/// `password=` values in a query string or a `key=value` connection string.
pub fn mask_secrets(value: &str) -> String {
    let mut out = match value.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:{MASK}@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        None => value.to_owned(),
    };
    // `key=value` pairs, separated by `&` (query strings) or whitespace (connection strings);
    // a quoted value may hold spaces.
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(found) = out[from..].to_ascii_lowercase().find(&format!("{key}=")) {
            let start = from + found;
            let boundary = start == 0
                || out[..start].ends_with(|c: char| c == '?' || c == '&' || c.is_whitespace());
            let value_start = start + key.len() + 1;
            if !boundary {
                from = value_start;
                continue;
            }
            let rest = &out[value_start..];
            let value_len = if let Some(quoted) = rest.strip_prefix('\'') {
                quoted.find('\'').map_or(rest.len(), |end| end + 2)
            } else {
                rest.find(|c: char| c == '&' || c.is_whitespace())
                    .unwrap_or(rest.len())
            };
            out.replace_range(value_start..value_start + value_len, MASK);
            from = value_start + MASK.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_and_connection_strings_are_masked() {
        for (given, shown) in [
            (
                "postgres://waitroom:s3cret@db:5432/waitroom?sslmode=require",
                "postgres://waitroom:********@db:5432/waitroom?sslmode=require",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:********@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/waitroom",
                "postgres://postgres@127.0.0.1:5432/waitroom",
            ),
            (
                "postgres://u:p%40ss@h/db?password=other&sslmode=disable",
                "postgres://u:********@h/db?password=********&sslmode=disable",
            ),
            (
                "host=db user=w password='a b c' dbname=x",
                "host=db user=w password=******** dbname=x",
            ),
            ("host=db PASSWORD=plain", "host=db PASSWORD=********"),
            (
                "postgres://h/db?xpassword=kept",
                "postgres://h/db?xpassword=kept",
            ),
        ] {
            assert_eq!(mask_secrets(given), shown, "{given}");
        }
    }

    #[test]
    fn show_config_lists_every_setting_the_command_line_has() {
        use clap::CommandFactory;
        let settings = Settings::defaults();
        let entries = config_entries(&settings);
        let cli = crate::config::Cli::command();
        for arg in cli.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                entries
                    .iter()
                    .any(|(name, _, var)| *name == id && *var == env),
                "SHOW CONFIG shows {id} ({env})"
            );
        }
    }

    #[test]
    fn the_console_password_is_never_shown() {
        let mut settings = Settings::defaults();
        settings.console_password = Some(crate::config::Secret::new("hunter2-console"));
        settings.api_token = Some(crate::config::Secret::new("hunter2-api-token-0000"));
        settings.database_url = "postgres://a:hunter2-db@h/db".to_owned();
        let shown = format!("{:?}", config_entries(&settings));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(MASK));
    }
}
