//! Secrets never reach the output. Our own messages never format a URL or a token, but
//! libraries log what they hold: at trace level lapin prints every frame it sends, and the
//! AMQP `Connection.StartOk` frame carries the SASL response with the broker password (as
//! a list of byte values). So every log line, and every startup error line, passes through
//! [`scrub`], which replaces each registered secret, in every spelling it is printed in
//! (as is, percent-encoded, escaped as in JSON or `Debug`, as `Debug` bytes), by `********`.
//!
//! Registered at start ([`register_settings`]): the passwords of `DATABASE_URL` and
//! `AMQP_URL` and `CONSOLE_PASSWORD`. Secrets shorter than [`MIN_LEN`] are not replaced
//! in running text (a two-letter password would blank every word containing those
//! letters), nor is a URL password equal to its user name (`guest:guest`); the console's
//! `SHOW CONFIG` masks URL passwords whatever their length.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::Settings;

/// What a secret is replaced by.
pub const MASK: &str = "********";

/// Shortest secret replaced in running text.
pub const MIN_LEN: usize = 4;

/// Every spelling of every registered secret, longest first (so a longer spelling that
/// contains a shorter one is replaced whole).
static SPELLINGS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on [`scrub`] (and so every log line) masks it.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_LEN {
        return;
    }
    let mut spellings = vec![secret.to_owned()];
    let debug = format!("{secret:?}");
    spellings.push(debug[1..debug.len() - 1].to_owned());
    if let Ok(json) = serde_json::to_string(secret) {
        spellings.push(json[1..json.len() - 1].to_owned());
    }
    spellings.push(percent_encode(secret));
    // `Debug` of a byte string (`LongString([0, 103, ...])`).
    spellings.push(
        secret
            .bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut all = SPELLINGS.write().unwrap_or_else(|p| p.into_inner());
    for spelling in spellings {
        if !all.contains(&spelling) {
            all.push(spelling);
        }
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the secrets in `settings`: the passwords in `DATABASE_URL` and `AMQP_URL`
/// (as written and decoded), and `CONSOLE_PASSWORD`.
pub fn register_settings(settings: &Settings) {
    for url in [&settings.database_url, &settings.amqp_url] {
        for secret in url_passwords(url) {
            register(&secret);
        }
    }
    if let Some(password) = &settings.console_password {
        register(password.expose());
    }
    if let Some(token) = &settings.api_token {
        register(token.expose());
    }
    // The tokens file is read again (and validated) when the API starts; an unreadable
    // file is reported there.
    if let Some(path) = settings
        .api_tokens_file
        .as_deref()
        .filter(|p| !p.is_empty())
        && let Ok(text) = std::fs::read_to_string(path)
    {
        for token in text.lines().map(str::trim) {
            if !token.is_empty() && !token.starts_with('#') {
                register(token);
            }
        }
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let spellings = SPELLINGS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for spelling in spellings.iter() {
        if out.contains(spelling.as_str()) {
            out = Cow::Owned(out.replace(spelling.as_str(), MASK));
        }
    }
    out
}

/// The passwords of a connection URL or `key=value` string: the userinfo password of
/// `scheme://user:password@host` (as written and percent-decoded; not when it is the user
/// name itself) and `password=` values.
pub fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        // The userinfo ends at the last `@` before the query: a password with a raw `/`
        // or `@` (which should be encoded) is still found whole.
        let before_query = rest.split(['?', '#']).next().unwrap_or(rest);
        // A password equal to the user name (RabbitMQ's guest:guest) hides nothing from
        // anyone who sees the user, and masking it would blank the user everywhere.
        if let Some((userinfo, _)) = before_query.rsplit_once('@')
            && let Some((user, password)) = userinfo.split_once(':')
            && user != password
        {
            found.push(password.to_owned());
            found.push(crate::store::tls::percent_decode(password));
        }
    }
    for key in ["password", "sslpassword"] {
        let pattern = format!("{key}=");
        let lower = url.to_ascii_lowercase();
        let mut from = 0;
        while let Some(at) = lower[from..].find(&pattern) {
            let start = from + at + pattern.len();
            let rest = &url[start..];
            let value = match rest.strip_prefix('\'') {
                Some(quoted) => quoted.split('\'').next().unwrap_or(quoted),
                None => rest
                    .split(|c: char| c == '&' || c.is_whitespace())
                    .next()
                    .unwrap_or(rest),
            };
            found.push(value.to_owned());
            found.push(crate::store::tls::percent_decode(value));
            from = start;
        }
    }
    found.retain(|s| !s.is_empty());
    found.dedup();
    found
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard error, with [`scrub`] applied to each log line (the fmt layer writes one event
/// per writer, in one piece).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine(Vec::new())
    }
}

/// One log event, scrubbed and written to standard error when dropped.
pub struct ScrubbedLine(Vec<u8>);

impl Write for ScrubbedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().lock().write_all(scrub(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_registered_secret_is_masked() {
        register("p@ss w\"rd-7731");
        let lines = [
            "connecting with p@ss w\"rd-7731".to_owned(),
            r#"{"url":"amqp://u:p@ss w\"rd-7731@h"}"#.to_owned(),
            "amqp://u:p%40ss%20w%22rd-7731@h".to_owned(),
            format!("LongString({:?})", b"\0u\0p@ss w\"rd-7731"),
        ];
        for line in lines {
            let scrubbed = scrub(&line);
            assert!(scrubbed.contains(MASK), "{line} -> {scrubbed}");
            assert!(!scrubbed.contains("7731"), "{line} -> {scrubbed}");
            assert!(!scrubbed.contains("55, 55, 51, 49"), "{line} -> {scrubbed}");
        }
        assert_eq!(scrub("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn passwords_are_found_in_urls_and_connection_strings() {
        assert_eq!(
            url_passwords("postgres://u:p%40ss@h:5432/db?sslmode=require"),
            ["p%40ss", "p@ss"]
        );
        assert_eq!(url_passwords("amqp://guest:gu/est@h/%2f"), ["gu/est"]);
        assert_eq!(url_passwords("host=h password='a b' user=u"), ["a b"]);
        assert_eq!(
            url_passwords("postgres://u@h/db?password=x%21y"),
            ["x%21y", "x!y"]
        );
        assert!(url_passwords("postgres://postgres@127.0.0.1/db").is_empty());
        assert!(url_passwords("amqp://guest:guest@127.0.0.1:5672/%2f").is_empty());
    }

    #[test]
    fn short_secrets_are_not_masked_in_running_text() {
        register("ab");
        assert_eq!(scrub("about a cab"), "about a cab");
    }
}
