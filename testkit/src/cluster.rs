//! The 3-node RabbitMQ cluster of the scale-out drills
//! (`scripts/rabbitmq-cluster.sh`): nodes `chatbus1..3@localhost`, AMQP on
//! 127.0.0.1:5680-5682, management on :15680-15682. Drills may kill and
//! restart its nodes; they are named `fault_*` so nextest runs them one at
//! a time (`.config/nextest.toml`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::urlcode::encode;

use crate::rabbit::Management;

/// Number of nodes.
pub const NODES: u8 = 3;

/// Handle on the cluster.
#[derive(Debug)]
pub struct Cluster {
    _private: (),
}

fn script(args: &[&str]) -> std::process::Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh");
    Command::new("bash")
        .arg(path)
        .args(args)
        .output()
        .expect("run scripts/rabbitmq-cluster.sh")
}

fn check(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "rabbitmq-cluster.sh {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Makes sure all three nodes run and form one cluster (starting them
    /// with the script if needed; idempotent). Panics with the script's
    /// output if it cannot.
    pub fn ensure() -> Self {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("chatbus-cluster.lock"))
            .expect("open cluster lock");
        lock.lock().expect("lock cluster");
        check("start", &script(&["start"]));
        Self { _private: () }
    }

    /// AMQP URL of node `n` (1-3).
    pub fn node_url(n: u8) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5679 + u16::from(n))
    }

    /// Every node's AMQP URL, as the comma list services take.
    pub fn urls(&self) -> String {
        (1..=NODES)
            .map(Self::node_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The management API of node `n`.
    pub fn management(n: u8) -> Management {
        Management::new(format!("http://127.0.0.1:{}", 15679 + u16::from(n)))
    }

    /// The node (1-3) holding `queue`'s leader (a quorum queue) or the
    /// queue itself (a classic queue), asking any node that answers.
    pub async fn leader_of(&self, queue: &str) -> Option<u8> {
        for n in 1..=NODES {
            let path = format!("/api/queues/%2F/{}", encode(queue));
            if let Ok(v) = Self::management(n).get_json(&path).await {
                let node = v["leader"].as_str().or_else(|| v["node"].as_str())?;
                return node
                    .strip_prefix("chatbus")
                    .and_then(|r| r.split('@').next())
                    .and_then(|d| d.parse().ok());
            }
        }
        None
    }

    /// The queue's type (`quorum` or `classic`), as any node reports it.
    pub async fn queue_type(&self, queue: &str) -> Option<String> {
        for n in 1..=NODES {
            let path = format!("/api/queues/%2F/{}", encode(queue));
            if let Ok(v) = Self::management(n).get_json(&path).await {
                return v["type"].as_str().map(str::to_owned);
            }
        }
        None
    }

    /// `kill -9` of node `n`'s Erlang VM: a crash, no clean shutdown.
    pub fn kill(&self, n: u8) {
        check("kill", &script(&["kill", &n.to_string()]));
    }

    /// Starts node `n` again and waits until it is back in the cluster.
    pub async fn restart(&self, n: u8) {
        let out = tokio::task::spawn_blocking(move || script(&["restart", &n.to_string()]))
            .await
            .expect("restart task");
        check("restart", &out);
        crate::eventually(120, "the node rejoined the cluster", || async {
            let v = Self::management(1).get_json("/api/nodes").await.ok()?;
            let running = v
                .as_array()?
                .iter()
                .filter(|node| node["running"].as_bool() == Some(true))
                .count();
            (running == usize::from(NODES)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Leave every node running for the next drill even if this one
        // panicked with a node down.
        let _ = script(&["start"]);
    }
}
