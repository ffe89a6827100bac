//! Scale-out drills: the tested multi-host topology (docs/scaling.md).
//!
//! ```text
//! fake Twitch A --> ingestor A (channels a*) --+                +--> consumer 1 --> WS client 1
//!                                             +--> 3-node      +--> consumer 2 --> WS client 2
//! fake Twitch B --> ingestor B (channels b*) --+    RabbitMQ --+--> consumer 3 --> WS client 3
//!                                                  (one quorum queue)     \   |   /
//!                                                                        PostgreSQL
//! ```
//!
//! Every service is its own process with its own port, given all three
//! broker addresses (each starts on another node). The consumers compete
//! on one quorum queue and share one PostgreSQL database; each serves a
//! WebSocket client that follows everything from cursor 0.
//!
//! The drills kill the node holding the queue's leader under load, then a
//! consumer and an ingestor, and check: nothing confirmed is lost (an
//! ingestor killed with `kill -9` loses only the lines its socket held, all
//! inside the restart gap it reports), nothing is stored twice, and every
//! WebSocket client saw exactly the store's events, in cursor order.
//!
//! They are named `fault_scale_*`: nextest runs them one at a time with the
//! other drills. `cargo nextest run -p e2e --stress-count 10 -E
//! 'test(/fault_scale/)'` runs each 10 times in a row (docs/scaling.md has
//! the figures).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::schema::{EventBody, EventKind};
use e2e::{Service, WsClient, WsRead};
use testkit::cluster::Cluster;
use testkit::fake_irc::FakeIrc;
use testkit::pg::TestDatabase;
use testkit::rabbit::{self, unique};
use testkit::{eventually, within};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One ingestor and the fake Twitch its channels are on.
struct Shard {
    fake: Arc<FakeIrc>,
    channels: Vec<String>,
    ingestor: Service,
}

/// Two ingestors, three consumers, the cluster, one PostgreSQL database.
struct Scale {
    cluster: Cluster,
    db: Option<TestDatabase>,
    dir: tempfile::TempDir,
    exchange: String,
    queue: String,
    shards: Vec<Shard>,
    consumers: Vec<Service>,
}

/// The cluster's addresses, starting at node `first` (0-based), so the
/// services spread over the nodes.
fn rotated(urls: &str, first: usize) -> String {
    let list: Vec<&str> = urls.split(',').collect();
    let n = list.len();
    (0..n)
        .map(|i| list[(first + i) % n])
        .collect::<Vec<_>>()
        .join(",")
}

fn subdir(dir: &Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Drop for Scale {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in &self.shards {
                s.ingestor.dump_logs();
            }
            for c in &self.consumers {
                c.dump_logs();
            }
        }
    }
}

impl Scale {
    async fn start() -> Self {
        let cluster = Cluster::ensure();
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let exchange = unique("e2e-scale-x");
        let queue = unique("e2e-scale-q");
        let urls = cluster.urls();
        let mut consumers = Vec::new();
        for i in 0..3 {
            let env = vec![
                ("AMQP_URL".into(), rotated(&urls, i)),
                ("CHAT_EXCHANGE".into(), exchange.clone()),
                ("CONSUMER_QUEUE".into(), queue.clone()),
                ("DATABASE_URL".into(), db.url.clone()),
                ("CONSUMER_BATCH_SIZE".into(), "200".into()),
                ("CONSUMER_PREFETCH".into(), "400".into()),
            ];
            let d = subdir(dir.path(), &format!("consumer{}", i + 1));
            consumers.push(Service::start("consumer", env, &d).await);
        }
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let mut shards = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let fake = Arc::new(FakeIrc::start().await);
            let channels: Vec<String> = (0..3).map(|c| format!("s{tag}{name}_{c}")).collect();
            let d = subdir(dir.path(), &format!("ingestor-{name}"));
            let env = vec![
                ("AMQP_URL".into(), rotated(&urls, i + 1)),
                ("CHAT_EXCHANGE".into(), exchange.clone()),
                ("TWITCH_IRC_ADDR".into(), fake.addr().to_string()),
                ("TWITCH_IRC_TLS".into(), "false".into()),
                ("TWITCH_CHANNELS".into(), channels.join(",")),
                ("TWITCH_JOIN_TIMEOUT".into(), "2s".into()),
                ("SPOOL_DIR".into(), d.join("spool").display().to_string()),
                ("AMQP_RECONNECT_MAX_DELAY".into(), "1s".into()),
            ];
            let ingestor = Service::start("ingestor", env, &d).await;
            let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
            fake.wait_joined(&refs, 60).await;
            shards.push(Shard {
                fake,
                channels,
                ingestor,
            });
        }
        Self {
            cluster,
            db: Some(db),
            dir,
            exchange,
            queue,
            shards,
            consumers,
        }
    }

    fn consumer_addrs(&self) -> Vec<SocketAddr> {
        self.consumers.iter().map(|c| c.http).collect()
    }

    /// Stops every service, deletes the broker objects and the database.
    async fn stop(mut self) {
        for s in &mut self.shards {
            s.ingestor.stop().await;
        }
        for c in &mut self.consumers {
            c.stop().await;
        }
        let conn = rabbit::connect_to(&self.cluster.urls(), "e2e-scale-cleanup").await;
        e2e::delete_bus_objects(&conn, &self.exchange, &self.queue).await;
        common::amqp::close(&conn, "cleanup").await;
        if let Some(db) = self.db.take() {
            db.drop_now().await;
        }
        let _ = &self.dir;
    }
}

