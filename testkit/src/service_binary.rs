//! A service binary as its configuration tests drive it: no inherited
//! environment and no `.env` from the checkout, started with the settings a
//! test names, and the checks every service's binary must pass (its
//! `--help`, exit code 2 naming the key for a bad value or a malformed
//! file, exit code 2 with a clear line for a wrong RabbitMQ password or a
//! `chat` exchange of another type).
//!
//! Each service's `tests/config.rs` declares its binary once with
//! [`crate::service_binary_tests!`], which writes those tests, and keeps
//! only the tests of its own.

use std::path::Path;
use std::process::Command;

/// A service's binary.
#[derive(Debug, Clone, Copy)]
pub struct ServiceBinary {
    /// The binary's path (`env!("CARGO_BIN_EXE_<name>")`).
    pub path: &'static str,
    /// Its name as `--help` prints it.
    pub name: &'static str,
    /// The variable of its HTTP address (bound to port 0 by [`ServiceBinary::service`]).
    pub http_addr_key: &'static str,
}

impl ServiceBinary {
    /// The binary, with no inherited environment, run in the temporary
    /// directory (so no `.env` of the developer's checkout is read).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.path);
        cmd.env_clear().current_dir(std::env::temp_dir());
        cmd
    }

    /// The binary set to reach the broker at `amqp_url` and publish or bind
    /// on `exchange`, in `dir`, its HTTP server on port 0, logging warnings.
    pub fn service(&self, dir: &Path, amqp_url: &str, exchange: &str) -> Command {
        let mut cmd = self.command();
        cmd.current_dir(dir)
            .env("AMQP_URL", amqp_url)
            .env("CHAT_EXCHANGE", exchange)
            .env(self.http_addr_key, "127.0.0.1:0")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// `--help` succeeds and names the binary and `--config`.
    pub fn assert_help(&self) {
        let out = self.command().arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("Usage: {}", self.name)), "{text}");
        assert!(text.contains("--config"), "{text}");
    }

    /// `key=value` stops the binary at start with exit code 2 and a line
    /// naming `key`.
    pub fn assert_refuses(&self, key: &str, value: &str) {
        let out = self.command().env(key, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "exit code 2 for bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{err}");
    }

    /// A `--config` file that is not TOML stops it with exit code 2.
    pub fn assert_refuses_a_malformed_file(&self) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "this is = = not toml").unwrap();
        let out = self.command().arg("--config").arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("configuration error"));
    }

    /// A wrong RabbitMQ password stops `service` (made by
    /// [`ServiceBinary::service`]) with exit code 2 and a line saying so,
    /// the password redacted and no colour codes on a piped stderr.
    pub fn assert_wrong_password_stops(&self, service: Command) {
        let (code, stderr) = crate::process::run_to_exit(service, 60);
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

    /// The AMQP URL with a wrong password, for
    /// [`ServiceBinary::assert_wrong_password_stops`].
    pub fn wrong_password_url() -> String {
        crate::rabbit::amqp_url().replace("guest:guest@", "guest:not-the-password@")
    }

    /// A `chat` exchange declared by someone else as `fanout` stops
    /// `service` (made by [`ServiceBinary::service`] with `exchange`) with
    /// exit code 2 and a line saying how to fix it.
    pub fn assert_foreign_exchange_stops(&self, service: Command, exchange: &str) {
        let (code, stderr) = crate::process::run_to_exit(service, 60);
        assert_eq!(code, Some(2), "{stderr}");
        for part in [exchange, "fanout", "To fix", "rabbitmqctl delete_exchange"] {
            assert!(stderr.contains(part), "`{part}` missing: {stderr}");
        }
    }
}

/// Writes the configuration tests every service binary passes:
/// `.env.example` lists every key of `$config`, `--help`, a bad value of
/// `$bad_key` and a malformed file are refused with exit code 2.
#[macro_export]
macro_rules! service_binary_tests {
    ($binary:expr, $config:ty, $bad_key:expr => $bad_value:expr) => {
        #[test]
        fn env_example_lists_every_key() {
            $crate::repo::assert_env_example_covers::<$config>();
        }

        #[test]
        fn help_describes_the_binary() {
            $binary.assert_help();
        }

        #[test]
        fn invalid_config_fails_at_start_naming_the_key() {
            $binary.assert_refuses($bad_key, $bad_value);
        }

        #[test]
        fn malformed_config_file_fails_at_start() {
            $binary.assert_refuses_a_malformed_file();
        }
    };
}
