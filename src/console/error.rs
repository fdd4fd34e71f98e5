//! The console's errors, each with the SQLSTATE it is sent with. A command error is an
//! ERROR (the session goes on); only authentication failures end a session.

use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_ERROR};

use super::command;

/// What a console command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A statement the console understands and refuses (it is read-only).
    #[error(
        "the waitroom console is read-only and answers SHOW commands only; {0} is not supported"
    )]
    NotSupported(String),
    /// Not console syntax.
    #[error("{0}")]
    Syntax(String),
    /// `SHOW` of something the console does not know.
    #[error("unrecognized console command \"SHOW {0}\"")]
    UnknownCommand(String),
    /// Postgres rejected or failed a diagnostics query.
    #[error("{message}")]
    Database { sqlstate: String, message: String },
    /// A diagnostics query took too long.
    #[error("the diagnostics query took longer than {0} s")]
    Timeout(u64),
    /// A bug: a row that does not fit its columns.
    #[error("internal console error: {0}")]
    Internal(String),
}

impl ConsoleError {
    /// The SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::NotSupported(_) => "0A000",
            Self::Syntax(_) => "42601",
            Self::UnknownCommand(_) => "42704",
            Self::Database { sqlstate, .. } => sqlstate,
            Self::Timeout(_) => "57014",
            Self::Internal(_) => "XX000",
        }
    }

    /// An error of Postgres (keeping its SQLSTATE, e.g. 22007 for a bad interval) or of the
    /// connection to it (08006).
    pub fn database(error: &tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) => Self::Database {
                sqlstate: db.code().code().to_owned(),
                message: db.message().to_owned(),
            },
            None => Self::unavailable(crate::store::describe(error)),
        }
    }

    /// Postgres could not be reached.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Database {
            sqlstate: "08006".to_owned(),
            message: format!("database: {reason}"),
        }
    }

    /// The wire error: an ERROR with this SQLSTATE and the list of commands as hint.
    pub fn to_error_info(&self) -> ErrorInfo {
        let mut info = ErrorInfo::new(
            SEVERITY_ERROR.to_owned(),
            self.sqlstate().to_owned(),
            self.to_string(),
        );
        info.hint = Some(command::hint());
        info
    }
}

impl From<ConsoleError> for PgWireError {
    fn from(error: ConsoleError) -> Self {
        PgWireError::UserError(Box::new(error.to_error_info()))
    }
}

impl From<tokio_postgres::Error> for ConsoleError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::database(&error)
    }
}

impl From<deadpool_postgres::PoolError> for ConsoleError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(e) => Self::database(&e),
            other => Self::unavailable(other),
        }
    }
}

impl From<crate::store::DbError> for ConsoleError {
    fn from(error: crate::store::DbError) -> Self {
        match error {
            crate::store::DbError::Query(e) => Self::database(&e),
            crate::store::DbError::Pool(e) => e.into(),
        }
    }
}

impl From<crate::projector::ProjectorError> for ConsoleError {
    fn from(error: crate::projector::ProjectorError) -> Self {
        match error {
            crate::projector::ProjectorError::Db(e) => e.into(),
            other => Self::unavailable(other),
        }
    }
}
