//! API tokens: `API_TOKEN` and `API_TOKENS_FILE` are loaded and checked once at start; when
//! any is configured, every `/api` request must carry `Authorization: Bearer <token>`.
//!
//! The middleware enforces it for every path under `/api` (unknown paths and wrong methods
//! included, so an anonymous caller learns nothing about the routes), before the body is
//! read; `spec::finish` declares the same rule in the document. Both key on the `/api`
//! prefix, so what is enforced and what is documented cannot drift apart.
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared with every one of
//! them in constant time (`subtle`), without an early exit: neither the position of the first
//! wrong byte nor which token matched (nor a token's length) shows in the response time.

use std::fmt;

use poem::http::{HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::problem::Problem;
use crate::config::Settings;

/// Shortest accepted token: 16 characters (e.g. `openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest accepted token (it travels in a header).
pub const MAX_TOKEN_LEN: usize = 1024;
/// The `WWW-Authenticate` challenge's scheme and realm.
pub const CHALLENGE: &str = "Bearer realm=\"waitroom\"";

/// The accepted tokens (as digests); empty means the API is open.
#[derive(Clone, Default)]
pub struct ApiTokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} configured)", self.digests.len())
    }
}

/// Why the configured tokens cannot be used; one line for the operator, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read API_TOKENS_FILE {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "API_TOKENS_FILE {path} holds no token (one per line; blank lines and # comment lines are skipped)"
    )]
    Empty { path: String },
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

impl ApiTokens {
    /// No token: the API is open.
    pub fn open() -> Self {
        Self::default()
    }

    /// The tokens of `API_TOKEN` and `API_TOKENS_FILE` (the union; an empty value counts as
    /// unset), each checked by [`validate`].
    pub fn load(settings: &Settings) -> Result<Self, TokenError> {
        let mut tokens = Vec::new();
        if let Some(token) = settings.api_token.as_ref().map(|t| t.expose())
            && !token.is_empty()
        {
            validate(token).map_err(|problem| TokenError::Invalid {
                origin: "API_TOKEN".into(),
                problem,
            })?;
            tokens.push(token.to_owned());
        }
        if let Some(path) = settings.api_tokens_file.as_deref()
            && !path.is_empty()
        {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
            let mut found = 0;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                validate(line).map_err(|problem| TokenError::Invalid {
                    origin: format!("API_TOKENS_FILE {path} line {}", number + 1),
                    problem,
                })?;
                tokens.push(line.to_owned());
                found += 1;
            }
            if found == 0 {
                return Err(TokenError::Empty {
                    path: path.to_owned(),
                });
            }
        }
        Ok(Self::from_tokens(tokens.iter().map(String::as_str)))
    }

    /// Tokens given directly (tests, embedding); not validated.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens.into_iter().map(digest).collect(),
        }
    }

    /// Whether no token is configured (every `/api` request is accepted).
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no token is configured (same as [`ApiTokens::is_open`]).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `token` is one of the configured tokens. Compares with every one in constant
    /// time, without stopping at the first match.
    pub fn accepts(&self, token: &str) -> bool {
        let presented = digest(token);
        let mut matched = Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&presented);
        }
        matched.into()
    }

    /// Checks a request's `Authorization` headers; `Err` is the 401 to answer with.
    pub fn check<'a>(
        &self,
        mut authorization: impl Iterator<Item = &'a HeaderValue>,
    ) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let Some(value) = authorization.next() else {
            return Err(Refusal::Missing);
        };
        if authorization.next().is_some() {
            return Err(Refusal::Malformed);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Malformed)?;
        // A token no configured one could equal is refused without hashing it.
        if validate(token).is_ok() && self.accepts(token) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

/// Why a request was refused (RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// Not one `Bearer <token>` header (another scheme, no token, several headers).
    Malformed,
    /// A token that is not configured.
    Wrong,
}

