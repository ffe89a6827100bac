//! Ingestors as a fleet, as processes (docs/scaling.md "A fleet"): three
//! ingestors in one fleet read 60 channels of the fake Twitch IRC, 20 each,
//! while 1,000 lines a second flow and one consumer stores them. The drills
//! (`fault_*`: nextest runs them one at a time) kill -9 one instance, cut
//! one off the broker (a black-holed route: frozen, not closed) and kill
//! the cluster node leading the fleet's lease queue, and check the fleet's
//! bounds: detection within the takeover time, a rejoin within the JOIN
//! budget, every line outside a `gap` window stored once, every lost line
//! inside one, each gap no wider than detection + rejoin + 2 s.
//!
//! The takeover time is the default, 10 s. Each instance logs in
//! anonymously (`justinfan…`): no account is shared, so each has its own
//! JOIN budget (`TWITCH_JOIN_LIMIT`, default 20 per 10 s), and the two
//! survivors of a kill take the victim's 20 channels within their budgets
//! at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::schema::EventBody;
use e2e::Service;
use testkit::cluster::Cluster;
use testkit::eventually;
use testkit::fake_irc::FakeIrc;
use testkit::proxy::TcpProxy;
use testkit::rabbit::{self, unique};
use tokio_util::sync::CancellationToken;

/// `INGESTOR_FLEET_TAKEOVER`, the default.
const TAKEOVER: Duration = Duration::from_secs(10);
/// Death is seen `TAKEOVER` after the victim's last heartbeat (at most that
/// after the kill); the leader assigns on its next beat (≤ 1 s) and the
/// successors join as they hear it; 1.5 s for scheduling on two cores
/// shared with other builds (measured: ≤ 0.97 s over the takeover).
const DETECTION_MARGIN: Duration = Duration::from_millis(2_500);
/// Channels, and instances.
const CHANNELS: usize = 60;
const INSTANCES: usize = 3;
/// Lines a second over all channels.
const RATE: f64 = 1_000.0;

/// One line the fake sent.
#[derive(Debug, Clone)]
struct Line {
    channel: usize,
    sent: DateTime<Utc>,
    /// Went to at least one connection joined to its channel.
    delivered: bool,
}

/// A gap window of one channel.
#[derive(Debug, Clone)]
struct Gap {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Gap {
    fn covers(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.to
    }
    fn width(&self) -> Duration {
        (self.to - self.from).to_std().unwrap_or_default()
    }
}

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

fn privmsg(channel: &str, tag: &str, i: usize) -> String {
    let u = i % 7;
    format!(
        "@badge-info=;badges=;color=#1E90FF;display-name=User{u};emotes=;id={tag}-{i};mod=0;room-id=1;subscriber=0;tmi-sent-ts={};turbo=0;user-id={u};user-type= :user{u}!user{u}@user{u}.tmi.twitch.tv PRIVMSG #{channel} :fleet line {i}",
        Utc::now().timestamp_millis()
    )
}

/// The fleet, its fake Twitch and its consumer.
struct FleetStack {
    dir: tempfile::TempDir,
    fake: Arc<FakeIrc>,
    fleet: String,
    exchange: String,
    queue: String,
    channels: Vec<String>,
    consumer: Service,
    /// `None` once killed.
    ingestors: Vec<Option<Service>>,
    names: Vec<String>,
    /// Where cleanup connects.
    admin_url: String,
}

impl Drop for FleetStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in self.ingestors.iter().flatten() {
                s.dump_logs();
            }
            self.consumer.dump_logs();
        }
    }
}

impl FleetStack {
    /// Starts the consumer on `consumer_url`, then the instances, the i-th
    /// on `ingestor_urls[i]`, and waits until each reads 20 channels.
    async fn start(consumer_url: &str, ingestor_urls: &[String]) -> Self {
        Self::start_with(consumer_url, ingestor_urls, CHANNELS, &[]).await
    }

