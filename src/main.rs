//! The `waitroom` binary: parses the command line and wires the roles. Nothing else.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;
use waitroom::app::{self, Application, Roles};
use waitroom::config::{Cli, Cmd};

// The service allocates and frees many small buffers per request and per message; glibc's
// allocator showed as a fifth of the process's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for bad input and unreachable services.
const USAGE: u8 = 2;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    // Errors quote what services answered; none should hold a secret, and none reaches
    // the terminal if one did.
    let message = message.to_string();
    eprintln!("error: {}", waitroom::telemetry::redact::scrub(&message));
    ExitCode::from(USAGE)
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's multi-line usage block.
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            // "the following required arguments were not provided:" names them on the next line.
            if first.ends_with(':')
                && let Some(next) = lines.next()
            {
                first = format!("{first} {next}");
            }
            return fail(format_args!("{first} (see `waitroom --help`)"));
        }
    };
    let command = cli.command.unwrap_or(Cmd::Run);
    if command == Cmd::Openapi {
        // A closed pipe (`waitroom openapi | head`) is not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", waitroom::api::spec());
        return ExitCode::SUCCESS;
    }
    // One-shot commands print their own result; the libraries' INFO lines (refinery's
    // migration report, pool set-up) would only bury it. RUST_LOG or --rust-log still ask.
    let log_asked = matches.value_source("rust_log") != Some(ValueSource::DefaultValue);
    let filter = match &command {
        Cmd::Bench(_) => waitroom::bench::log_filter(&cli.settings),
        Cmd::Migrate | Cmd::Rebuild { .. } if !log_asked => "warn",
        _ => &cli.settings.rust_log,
    };
    waitroom::telemetry::redact::register_settings(&cli.settings);
    waitroom::telemetry::init_logging(filter, cli.settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(command, cli.settings))
}

async fn run(command: Cmd, settings: waitroom::config::Settings) -> ExitCode {
    let roles = match &command {
        Cmd::Run => Roles::ALL,
        Cmd::Serve => Roles::API,
        Cmd::Relay => Roles::RELAY,
        Cmd::Project => Roles::PROJECTOR,
        Cmd::Migrate => {
            return match app::connect_database(&settings).await {
                Ok(_) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        Cmd::Rebuild { projection } => return rebuild(&settings, projection).await,
        Cmd::Bench(args) => {
            return match waitroom::bench::run(settings, args.clone()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            };
        }
        Cmd::Openapi => unreachable!("handled before the runtime starts"),
    };
    let application = match Application::build(settings, roles).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if let Some(addr) = application.http_addr() {
        tracing::info!(%addr, "api: listening (Swagger UI at http://{addr}/docs)");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    application.run_until_stopped(shutdown).await;
    ExitCode::SUCCESS
}

async fn rebuild(settings: &waitroom::config::Settings, projection: &str) -> ExitCode {
    let (_, pool) = match app::connect_database(settings).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding {msg} [{bar:40}] {pos}/{len} events ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(projection.to_owned());
    let started = std::time::Instant::now();
    let result = waitroom::projector::rebuild::rebuild(&pool, projection, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!(
                "rebuilt {projection}: {} events in {} streams in {:.2} s ({:.0} events/s)",
                report.events,
                report.streams,
                started.elapsed().as_secs_f64(),
                report.events as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e @ waitroom::projector::ProjectorError::UnknownProjection(_))
        | Err(e @ waitroom::projector::ProjectorError::RebuildRunning(_)) => fail(e),
        Err(e) => {
            eprintln!("error: rebuild failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received");
    shutdown.cancel();
}
