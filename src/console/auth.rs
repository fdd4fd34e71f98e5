//! Who may use the console. With `CONSOLE_PASSWORD`: anyone who knows it, by SCRAM-SHA-256
//! (the password never crosses the wire). Without: loopback clients only, no password, the
//! way a local Postgres trusts its own host.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_FATAL};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::Secret;

/// PBKDF2 rounds of the SCRAM verifier (RFC 7677's minimum, Postgres's default).
const SCRAM_ITERATIONS: usize = 4096;

/// Whether `ip` is this host (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// What the console tells clients about itself at startup. psql warns when a server's major
/// version is newer than its own, so the console claims an old one (the protocol is 3.0
/// whatever the number says).
fn parameters() -> Arc<DefaultServerParameterProvider> {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = format!("14.0 (waitroom console {})", env!("CARGO_PKG_VERSION"));
    parameters.default_transaction_read_only = true;
    parameters.is_superuser = false;
    Arc::new(parameters)
}

/// The console's startup handler: password or loopback-only.
pub enum Startup {
    /// No password: loopback clients only.
    Loopback {
        parameters: Arc<DefaultServerParameterProvider>,
        pids: RandomPidSecretKeyGenerator,
    },
    /// SCRAM-SHA-256 against `CONSOLE_PASSWORD`.
    Password(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Startup {
    /// Password authentication when `password` is set, else loopback-only.
    pub fn new(password: Option<&Secret>) -> Self {
        match password {
            None => Self::Loopback {
                parameters: parameters(),
                pids: RandomPidSecretKeyGenerator::default(),
            },
            Some(password) => {
                let mut scram = ScramAuth::new(Arc::new(Verifier::new(password)));
                scram.set_iterations(SCRAM_ITERATIONS);
                Self::Password(Box::new(
                    SASLAuthStartupHandler::new(parameters()).with_scram(scram),
                ))
            }
        }
    }
}

fn refused(peer: IpAddr) -> PgWireError {
    let mut info = ErrorInfo::new(
        SEVERITY_FATAL.to_owned(),
        // invalid_authorization_specification, as pg_hba's "no entry for host" is.
        "28000".to_owned(),
        format!(
            "the waitroom console accepts only loopback clients without a password; {peer} is not one"
        ),
    );
    info.hint = Some("set CONSOLE_PASSWORD to let other hosts connect".to_owned());
    PgWireError::UserError(Box::new(info))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Self::Password(sasl) => sasl.on_startup(client, message).await,
            Self::Loopback { parameters, pids } => {
                let PgWireFrontendMessage::Startup(ref startup) = message else {
                    return Ok(());
                };
                let peer = client.socket_addr().ip();
                if !is_loopback(peer) {
                    return Err(refused(peer));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, secret) = pids.generate(client);
                client.set_pid_and_secret_key(pid, secret);
                finish_authentication(client, parameters.as_ref()).await
            }
        }
    }
}

/// The SCRAM verifier of `CONSOLE_PASSWORD`, computed once at start with a random salt. Any
/// user name is accepted: the password is the credential.
struct Verifier {
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl Verifier {
    fn new(password: &Secret) -> Self {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let salted_password = gen_salted_password(password.expose(), &salt, SCRAM_ITERATIONS);
        Self {
            salt,
            salted_password,
        }
    }
}

impl Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(********)")
    }
}

#[async_trait]
impl AuthSource for Verifier {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(
            Some(self.salt.clone()),
            self.salted_password.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_host_is_loopback() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().expect("an address")), "{ip}");
        }
        for ip in [
            "10.0.0.5",
            "192.168.1.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().expect("an address")), "{ip}");
        }
    }

    #[test]
    fn a_refused_peer_gets_a_fatal_error_that_says_how_to_let_it_in() {
        let error = refused("10.1.2.3".parse().expect("an address"));
        assert!(error.is_fatal());
        assert_eq!(error.code(), "28000");
        let info: ErrorInfo = error.into();
        assert!(info.message.contains("10.1.2.3"), "{}", info.message);
        assert!(info.hint.unwrap_or_default().contains("CONSOLE_PASSWORD"));
    }
}
