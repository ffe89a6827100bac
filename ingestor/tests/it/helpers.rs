//! Spawning the ingestor (in-process on port 0, or as a process) against a
//! fake Twitch IRC server and the real RabbitMQ, and reading what it
//! published.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::amqp::{Delivery, Subscriber, Topology};
use common::shutdown::CancellationToken;
use ingestor::Config;
use ingestor::platforms::twitch;
use lapin::Connection;
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};
use testkit::within;

/// A config pointing at `fake` and `amqp_url`, publishing to `exchange`.
pub(crate) fn config(
    fake: &FakeIrc,
    amqp_url: &str,
    exchange: &str,
    channels: &[String],
    spool: &Path,
) -> Config {
    let platforms = ingestor::platforms::Settings {
        twitch: twitch::Settings {
            twitch_irc_addr: fake.addr().to_string(),
            twitch_irc_tls: false,
            twitch_channels: channels.to_vec(),
            twitch_join_timeout: Duration::from_secs(2),
            ..twitch::Settings::default()
        },
        ..ingestor::platforms::Settings::default()
    };
    Config {
        amqp_url: amqp_url.to_owned(),
        chat_exchange: exchange.to_owned(),
        ingestor_http_addr: "127.0.0.1:0".into(),
        platforms,
        spool_dir: spool.to_owned(),
        amqp_reconnect_max_delay: Duration::from_millis(500),
        // Tests that check the policies turn them on (and remove them).
        rabbitmq_policies: false,
        ..Config::default()
    }
}

/// An ingestor running in this test process.
pub(crate) struct Running {
    pub(crate) http: SocketAddr,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub(crate) async fn start(config: Config) -> Self {
        testkit::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(ingestor::run(config, listener, cancel.clone()));
        Self {
            http,
            cancel,
            handle,
        }
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        within(30, "ingestor stops", self.handle)
            .await
            .unwrap()
            .unwrap();
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let res = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A Prometheus counter/gauge summed over all label sets.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        testkit::metrics::scrape(self.http, name).await
    }
}

pub(crate) use testkit::metrics::sample_sum as metric_value;

/// The distinct event ids among `deliveries` that start with `prefix`
/// (redeliveries count once).
pub(crate) fn ids_with_prefix<'a>(deliveries: &'a [Delivery], prefix: &str) -> BTreeSet<&'a str> {
    deliveries
        .iter()
        .map(|d| d.event.id.as_str())
        .filter(|id| id.starts_with(prefix))
        .collect()
}

/// A queue bound to everything on `exchange` (declared with the
/// ingestor's own topology arguments), plus cleanup. Stream status events
/// (`stream_*`) are acked and left out unless [`Tap::include_status`] was
/// called: the chat tests count what they read.
pub(crate) struct Tap {
    pub(crate) conn: Connection,
    pub(crate) sub: Subscriber,
    pub(crate) topology: Topology,
    status: bool,
}

impl Tap {
    pub(crate) async fn new(amqp_url: &str, exchange: &str) -> Self {
        let conn = rabbit::connect_to(amqp_url, "test-tap").await;
        let topology = Topology::named(exchange);
        let sub = Subscriber::builder(unique("test-tap"))
            .bind("chat.#")
            .prefetch(1000)
            .expires(Duration::from_secs(600))
            .build(&conn, &topology)
            .await
            .unwrap();
        Self {
            conn,
            sub,
            topology,
            status: false,
        }
    }

    /// Keeps stream status events too.
    pub(crate) fn include_status(&mut self) {
        self.status = true;
    }

    fn keep(&self, d: &Delivery) -> bool {
        self.status || !d.event.kind_name().starts_with("stream_")
    }

    /// Receives (and acks) deliveries until `done` says stop, within `secs`.
    pub(crate) async fn collect_until(
        &mut self,
        secs: u64,
        what: &str,
        mut done: impl FnMut(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let mut got = Vec::new();
        within(secs, what, async {
            while !done(&got) {
                let d = self
                    .sub
                    .next()
                    .await
                    .expect("subscriber open")
                    .expect("delivery");
                d.ack().await.unwrap();
                if self.keep(&d) {
                    got.push(d);
                }
            }
        })
        .await;
        got
    }

    /// Whatever arrives within `quiet` of silence.
    pub(crate) async fn drain_quiet(&mut self, quiet: Duration) -> Vec<Delivery> {
        let mut got = Vec::new();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(quiet, self.sub.next()).await {
            d.ack().await.unwrap();
            if self.keep(&d) {
                got.push(d);
            }
        }
        got
    }

    pub(crate) async fn cleanup(self) {
        rabbit::delete_topology(&self.conn, &self.topology).await;
    }
}

/// `n` channel names unique to this test.
pub(crate) fn channels(n: usize) -> Vec<String> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    (0..n).map(|i| format!("c{tag}_{i}")).collect()
}

/// Corpus lines that become events, re-targeted round-robin to `channels`.
pub(crate) fn corpus_lines_for(channels: &[String]) -> Vec<String> {
    let commands = [
        "PRIVMSG",
        "USERNOTICE",
        "CLEARCHAT",
        "CLEARMSG",
        "ROOMSTATE",
        "NOTICE",
        "HOSTTARGET",
    ];
    testkit::corpus::lines()
        .into_iter()
        .filter(|l| testkit::corpus::command_of(l).is_some_and(|c| commands.contains(&c)))
        .filter_map(|l| {
            let ch = testkit::fake_irc::channel_of(&l)?.to_owned();
            Some((l, ch))
        })
        .enumerate()
        .map(|(i, (line, ch))| retarget(&line, &ch, &channels[i % channels.len()]))
        .collect()
}

/// Replaces the `#from` channel parameter of `line` with `#to`.
pub(crate) fn retarget(line: &str, from: &str, to: &str) -> String {
    line.replacen(&format!(" #{from}"), &format!(" #{to}"), 1)
}

/// `n` synthetic PRIVMSGs with unique ids spread over `channels`.
pub(crate) fn privmsgs(channels: &[String], n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ch = &channels[i % channels.len()];
            format!(
                "@badge-info=;badges=;color=#1E90FF;display-name=User{u};emotes=25:0-4;id={tag}-{i};mod=0;room-id=1;subscriber=0;tmi-sent-ts=1594556065407;turbo=0;user-id={u};user-type= :user{u}!user{u}@user{u}.tmi.twitch.tv PRIVMSG #{ch} :Kappa héllo {i}",
                u = i % 97
            )
        })
        .collect()
}

pub(crate) fn spool_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    (dir, path)
}