    /// [`FleetStack::start`] with `channels` channels and `extra` settings
    /// for every instance.
    async fn start_with(
        consumer_url: &str,
        ingestor_urls: &[String],
        channels: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeIrc::start().await);
        let exchange = unique("e2e-fleet-x");
        let queue = unique("e2e-fleet-q");
        let fleet = unique("e2e-fleet");
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let channels: Vec<String> = (0..channels).map(|i| format!("f{tag}_{i}")).collect();
        let consumer_env = vec![
            ("AMQP_URL".into(), consumer_url.to_owned()),
            ("CHAT_EXCHANGE".into(), exchange.clone()),
            ("CONSUMER_QUEUE".into(), queue.clone()),
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("chatbus.sqlite").display()),
            ),
        ];
        let consumer = Service::start("consumer", consumer_env, dir.path()).await;
        e2e::wait_for_queue(consumer_url, &queue).await;
        let names: Vec<String> = (0..INSTANCES).map(|i| format!("{fleet}-i{i}")).collect();
        let starts = (0..INSTANCES).map(|i| {
            let d = subdir(dir.path(), &format!("ingestor-{i}"));
            let mut env: Vec<(String, String)> = vec![
                ("AMQP_URL".into(), ingestor_urls[i].clone()),
                ("CHAT_EXCHANGE".into(), exchange.clone()),
                ("TWITCH_IRC_ADDR".into(), fake.addr().to_string()),
                ("TWITCH_IRC_TLS".into(), "false".into()),
                ("TWITCH_CHANNELS".into(), channels.join(",")),
                ("TWITCH_JOIN_TIMEOUT".into(), "2s".into()),
                ("SPOOL_DIR".into(), d.join("spool").display().to_string()),
                ("AMQP_RECONNECT_MAX_DELAY".into(), "1s".into()),
                ("INGESTOR_FLEET".into(), fleet.clone()),
                ("INGESTOR_INSTANCE".into(), names[i].clone()),
            ];
            env.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            async move { Service::start("ingestor", env, &d).await }
        });
        let ingestors = futures::future::join_all(starts)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let stack = Self {
            dir,
            fake,
            fleet,
            exchange,
            queue,
            channels,
            consumer,
            ingestors,
            names,
            admin_url: consumer_url.to_owned(),
        };
        stack.wait_even(INSTANCES, 180).await;
        stack
    }

    /// Waits until `n` logins read every channel, each once, evenly.
    async fn wait_even(&self, n: usize, secs: u64) {
        let total = self.channels.len();
        let per = total / n;
        eventually(secs, &format!("{total} channels over {n}"), || async {
            let by = self.fake.joined_by_nick();
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for joined in by.values() {
                for c in joined {
                    *seen.entry(c.as_str()).or_insert(0) += 1;
                }
            }
            (by.len() == n
                && seen.len() == total
                && seen.values().all(|k| *k == 1)
                && by.values().all(|j| j.len().abs_diff(per) <= 1))
            .then_some(())
        })
        .await;
    }

    fn ingestor(&self, i: usize) -> &Service {
        self.ingestors[i].as_ref().expect("a running instance")
    }

    /// `GET /fleet` of instance `i`.
    async fn view(&self, i: usize) -> serde_json::Value {
        self.ingestor(i).get_json("/fleet").await
    }

    /// The instance (index) holding the lease, as instance `asked` sees it.
    async fn leader(&self, asked: usize) -> Option<usize> {
        let v = self.view(asked).await;
        let name = v["leases"]["leader"].as_str()?;
        self.names.iter().position(|n| n == name)
    }

    /// The channels assigned to instance `i` and the login that reads
    /// exactly those.
    async fn holdings(&self, i: usize) -> (BTreeSet<String>, String) {
        eventually(
            30,
            "the assignment matches what the logins read",
            || async {
                let v = self.view(i).await;
                let owned: BTreeSet<String> = v["channels"]["twitch"]
                    .as_object()?
                    .iter()
                    .filter(|(_, c)| c["owner"] == self.names[i].as_str())
                    .map(|(ch, _)| ch.clone())
                    .collect();
                let nick = self
                    .fake
                    .joined_by_nick()
                    .into_iter()
                    .find(|(_, joined)| *joined == owned)?
                    .0;
                (!owned.is_empty()).then_some((owned, nick))
            },
        )
        .await
    }

    /// Sends `RATE` lines a second, round robin over the channels, until
    /// `stop`; each line's channel, send time and whether it found a reader.
    fn load(&self, tag: &str, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<Line>> {
        let fake = self.fake.clone();
        let channels = self.channels.clone();
        let tag = tag.to_owned();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut lines: Vec<Line> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !stop.is_cancelled() {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * RATE) as usize;
                while lines.len() < due {
                    let i = lines.len();
                    let channel = i % channels.len();
                    let line = privmsg(&channels[channel], &tag, i);
                    let sent = Utc::now();
                    let delivered = fake.send_lines(std::slice::from_ref(&line)) == 1;
                    lines.push(Line {
                        channel,
                        sent,
                        delivered,
                    });
                }
            }
            lines
        })
    }

    /// The first JOIN of each of `channels` the server read after `since`.
    fn joins_after(
        &self,
        channels: &BTreeSet<String>,
        since: Instant,
    ) -> BTreeMap<String, Instant> {
        let mut first = BTreeMap::new();
        for r in self.fake.received_command("JOIN") {
            if r.at <= since {
                continue;
            }
            for c in r.line.split_whitespace().nth(1).unwrap_or("").split(',') {
                let c = c.trim_start_matches('#');
                if channels.contains(c) {
                    first.entry(c.to_owned()).or_insert(r.at);
                }
            }
        }
        first
    }

    /// The `fleet_takeover` gaps stored, by channel.
    async fn gaps(&self) -> BTreeMap<String, Vec<Gap>> {
        let mut by: BTreeMap<String, Vec<Gap>> = BTreeMap::new();
        for s in e2e::stored_events(self.consumer.http, "kind=gap").await {
            if let EventBody::Gap(d) = &s.event.body
                && d.reason == "fleet_takeover"
            {
                by.entry(s.event.channel.clone()).or_default().push(Gap {
                    from: d.started_at,
                    to: d.ended_at,
                });
            }
        }
        by
    }

    /// Stored rows and distinct ids of the messages tagged `tag`.
    async fn stored(&self, tag: &str) -> (usize, BTreeSet<usize>) {
        let prefix = format!("{tag}-");
        let mut rows = 0;
        let mut ids = BTreeSet::new();
        for s in e2e::stored_events(self.consumer.http, "kind=message").await {
            if let Some(n) = s.event.id.strip_prefix(&prefix) {
                rows += 1;
                ids.insert(n.parse::<usize>().unwrap());
            }
        }
        (rows, ids)
    }

    /// Stops what still runs and deletes the stack's and the fleet's
    /// broker objects.
    async fn stop(mut self) {
        for s in self.ingestors.iter_mut().flatten() {
            s.stop().await;
        }
        self.consumer.stop().await;
        let conn = rabbit::connect_to(&self.admin_url, "e2e-fleet-cleanup").await;
        e2e::delete_bus_objects(&conn, &self.exchange, &self.queue).await;
        delete_fleet_objects(&conn, &self.fleet).await;
        common::amqp::close(&conn, "cleanup").await;
        let _ = &self.dir;
    }
}

