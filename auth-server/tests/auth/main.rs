//! auth-server integration tests: real HTTP on 127.0.0.1 against the fake
//! OAuth provider (`testkit::fake_oauth`).

mod cli;
mod flow;
mod helpers;
mod refresh;
