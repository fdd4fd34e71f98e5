//! The console's language: `SHOW <what> [argument]`, case-insensitive, statements separated
//! by semicolons. Parsing is pure; every command knows its result columns before it runs, so
//! a prepared statement can be described without touching the database.

use pgwire::api::Type;

use super::error::ConsoleError;

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW HELP`: the commands.
    Help,
    /// `SHOW LAG ['<interval>']`: end-to-end lag statistics over the window (Postgres
    /// interval syntax; default [`DEFAULT_LAG_WINDOW`]).
    Lag { window: String },
    /// `SHOW OUTBOX`: the relay's backlog.
    Outbox,
    /// `SHOW PROJECTIONS`: each projection's checkpoint health.
    Projections,
    /// `SHOW PARKED`: parked streams.
    Parked,
    /// `SHOW RELAY`: this process's relay.
    Relay,
    /// `SHOW PROJECTOR`: this process's projector.
    Projector,
    /// `SHOW CONFIG`: effective settings, secrets masked.
    Config,
    /// `SHOW ROLES`: roles, uptime, version.
    Roles,
}

/// The window of `SHOW LAG` without an argument (the same as `GET /api/metrics/lag`).
pub const DEFAULT_LAG_WINDOW: &str = "5 minutes";

/// A result column: its name and Postgres type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: Type,
}

const fn col(name: &'static str, ty: Type) -> Column {
    Column { name, ty }
}

const HELP_COLUMNS: &[Column] = &[col("command", Type::TEXT), col("description", Type::TEXT)];

const LAG_COLUMNS: &[Column] = &[
    col("event_type", Type::TEXT),
    col("count", Type::INT8),
    col("p50_ms", Type::FLOAT8),
    col("p95_ms", Type::FLOAT8),
    col("p99_ms", Type::FLOAT8),
    col("max_ms", Type::FLOAT8),
    col("events_per_second", Type::FLOAT8),
];

const OUTBOX_COLUMNS: &[Column] = &[
    col("pending", Type::INT8),
    col("oldest_age_ms", Type::FLOAT8),
    col("dead", Type::INT8),
    col("last_error", Type::TEXT),
    col("last_error_at", Type::TIMESTAMPTZ),
];

const PROJECTIONS_COLUMNS: &[Column] = &[
    col("projection", Type::TEXT),
    col("streams", Type::INT8),
    col("streams_behind", Type::INT8),
    col("events_behind", Type::INT8),
    col("parked_streams", Type::INT8),
    col("last_applied_at", Type::TIMESTAMPTZ),
    col("rebuilding", Type::BOOL),
];

const PARKED_COLUMNS: &[Column] = &[
    col("projection", Type::TEXT),
    col("stream_id", Type::TEXT),
    col("parked_version", Type::INT4),
    col("error", Type::TEXT),
    col("parked_at", Type::TIMESTAMPTZ),
];

const RELAY_COLUMNS: &[Column] = &[
    col("role", Type::TEXT),
    col("since", Type::TIMESTAMPTZ),
    col("leader", Type::TEXT),
    col("wakeups_notify", Type::INT8),
    col("wakeups_sweep", Type::INT8),
    col("wakeups_work", Type::INT8),
    col("last_wakeup_at", Type::TIMESTAMPTZ),
    col("last_wakeup_cause", Type::TEXT),
    col("batches", Type::INT8),
    col("events_published", Type::INT8),
    col("batch_avg", Type::FLOAT8),
    col("batch_max", Type::INT8),
    col("batches_of_1", Type::INT8),
    col("batches_of_2_10", Type::INT8),
    col("batches_of_11_100", Type::INT8),
    col("batches_of_101_499", Type::INT8),
    col("batches_of_500", Type::INT8),
    col("confirms_pending", Type::INT8),
    col("broker", Type::TEXT),
    col("cursor_advanced_at", Type::TIMESTAMPTZ),
    col("cursor_age_ms", Type::FLOAT8),
    col("last_error", Type::TEXT),
];

const PROJECTOR_COLUMNS: &[Column] = &[
    col("state", Type::TEXT),
    col("since", Type::TIMESTAMPTZ),
    col("queue", Type::TEXT),
    col("broker", Type::TEXT),
    col("prefetch", Type::INT4),
    col("max_batch", Type::INT4),
    col("batches", Type::INT8),
    col("deliveries", Type::INT8),
    col("events_applied", Type::INT8),
    col("last_batch_at", Type::TIMESTAMPTZ),
    col("last_batch_size", Type::INT8),
    col("last_batch_ms", Type::FLOAT8),
    col("last_error", Type::TEXT),
];

const CONFIG_COLUMNS: &[Column] = &[
    col("setting", Type::TEXT),
    col("value", Type::TEXT),
    col("env", Type::TEXT),
];

const ROLES_COLUMNS: &[Column] = &[
    col("roles", Type::TEXT),
    col("http_addr", Type::TEXT),
    col("console_addr", Type::TEXT),
    col("pid", Type::INT4),
    col("started_at", Type::TIMESTAMPTZ),
    col("uptime_s", Type::FLOAT8),
    col("version", Type::TEXT),
];

/// Every command with its syntax and what it answers, in `SHOW HELP` order.
pub const HELP: &[(&str, &str)] = &[
    ("SHOW HELP", "these commands"),
    (
        "SHOW LAG ['<interval>']",
        "lag created -> projected, overall and per event type (default '5 minutes')",
    ),
    (
        "SHOW OUTBOX",
        "unpublished events, oldest one's age, dead events, last publish error",
    ),
    (
        "SHOW PROJECTIONS",
        "per projection: streams, streams and events behind, parked, rebuilding",
    ),
    (
        "SHOW PARKED",
        "parked streams (100 per projection): version and error",
    ),
    (
        "SHOW RELAY",
        "this process's relay: leader/standby, wake-ups, batches, confirms, broker, cursor",
    ),
    (
        "SHOW PROJECTOR",
        "this process's projector: consumer, broker, prefetch, batches, last batch",
    ),
    (
        "SHOW CONFIG",
        "effective settings of this process, secrets masked",
    ),
    (
        "SHOW ROLES",
        "roles of this process, addresses, pid, uptime, version",
    ),
];

/// The hint every error carries: the commands there are.
pub fn hint() -> String {
    let commands: Vec<&str> = HELP.iter().map(|(syntax, _)| *syntax).collect();
    format!("console commands: {}", commands.join(", "))
}

impl Command {
    /// The result columns.
    pub fn columns(&self) -> &'static [Column] {
        match self {
            Self::Help => HELP_COLUMNS,
            Self::Lag { .. } => LAG_COLUMNS,
            Self::Outbox => OUTBOX_COLUMNS,
            Self::Projections => PROJECTIONS_COLUMNS,
            Self::Parked => PARKED_COLUMNS,
            Self::Relay => RELAY_COLUMNS,
            Self::Projector => PROJECTOR_COLUMNS,
            Self::Config => CONFIG_COLUMNS,
            Self::Roles => ROLES_COLUMNS,
        }
    }
}

/// Statement keywords answered with "not supported" (0A000) rather than a syntax error: the
/// console understands what was asked and refuses it.
const SQL_VERBS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "DROP",
    "CREATE",
    "ALTER",
    "TRUNCATE",
    "SET",
    "RESET",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "ABORT",
    "END",
    "SAVEPOINT",
    "RELEASE",
    "COPY",
    "GRANT",
    "REVOKE",
    "VACUUM",
    "ANALYZE",
    "EXPLAIN",
    "WITH",
    "VALUES",
    "TABLE",
    "CALL",
    "DO",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "LOCK",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "DISCARD",
    "COMMENT",
    "REINDEX",
    "CLUSTER",
    "REFRESH",
    "CHECKPOINT",
    "LOAD",
    "SECURITY",
    "IMPORT",
    "REASSIGN",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Semicolon,
    Other(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ConsoleError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '-' if chars.peek() == Some(&'-') => {
                // A comment, to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => tokens.push(Token::Semicolon),
            '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => {
                            return Err(ConsoleError::Syntax(
                                "unterminated quoted string".to_owned(),
                            ));
                        }
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => tokens.push(Token::Other(other)),
        }
    }
    Ok(tokens)
}

fn near(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("syntax error at or near \"{w}\""),
        Token::Quoted(q) => format!("syntax error at or near \"'{q}'\""),
        Token::Semicolon => "syntax error at or near \";\"".to_owned(),
        Token::Other(c) => format!("syntax error at or near \"{c}\""),
    }
}

fn statement(tokens: &[Token]) -> Result<Command, ConsoleError> {
    let Some(first) = tokens.first() else {
        return Err(ConsoleError::Syntax("empty statement".to_owned()));
    };
    let Token::Word(verb) = first else {
        return Err(ConsoleError::Syntax(near(first)));
    };
    let verb = verb.to_ascii_uppercase();
    if verb != "SHOW" {
        if SQL_VERBS.contains(&verb.as_str()) {
            return Err(ConsoleError::NotSupported(verb));
        }
        return Err(ConsoleError::Syntax(near(first)));
    }
    let Some(what) = tokens.get(1) else {
        return Err(ConsoleError::Syntax(
            "SHOW needs the name of what to show".to_owned(),
        ));
    };
    let Token::Word(what) = what else {
        return Err(ConsoleError::Syntax(near(what)));
    };
    let what = what.to_ascii_uppercase();
    let command = match what.as_str() {
        "HELP" => Command::Help,
        "LAG" => {
            return match &tokens[2..] {
                [] => Ok(Command::Lag {
                    window: DEFAULT_LAG_WINDOW.to_owned(),
                }),
                [Token::Quoted(window)] => Ok(Command::Lag {
                    window: window.clone(),
                }),
                [extra, ..] => Err(ConsoleError::Syntax(format!(
                    "{}: SHOW LAG takes one quoted interval, e.g. SHOW LAG '15 minutes'",
                    near(extra)
                ))),
            };
        }
        "OUTBOX" => Command::Outbox,
        "PROJECTIONS" => Command::Projections,
        "PARKED" => Command::Parked,
        "RELAY" => Command::Relay,
        "PROJECTOR" => Command::Projector,
        "CONFIG" => Command::Config,
        "ROLES" => Command::Roles,
        _ => return Err(ConsoleError::UnknownCommand(what)),
    };
    match tokens.get(2) {
        None => Ok(command),
        Some(extra) => Err(ConsoleError::Syntax(format!(
            "{}: SHOW {what} takes no argument",
            near(extra)
        ))),
    }
}

/// Parses a query string into its statements (empty ones dropped). Like Postgres, the whole
/// string is parsed before anything runs: one bad statement rejects them all.
pub fn parse(text: &str) -> Result<Vec<Command>, ConsoleError> {
    let tokens = tokenize(text)?;
    tokens
        .split(|t| *t == Token::Semicolon)
        .filter(|s| !s.is_empty())
        .map(statement)
        .collect()
}

/// Parses exactly one statement (a prepared statement holds one).
pub fn parse_one(text: &str) -> Result<Command, ConsoleError> {
    let mut commands = parse(text)?;
    match commands.len() {
        1 => Ok(commands.remove(0)),
        0 => Err(ConsoleError::Syntax("empty statement".to_owned())),
        _ => Err(ConsoleError::Syntax(
            "cannot insert multiple commands into a prepared statement".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Command {
        parse_one(text).unwrap_or_else(|e| panic!("{text:?} parses: {e}"))
    }

    #[test]
    fn commands_are_case_insensitive_with_an_optional_semicolon() {
        assert_eq!(one("SHOW HELP"), Command::Help);
        assert_eq!(one("show help;"), Command::Help);
        assert_eq!(one("  Show   Relay ;  "), Command::Relay);
        assert_eq!(one("show outbox;;"), Command::Outbox);
        assert_eq!(one("SHOW projections"), Command::Projections);
        assert_eq!(one("SHOW PARKED"), Command::Parked);
        assert_eq!(one("SHOW PROJECTOR"), Command::Projector);
        assert_eq!(one("SHOW CONFIG"), Command::Config);
        assert_eq!(one("SHOW ROLES"), Command::Roles);
        assert_eq!(one("-- what lags?\nSHOW HELP"), Command::Help);
    }

    #[test]
    fn show_lag_takes_an_optional_quoted_interval() {
        assert_eq!(
            one("SHOW LAG"),
            Command::Lag {
                window: DEFAULT_LAG_WINDOW.to_owned()
            }
        );
        assert_eq!(
            one("show lag '15 minutes';"),
            Command::Lag {
                window: "15 minutes".to_owned()
            }
        );
        assert_eq!(
            one("SHOW LAG 'it''s'"),
            Command::Lag {
                window: "it's".to_owned()
            }
        );
        for bad in [
            "SHOW LAG 15 minutes",
            "SHOW LAG '1 hour' '2 hours'",
            "SHOW LAG 'x",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.sqlstate(), "42601", "{bad}: {e}");
        }
    }

    #[test]
    fn several_statements_run_in_order_and_one_bad_rejects_all() {
        assert_eq!(
            parse("SHOW HELP; show roles").expect("parses"),
            vec![Command::Help, Command::Roles]
        );
        assert!(parse("SHOW HELP; DROP TABLE x").is_err());
        assert!(parse("   ;  ").expect("parses").is_empty());
        assert_eq!(
            parse_one("SHOW HELP; SHOW ROLES")
                .expect_err("two statements")
                .sqlstate(),
            "42601"
        );
    }

    #[test]
    fn writes_and_other_sql_are_not_supported_and_garbage_is_a_syntax_error() {
        for sql in [
            "SELECT 1",
            "drop table waiting_room_events",
            "SET x = 1",
            "insert into t values (1)",
            "BEGIN",
        ] {
            assert_eq!(parse(sql).expect_err(sql).sqlstate(), "0A000", "{sql}");
        }
        for sql in ["hello world", "SHOW", "SHOW 'x'", "!!", "SHOW HELP please"] {
            assert_eq!(parse(sql).expect_err(sql).sqlstate(), "42601", "{sql}");
        }
        assert_eq!(
            parse("SHOW TABLES").expect_err("unknown").sqlstate(),
            "42704"
        );
    }

    #[test]
    fn the_hint_lists_every_command() {
        let hint = hint();
        for (syntax, _) in HELP {
            assert!(hint.contains(syntax), "{syntax} in {hint}");
        }
    }

    #[test]
    fn every_command_has_help_and_named_columns() {
        for command in [
            Command::Help,
            Command::Lag {
                window: DEFAULT_LAG_WINDOW.to_owned(),
            },
            Command::Outbox,
            Command::Projections,
            Command::Parked,
            Command::Relay,
            Command::Projector,
            Command::Config,
            Command::Roles,
        ] {
            let name = format!("{command:?}").to_ascii_uppercase();
            let name = name.split([' ', '{']).next().unwrap_or_default();
            assert!(
                HELP.iter()
                    .any(|(s, _)| s.contains(&format!("SHOW {name}"))),
                "{name} has help"
            );
            let columns = command.columns();
            assert!(!columns.is_empty());
            let mut names: Vec<_> = columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), columns.len(), "{name}: unique column names");
        }
    }
}