/// Deletes a fleet's lease queue, wanted-set stream and exchange.
async fn delete_fleet_objects(conn: &lapin::Connection, fleet: &str) {
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in [
        format!("chat.fleet.{fleet}.leader"),
        format!("chat.fleet.{fleet}.wanted"),
    ] {
        let _ = ch
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = ch
        .exchange_delete(
            format!("chat.fleet.{fleet}").as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await;
}

/// How many of `channels` the login `nick` reads.
fn by_nick_count(fake: &FakeIrc, nick: &str, channels: &BTreeSet<String>) -> usize {
    fake.joined_by_nick()
        .get(nick)
        .map_or(0, |j| j.intersection(channels).count())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Kills (`kill`) instance `victim` while the load flows, waits until its
/// channels are read by others, then checks the bounds and prints the
/// figures. `kill` runs at the moment of death (its own extra fault too).
async fn takeover_drill<F, Fut>(stack: &mut FleetStack, victim: usize, tag: &str, kill: F)
where
    F: FnOnce(Service) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (taken, nick) = stack.holdings(victim).await;
    let stop = CancellationToken::new();
    let load = stack.load(tag, stop.clone());
    // Pacing: three seconds of steady load before the kill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let service = stack.ingestors[victim].take().unwrap();
    let killed_at = Instant::now();
    let killed_utc = Utc::now();
    kill(service).await;
    eprintln!(
        "killed {} ({} channels, login {nick})",
        stack.names[victim],
        taken.len()
    );
    let read_again = eventually(
        TAKEOVER.as_secs() + 60,
        "the victim's channels read by others",
        || async {
            let joined: BTreeSet<String> = stack
                .fake
                .joined_by_nick()
                .into_iter()
                .filter(|(n, _)| *n != nick)
                .flat_map(|(_, j)| j)
                .collect();
            taken.is_subset(&joined).then(Instant::now)
        },
    )
    .await;
    // Pacing: two more seconds of load after the rejoin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let lines = load.await.unwrap();

    let joins = stack.joins_after(&taken, killed_at);
    assert_eq!(
        joins.len(),
        taken.len(),
        "a JOIN for each channel taken over"
    );
    let first = *joins.values().min().unwrap();
    let last = *joins.values().max().unwrap();
    let detection = first - killed_at;
    let rejoin = last - first;
    eprintln!(
        "detection {:.2} s (kill -> first JOIN by a survivor), rejoin {:.2} s (first -> last JOIN), all read again {:.2} s after the kill",
        detection.as_secs_f64(),
        rejoin.as_secs_f64(),
        (read_again - killed_at).as_secs_f64()
    );
    assert!(
        detection <= TAKEOVER + DETECTION_MARGIN,
        "death seen within the takeover time + {DETECTION_MARGIN:?}: {detection:?}"
    );
    // The survivors' own budgets (20 per 10 s each) cover 20 channels at
    // once: the whole rejoin fits in one budget window.
    assert!(
        rejoin <= Duration::from_secs(10),
        "rejoined within the JOIN budget: {rejoin:?}"
    );

    let gaps = eventually(60, "a takeover gap for each channel", || async {
        let gaps = stack.gaps().await;
        taken.iter().all(|c| gaps.contains_key(c)).then_some(gaps)
    })
    .await;
    let bound = detection + rejoin + Duration::from_secs(2);
    let mut widest = Duration::ZERO;
    for (channel, gs) in &gaps {
        assert!(
            taken.contains(channel),
            "a gap on {channel}, not taken over"
        );
        for g in gs {
            assert!(
                g.from <= killed_utc + chrono::Duration::milliseconds(10),
                "{channel}: the gap starts before the kill ({g:?})"
            );
            assert!(
                g.width() <= bound,
                "{channel}: gap {:?} wider than detection + rejoin + 2 s = {bound:?}",
                g.width()
            );
            widest = widest.max(g.width());
        }
    }
    let in_gap = |l: &Line| {
        gaps.get(&stack.channels[l.channel])
            .is_some_and(|gs| gs.iter().any(|g| g.covers(l.sent)))
    };
    let must: BTreeSet<usize> = (0..lines.len()).filter(|i| !in_gap(&lines[*i])).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (rows, ids) = loop {
        let (rows, ids) = stack.stored(tag).await;
        if must.is_subset(&ids) {
            break (rows, ids);
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = must
                .difference(&ids)
                .take(10)
                .map(|i| {
                    let l = &lines[*i];
                    let ch = &stack.channels[l.channel];
                    format!(
                        "{tag}-{i} on {ch} (taken over: {}) sent {} delivered {} gaps {:?}",
                        taken.contains(ch),
                        l.sent,
                        l.delivered,
                        gaps.get(ch)
                    )
                })
                .collect();
            panic!(
                "{} lines outside the gaps not stored (kill at {killed_utc}), e.g.\n{}",
                must.difference(&ids).count(),
                missing.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rows, ids.len(), "each line stored once");
    let lost: Vec<usize> = (0..lines.len()).filter(|i| !ids.contains(i)).collect();
    assert!(
        lost.iter().all(|i| in_gap(&lines[*i])),
        "every lost line inside a gap"
    );
    let undelivered = lines.iter().filter(|l| !l.delivered).count();
    assert!(
        lines.iter().filter(|l| !l.delivered).all(in_gap),
        "every line sent while nobody read its channel inside a gap"
    );
    // Per channel: last stored line before the kill -> first stored after.
    let mut takeovers: Vec<f64> = Vec::new();
    for channel in &taken {
        let c = stack.channels.iter().position(|x| x == channel).unwrap();
        let stored_sends: Vec<DateTime<Utc>> = ids
            .iter()
            .map(|i| &lines[*i])
            .filter(|l| l.channel == c)
            .map(|l| l.sent)
            .collect();
        let before = stored_sends.iter().filter(|t| **t <= killed_utc).max();
        let after = stored_sends.iter().filter(|t| **t > killed_utc).min();
        if let (Some(b), Some(a)) = (before, after) {
            takeovers.push((*a - *b).num_milliseconds() as f64 / 1000.0);
        }
    }
    takeovers.sort_by(f64::total_cmp);
    eprintln!(
        "{} lines sent at {RATE} a second, {} lost (all inside {} takeover gaps, widest {:.2} s, bound {:.2} s), {undelivered} sent while nobody read, {} stored once each",
        lines.len(),
        lost.len(),
        gaps.values().map(Vec::len).sum::<usize>(),
        widest.as_secs_f64(),
        bound.as_secs_f64(),
        ids.len()
    );
    eprintln!(
        "fleet-drill: detection_ms={} rejoin_ms={} lost={} takeover_ms={}",
        detection.as_millis(),
        rejoin.as_millis(),
        lost.len(),
        takeovers
            .iter()
            .map(|t| format!("{:.0}", t * 1000.0))
            .collect::<Vec<_>>()
            .join(",")
    );
    eprintln!(
        "per-channel takeover (last line read before -> first read after): p50 {:.2} s, p99 {:.2} s",
        percentile(&takeovers, 50.0),
        percentile(&takeovers, 99.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_fleet_an_instance_killed_under_load_is_taken_over_within_the_bound() {
    let url = rabbit::amqp_url();
    let urls = vec![url.clone(); INSTANCES];
    let mut stack = FleetStack::start(&url, &urls).await;
    // The leader: its lease moves too (the harder case).
    let victim = eventually(30, "a leader", || stack.leader(0)).await;
    takeover_drill(&mut stack, victim, "fkill", |mut s| async move {
        s.kill9().await;
    })
    .await;
    stack.wait_even(INSTANCES - 1, 60).await;
    let survivor = (victim + 1) % INSTANCES;
    let leader = eventually(30, "a new leader", || async {
        stack.leader(survivor).await.filter(|l| *l != victim)
    })
    .await;
    eprintln!("{} leads now", stack.names[leader]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_fleet_the_lease_queue_leader_node_and_the_leading_instance_die_together() {
    let cluster = Cluster::ensure();
    let all = cluster.urls();
    // Every instance on node 1 first: the lease queue's leader node is
    // where its first declarer was, so its death cuts the survivors' fleet
    // sessions too; they reconnect to another node within the takeover
    // time, or they too would be taken over. The consumer starts on node 2.
    let urls = vec![all.clone(); INSTANCES];
    let mut stack = FleetStack::start(&rotated(&all, 1), &urls).await;
    let lease_queue = format!("chat.fleet.{}.leader", stack.fleet);
    assert_eq!(
        cluster.queue_type(&lease_queue).await.as_deref(),
        Some("quorum"),
        "several broker addresses: the lease queue is a quorum queue"
    );
    let node = cluster.leader_of(&lease_queue).await.expect("its leader");
    let victim = eventually(30, "a leader", || stack.leader(0)).await;
    let cluster = &cluster;
    takeover_drill(&mut stack, victim, "fnode", |mut s| async move {
        s.kill9().await;
        cluster.kill(node);
        eprintln!("killed node {node}, the lease queue's leader");
    })
    .await;
    let moved = eventually(60, "a new lease queue leader", || async {
        cluster.leader_of(&lease_queue).await.filter(|n| *n != node)
    })
    .await;
    eprintln!("the lease queue's leader moved to node {moved}");
    for (i, s) in stack.ingestors.iter().enumerate() {
        if let Some(s) = s {
            eprintln!(
                "{}: {} fleet reconnects",
                stack.names[i],
                s.metric("chatbus_ingestor_fleet_reconnects_total").await
            );
        }
    }
    stack.wait_even(INSTANCES - 1, 60).await;
    let survivor = (victim + 1) % INSTANCES;
    let leader = eventually(30, "a new leading instance", || async {
        stack.leader(survivor).await.filter(|l| *l != victim)
    })
    .await;
    eprintln!("{} leads now", stack.names[leader]);
    cluster.restart(node).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_fleet_an_instance_cut_off_the_broker_is_taken_over_and_reads_twice_only_until_it_is_back()
 {
    let url = rabbit::amqp_url();
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut stack = {
        // The leader is whoever comes first; the cut-off one is instance 2.
        let mut urls = vec![url.clone(); INSTANCES];
        urls[2] = proxy.url(&url);
        FleetStack::start(&url, &urls).await
    };
    let victim = 2;
    // A member, not the leader: cut off, it keeps its channels.
    if stack.leader(0).await == Some(victim) {
        eprintln!("instance 2 leads; the drill cuts off a member: restarting it");
        let i = stack.ingestors[victim].as_mut().unwrap();
        i.restart().await;
        stack.wait_even(INSTANCES, 120).await;
    }
    let (taken, nick) = stack.holdings(victim).await;
    let tag = "ffreeze";
    let stop = CancellationToken::new();
    let load = stack.load(tag, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frozen_at = Instant::now();
    proxy.black_hole();
    eprintln!(
        "black-holed {}'s broker route ({} channels, login {nick})",
        stack.names[victim],
        taken.len()
    );
    // Others take its channels over while it still reads them.
    let twice_since = eventually(
        TAKEOVER.as_secs() + 60,
        "its channels read twice",
        || async {
            let by = stack.fake.joined_by_nick();
            let others: BTreeSet<&String> = by
                .iter()
                .filter(|(n, _)| **n != nick)
                .flat_map(|(_, j)| j)
                .collect();
            let still = by.get(&nick).is_some_and(|j| taken.is_subset(j));
            (still && taken.iter().all(|c| others.contains(c))).then(Instant::now)
        },
    )
    .await;
    let joins = stack.joins_after(&taken, frozen_at);
    let first = *joins.values().min().unwrap();
    let last = *joins.values().max().unwrap();
    let detection = first - frozen_at;
    eprintln!(
        "taken over {:.2} s after the freeze (rejoin {:.2} s); all read twice at {:.2} s",
        detection.as_secs_f64(),
        (last - first).as_secs_f64(),
        (twice_since - frozen_at).as_secs_f64()
    );
    assert!(
        detection <= TAKEOVER + DETECTION_MARGIN,
        "taken over within the takeover time + {DETECTION_MARGIN:?}: {detection:?}"
    );
    // The route stays black-holed as long again as the takeover time.
    tokio::time::sleep(TAKEOVER).await;
    let healed_at = Instant::now();
    proxy.heal();
    eprintln!("healed the route");
    // Double reading ends when each channel has one reader again: the
    // cut-off instance parts it, or keeps it and its successor parts it
    // (the leader gives the returning instance its share back).
    let mut single: BTreeMap<String, Instant> = BTreeMap::new();
    testkit::within(60, "every channel read once again", async {
        loop {
            let by = stack.fake.joined_by_nick();
            let now = Instant::now();
            for c in &taken {
                if !single.contains_key(c) && by.values().filter(|j| j.contains(c)).count() == 1 {
                    single.insert(c.clone(), now);
                }
            }
            if single.len() == taken.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let back = *single.values().max().unwrap() - healed_at;
    let mut twice: Vec<f64> = taken
        .iter()
        .map(|c| (single[c] - joins[c]).as_secs_f64())
        .collect();
    twice.sort_by(f64::total_cmp);
    let kept = by_nick_count(&stack.fake, &nick, &taken);
    eprintln!(
        "read once again {:.2} s after the route healed ({kept} of its channels given back to it); read twice {:.2}..{:.2} s per channel (black hole {:.2} s)",
        back.as_secs_f64(),
        twice[0],
        twice[twice.len() - 1],
        (healed_at - frozen_at).as_secs_f64()
    );
    // Back on the broker: it reconnects (≤ 1 s, AMQP_RECONNECT_MAX_DELAY),
    // hears the assignment and sees the new owners reading (a beat or two).
    assert!(
        back <= Duration::from_secs(5),
        "a cut-off instance stops reading twice within 5 s of its return: {back:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let lines = load.await.unwrap();
    assert!(
        lines.iter().all(|l| l.delivered),
        "somebody read every line"
    );
    let all: BTreeSet<usize> = (0..lines.len()).collect();
    let (rows, ids) = eventually(180, "every line stored", || async {
        let (rows, ids) = stack.stored(tag).await;
        (ids == all).then_some((rows, ids))
    })
    .await;
    assert_eq!(rows, ids.len(), "each line stored once");
    let gaps = stack.gaps().await;
    assert!(
        gaps.keys().all(|c| taken.contains(c)) && gaps.values().all(|g| g.len() == 1),
        "one takeover gap on each channel taken over, none elsewhere: {gaps:?}"
    );
    eprintln!(
        "{} lines sent, each read, {} stored once each; {} takeover gaps (conservative: the cut-off instance went on reading)",
        lines.len(),
        ids.len(),
        gaps.values().map(Vec::len).sum::<usize>()
    );
    stack.wait_even(INSTANCES, 60).await;
    stack.stop().await;
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // After the `(comm)` field: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The broker's extra load from a fleet at rest (docs/scaling.md "A
/// fleet"): 3 instances, 300 channels, no chat; the fleet exchange's
/// traffic as a queue bound to it receives it, the management API's
/// publish rates, and the broker's CPU (its `beam.smp`, from /proc) over
/// 60 s without and 60 s with the fleet. A measurement, not a check:
/// `cargo test -p e2e --test fleet fleet_at_rest -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 3-minute measurement"]
async fn fleet_at_rest_load_on_the_broker() {
    use futures::StreamExt;
    const WINDOW: Duration = Duration::from_secs(60);
    let mgmt = testkit::rabbit::Management::new(rabbit::management_url());
    let nodes = mgmt.get_json("/api/nodes").await.unwrap();
    let pid = nodes[0]["os_pid"]
        .as_str()
        .and_then(|p| p.parse::<u64>().ok())
        .or_else(|| nodes[0]["os_pid"].as_u64())
        .expect("the broker's os_pid");
    let before = cpu_seconds(pid);
    tokio::time::sleep(WINDOW).await;
    let idle = (cpu_seconds(pid) - before) / WINDOW.as_secs_f64();

    let url = rabbit::amqp_url();
    let stack = FleetStack::start_with(
        &url,
        &vec![url.clone(); INSTANCES],
        300,
        // At rest is what is measured: no need to wait out the JOIN budget.
        &[("TWITCH_JOIN_LIMIT", "2000")],
    )
    .await;
    let conn = rabbit::connect_to(&url, "e2e-fleet-tap").await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let exchange = format!("chat.fleet.{}", stack.fleet);
    ch.queue_bind(
        q.name().clone(),
        exchange.as_str().into(),
        "".into(),
        lapin::options::QueueBindOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let mut tap = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let before = cpu_seconds(pid);
    let started = Instant::now();
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at((started + WINDOW).into(), tap.next()).await
    {
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap_or_default();
        let e = by_type
            .entry(v["type"].as_str().unwrap_or("?").to_owned())
            .or_default();
        e.0 += 1;
        e.1 += d.data.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let busy = (cpu_seconds(pid) - before) / secs;
    let stats = mgmt
        .get_json(&format!("/api/exchanges/%2F/{exchange}"))
        .await
        .unwrap();
    let rate = |k: &str| {
        stats["message_stats"][k]["rate"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    for (t, (n, bytes)) in &by_type {
        eprintln!(
            "fleet at rest: {t}: {:.2} messages/s, {:.1} KiB/s into the exchange ({} bytes each on average)",
            *n as f64 / secs,
            *bytes as f64 / secs / 1024.0,
            bytes / n.max(&1)
        );
    }
    eprintln!(
        "fleet at rest: management API: publish_in {:.2}/s, publish_out {:.2}/s on {exchange}",
        rate("publish_in_details"),
        rate("publish_out_details")
    );
    eprintln!(
        "fleet at rest: broker beam.smp CPU {:.1} % of a core without the fleet, {:.1} % with 3 instances at rest over 300 channels ({secs:.0} s each)",
        idle * 100.0,
        busy * 100.0
    );
    common::amqp::close(&conn, "measured").await;
    stack.stop().await;
}
