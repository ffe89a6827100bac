//! The fault-drill broker: a second RabbitMQ node (`fault@localhost`,
//! AMQP 127.0.0.1:5673, management :15673) that tests may stop and start
//! with `rabbitmqctl stop_app` / `start_app` without disturbing the main
//! broker or the tests using it.
//!
//! Tests that use it are named `fault_*`; nextest runs that group one at a
//! time (`.config/nextest.toml`), so drills do not disturb each other.

use std::path::PathBuf;
use std::process::Command;

/// Node name of the fault broker.
pub const NODE: &str = "fault@localhost";
/// Its AMQP URL.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";
/// Its management API.
pub const MANAGEMENT_URL: &str = "http://127.0.0.1:15673";

/// Handle on the fault broker.
#[derive(Debug)]
pub struct FaultBroker {
    _private: (),
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-fault-node.sh")
}

fn rabbitmqctl(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("rabbitmqctl")
        .arg("-q")
        .arg("-n")
        .arg(NODE)
        .args(args)
        .output()
}

impl FaultBroker {
    /// Makes sure the fault node runs with its app started (starting the
    /// node with `scripts/rabbitmq-fault-node.sh` if needed). Panics with the
    /// script's output if it cannot.
    pub fn ensure() -> Self {
        // Serialise across test processes: only one may start the node.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("chatbus-fault-node.lock"))
            .expect("open fault node lock");
        lock.lock().expect("lock fault node");
        // A previous drill may have panicked with the app stopped.
        let started = rabbitmqctl(&["start_app"]).is_ok_and(|o| o.status.success());
        if !started {
            let out = Command::new("bash")
                .arg(script())
                .arg("start")
                .output()
                .expect("run rabbitmq-fault-node.sh");
            assert!(
                out.status.success(),
                "cannot start the fault-drill RabbitMQ node: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = rabbitmqctl(&["await_startup", "--timeout", "60"]).expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "fault node not ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { _private: () }
    }

    /// Its AMQP URL.
    pub fn amqp_url(&self) -> &'static str {
        AMQP_URL
    }

    /// `rabbitmqctl stop_app`: the broker closes every connection and
    /// refuses new ones; the node (and its durable data) stays.
    pub fn stop_app(&self) {
        let out = rabbitmqctl(&["stop_app"]).expect("rabbitmqctl stop_app");
        assert!(
            out.status.success(),
            "stop_app: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `rabbitmqctl start_app`, then waits until it accepts connections.
    pub fn start_app(&self) {
        let out = rabbitmqctl(&["start_app"]).expect("rabbitmqctl start_app");
        assert!(
            out.status.success(),
            "start_app: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = rabbitmqctl(&["await_startup", "--timeout", "60"]).expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "await_startup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for FaultBroker {
    fn drop(&mut self) {
        // Leave the node usable for the next drill even if this one panicked.
        let _ = rabbitmqctl(&["start_app"]);
    }
}