/// A PRIVMSG carrying its send time as `tmi-sent-ts`.
fn line(channel: &str, id: &str, sent_ms: i64) -> String {
    format!(
        "@badge-info=;badges=;color=;display-name=U;emotes=;id={id};mod=0;room-id=1;subscriber=0;tmi-sent-ts={sent_ms};turbo=0;user-id=7;user-type= :u!u@u.tmi.twitch.tv PRIVMSG #{channel} :héllo {id}"
    )
}

/// A line the fake handed to an ingestor's connection.
#[derive(Debug, Clone)]
struct Sent {
    shard: usize,
    channel: String,
    id: String,
    at: DateTime<Utc>,
}

/// Chat on every shard's channels: `per_tick` lines per shard every 10 ms
/// for `secs` seconds. Returns the lines a connection received (a shard
/// whose ingestor is down receives nothing; those lines are not sent).
async fn chat(
    shards: &[(Arc<FakeIrc>, Vec<String>)],
    tag: &str,
    per_tick: usize,
    secs: u64,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut n = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < until {
        tick.tick().await;
        for (shard, (fake, channels)) in shards.iter().enumerate() {
            let now = Utc::now();
            // Per channel: a channel is either joined or not, so a batch
            // is delivered whole or not at all.
            let mut by_channel: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
            for _ in 0..per_tick {
                let channel = &channels[n % channels.len()];
                let id = format!("{tag}-{n}");
                n += 1;
                by_channel
                    .entry(channel)
                    .or_default()
                    .push((id.clone(), line(channel, &id, now.timestamp_millis())));
            }
            for (channel, batch) in by_channel {
                let lines: Vec<String> = batch.iter().map(|(_, l)| l.clone()).collect();
                if fake.send_lines(&lines) == lines.len() {
                    sent.extend(batch.into_iter().map(|(id, _)| Sent {
                        shard,
                        channel: channel.to_owned(),
                        id,
                        at: now,
                    }));
                }
            }
        }
    }
    sent
}

/// What a WebSocket client saw: (cursor, event id), and how often it had
/// to reconnect.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<(u64, String)>,
    reconnects: usize,
}

/// A WebSocket client that follows everything from cursor 0, starting at
/// `addrs[0]`; when its consumer goes away it resumes after the last cursor
/// it saw on whichever consumer answers (as a client behind a load
/// balancer would). Publishes its last cursor on `progress`; stops at
/// `stop`.
fn follow(
    addrs: Vec<SocketAddr>,
    progress: watch::Sender<u64>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut next = 0usize;
        'connect: loop {
            let last = seen.events.last().map_or(0, |e| e.0);
            let addr = addrs[next % addrs.len()];
            let subscribed = match WsClient::try_connect(addr).await {
                Some(mut ws) => ws
                    .try_subscribe("all", &["chat.#".into()], Some(last))
                    .await
                    .then_some(ws),
                None => None,
            };
            let Some(mut ws) = subscribed else {
                next += 1;
                tokio::select! {
                    () = stop.cancelled() => return seen,
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue 'connect,
                }
            };
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => return seen,
                    f = ws.read(300) => f,
                };
                match frame {
                    WsRead::Frame(f) if f["type"] == "event" => {
                        let cursor = f["cursor"].as_u64().expect("cursor");
                        let id = f["event"]["id"].as_str().expect("id").to_owned();
                        seen.events.push((cursor, id));
                        let _ = progress.send(cursor);
                    }
                    WsRead::Frame(_) => {}
                    WsRead::Closed(_) => {
                        seen.reconnects += 1;
                        next += 1;
                        continue 'connect;
                    }
                }
            }
        }
    })
}

/// Every stored event, in cursor order: (cursor, id, kind, channel).
async fn store_contents(http: SocketAddr) -> Vec<e2e::Stored> {
    e2e::stored_events(http, "platform=twitch").await
}

