//! Helpers for the `waitroom` binary tests (`cli_*`): a controlled command line, a bounded run,
//! one-line error assertions, scratch databases and a running `waitroom` that is always stopped.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use waitroom::broker::BrokerNames;

use crate::helpers::{amqp_url, pg_base, remove_isolated};

const BIN: &str = env!("CARGO_BIN_EXE_waitroom");
/// How long a failing start or a graceful stop may take.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// `waitroom` with a controlled environment: no inherited service settings, JSON logs off,
/// so stderr holds only what the binary prints itself.
pub(crate) fn waitroom(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "HTTP_ADDR",
        "CONSOLE_ADDR",
        "METRICS_ADDR",
        "BROKER_SUFFIX",
        "DATABASE_POOL_SIZE",
        "BOARD_NAMES",
        "IDEMPOTENCY_TTL",
        "API_TOKEN",
        "API_TOKENS_FILE",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "off");
    cmd
}

/// Runs `cmd` to completion, failing the test when it takes longer than `timeout`.
pub(crate) async fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waitroom starts");
    let pid = child.id();
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(output) => output.expect("waitroom output is read"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("waitroom did not exit within {timeout:?}");
            }
        }
    })
    .await
    .expect("waiting thread does not panic")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts exit code 2 and exactly one stderr line starting with `error:`; returns the line.
pub(crate) fn assert_one_line_error(output: &Output, what: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: exit code 2; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: exactly one stderr line, got: {stderr}"
    );
    assert!(
        lines[0].starts_with("error:"),
        "{what}: starts with `error:`: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{what}: no panic: {stderr}"
    );
    lines[0].to_owned()
}

/// A database name and broker suffix of this test, removed (even on failure) at drop.
pub(crate) struct Scratch {
    database: String,
    pub(crate) suffix: String,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            database: format!("waitroom_test_cli_{}", &id[..16]),
            suffix: format!("test_cli_{}", &id[..16]),
        }
    }

    pub(crate) fn database_url(&self) -> String {
        format!("{}/{}", pg_base(), self.database)
    }

    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url(), tokio_postgres::NoTls)
            .await
            .expect("scratch database is reachable");
        tokio::spawn(conn);
        client
    }

    /// `waitroom` on this database.
    pub(crate) fn waitroom(&self, args: &[&str]) -> Command {
        let mut cmd = waitroom(args);
        cmd.env("DATABASE_URL", self.database_url());
        cmd
    }

    /// `waitroom` on this database and this test's broker names at `amqp`, serving HTTP on
    /// `http_addr`.
    pub(crate) fn waitroom_with_broker(
        &self,
        args: &[&str],
        amqp: &str,
        http_addr: &str,
    ) -> Command {
        let mut cmd = self.waitroom(args);
        cmd.env("AMQP_URL", amqp)
            .env("BROKER_SUFFIX", &self.suffix)
            .env("HTTP_ADDR", http_addr);
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_isolated(
            &self.database_url(),
            &amqp_url(),
            &BrokerNames::with_suffix(&self.suffix),
        );
    }
}

/// A spawned `waitroom` logging to a file; killed if the test ends before it exits.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) log: std::path::PathBuf,
}

impl Running {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `attempt` every `every` until it yields a value; fails with `failure` and the log
    /// once `EXIT_WITHIN` has passed `since`.
    pub(crate) async fn poll<T>(
        &mut self,
        since: Instant,
        every: Duration,
        failure: &str,
        mut attempt: impl AsyncFnMut(&mut Self) -> Option<T>,
    ) -> T {
        loop {
            if let Some(value) = attempt(self).await {
                return value;
            }
            assert!(
                since.elapsed() < EXIT_WITHIN,
                "{failure}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(every).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
