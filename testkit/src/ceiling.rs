//! The broker's ceiling for benchmarks, measured by code that is not under
//! test: `testkit/ceiling/publish.mjs`, a bare amqplib (Node.js) publisher
//! with confirms. It shares nothing with chatbus or lapin, so a share of
//! its rate says what chatbus itself costs.
//!
//! [`run`] installs amqplib on first use (`npm ci` in `testkit/ceiling`),
//! writes the pre-built messages to a file and runs the publisher as its
//! own process. [`consume`] drains a filled queue with a bare consumer
//! (the delivery ceiling). The caller declares the exchange and queue.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::amqp::OutgoingMessage;
use serde::Deserialize;

/// What one ceiling run measured.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Ceiling {
    /// Messages confirmed.
    pub messages: u64,
    /// First publish to last confirm.
    pub seconds: f64,
    /// Confirmed messages per second.
    pub rate: f64,
    /// CPU (user + system) the publisher used while publishing.
    pub cpu_seconds: f64,
    /// The same per message, in µs.
    pub cpu_us_per_message: f64,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ceiling")
}

/// Installs amqplib into `testkit/ceiling/node_modules` if it is missing.
///
/// # Panics
/// When Node.js or npm is missing or the install fails.
pub fn install() {
    let dir = dir();
    if dir.join("node_modules/amqplib").is_dir() {
        return;
    }
    eprintln!(
        "installing amqplib for the ceiling publisher (npm ci in {})",
        dir.display()
    );
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm (Node.js) is needed for the broker ceiling: apt-get install nodejs npm");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// Publishes `count` messages, cycling through `messages`, with at most
/// `in_flight` unconfirmed, into `exchange` at `amqp_url`; returns what the
/// publisher measured.
///
/// # Panics
/// When the publisher cannot run or fails (a nack, a lost connection).
pub async fn run(
    amqp_url: &str,
    exchange: &str,
    messages: &[OutgoingMessage],
    count: usize,
    in_flight: usize,
) -> Ceiling {
    install();
    let file = tempfile_path();
    let mut lines = String::new();
    for m in messages {
        let line = serde_json::json!({
            "rk": m.routing_key,
            "body": String::from_utf8_lossy(&m.body),
            "kind": m.kind.as_str(),
            "platform": m.platform,
            "channel": m.channel,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines).expect("write the ceiling payloads");
    let file_arg = file.display().to_string();
    let ceiling = run_node(
        "publish.mjs",
        &[
            amqp_url,
            exchange,
            &file_arg,
            &count.to_string(),
            &in_flight.to_string(),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    ceiling
}

/// Runs `script` of `testkit/ceiling` with `args` and reads the JSON
/// [`Ceiling`] it prints.
async fn run_node(script: &str, args: &[&str]) -> Ceiling {
    let output = tokio::process::Command::new("node")
        .arg(dir().join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run node (Node.js is needed for the broker ceiling)");
    assert!(
        output.status.success(),
        "the ceiling client {script} failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("ceiling output `{stdout}`: {e}"))
}

/// Consumes `count` messages from `queue` (already filled) with at most
/// `prefetch` unacked, acking every `ack_every` with one multiple-ack;
/// returns what the consumer measured. The queue's delivery ceiling.
///
/// # Panics
/// When the consumer cannot run or fails.
pub async fn consume(
    amqp_url: &str,
    queue: &str,
    count: usize,
    prefetch: u16,
    ack_every: usize,
) -> Ceiling {
    install();
    // More than `prefetch` unacked never arrive: ack at most that many at
    // once (0 is no limit).
    let ack_every = match prefetch {
        0 => ack_every,
        p => ack_every.min(usize::from(p)),
    };
    run_node(
        "consume.mjs",
        &[
            amqp_url,
            queue,
            &count.to_string(),
            &prefetch.to_string(),
            &ack_every.to_string(),
        ],
    )
    .await
}

/// The mean body size of `messages`, in bytes.
pub fn mean_body_bytes(messages: &[OutgoingMessage]) -> f64 {
    if messages.is_empty() {
        return 0.0;
    }
    messages.iter().map(|m| m.body.len()).sum::<usize>() as f64 / messages.len() as f64
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "chatbus-ceiling-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ))
}
