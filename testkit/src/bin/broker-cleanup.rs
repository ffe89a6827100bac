//! `broker-cleanup`: removes what chatbus's tests and benchmarks left on the
//! main RabbitMQ (queues, exchanges and policies named `test-…`, `bench-…`, `e2e-…`,
//! `chatbus-test-…`, `chatbus-bench-…`) and the PostgreSQL test databases
//! (`chatbus_test_…`). `scripts/test.sh` runs it when it ends, so a run
//! leaves the shared servers as it found them.

use common::amqp::management::Management;
use common::urlcode::encode;

const PREFIXES: &[&str] = &[
    "test-",
    "bench-",
    "e2e-",
    "chatbus-test-",
    "chatbus-bench-",
    "chatbus-e2e-",
];

fn ours(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Removes what tests left through `mgmt`; returns (queues, exchanges,
/// policies) removed.
async fn clean(mgmt: &Management) -> anyhow::Result<[usize; 3]> {
    let vhost = encode(mgmt.vhost());
    let mut removed = [0usize; 3];
    for (i, kind) in ["queues", "exchanges", "policies"].into_iter().enumerate() {
        let list = mgmt.get_json(&format!("/api/{kind}/{vhost}")).await?;
        for item in list.as_array().into_iter().flatten() {
            let Some(name) = item["name"].as_str() else {
                continue;
            };
            if ours(name) {
                mgmt.delete(&format!("/api/{kind}/{vhost}/{}", encode(name)))
                    .await?;
                removed[i] += 1;
            }
        }
    }
    Ok(removed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let removed = clean(&testkit::rabbit::management()).await?;
    println!(
        "broker-cleanup: removed {} queues, {} exchanges, {} policies left by tests",
        removed[0], removed[1], removed[2]
    );
    // The scale-out drills' cluster, when it runs (its metadata is shared:
    // one node's API cleans all three).
    let cluster = Management::for_broker(
        &testkit::cluster::Cluster::node_url(1),
        Some("http://127.0.0.1:15680"),
    )?;
    if let Ok(removed) = clean(&cluster).await {
        println!(
            "broker-cleanup: removed {} queues, {} exchanges, {} policies from the test cluster",
            removed[0], removed[1], removed[2]
        );
    }
    let databases = testkit::pg::drop_leftovers().await;
    println!("broker-cleanup: dropped {databases} PostgreSQL test databases");
    Ok(())
}
