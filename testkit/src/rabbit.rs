//! The real RabbitMQ for tests: URLs, unique names, an isolated topology per
//! test, and a small management-API client.
//!
//! Broker tests never skip: if RabbitMQ is unreachable they fail, naming
//! the URL and how to start it.

use std::time::Duration;

use common::amqp::{self, Backoff, ConnectOptions, Subscriber, Topology};
use common::urlcode::encode;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

/// The broker tests use: `CHATBUS_TEST_AMQP_URL`, else `AMQP_URL`, else
/// `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("CHATBUS_TEST_AMQP_URL")
        .or_else(|_| std::env::var("AMQP_URL"))
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The management API of the main broker: `CHATBUS_TEST_MGMT_URL`, else
/// `http://127.0.0.1:15672`.
pub fn management_url() -> String {
    std::env::var("CHATBUS_TEST_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// A name no other test uses: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A topology of its own for one test: unique exchange names, exchanges
/// deleted when unused, queues expiring after 10 minutes.
pub fn test_topology(prefix: &str) -> Topology {
    let mut t = Topology::named(&unique(&format!("test-{prefix}")));
    t.auto_delete = true;
    t.queue_expires = Some(Duration::from_secs(600));
    t
}

/// Connect options for tests: few quick retries, so a missing broker fails
/// fast with a clear message.
pub fn connect_options(url: &str, name: &str) -> ConnectOptions {
    ConnectOptions::new(url, name).with_backoff(Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_attempts: Some(20),
    })
}

/// Connects to the test broker or panics with instructions.
pub async fn connect(name: &str) -> Connection {
    connect_to(&amqp_url(), name).await
}

/// Connects to `url` or panics with instructions.
pub async fn connect_to(url: &str, name: &str) -> Connection {
    amqp::connect(&connect_options(url, name), &CancellationToken::new())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is required for this test and is not reachable: {e}. \
                 Run scripts/test.sh (it starts or installs RabbitMQ) or set CHATBUS_TEST_AMQP_URL."
            )
        })
}

/// The RabbitMQ management HTTP API as tests use it: chatbus's own client
/// (`common::amqp::management`) as guest/guest, plus what tests ask of it.
#[derive(Debug, Clone)]
pub struct Management(common::amqp::management::Management);

impl Management {
    /// A client for `base` (e.g. `http://127.0.0.1:15672`) as guest/guest.
    ///
    /// # Panics
    /// When `base` is not an http(s) URL.
    pub fn new(base: impl Into<String>) -> Self {
        Self(
            common::amqp::management::Management::new(
                &base.into(),
                "guest",
                common::Secret::new("guest"),
                "/",
            )
            .expect("a management API URL"),
        )
    }

    /// The main broker's management API.
    pub fn main() -> Self {
        Self::new(management_url())
    }

