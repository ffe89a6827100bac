//! Configuration: documented in .env.example, and refused at start with a
//! message naming the key when it is wrong.

use testkit::service_binary::ServiceBinary;

const BINARY: ServiceBinary = ServiceBinary {
    path: env!("CARGO_BIN_EXE_auth-server"),
    name: "auth-server",
    http_addr_key: "AUTH_HTTP_ADDR",
};

testkit::service_binary_tests!(BINARY, auth_server::Config, "AUTH_HTTP_ADDR" => "not-an-address");