/// Restart gaps per channel.
fn restart_gaps(stored: &[e2e::Stored]) -> BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)> {
    stored
        .iter()
        .filter_map(|s| match &s.event.body {
            EventBody::Gap(g) if g.reason == "ingestor_restart" => {
                Some((s.event.channel.clone(), (g.started_at, g.ended_at)))
            }
            _ => None,
        })
        .collect()
}

/// Waits until the store holds every sent line (but those of `killed`
/// shard inside its restart gaps) and the gaps for `killed`'s channels,
/// then until it stops growing; returns its contents.
async fn settle(
    scale: &Scale,
    sent: &[Sent],
    killed: Option<usize>,
    tag: &str,
) -> Vec<e2e::Stored> {
    let http = scale.consumers[0].http;
    let gap_channels: BTreeSet<&str> = killed
        .map(|k| {
            scale.shards[k]
                .channels
                .iter()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    within(240, "the store holding everything sent", async {
        loop {
            let stored = store_contents(http).await;
            let gaps = restart_gaps(&stored);
            let ids: BTreeSet<&str> = stored.iter().map(|s| s.event.id.as_str()).collect();
            let gaps_in = gap_channels.iter().all(|c| gaps.contains_key(*c));
            let missing = sent
                .iter()
                .filter(|s| !ids.contains(s.id.as_str()))
                .filter(|s| match gaps.get(&s.channel) {
                    Some((from, to)) if Some(s.shard) == killed => !(from <= &s.at && s.at <= *to),
                    _ => true,
                })
                .count();
            if gaps_in && missing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    // Redeliveries after a failover may still be on their way: the store
    // must hold still (and stay free of duplicates) for a while.
    let mut before = store_contents(http).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = store_contents(http).await;
        if now.len() == before.len() {
            let tagged = now.iter().filter(|s| s.event.id.starts_with(tag)).count();
            eprintln!(
                "store settled: {} events ({tagged} `{tag}` messages)",
                now.len()
            );
            return now;
        }
        before = now;
    }
}

/// The checks every drill ends with.
async fn assert_complete(
    scale: &Scale,
    sent: &[Sent],
    killed: Option<usize>,
    stored: &[e2e::Stored],
    followers: Vec<(watch::Receiver<u64>, tokio::task::JoinHandle<Seen>)>,
    stop: CancellationToken,
    tag: &str,
) {
    // Nothing stored twice: one row per (platform, id) ...
    let ids: Vec<&str> = stored.iter().map(|s| s.event.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an event was stored twice");
    // ... every cursor once, ascending.
    assert!(stored.windows(2).all(|w| w[0].cursor < w[1].cursor));
    // Nothing that was sent is missing, but for a killed ingestor's lines
    // inside its restart gap; nothing stored that was not sent.
    let gaps = restart_gaps(stored);
    let sent_ids: BTreeSet<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    let mut lost = 0;
    for s in sent {
        if unique.contains(s.id.as_str()) {
            continue;
        }
        lost += 1;
        assert_eq!(Some(s.shard), killed, "{} lost, and its ingestor ran", s.id);
        let (from, to) = gaps
            .get(&s.channel)
            .unwrap_or_else(|| panic!("{} lost without a restart gap", s.id));
        assert!(
            from <= &s.at && s.at <= *to,
            "{} (sent {}) lost outside the restart gap {from}..{to}",
            s.id,
            s.at
        );
    }
    let phantom = stored
        .iter()
        .filter(|s| s.event.kind() == EventKind::Message && s.event.id.starts_with(tag))
        .filter(|s| !sent_ids.contains(s.event.id.as_str()))
        .count();
    assert_eq!(phantom, 0, "stored messages that were never sent");
    eprintln!(
        "{} lines sent, {lost} lost inside restart gaps, {} events stored once each",
        sent.len(),
        stored.len()
    );

    // Every WebSocket client saw exactly the store's events, in order.
    let head = stored.last().expect("events").cursor;
    let store_seq: Vec<(u64, String)> = stored
        .iter()
        .map(|s| (s.cursor, s.event.id.clone()))
        .collect();
    for (mut progress, _) in followers.iter().map(|(p, h)| (p.clone(), h)) {
        within(120, "every WebSocket client reaching the head", async {
            while *progress.borrow_and_update() < head {
                progress.changed().await.expect("follower alive");
            }
        })
        .await;
    }
    stop.cancel();
    for (i, (_, handle)) in followers.into_iter().enumerate() {
        let seen = handle.await.unwrap();
        assert_eq!(
            seen.events.len(),
            store_seq.len(),
            "client of consumer {} saw {} events, the store has {} ({} reconnects)",
            i + 1,
            seen.events.len(),
            store_seq.len(),
            seen.reconnects
        );
        assert_eq!(
            seen.events,
            store_seq,
            "client of consumer {}: not the store's sequence",
            i + 1
        );
        eprintln!(
            "WebSocket client of consumer {}: {} events in cursor order, {} reconnects",
            i + 1,
            seen.events.len(),
            seen.reconnects
        );
    }
    let _ = scale;
}

/// Starts a follower per consumer, each starting on its own consumer.
fn followers(
    scale: &Scale,
    stop: &CancellationToken,
) -> Vec<(watch::Receiver<u64>, tokio::task::JoinHandle<Seen>)> {
    let addrs = scale.consumer_addrs();
    (0..addrs.len())
        .map(|i| {
            let mut mine = addrs.clone();
            mine.rotate_left(i);
            let (tx, rx) = watch::channel(0);
            (rx, follow(mine, tx, stop.clone()))
        })
        .collect()
}

fn chat_sources(scale: &Scale) -> Vec<(Arc<FakeIrc>, Vec<String>)> {
    scale
        .shards
        .iter()
        .map(|s| (s.fake.clone(), s.channels.clone()))
        .collect()
}

#[tokio::test]
async fn fault_scale_the_queue_leader_node_is_killed_under_load() {
    let scale = Scale::start().await;
    assert_eq!(
        scale.cluster.queue_type(&scale.queue).await.as_deref(),
        Some("quorum"),
        "several broker addresses: the consumers' queue is a quorum queue"
    );
    let stop = CancellationToken::new();
    let followers = followers(&scale, &stop);
    let leader = scale
        .cluster
        .leader_of(&scale.queue)
        .await
        .expect("the queue's leader");
    let tag = "lead";
    // 2 shards x 5 lines per 10 ms: 1,000 lines a second for 10 s.
    let sources = chat_sources(&scale);
    let load = chat(&sources, tag, 5, 10);
    let drill = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        scale.cluster.kill(leader);
        eprintln!("killed node {leader}, the queue's leader");
        let moved = eventually(60, "a new leader", || async {
            scale
                .cluster
                .leader_of(&scale.queue)
                .await
                .filter(|n| *n != leader)
        })
        .await;
        eprintln!("the leader moved to node {moved}");
    };
    let (sent, ()) = tokio::join!(load, drill);
    // The loss checks below mean something only over real load: half of
    // the 1,000 lines a second for 10 s at least (about 10,000 measured,
    // docs/scaling.md).
    assert!(sent.len() > 5_000, "only {} lines sent", sent.len());
    // Consumer N started on node N: the one on the killed node moved.
    let moved = &scale.consumers[usize::from(leader) - 1];
    assert!(
        moved.metric("chatbus_amqp_connects_total").await >= 2.0,
        "the consumer on the killed node reconnected to another"
    );
    scale.cluster.restart(leader).await;
    let stored = settle(&scale, &sent, None, tag).await;
    assert_complete(&scale, &sent, None, &stored, followers, stop, tag).await;
    scale.stop().await;
}

#[tokio::test]
async fn fault_scale_a_consumer_then_an_ingestor_is_killed_under_load() {
    let mut scale = Scale::start().await;
    let stop = CancellationToken::new();
    let followers = followers(&scale, &stop);
    let tag = "kill";
    let sources = chat_sources(&scale);
    let load = chat(&sources, tag, 5, 12);
    let Scale {
        consumers, shards, ..
    } = &mut scale;
    let drill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        consumers[1].kill9().await;
        eprintln!("killed consumer 2");
        tokio::time::sleep(Duration::from_secs(2)).await;
        consumers[1].restart().await;
        eprintln!("consumer 2 is back");
        tokio::time::sleep(Duration::from_secs(1)).await;
        shards[0].ingestor.kill9().await;
        eprintln!("killed ingestor A");
        tokio::time::sleep(Duration::from_millis(500)).await;
        shards[0].ingestor.restart().await;
        let refs: Vec<&str> = shards[0].channels.iter().map(String::as_str).collect();
        shards[0].fake.wait_joined(&refs, 60).await;
        eprintln!("ingestor A re-joined its channels");
    };
    let (sent, ()) = tokio::join!(load, drill);
    // The loss checks below mean something only over real load: half of
    // the 1,000 lines a second for 12 s at least, ingestor A's dead time
    // included (11,000-11,700 measured, docs/scaling.md).
    assert!(sent.len() > 6_000, "only {} lines sent", sent.len());
    let stored = settle(&scale, &sent, Some(0), tag).await;
    assert_complete(&scale, &sent, Some(0), &stored, followers, stop, tag).await;
    scale.stop().await;
}