    /// GETs `path` (e.g. `/api/queues/%2F/<queue>`, names encoded with
    /// `common::urlcode::encode`) as JSON.
    ///
    /// # Errors
    /// HTTP errors and bodies that are not JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.0.get_json(path).await?)
    }

    /// Message count of a queue in the default vhost (ready + unacked), as
    /// the management database last saw it (refreshed every few seconds).
    ///
    /// # Errors
    /// HTTP errors, e.g. 404 for an unknown queue.
    pub async fn queue_messages(&self, queue: &str) -> anyhow::Result<u64> {
        let v = self
            .get_json(&format!("/api/queues/%2F/{}", encode(queue)))
            .await?;
        Ok(v["messages"].as_u64().unwrap_or(0))
    }

    /// Names of the open connections whose client-provided name starts with
    /// `prefix`.
    ///
    /// # Errors
    /// HTTP errors.
    pub async fn connections_named(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let v = self.get_json("/api/connections").await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["client_properties"]["connection_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Force-closes every connection whose client-provided name starts with
    /// `prefix` (a targeted "broker went away" for one service). Returns how
    /// many were closed.
    ///
    /// # Errors
    /// HTTP errors.
    pub async fn close_connections_named(&self, prefix: &str) -> anyhow::Result<usize> {
        let names = self.connections_named(prefix).await?;
        for name in &names {
            self.0
                .delete(&format!("/api/connections/{}", encode(name)))
                .await?;
        }
        Ok(names.len())
    }
}

/// An exchange of another type than chatbus's, declared on the main
/// broker first, as another service might: the fixture of the tests that
/// a service refuses it with a clear line. [`ForeignExchange::remove`]
/// deletes it.
#[derive(Debug)]
pub struct ForeignExchange {
    /// Its name (unique per test).
    pub name: String,
    conn: Connection,
}

impl ForeignExchange {
    /// Declares a durable fanout exchange named `<prefix>-<uuid>`.
    ///
    /// # Panics
    /// When the broker refuses.
    pub async fn fanout(prefix: &str) -> Self {
        let name = unique(prefix);
        let conn = connect("test-foreign-exchange").await;
        let ch = conn.create_channel().await.expect("a channel");
        ch.exchange_declare(
            name.as_str().into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare the foreign exchange");
        amqp::close_channel(&ch, "declared").await;
        Self { name, conn }
    }

    /// Deletes it.
    pub async fn remove(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .exchange_delete(
                    self.name.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await;
            amqp::close_channel(&ch, "deleted").await;
        }
        amqp::close(&self.conn, "test over").await;
    }
}

/// The main broker's management API as chatbus's services reach it.
pub fn management() -> common::amqp::management::Management {
    common::amqp::management::Management::for_broker(&amqp_url(), Some(&management_url()))
        .expect("management API URL")
}

/// Policies a test set, to remove at its end.
#[derive(Debug)]
pub struct Policies(Vec<String>);

impl Policies {
    /// Removes them.
    pub async fn remove(self) {
        let m = management();
        for name in self.0 {
            let _ = m.delete_policy(&name).await;
        }
    }
}

/// Sets `topology`'s policies (alternate exchange, unrouted max-length) on
/// the main broker, as the services do at start.
///
/// # Panics
/// When the management API refuses.
pub async fn apply_policies(topology: &Topology) -> Policies {
    let policies = topology.policies();
    common::amqp::management::apply_policies(&management(), &policies)
        .await
        .expect("set policies through the management API");
    Policies(policies.into_iter().map(|p| p.name).collect())
}

/// Drains up to `max` messages from `queue` with basic.get (acking them),
/// waiting up to `secs` for at least `expect` to arrive.
pub async fn drain_queue(
    conn: &Connection,
    queue: &str,
    expect: usize,
    secs: u64,
) -> Vec<lapin::message::Delivery> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let channel = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    crate::within(secs, &format!("{expect} messages in {queue}"), async {
        while out.len() < expect {
            match channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic.get")
            {
                Some(msg) => {
                    msg.delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                    out.push(msg.delivery);
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    out
}

/// Messages in `queue` now, from a passive declare (exact, unlike the
/// management API's periodically refreshed counts).
///
/// # Errors
/// If the queue does not exist; the broker then closes `channel`.
pub async fn passive_declare(channel: &lapin::Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

/// [`passive_declare`] of a queue that must exist.
///
/// # Panics
/// If the queue does not exist.
pub async fn queue_depth(channel: &lapin::Channel, queue: &str) -> u32 {
    passive_declare(channel, queue)
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
}

/// Declares `queue`, bound to `chat.#` and expiring like `topology`'s
/// queues, as the consumer declares its queue: events published before the
/// consumer starts are kept for it.
///
/// # Panics
/// If the broker refuses the declaration.
pub async fn declare_consumer_queue(topology: &Topology, queue: &str) {
    let conn = connect("chatbus-test-declare").await;
    let mut builder = Subscriber::builder(queue).bind("chat.#");
    if let Some(expires) = topology.queue_expires {
        builder = builder.expires(expires);
    }
    let subscriber = builder.build(&conn, topology).await.expect("declare queue");
    // Closed before the connection: see `amqp::close_channel`.
    subscriber.close().await;
    amqp::close(&conn, "declared").await;
}

/// Deletes, best effort, what a consumer declared on the broker: its
/// `queue`, its commit announcements' exchange (`commit_exchange`, the
/// name `consumer::commit_signal::exchange_for(queue)` gives) and
/// `topology`.
pub async fn delete_consumer_objects(
    conn: &Connection,
    topology: &Topology,
    queue: &str,
    commit_exchange: &str,
) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(commit_exchange.into(), ExchangeDeleteOptions::default())
            .await;
        amqp::close_channel(&ch, "cleaned up").await;
    }
    delete_topology(conn, topology).await;
}

/// Deletes a topology's exchanges and queues (for tests that had to declare
/// a non-auto-delete topology, e.g. through a binary).
pub async fn delete_topology(conn: &Connection, topology: &Topology) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in [&topology.unrouted_queue, &topology.dead_letter_queue] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [
        &topology.exchange,
        &topology.unrouted_exchange,
        &topology.dead_letter_exchange,
    ] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    common::amqp::close_channel(&ch, "topology deleted").await;
    // And the policies a service set for it.
    let m = management();
    for p in topology.policies() {
        let _ = m.delete_policy(&p.name).await;
    }
}
