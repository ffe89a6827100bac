//! `broker-cleanup`: removes what chatbus's tests and benchmarks left on the
//! main RabbitMQ (queues, exchanges and policies named `test-…`, `bench-…`, `e2e-…`,
//! `chatbus-test-…`, `chatbus-bench-…`, and the broker tests' unique `q-…` and
//! `closing-…` queues) and the PostgreSQL test databases
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

/// Prefixes of names the tests make with `testkit::rabbit::unique` but
/// without a `test-` in front (`common/tests/broker.rs`: `q-10k-…`,
/// `closing-q-…`). Short and generic, so a name with one is ours only when
/// it also ends as `unique` ends it: a queue of yours named `q-orders`
/// stays.
const UNIQUE_ONLY_PREFIXES: &[&str] = &["q-", "closing-"];

fn ours(name: &str) -> bool {
    // A test fleet's queues and exchange: `chat.fleet.<test name>…`.
    let name = name.strip_prefix("chat.fleet.").unwrap_or(name);
    PREFIXES.iter().any(|p| name.starts_with(p))
        || (UNIQUE_ONLY_PREFIXES.iter().any(|p| name.starts_with(p)) && ends_unique(name))
}

/// `…-<uuid>`: `unique`'s suffix, a dash and 32 lower-case hex digits.
fn ends_unique(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(_, tail)| {
        tail.len() == 32
            && tail
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_matches_the_names_tests_make_and_leaves_others() {
        for name in [
            "test-consumer-4f1c",
            "bench-flood",
            "e2e-q-1",
            "chatbus-test-x",
            "chat.fleet.test-fleet-4f1c.leader",
            &testkit::rabbit::unique("q-10k"),
            &testkit::rabbit::unique("q-batch-order"),
            &testkit::rabbit::unique("closing-q"),
        ] {
            assert!(ours(name), "{name} is a test's");
        }
        for name in [
            "chat.consumer",
            "chat.fleet.main.leader",
            "chat.unrouted",
            "chat.dead-letter",
            "q-orders",
            "q-",
            // Not unique's suffix: too short, upper case, not hex.
            "q-10k-4f1c",
            "q-10k-0123456789ABCDEF0123456789ABCDEF",
            "q-10k-0123456789abcdef0123456789abcdeg",
            "closing-time",
            "my-q-0123456789abcdef0123456789abcdef",
        ] {
            assert!(!ours(name), "{name} is not a test's");
        }
    }
}
