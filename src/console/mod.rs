//! The diagnostics console (`CONSOLE_ADDR`, default `127.0.0.1:6433`): a Postgres-wire
//! endpoint in every role, so that `psql -h 127.0.0.1 -p 6433 -U waitroom waitroom` can ask
//! the running process about itself, as PgBouncer's admin console does. Read-only: it
//! answers the SHOW commands in [`command`] and refuses everything else with a SQLSTATE and
//! a hint. Simple and extended query protocols ([`protocol`]); password or loopback-only
//! access ([`auth`]); the answers ([`show`]).

pub mod auth;
pub mod command;
pub mod error;
pub mod protocol;
pub mod show;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use error::ConsoleError;
pub use show::Context;

use crate::config::{ConsoleAddr, Secret, Settings};

/// `CONSOLE_PASSWORD`, when set and not empty.
pub fn password(settings: &Settings) -> Option<&Secret> {
    settings
        .console_password
        .as_ref()
        .filter(|p| !p.expose().is_empty())
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleStartError {
    /// Anyone who can reach the address could read the process's state.
    #[error(
        "CONSOLE_ADDR {0} is not a loopback address and CONSOLE_PASSWORD is not set: set \
         CONSOLE_PASSWORD to expose the diagnostics console, or listen on 127.0.0.1 (or `off`)"
    )]
    Exposed(SocketAddr),
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {addr} for the diagnostics console: {source} (set CONSOLE_ADDR or \
         --console-addr to a free address, or `off`)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Checks that the console's address is safe with the settings: a non-loopback address needs
/// a password. No I/O, so it runs before anything else at start.
pub fn check(settings: &Settings) -> Result<(), ConsoleStartError> {
    match settings.console_addr {
        ConsoleAddr::At(addr) if !auth::is_loopback(addr.ip()) && password(settings).is_none() => {
            Err(ConsoleStartError::Exposed(addr))
        }
        _ => Ok(()),
    }
}

/// Binds the console's address, or nothing when it is `off`.
pub async fn bind(settings: &Settings) -> Result<Option<TcpListener>, ConsoleStartError> {
    check(settings)?;
    let ConsoleAddr::At(addr) = settings.console_addr else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| ConsoleStartError::Bind { addr, source })
}

/// Serves console sessions on `listener` until `shutdown`, then closes them (an idle psql
/// session would otherwise hold the process up).
pub async fn serve(
    listener: TcpListener,
    context: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) {
    let secured = password(&context.settings).is_some();
    let addr = context.console_addr;
    if secured {
        tracing::info!(%addr, "console: listening (password required): psql -h {} -p {} -U waitroom waitroom", addr.ip(), addr.port());
    } else {
        tracing::warn!(%addr, "console: listening, open to loopback clients WITHOUT a password (set CONSOLE_PASSWORD to require one): psql -h {} -p {} -U waitroom waitroom", addr.ip(), addr.port());
    }
    let handlers = Arc::new(protocol::Handlers::new(
        context.clone(),
        auth::Startup::new(password(&context.settings)),
    ));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished sessions so the set does not grow with every connection.
        while sessions.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let handlers = handlers.clone();
                sessions.spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(stream, None, handlers).await {
                        tracing::debug!(%peer, error = %e, "console: session ended with an error");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "console: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    sessions.abort_all();
    tracing::info!("console: stopped");
}
