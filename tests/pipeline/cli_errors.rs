//! The `waitroom` binary's start-up failures: each is one `error:` line on stderr and exit code
//! 2, saying what is wrong and how to fix it, never a panic.

use std::time::Instant;

use crate::cli::{EXIT_WITHIN, Scratch, assert_one_line_error, output_within, waitroom};
use crate::helpers::amqp_url;

#[tokio::test]
async fn an_unknown_flag_or_subcommand_is_one_error_line_and_exit_code_2() {
    for args in [
        &["--no-such-flag"][..],
        &["frobnicate"],
        &["serve", "--bogus", "1"],
    ] {
        let output = output_within(waitroom(args), EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, &format!("{args:?}"));
        assert!(line.contains("--help"), "points to --help: {line}");
    }
}

#[tokio::test]
async fn an_invalid_setting_value_is_one_error_line_and_exit_code_2() {
    let output = output_within(waitroom(&["--http-addr", "nonsense", "serve"]), EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "--http-addr nonsense");
    assert!(line.contains("nonsense"), "names the bad value: {line}");

    let mut cmd = waitroom(&["serve"]);
    cmd.env("HTTP_ADDR", "not-an-address");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "HTTP_ADDR=not-an-address");
    assert!(
        line.contains("not-an-address"),
        "names the bad value: {line}"
    );

    let output = output_within(
        waitroom(&["--database-pool-size", "1", "migrate"]),
        EXIT_WITHIN,
    )
    .await;
    assert_one_line_error(&output, "--database-pool-size 1");

    let output = output_within(waitroom(&["--log-format", "xml", "migrate"]), EXIT_WITHIN).await;
    assert_one_line_error(&output, "--log-format xml");
}

#[tokio::test]
async fn unreachable_postgres_is_one_line_saying_where_and_how_to_start_it() {
    for subcommand in ["migrate", "serve", "run"] {
        let mut cmd = waitroom(&[subcommand]);
        cmd.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
            .env("HTTP_ADDR", "127.0.0.1:0");
        let started = Instant::now();
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, subcommand);
        assert!(
            line.contains("PostgreSQL"),
            "{subcommand}: names PostgreSQL: {line}"
        );
        assert!(
            line.contains("127.0.0.1:1"),
            "{subcommand}: says where: {line}"
        );
        assert!(
            line.contains("scripts/services.sh") && line.contains("DATABASE_URL"),
            "{subcommand}: says how to start it or point elsewhere: {line}"
        );
        assert!(started.elapsed() < EXIT_WITHIN, "{subcommand}: fails fast");
    }
}

#[tokio::test]
async fn unreachable_rabbitmq_is_one_line_saying_where_and_how_to_start_it() {
    let scratch = Scratch::new();
    for subcommand in ["serve", "relay", "project"] {
        let cmd = scratch.waitroom_with_broker(
            &[subcommand],
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "127.0.0.1:0",
        );
        let output = output_within(cmd, EXIT_WITHIN).await;
        let line = assert_one_line_error(&output, subcommand);
        assert!(
            line.contains("RabbitMQ"),
            "{subcommand}: names RabbitMQ: {line}"
        );
        assert!(
            line.contains("127.0.0.1:1"),
            "{subcommand}: says where: {line}"
        );
        assert!(
            line.contains("AMQP_URL"),
            "{subcommand}: says how to point elsewhere: {line}"
        );
        assert!(
            !line.contains("guest:guest"),
            "{subcommand}: no credentials: {line}"
        );
    }
    let cmd = scratch.waitroom_with_broker(&["serve"], "not-an-amqp-url", "127.0.0.1:0");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "AMQP_URL=not-an-amqp-url");
    assert!(
        line.contains("RabbitMQ") && line.contains("AMQP_URL"),
        "{line}"
    );
}

#[tokio::test]
async fn an_invalid_database_url_is_one_error_line_and_exit_code_2() {
    let mut cmd = waitroom(&["migrate"]);
    cmd.env("DATABASE_URL", "definitely not a url");
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "DATABASE_URL=definitely not a url");
    assert!(line.contains("DATABASE_URL"), "names the setting: {line}");
}

#[tokio::test]
async fn a_busy_http_address_and_an_unknown_projection_are_one_error_line_and_exit_code_2() {
    let scratch = Scratch::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let addr = busy.local_addr().expect("bound address").to_string();
    let cmd = scratch.waitroom_with_broker(&["serve"], &amqp_url(), &addr);
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "HTTP_ADDR in use");
    assert!(line.contains(&addr), "says which address: {line}");
    assert!(line.contains("HTTP_ADDR"), "says how to change it: {line}");
    drop(busy);

    let cmd = scratch.waitroom(&["rebuild", "--projection", "nope"]);
    let output = output_within(cmd, EXIT_WITHIN).await;
    let line = assert_one_line_error(&output, "rebuild --projection nope");
    assert!(line.contains("nope"), "names the projection: {line}");
}
