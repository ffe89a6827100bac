//! Configuration: documented in .env.example, and refused at start with a
//! message naming the key when it is wrong.

use std::process::Command;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    // No .env from the developer's checkout, no inherited settings.
    cmd.env_clear().current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn env_example_lists_every_key() {
    testkit::repo::assert_env_example_covers::<consumer::Config>();
}

#[test]
fn help_describes_the_binary() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: consumer"), "{text}");
    assert!(text.contains("--config"), "{text}");
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let out = bin().env("AMQP_URL", "http://not-amqp").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "exit code 2 for bad config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AMQP_URL"), "{err}");
}

#[test]
fn malformed_config_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "this is = = not toml").unwrap();
    let out = bin().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration error"));
}

/// The service with a real broker setting, in a fresh directory.
fn service(dir: &std::path::Path, amqp_url: &str, exchange: &str) -> Command {
    let mut cmd = bin();
    cmd.current_dir(dir)
        .env("AMQP_URL", amqp_url)
        .env("CHAT_EXCHANGE", exchange)
        .env("CONSUMER_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    cmd
}

#[test]
fn a_wrong_rabbitmq_password_stops_it_with_exit_code_2_and_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = testkit::rabbit::amqp_url().replace("guest:guest@", "guest:not-the-password@");
    let mut cmd = service(
        dir.path(),
        &url,
        &testkit::rabbit::unique("test-consumer-login"),
    );
    cmd.env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    );
    let (code, stderr) = testkit::process::run_to_exit(cmd, 60);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ACCESS_REFUSED") || stderr.contains("ACCESS-REFUSED"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-password"),
        "the password is redacted: {stderr}"
    );
    // stderr is a pipe here, as it is a log file under scripts/dev.sh.
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {stderr:?}"
    );
}

#[test]
fn an_exchange_of_another_type_stops_it_with_exit_code_2_saying_how_to_fix_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let foreign = runtime.block_on(testkit::rabbit::ForeignExchange::fanout(
        "test-consumer-fanout",
    ));
    let exchange = foreign.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = service(dir.path(), &testkit::rabbit::amqp_url(), &exchange);
    cmd.env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    )
    .env("RABBITMQ_POLICIES", "false");
    let (code, stderr) = testkit::process::run_to_exit(cmd, 60);
    assert_eq!(code, Some(2), "{stderr}");
    for part in [
        exchange.as_str(),
        "fanout",
        "To fix",
        "rabbitmqctl delete_exchange",
    ] {
        assert!(stderr.contains(part), "`{part}` missing: {stderr}");
    }
    runtime.block_on(foreign.remove());
}
