//! TLS to Postgres with libpq's `sslmode` and `sslrootcert`. tokio-postgres parses only
//! `disable` / `prefer` / `require` and leaves verification to the connector, so both
//! settings are taken out of `DATABASE_URL` here, and the mode decides what the one rustls
//! connector (ring provider, as lapin's) checks:
//!
//! | `sslmode` | TLS | certificate chain | host name |
//! |---|---|---|---|
//! | `disable` | never | | |
//! | `prefer` (default) | when the server offers it | | |
//! | `require` | always | only when `sslrootcert` is given (as libpq) | |
//! | `verify-ca` | always | against `sslrootcert`, else the system roots | |
//! | `verify-full` | always | against `sslrootcert`, else the system roots | checked |
//!
//! `sslrootcert=system` names the platform's roots; with it and no `sslmode` the mode is
//! `verify-full` (as libpq 16).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The connector every Postgres connection of the process uses (pool, LISTEN connections,
/// admin connections), whatever the mode.
pub type Connector = tokio_postgres_rustls::MakeRustlsConnect;

/// A connection made with [`Connector`], to be driven by the caller.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <Connector as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, no verification (the default).
    Prefer,
    /// TLS or fail; the chain is verified only when `sslrootcert` is given.
    Require,
    /// TLS, chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(value: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                format!(
                    "sslmode {value:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )
            })
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether plain is acceptable.
    fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::NAMES
            .iter()
            .find(|(_, mode)| mode == self)
            .map_or("prefer", |(name, _)| name);
        f.write_str(name)
    }
}

/// libpq's `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// `system`: the platform's trusted roots.
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("system"),
            Self::File(path) => path.display().fmt(f),
        }
    }
}

/// The TLS settings of a `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode (default `prefer`).
    pub mode: SslMode,
    /// Where the trusted roots come from, when given.
    pub root_cert: Option<RootCert>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query string or a
    /// `key=value` connection string. Returns what is left for tokio-postgres, and the
    /// settings; the error names the setting and says what is wrong (never the URL).
    pub fn split(conninfo: &str) -> Result<(String, Self), String> {
        let (rest, pairs) = if is_url(conninfo) {
            split_url(conninfo)
        } else {
            split_key_values(conninfo)
        };
        let mut mode = None;
        let mut root_cert = None;
        for (key, value) in pairs {
            match key.as_str() {
                "sslmode" => mode = Some(SslMode::parse(&value)?),
                _ if value == "system" => root_cert = Some(RootCert::System),
                _ if value.is_empty() => root_cert = None,
                _ => root_cert = Some(RootCert::File(PathBuf::from(value))),
            }
        }
        let mode = match (mode, &root_cert) {
            (Some(mode), _) => mode,
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        Ok((rest, Self { mode, root_cert }))
    }

    /// The tokio-postgres side of the mode.
    pub fn wire_mode(&self) -> tokio_postgres::config::SslMode {
        self.mode.wire()
    }

    /// What the connector verifies, as in the table of the module documentation.
    fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
                Verification::None
            }
            (SslMode::Require | SslMode::VerifyCa, _) => Verification::Chain,
            (SslMode::VerifyFull, _) => Verification::Full,
        }
    }

    /// Builds the connector: loads the roots (an unreadable or invalid `sslrootcert` is an
    /// error naming it) and picks the verifier for the mode.
    pub fn connector(&self) -> Result<Connector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.verification() {
            Verification::None => Arc::new(NoNameCheck {
                roots: None,
                algorithms: provider.signature_verification_algorithms,
            }),
            Verification::Chain => Arc::new(NoNameCheck {
                roots: Some(Arc::new(self.roots()?)),
                algorithms: provider.signature_verification_algorithms,
            }),
            Verification::Full => WebPkiServerVerifier::builder_with_provider(
                Arc::new(self.roots()?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("sslrootcert {}: {e}", self.root_name()))?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Connector::new(config))
    }

    fn root_name(&self) -> String {
        match &self.root_cert {
            Some(root) => root.to_string(),
            None => "(system roots)".to_owned(),
        }
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        match &self.root_cert {
            Some(RootCert::File(path)) => file_roots(path),
            Some(RootCert::System) | None => system_roots(),
        }
    }

    /// A sentence naming the roots the chain was checked against, for errors.
    fn trusted(&self) -> String {
        match &self.root_cert {
            Some(RootCert::File(path)) => format!("sslrootcert {}", path.display()),
            Some(RootCert::System) => "the system's roots (sslrootcert=system)".to_owned(),
            None => "the system's roots (no sslrootcert given)".to_owned(),
        }
    }

    /// One line saying what failed, when `error` is a TLS failure (`None` otherwise).
    pub fn describe_failure(&self, error: &tokio_postgres::Error, host: &str) -> Option<String> {
        let text = error.to_string();
        if let Some(rustls) = find_rustls_error(error) {
            return Some(match rustls {
                rustls::Error::InvalidCertificate(cert) => match cert {
                    CertificateError::UnknownIssuer => format!(
                        "the server's certificate is not trusted: no root in {} signed it (sslmode={})",
                        self.trusted(),
                        self.mode
                    ),
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => format!(
                        "the server's certificate is not valid for host {host:?} (sslmode=verify-full \
                         checks the name; connect by a name the certificate lists, or use verify-ca)"
                    ),
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "the server's certificate has expired".to_owned()
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        "the server's certificate is not valid yet".to_owned()
                    }
                    other => format!("the server's certificate was rejected: {other:?}"),
                },
                other => format!("TLS handshake failed: {other}"),
            });
        }
        if text.contains("server does not support TLS") {
            return Some(format!(
                "the server does not offer TLS, and sslmode={} requires it",
                self.mode
            ));
        }
        text.starts_with("error performing TLS handshake")
            .then(|| format!("TLS handshake failed: {}", source_text(error)))
    }
}

