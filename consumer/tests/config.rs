//! Configuration: documented in .env.example, and refused at start with a
//! message naming the key when it is wrong.

use testkit::service_binary::ServiceBinary;

const BINARY: ServiceBinary = ServiceBinary {
    path: env!("CARGO_BIN_EXE_consumer"),
    name: "consumer",
    http_addr_key: "CONSUMER_HTTP_ADDR",
};

testkit::service_binary_tests!(BINARY, consumer::Config, "AMQP_URL" => "http://not-amqp");

#[test]
fn a_wrong_rabbitmq_password_stops_it_with_exit_code_2_and_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = ServiceBinary::wrong_password_url();
    let mut cmd = BINARY.service(
        dir.path(),
        &url,
        &testkit::rabbit::unique("test-consumer-login"),
    );
    cmd.env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    );
    BINARY.assert_wrong_password_stops(cmd);
}

#[test]
fn an_exchange_of_another_type_stops_it_with_exit_code_2_saying_how_to_fix_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let foreign = runtime.block_on(testkit::rabbit::ForeignExchange::fanout(
        "test-consumer-fanout",
    ));
    let exchange = foreign.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = BINARY.service(dir.path(), &testkit::rabbit::amqp_url(), &exchange);
    cmd.env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    )
    .env("RABBITMQ_POLICIES", "false")
    .env("PRIVACY_STREAM", "");
    BINARY.assert_foreign_exchange_stops(cmd, &exchange);
    runtime.block_on(foreign.remove());
}
