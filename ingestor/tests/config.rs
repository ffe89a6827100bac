//! Configuration: documented in .env.example, and refused at start with a
//! message naming the key when it is wrong.

use testkit::service_binary::ServiceBinary;

const BINARY: ServiceBinary = ServiceBinary {
    path: env!("CARGO_BIN_EXE_ingestor"),
    name: "ingestor",
    http_addr_key: "INGESTOR_HTTP_ADDR",
};

testkit::service_binary_tests!(BINARY, ingestor::Config, "AMQP_URL" => "http://not-amqp");

#[test]
fn a_wrong_rabbitmq_password_stops_it_with_exit_code_2_and_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = ServiceBinary::wrong_password_url();
    let mut cmd = BINARY.service(
        dir.path(),
        &url,
        &testkit::rabbit::unique("test-ingestor-login"),
    );
    cmd.env("SPOOL_DIR", dir.path());
    BINARY.assert_wrong_password_stops(cmd);
}

#[test]
fn an_exchange_of_another_type_stops_it_with_exit_code_2_saying_how_to_fix_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let foreign = runtime.block_on(testkit::rabbit::ForeignExchange::fanout(
        "test-ingestor-fanout",
    ));
    let exchange = foreign.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = BINARY.service(dir.path(), &testkit::rabbit::amqp_url(), &exchange);
    cmd.env("SPOOL_DIR", dir.path())
        .env("RABBITMQ_POLICIES", "false");
    BINARY.assert_foreign_exchange_stops(cmd, &exchange);
    runtime.block_on(foreign.remove());
}

#[test]
fn the_readme_env_recipe_gives_the_channels_appended_to_the_example() {
    // cp .env.example .env; echo TWITCH_CHANNELS=a,b >> .env
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    let mut text = std::fs::read_to_string(testkit::repo::root().join(".env.example")).unwrap();
    text.push_str("TWITCH_CHANNELS=a,b\n");
    std::fs::write(&env, text).unwrap();
    let config: ingestor::Config = common::config::load_with_dotenv(None, &env).unwrap();
    assert_eq!(config.platforms.twitch.initial_channels(), ["a", "b"]);
    // The last line setting a variable wins, wherever it is.
    std::fs::write(&env, "TWITCH_CHANNELS=x\nTWITCH_CHANNELS=y,z\n").unwrap();
    let config: ingestor::Config = common::config::load_with_dotenv(None, &env).unwrap();
    assert_eq!(config.platforms.twitch.initial_channels(), ["y", "z"]);
}

#[test]
fn it_warns_at_start_when_there_are_no_channels_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = BINARY.command();
    cmd.current_dir(dir.path())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("INGESTOR_HTTP_ADDR", "127.0.0.1:0")
        .env("SPOOL_DIR", dir.path().join("spool"))
        .env("RABBITMQ_POLICIES", "false")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let found = {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let n = stderr.read(&mut buf).unwrap_or(0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("no channels to read")
                || n == 0
                || std::time::Instant::now() > deadline
            {
                break seen.contains("no channels to read");
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "{seen}");
    assert!(
        seen.contains("TWITCH_CHANNELS"),
        "says how to fix it: {seen}"
    );
}

#[test]
fn a_privacy_stream_that_is_a_classic_queue_stops_it_with_exit_code_2_naming_it() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let queue = testkit::rabbit::unique("test-ingestor-not-a-stream");
    let conn = runtime.block_on(testkit::rabbit::connect("test-not-a-stream"));
    let channel = runtime.block_on(conn.create_channel()).unwrap();
    runtime
        .block_on(channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = BINARY.service(
        dir.path(),
        &testkit::rabbit::amqp_url(),
        &testkit::rabbit::unique("test-ingestor-privacy"),
    );
    cmd.env("SPOOL_DIR", dir.path())
        .env("RABBITMQ_POLICIES", "false")
        .env("PRIVACY_STREAM", &queue);
    let (code, stderr) = testkit::process::run_to_exit(cmd, 60);
    assert_eq!(code, Some(2), "{stderr}");
    for part in [queue.as_str(), "stream"] {
        assert!(stderr.contains(part), "`{part}` missing: {stderr}");
    }
    runtime
        .block_on(channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()))
        .unwrap();
}
