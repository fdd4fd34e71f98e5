//! The console on the wire: the simple query protocol (psql) and the extended one (drivers
//! with prepared statements), both answering with typed result sets.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{Sink, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, METADATA_USER, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_FATAL};
use pgwire::messages::PgWireBackendMessage;

use super::auth::Startup;
use super::command::{self, Command};
use super::show::{self, Context, Rows, Value};

/// Every handler of a console connection.
pub struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
}

impl Handlers {
    /// Handlers answering from `context`, authenticating with `startup`.
    pub fn new(context: Arc<Context>, startup: Startup) -> Self {
        Self {
            startup: Arc::new(startup),
            queries: Arc::new(Queries {
                context,
                parser: Arc::new(Parser),
            }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LoginFailures)
    }
}

/// Logs failed console logins, and names the user the client logged in as: SCRAM clients
/// send an empty user name inside the exchange (Postgres ignores it too), which pgwire's
/// own message would show as `user ""`.
struct LoginFailures;

impl ErrorHandler for LoginFailures {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if let PgWireError::InvalidPassword(_) = error {
            let user = client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default();
            tracing::warn!(peer = %client.socket_addr(), user, "console: password authentication failed");
            *error = PgWireError::UserError(Box::new(ErrorInfo::new(
                SEVERITY_FATAL.to_owned(),
                "28P01".to_owned(),
                format!("password authentication failed for user \"{user}\""),
            )));
        }
    }
}

/// Answers queries, simple or extended.
pub struct Queries {
    context: Arc<Context>,
    parser: Arc<Parser>,
}

/// The format of result column `index` (a client may send one code for all, or one each).
fn format_of(format: &Format, index: usize) -> FieldFormat {
    match format {
        Format::UnifiedText => FieldFormat::Text,
        Format::UnifiedBinary => FieldFormat::Binary,
        Format::Individual(codes) => codes
            .get(index)
            .map_or(FieldFormat::Text, |c| FieldFormat::from(*c)),
    }
}

fn fields(command: &Command, format: &Format) -> Vec<FieldInfo> {
    command
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldInfo::new(
                c.name.to_owned(),
                None,
                None,
                c.ty.clone(),
                format_of(format, i),
            )
        })
        .collect()
}

fn encode(command: &Command, rows: Rows, format: &Format) -> PgWireResult<QueryResponse> {
    let schema = Arc::new(fields(command, format));
    let mut encoder = DataRowEncoder::new(schema.clone());
    let mut encoded = Vec::with_capacity(rows.len());
    for row in rows {
        for value in &row {
            match value {
                Value::Text(v) => encoder.encode_field(v)?,
                Value::Int4(v) => encoder.encode_field(v)?,
                Value::Int8(v) => encoder.encode_field(v)?,
                Value::Float8(v) => encoder.encode_field(v)?,
                Value::Bool(v) => encoder.encode_field(v)?,
                Value::Timestamptz(v) => encoder.encode_field(v)?,
            }
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Ok(QueryResponse::new(schema, stream::iter(encoded)))
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let commands = match command::parse(query) {
            Ok(commands) => commands,
            Err(e) => return Ok(vec![Response::Error(Box::new(e.to_error_info()))]),
        };
        if commands.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(commands.len());
        for command in &commands {
            match show::run(&self.context, command).await {
                Ok(rows) => responses.push(Response::Query(encode(
                    command,
                    rows,
                    &Format::UnifiedText,
                )?)),
                Err(e) => {
                    // Like Postgres, the statements after a failed one do not run.
                    responses.push(Response::Error(Box::new(e.to_error_info())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Command;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let command = &portal.statement.statement;
        let rows = show::run(&self.context, command).await?;
        Ok(Response::Query(encode(
            command,
            rows,
            &portal.result_column_format,
        )?))
    }
}

/// Parses a prepared statement into its [`Command`], so that Describe knows the columns
/// before anything runs.
pub struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Command;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(command::parse_one(sql)?))
    }

    fn get_parameter_types(&self, _statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(statement, format.unwrap_or(&Format::UnifiedText)))
    }
}