impl Refusal {
    /// The 401 problem+json response, with its `WWW-Authenticate` challenge. The middleware
    /// adds the correlation id.
    pub fn response(self) -> poem::Response {
        let (detail, challenge) = match self {
            Self::Missing => (
                "this API requires an `Authorization: Bearer <token>` header".to_owned(),
                CHALLENGE.to_owned(),
            ),
            Self::Malformed => (
                "the Authorization header must be one `Bearer <token>`".to_owned(),
                format!("{CHALLENGE}, error=\"invalid_request\""),
            ),
            Self::Wrong => (
                "the bearer token is not valid".to_owned(),
                format!("{CHALLENGE}, error=\"invalid_token\""),
            ),
        };
        let mut response =
            Problem::new(401, "unauthorized", "Unauthorized", detail).into_json_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Whether a path is under `/api` (and so needs a token when tokens are configured).
pub fn is_protected(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// A token's rules: 16–1024 characters of RFC 6750's `b64token` (`A–Z a–z 0–9 - . _ ~ + /`,
/// then `=` padding), so every configured token can be sent as a bearer token. The message
/// never repeats the token.
pub fn validate(token: &str) -> Result<(), String> {
    if token.chars().any(char::is_whitespace) {
        return Err("a token must not contain whitespace".into());
    }
    let body = token.trim_end_matches('=');
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if body.is_empty() || !body.chars().all(allowed) {
        return Err(
            "a token may hold only A-Z a-z 0-9 - . _ ~ + / (then = padding), as in a bearer token"
                .into(),
        );
    }
    let len = token.len();
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&len) {
        return Err(format!(
            "a token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters, this one has {len} \
             (generate one with `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123";

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).expect("header value")
    }

    #[test]
    fn a_token_needs_sixteen_bearer_characters_and_no_whitespace() {
        assert!(validate(GOOD).is_ok());
        assert!(validate("abcDEF012-._~+/x==").is_ok());
        assert!(validate("short").unwrap_err().contains("16 to 1024"));
        assert!(
            validate("0123456789 abcdef")
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(
            validate("0123456789abcdef\n")
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(
            validate("0123456789abcdef\"x")
                .unwrap_err()
                .contains("only")
        );
        assert!(validate("================").is_err());
        assert!(validate(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn every_configured_token_is_accepted_and_nothing_else() {
        let tokens = ApiTokens::from_tokens([GOOD, "second-token-000000"]);
        assert!(tokens.accepts(GOOD));
        assert!(tokens.accepts("second-token-000000"));
        assert!(!tokens.accepts("0123456789abcdef012"));
        assert!(!tokens.accepts(""));
        assert!(ApiTokens::open().check(std::iter::empty()).is_ok());
    }

    #[test]
    fn the_header_must_be_one_bearer_token() {
        let tokens = ApiTokens::from_tokens([GOOD]);
        let check = |values: &[&str]| {
            let headers: Vec<HeaderValue> = values.iter().map(|v| header(v)).collect();
            tokens.check(headers.iter())
        };
        assert_eq!(check(&[]), Err(Refusal::Missing));
        assert_eq!(check(&[&format!("Bearer {GOOD}")]), Ok(()));
        assert_eq!(check(&[&format!("bearer  {GOOD}")]), Ok(()));
        assert_eq!(check(&[&format!("Basic {GOOD}")]), Err(Refusal::Malformed));
        assert_eq!(check(&[GOOD]), Err(Refusal::Malformed));
        assert_eq!(check(&["Bearer"]), Err(Refusal::Malformed));
        assert_eq!(
            check(&[&format!("Bearer {GOOD}"), &format!("Bearer {GOOD}")]),
            Err(Refusal::Malformed)
        );
        assert_eq!(check(&["Bearer 0123456789abcdef0124"]), Err(Refusal::Wrong));
    }

    #[test]
    fn a_tokens_file_skips_blank_and_comment_lines_and_joins_api_token() {
        let dir = std::env::temp_dir().join(format!("waitroom-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("tokens");
        std::fs::write(
            &file,
            "# desk clients\n\nfirst-token-0000000\r\n  second-token-000000  \n",
        )
        .expect("write");
        let mut settings = Settings::defaults();
        settings.api_token = Some(crate::config::Secret::new(GOOD));
        settings.api_tokens_file = Some(file.display().to_string());
        let tokens = ApiTokens::load(&settings).expect("valid tokens");
        assert_eq!(tokens.len(), 3);
        assert!(tokens.accepts("second-token-000000"));

        std::fs::write(&file, "# nothing\n\n").expect("write");
        let err = ApiTokens::load(&settings).unwrap_err().to_string();
        assert!(err.contains("holds no token"), "{err}");

        std::fs::write(&file, "ok-token-0000000000\nbad token here 00000\n").expect("write");
        let err = ApiTokens::load(&settings).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("whitespace"),
            "{err}"
        );
        assert!(!err.contains("bad token"), "never repeats the token: {err}");
        let _ = std::fs::remove_dir_all(&dir);

        settings.api_tokens_file = Some(file.display().to_string());
        let err = ApiTokens::load(&settings).unwrap_err().to_string();
        assert!(err.starts_with("cannot read API_TOKENS_FILE"), "{err}");

        settings.api_tokens_file = Some(String::new());
        settings.api_token = Some(crate::config::Secret::new(""));
        assert!(
            ApiTokens::load(&settings)
                .expect("empty is unset")
                .is_open()
        );
    }
}