fn is_url(conninfo: &str) -> bool {
    conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://")
}

/// `sslmode` / `sslrootcert` pairs of a URL's query string, percent-decoded, and the URL
/// without them.
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        if key == "sslmode" || key == "sslrootcert" {
            taken.push((key, percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, taken)
}

/// `sslmode` / `sslrootcert` pairs of a libpq `key=value` string (values may be single-quoted,
/// with backslash escapes), and the string without them.
fn split_key_values(conninfo: &str) -> (String, Vec<(String, String)>) {
    let bytes = conninfo.as_bytes();
    let mut out = String::new();
    let mut taken = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = conninfo[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let quoted = i < bytes.len() && bytes[i] == b'\'';
            if quoted {
                i += 1;
            }
            let mut chars = conninfo[i..].char_indices();
            let mut end = conninfo.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '\'' if quoted => {
                        end = i + at + 1;
                        break;
                    }
                    c if c.is_whitespace() && !quoted => {
                        end = i + at;
                        break;
                    }
                    c => value.push(c),
                }
            }
            i = end;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if key == "sslmode" || key == "sslrootcert" {
            taken.push((key, value));
        } else {
            // The pair and the whitespace after it, as they were.
            out.push_str(&conninfo[start..i]);
        }
    }
    (out, taken)
}

/// `%XX` escapes decoded (an invalid escape stays as written; invalid UTF-8 is replaced).
pub(crate) fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn file_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| format!("sslrootcert {shown}: cannot read it: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("sslrootcert {shown}: not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown}: invalid certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {shown}: no PEM certificate in it"));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "sslrootcert: no system root certificates found{why} (install ca-certificates, or name a file)"
        ));
    }
    Ok(roots)
}

enum Verification {
    None,
    Chain,
    Full,
}

/// The verifier of every mode but `verify-full`: the host name is never checked, and the
/// chain is checked against `roots` when there are some (`verify-ca`, or `require` with an
/// `sslrootcert`, as libpq). Without roots (`prefer` / `require`) it is encryption without
/// authentication, as libpq. The handshake signatures are always checked (the server must
/// hold its certificate's key).
#[derive(Debug)]
struct NoNameCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error under a tokio-postgres TLS failure (it arrives wrapped in an io::Error).
fn find_rustls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(found);
        }
        source = e.source();
    }
    None
}

fn source_text(error: &tokio_postgres::Error) -> String {
    std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(conninfo: &str) -> (String, TlsSettings) {
        TlsSettings::split(conninfo).expect("valid settings")
    }

    #[test]
    fn without_sslmode_tls_is_preferred_and_nothing_is_taken_out() {
        let (rest, tls) = split("postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_url() {
        let (rest, tls) = split(
            "postgresql://h/db?sslmode=verify-ca&application_name=a&sslrootcert=%2Fetc%2Fca%20x.pem",
        );
        assert_eq!(rest, "postgresql://h/db?application_name=a");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(RootCert::File("/etc/ca x.pem".into())));
        let (rest, tls) = split("postgres://h/db?sslmode=require");
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_key_value_string() {
        let (rest, tls) =
            split("host=h sslmode=verify-full  dbname=d sslrootcert='/a b/c\\'s.pem' user=u");
        assert_eq!(rest, "host=h dbname=d user=u");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCert::File("/a b/c's.pem".into())));
        let (rest, tls) = split("host = h sslmode = disable");
        assert_eq!(rest.trim(), "host = h");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn sslrootcert_system_without_sslmode_means_verify_full() {
        let (_, tls) = split("postgres://h/db?sslrootcert=system");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCert::System));
        let (_, tls) = split("postgres://h/db?sslrootcert=system&sslmode=verify-ca");
        assert_eq!(tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn an_unknown_sslmode_is_named_in_the_error() {
        let error = TlsSettings::split("postgres://u:secret@h/db?sslmode=bogus").unwrap_err();
        assert!(error.contains("sslmode \"bogus\""), "{error}");
        assert!(!error.contains("secret"), "{error}");
        // libpq spells them in lower case only.
        assert!(TlsSettings::split("host=h sslmode=REQUIRE").is_err());
    }

    #[test]
    fn require_verifies_the_chain_only_with_a_root_certificate() {
        let (_, plain) = split("postgres://h/db?sslmode=require");
        assert!(matches!(plain.verification(), Verification::None));
        let (_, rooted) = split("postgres://h/db?sslmode=require&sslrootcert=/x.pem");
        assert!(matches!(rooted.verification(), Verification::Chain));
        let (_, full) = split("postgres://h/db?sslmode=verify-full");
        assert!(matches!(full.verification(), Verification::Full));
    }

    #[test]
    fn an_unreadable_or_invalid_sslrootcert_is_an_error_naming_it() {
        let (_, missing) =
            split("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        let error = missing.connector().err().expect("missing file fails");
        assert!(
            error.starts_with("sslrootcert /nonexistent/ca.pem: cannot read it"),
            "{error}"
        );
        let path =
            std::env::temp_dir().join(format!("waitroom-not-a-cert-{}.pem", std::process::id()));
        std::fs::write(&path, "hello\n").expect("temp file");
        let (_, junk) = split(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            path.display()
        ));
        let error = junk.connector().err().expect("junk fails");
        let _ = std::fs::remove_file(&path);
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
