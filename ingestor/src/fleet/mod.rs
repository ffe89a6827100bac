//! Ingestors as a fleet (`INGESTOR_FLEET`, docs/scaling.md "A fleet"):
//! every instance of one deployment shares one wanted set of channels, and
//! each channel is read by exactly one live instance, assigned evenly and
//! moved within seconds when an instance dies.
//!
//! All of it on RabbitMQ, no other server and no home-made consensus:
//!
//! * **The wanted set**: the stream `chat.fleet.<name>.wanted`, each entry
//!   `{platform, channel, wanted, at}`, replayed from its start by every
//!   instance; the latest `at` wins, so a restart never re-adds a channel
//!   parted at runtime. An instance adds the channels its configuration
//!   names only if the set has never heard of them.
//! * **Who is alive**: every instance publishes a heartbeat each second to
//!   the fanout exchange `chat.fleet.<name>` (each reads them on an
//!   exclusive queue of its own): its channels, when it last read each,
//!   its caps, whether it is draining. Silent for `INGESTOR_FLEET_TAKEOVER`
//!   (10 s): dead.
//! * **The leader**: the single-active-consumer queue
//!   `chat.fleet.<name>.leader` holds one token message. AMQP 0-9-1 has no
//!   "you are active" signal, so the lease *is* the token, held unacked by
//!   the active consumer; the broker gives it to the next consumer when the
//!   holder's connection goes (a kill at once; a lost host after the fleet
//!   connection's AMQP heartbeat, a fifth of the takeover time). The holder
//!   renews it (nack, requeue: it comes back to the active consumer) every
//!   five minutes, well before RabbitMQ's 30-minute consumer timeout. SAC
//!   never rebalances, hence a leader that assigns ([`assign`]).
//! * **The assignment**: the leader publishes channel → owner each second
//!   on the fanout exchange; each instance joins what is its own and parts
//!   what was moved away only once the new owner reports reading it (a
//!   clean handover overlaps; the store deduplicates by message id). A
//!   channel taken from a dead instance gets a `gap` event from the last
//!   moment anyone reported reading it to the rejoin. A report's "reading
//!   at" is the moment up to which what the instance read is confirmed by
//!   the broker (minus [`READ_LAG`]), not the moment of the report: a line
//!   read but unconfirmed when an instance dies dies with its spool, and
//!   must fall inside the gap.
//! * **Cut off**: an instance that loses the broker keeps reading what it
//!   has (no fencing: a channel is never left unread). Its channels are
//!   given to others after the takeover time, and read twice until it is
//!   back and sees the assignment.

pub mod assign;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::amqp::stream::{self, Follow, FollowOptions};
use common::amqp::{
    AmqpError, ConnectOptions, QueueSpec, Session, SessionEnd, close_channel, declare_queue, short,
};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::channels::JoinState;
use crate::platforms::seam::Source;

/// How often an instance reports and the leader assigns.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a (re)connected instance listens before it assigns or
/// applies: two beats, so every live member was heard.
const SETTLE: Duration = Duration::from_secs(2);
/// How often the leader renews its token (RabbitMQ closes a channel that
/// holds a delivery unacked for 30 minutes).
const RENEW_EVERY: Duration = Duration::from_secs(300);
/// How often an instance notes how far its outbox has got (the
/// resolution of its reports' "read and confirmed up to").
const MARK_EVERY: Duration = Duration::from_millis(100);
/// Allowance for a line Twitch sent before a moment but that the instance
/// appended to its outbox after it (socket buffer, parsing).
pub const READ_LAG: Duration = Duration::from_millis(250);
/// The gap reason of a channel taken over from a dead instance.
pub const TAKEOVER_REASON: &str = "fleet_takeover";

/// What a fleet instance is configured with.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The fleet's name (`INGESTOR_FLEET`).
    pub name: String,
    /// This instance's name.
    pub instance: String,
    /// Silence after which an instance is dead.
    pub takeover: Duration,
    /// The broker (the publisher's URLs); the fleet's connections get an
    /// AMQP heartbeat of a fifth of `takeover`.
    pub connect: ConnectOptions,
    /// A cluster: the leader queue is a quorum queue.
    pub replicated: bool,
}

impl FleetSettings {
    fn exchange(&self) -> String {
        format!("chat.fleet.{}", self.name)
    }
    fn leader_queue(&self) -> String {
        format!("chat.fleet.{}.leader", self.name)
    }
    fn wanted_stream(&self) -> String {
        format!("chat.fleet.{}.wanted", self.name)
    }
    /// The connect options with the fleet's AMQP heartbeat.
    fn fleet_connect(&self, what: &str) -> ConnectOptions {
        let secs = (self.takeover.as_secs() / 5).clamp(1, 60);
        let urls: Vec<String> = common::amqp::split_urls(&self.connect.url)
            .into_iter()
            .map(|u| with_heartbeat(u, secs))
            .collect();
        let mut options = self.connect.clone();
        options.url = urls.join(",");
        options.name = format!("chatbus-ingestor {} fleet {what}", self.instance);
        options
    }
}

/// `url` with its AMQP heartbeat set to `secs` (replacing one it had).
fn with_heartbeat(url: &str, secs: u64) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("heartbeat="))
        .collect();
    let beat = format!("heartbeat={secs}");
    params.push(&beat);
    format!("{base}?{}", params.join("&"))
}

/// One entry of the wanted set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedEntry {
    /// The platform.
    pub platform: String,
    /// The channel word.
    pub channel: String,
    /// Joined (`true`) or parted.
    pub wanted: bool,
    /// When it was decided: the latest wins.
    pub at: DateTime<Utc>,
    /// Which instance recorded it.
    pub by: String,
}

/// What one platform of an instance reports each beat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformReport {
    /// Most channels it may read.
    pub cap: usize,
    /// The account it reads as, with that account's cap, when the
    /// platform limits accounts across connections.
    pub account: Option<(String, usize)>,
    /// Channels it reads now (joined), with the moment of this report.
    pub reading: BTreeMap<String, DateTime<Utc>>,
    /// Channels it holds but lost (disconnected, unreachable), with the
    /// last moment it surely read them.
    pub lost: BTreeMap<String, DateTime<Utc>>,
    /// What the source shares with the fleet (YouTube: its quota spent
    /// today), [`Source::fleet_state`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

/// An instance's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its name.
    pub instance: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// When the instance started.
    pub started_at: DateTime<Utc>,
    /// It holds the leader token.
    pub leader: bool,
    /// It is stopping: give its channels to others.
    pub draining: bool,
    /// By platform.
    pub platforms: BTreeMap<String, PlatformReport>,
}

/// The leader's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The leader that made it.
    pub leader: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Platform → channel → owner.
    pub owners: BTreeMap<String, BTreeMap<String, String>>,
}

/// A message on the fleet exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Heartbeat(Heartbeat),
    Assignment(Assignment),
}

#[derive(Debug)]
struct Member {
    beat: Heartbeat,
    seen: Instant,
}

#[derive(Debug, Default)]
struct State {
    members: BTreeMap<String, Member>,
    assignment: Option<Assignment>,
    /// (platform, channel) → (wanted, at).
    wanted: BTreeMap<(String, String), (bool, DateTime<Utc>)>,
    /// This instance holds the lease.
    leader: bool,
    /// The fleet session is connected.
    connected: bool,
}

/// A wanted-set change to publish, and who waits for it.
struct Want {
    entry: WantedEntry,
    done: oneshot::Sender<Result<(), String>>,
}

/// A fleet member: its view of the fleet, and what it reads.
pub struct Fleet {
    settings: FleetSettings,
    sources: Vec<Arc<dyn Source>>,
    state: Mutex<State>,
    wanted_loaded: Follow,
    wants: Mutex<Option<mpsc::UnboundedReceiver<Want>>>,
    want_tx: mpsc::UnboundedSender<Want>,
    draining: std::sync::atomic::AtomicBool,
    started_at: DateTime<Utc>,
    initial: Vec<(String, String)>,
    leading: tokio::sync::watch::Sender<bool>,
    outbox: std::sync::OnceLock<Arc<crate::outbox::Outbox>>,
    /// (moment, the outbox's next seq then), oldest first, and the latest
    /// moment up to which everything appended is confirmed.
    marks: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    pending: std::collections::VecDeque<(DateTime<Utc>, u64)>,
    durable: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.settings.name)
            .field("instance", &self.settings.instance)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Joins the fleet: starts following its wanted set. `initial`: the
    /// channels the configuration names, `(platform, channel)`, added to
    /// the set if it never heard of them. Run [`Fleet::run`] next.
    pub fn start(
        settings: FleetSettings,
        sources: Vec<Arc<dyn Source>>,
        initial: Vec<(String, String)>,
        cancel: &CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (want_tx, wants) = mpsc::unbounded_channel();
        let mut follower = None;
        let fleet = Arc::new_cyclic(|weak: &std::sync::Weak<Fleet>| {
            let weak = weak.clone();
            let (wanted_loaded, task) = stream::follow(
                FollowOptions {
                    connect: settings.fleet_connect("wanted"),
                    queue: settings.wanted_stream(),
                    sync_body: b"{}".to_vec(),
                    what: "fleet wanted set",
                },
                move |entry: WantedEntry| {
                    if let Some(fleet) = weak.upgrade() {
                        fleet.apply_wanted(&entry);
                    }
                },
                cancel.clone(),
            );
            follower = Some(task);
            Fleet {
                settings,
                sources,
                state: Mutex::new(State::default()),
                wanted_loaded,
                wants: Mutex::new(Some(wants)),
                want_tx,
                draining: std::sync::atomic::AtomicBool::new(false),
                started_at: Utc::now(),
                initial,
                leading: tokio::sync::watch::channel(false).0,
                outbox: std::sync::OnceLock::new(),
                marks: Mutex::new(Marks::default()),
            }
        });
        (fleet, follower.expect("the follower was started"))
    }

    /// Whether this instance leads, as it changes: what only one instance
    /// at a time does (taking commands) follows it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// The outbox whose confirmations say up to when what this instance
    /// read is safe (its reports' reading times). Without one, a report's
    /// time is its own.
    pub fn watch_outbox(&self, outbox: Arc<crate::outbox::Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// Notes how far the outbox has got, and moves the durable moment to
    /// the latest noted one whose entries are all confirmed.
    fn mark(&self) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        // The moment first: whatever was appended before it is below the
        // seq read after it.
        let now = Utc::now();
        let next = outbox.next_seq();
        let confirmed = outbox.confirmed_below();
        let mut marks = self.marks.lock().expect("fleet marks lock");
        // Bounded: a broker that confirms nothing for long leaves the
        // durable moment where it was (conservative), not the marks grow.
        if marks.pending.len() < 100_000 {
            marks.pending.push_back((now, next));
        }
        while let Some(&(at, seq)) = marks.pending.front() {
            if seq > confirmed {
                break;
            }
            marks.durable = Some(at);
            marks.pending.pop_front();
        }
    }

    /// The moment up to which what this instance read is surely in the
    /// broker (its reports' reading time), at most `now`.
    fn read_safe_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.outbox.get().is_none() {
            return now;
        }
        self.mark();
        let durable = self
            .marks
            .lock()
            .expect("fleet marks lock")
            .durable
            .unwrap_or(self.started_at);
        let lag = chrono::Duration::from_std(READ_LAG).unwrap_or_default();
        (durable - lag).min(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fleet state lock")
    }

    fn apply_wanted(&self, entry: &WantedEntry) {
        let mut state = self.lock();
        let key = (entry.platform.clone(), entry.channel.clone());
        match state.wanted.get(&key) {
            Some((_, at)) if *at > entry.at => {}
            _ => {
                state.wanted.insert(key, (entry.wanted, entry.at));
            }
        }
    }

    /// Records `channel` of `platform` as wanted (`true`) or parted in the
    /// fleet's set, once the broker confirmed it.
    ///
    /// # Errors
    /// When the fleet is not connected in time or the broker refuses.
    pub async fn want(&self, platform: &str, channel: &str, wanted: bool) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        let entry = WantedEntry {
            platform: platform.to_owned(),
            channel: channel.to_owned(),
            wanted,
            at: Utc::now(),
            by: self.settings.instance.clone(),
        };
        self.want_tx
            .send(Want { entry, done })
            .map_err(|_| "the fleet is stopping".to_owned())?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the fleet is stopping".into()),
            Err(_) => Err("the fleet's broker did not confirm within 10 s".into()),
        }
    }

    /// Whether `channel` of `platform` is in the wanted set.
    pub fn is_wanted(&self, platform: &str, channel: &str) -> bool {
        self.lock()
            .wanted
            .get(&(platform.to_owned(), channel.to_owned()))
            .is_some_and(|(w, _)| *w)
    }

    /// Runs the fleet session (heartbeats, the lease, the assignment) until
    /// `cancel`, reconnecting after every loss.
    ///
    /// # Errors
    /// A failure that retrying cannot fix.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some(wants) = self.wants.lock().expect("wants lock").take() else {
            anyhow::bail!("the fleet runs once");
        };
        let options = self.settings.fleet_connect("session");
        let mut session = FleetSession {
            fleet: self.clone(),
            wants,
            defaults_published: false,
            last_assignment: BTreeMap::new(),
        };
        common::amqp::reconnect_loop(&options, &mut session, &cancel).await
    }

    /// Stops taking channels: the leader gives this instance's channels to
    /// others, and it parts each once its new owner reads it. Returns when
    /// it holds none, or after `limit`.
    pub async fn drain(&self, limit: Duration) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(instance = %self.settings.instance, "draining: handing the channels over");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let held: usize = self.sources.iter().map(|s| s.channels().counts().0).sum();
            if held == 0 || !self.lock().connected {
                return;
            }
            let heirs = {
                let state = self.lock();
                state
                    .members
                    .values()
                    .filter(|m| m.beat.instance != self.settings.instance)
                    .filter(|m| self.alive(m) && !m.beat.draining)
                    .count()
            };
            if heirs == 0 {
                tracing::info!(held, "draining: no other instance to hand the channels to");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(held, "drain timed out; stopping with channels still held");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn alive(&self, member: &Member) -> bool {
        member.beat.instance == self.settings.instance
            || member.seen.elapsed() < self.settings.takeover
    }

    /// This instance's heartbeat now.
    fn heartbeat(&self, leader: bool) -> Heartbeat {
        let now = Utc::now();
        let safe = self.read_safe_until(now);
        let mut platforms = BTreeMap::new();
        for source in &self.sources {
            let mut report = PlatformReport {
                cap: source.capacity().max,
                account: source.account().map(|a| (a.name, a.max_channels)),
                state: source.fleet_state(),
                ..PlatformReport::default()
            };
            for info in source.channels().snapshot() {
                match &info.state {
                    JoinState::Joined { .. } => {
                        report.reading.insert(info.channel, safe);
                    }
                    JoinState::Disconnected { since, .. }
                    | JoinState::Unreachable { since, .. } => {
                        report.lost.insert(info.channel, (*since).min(safe));
                    }
                    _ => {}
                }
            }
            platforms.insert(source.platform().to_owned(), report);
        }
        Heartbeat {
            instance: self.settings.instance.clone(),
            at: now,
            started_at: self.started_at,
            leader,
            draining: self.draining.load(std::sync::atomic::Ordering::Relaxed),
            platforms,
        }
    }

    /// The leader's assignment from its view (`previous`: what it assigned
    /// last), with the counts of moves and takeovers it makes.
    fn assign(&self, previous: &BTreeMap<String, BTreeMap<String, String>>) -> Assignment {
        let state = self.lock();
        let alive: Vec<&Member> = state
            .members
            .values()
            .filter(|m| self.alive(m) && !m.beat.draining)
            .collect();
        let alive_ids: BTreeSet<&str> = state
            .members
            .values()
            .filter(|m| self.alive(m))
            .map(|m| m.beat.instance.as_str())
            .collect();
        let mut owners = BTreeMap::new();
        let mut unowned = 0usize;
        for source in &self.sources {
            let platform = source.platform();
            let wanted: BTreeSet<String> = state
                .wanted
                .iter()
                .filter(|((p, _), (w, _))| p == platform && *w)
                .map(|((_, c), _)| c.clone())
                .collect();
            let singleton = source.fleet_singleton();
            let seats: Vec<assign::Seat> = alive
                .iter()
                // A singleton platform is read by the leader (this one).
                .filter(|m| !singleton || m.beat.instance == self.settings.instance)
                .filter_map(|m| {
                    let r = m.beat.platforms.get(platform)?;
                    Some(assign::Seat {
                        id: m.beat.instance.clone(),
                        cap: r.cap,
                        account: r.account.clone(),
                    })
                })
                .collect();
            let mut readers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for m in &alive {
                if let Some(r) = m.beat.platforms.get(platform) {
                    for c in r.reading.keys() {
                        readers
                            .entry(c.clone())
                            .or_default()
                            .insert(m.beat.instance.clone());
                    }
                }
            }
            let before = previous.get(platform).cloned().unwrap_or_default();
            let now = assign::assign(&seats, &wanted, &before, &readers);
            for (channel, owner) in &now {
                match before.get(channel) {
                    Some(old) if old == owner => {}
                    Some(old) if alive_ids.contains(old.as_str()) => {
                        metrics::counter!("chatbus_ingestor_fleet_moves_total", "platform" => platform)
                            .increment(1);
                    }
                    Some(_) => {
                        metrics::counter!("chatbus_ingestor_fleet_takeovers_total", "platform" => platform)
                            .increment(1);
                    }
                    None => {}
                }
            }
            unowned += wanted.len() - now.len();
            owners.insert(platform.to_owned(), now);
        }
        metrics::gauge!("chatbus_ingestor_fleet_unowned_channels").set(unowned as f64);
        Assignment {
            leader: self.settings.instance.clone(),
            at: Utc::now(),
            owners,
        }
    }

    /// Joins what the assignment gives this instance, parts what it moved
    /// away once the new owner reads it (or what nobody wants any more),
    /// and sets each shared account's JOIN share.
    fn apply(&self) {
        let state = self.lock();
        let Some(assignment) = state.assignment.clone() else {
            return;
        };
        let me = self.settings.instance.as_str();
        for source in &self.sources {
            let platform = source.platform();
            let manager = source.channels();
            let owners = assignment.owners.get(platform);
            let mine: BTreeSet<&str> = owners
                .map(|o| {
                    o.iter()
                        .filter(|(_, owner)| owner.as_str() == me)
                        .map(|(c, _)| c.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let held: BTreeSet<String> = manager
                .snapshot()
                .into_iter()
                .filter(|i| !matches!(i.state, JoinState::Parting))
                .map(|i| i.channel)
                .collect();
            for channel in mine.iter().filter(|c| !held.contains(**c)) {
                match manager.join(channel) {
                    Ok(_) => {
                        if let Some(since) = self.unread_since(&state, platform, channel) {
                            manager.mark_outage(channel, since, TAKEOVER_REASON);
                        }
                        tracing::info!(platform, channel, "fleet: reading");
                    }
                    Err(e) => {
                        tracing::warn!(platform, channel, error = %e, "fleet: cannot take a channel")
                    }
                }
            }
            for channel in held.iter().filter(|c| !mine.contains(c.as_str())) {
                let owner = owners.and_then(|o| o.get(channel));
                let wanted = state
                    .wanted
                    .get(&(platform.to_owned(), channel.clone()))
                    .is_some_and(|(w, _)| *w);
                let handed_over = owner.is_some_and(|o| {
                    state.members.get(o).is_some_and(|m| {
                        self.alive(m)
                            && m.beat
                                .platforms
                                .get(platform)
                                .is_some_and(|r| r.reading.contains_key(channel))
                    })
                });
                if !wanted || handed_over {
                    manager.part(channel);
                }
            }
            if let Some(account) = source.account() {
                let sharing = state
                    .members
                    .values()
                    .filter(|m| self.alive(m))
                    .filter(|m| {
                        m.beat.platforms.get(platform).is_some_and(|r| {
                            r.account.as_ref().is_some_and(|(a, _)| *a == account.name)
                        })
                    })
                    .count();
                source.set_join_share(sharing.max(1));
            }
        }
    }

    /// When a channel this instance is about to read was last read by
    /// anyone, if nobody alive reads it now: the start of its gap. `None`
    /// for a clean handover (someone reads it) or a channel nobody read.
    fn unread_since(&self, state: &State, platform: &str, channel: &str) -> Option<DateTime<Utc>> {
        let me = self.settings.instance.as_str();
        let mut last: Option<DateTime<Utc>> = None;
        for m in state.members.values().filter(|m| m.beat.instance != me) {
            let Some(r) = m.beat.platforms.get(platform) else {
                continue;
            };
            if let Some(at) = r.reading.get(channel) {
                if self.alive(m) {
                    return None;
                }
                last = last.max(Some(*at));
            }
            if let Some(at) = r.lost.get(channel) {
                last = last.max(Some(*at));
            }
        }
        last
    }

    /// `GET /fleet`: the instances, their channels and the leases.
    pub fn snapshot(&self) -> serde_json::Value {
        let state = self.lock();
        let leader = state
            .members
            .values()
            .filter(|m| self.alive(m) && m.beat.leader)
            .map(|m| m.beat.instance.clone())
            .next();
        let instances: Vec<serde_json::Value> = state
            .members
            .values()
            .map(|m| {
                let channels: BTreeMap<&String, usize> = m
                    .beat
                    .platforms
                    .iter()
                    .map(|(p, r)| (p, r.reading.len()))
                    .collect();
                serde_json::json!({
                    "instance": m.beat.instance,
                    "alive": self.alive(m),
                    "last_heartbeat_ms_ago": u64::try_from(m.seen.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "started_at": m.beat.started_at,
                    "leader": m.beat.leader,
                    "draining": m.beat.draining,
                    "reading": channels,
                })
            })
            .collect();
        let mut channels = serde_json::Map::new();
        if let Some(a) = &state.assignment {
            for (platform, owners) in &a.owners {
                let mut per = serde_json::Map::new();
                for (channel, owner) in owners {
                    let readers: Vec<&str> = state
                        .members
                        .values()
                        .filter(|m| self.alive(m))
                        .filter(|m| {
                            m.beat
                                .platforms
                                .get(platform)
                                .is_some_and(|r| r.reading.contains_key(channel))
                        })
                        .map(|m| m.beat.instance.as_str())
                        .collect();
                    per.insert(
                        channel.clone(),
                        serde_json::json!({"owner": owner, "readers": readers}),
                    );
                }
                channels.insert(platform.clone(), serde_json::Value::Object(per));
            }
        }
        let wanted = state.wanted.values().filter(|(w, _)| *w).count();
        serde_json::json!({
            "fleet": self.settings.name,
            "instance": self.settings.instance,
            "connected": state.connected,
            "wanted_loaded": self.wanted_loaded.is_loaded(),
            "wanted": wanted,
            "leases": {"leader": leader, "held_here": state.leader},
            "assignment_at": state.assignment.as_ref().map(|a| a.at),
            "instances": instances,
            "channels": channels,
        })
    }
}

struct FleetSession {
    fleet: Arc<Fleet>,
    wants: mpsc::UnboundedReceiver<Want>,
    defaults_published: bool,
    last_assignment: BTreeMap<String, BTreeMap<String, String>>,
}

impl FleetSession {
    async fn work(
        &mut self,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> Result<(), AmqpError> {
        let settings = self.fleet.settings.clone();
        let exchange = settings.exchange();
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        channel
            .exchange_declare(
                short("exchange", exchange.as_str())?,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("exchange.declare (fleet)"))?;
        let own = channel
            .queue_declare(
                short("queue", "")?,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.declare (fleet)"))?;
        channel
            .queue_bind(
                own.name().clone(),
                short("exchange", exchange.as_str())?,
                short("routing key", "")?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.bind (fleet)"))?;
        let mut inbox = channel
            .basic_consume(
                own.name().clone(),
                short("consumer tag", "")?,
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("basic.consume (fleet)"))?;

        // The lease: a single-active-consumer queue holding a token.
        let leader_queue = settings.leader_queue();
        let declared = declare_queue(
            connection,
            &leader_queue,
            &QueueSpec {
                durable: true,
                single_active_consumer: true,
                queue_type: settings.replicated.then_some("quorum"),
                ..QueueSpec::default()
            },
        )
        .await?;
        if declared.message_count() == 0 {
            // A token, unless the leader holds it (then there are two; the
            // leader throws the spare away).
            channel
                .basic_publish(
                    short("exchange", "")?,
                    short("routing key", leader_queue.as_str())?,
                    BasicPublishOptions::default(),
                    b"{\"token\":true}",
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(AmqpError::protocol("basic.publish (fleet token)"))?;
        }
        let lease = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        lease
            .basic_qos(2, BasicQosOptions::default())
            .await
            .map_err(AmqpError::protocol("basic.qos (fleet lease)"))?;
        let mut tokens = lease
            .basic_consume(
                short("queue", leader_queue.as_str())?,
                short("consumer tag", "")?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("basic.consume (fleet lease)"))?;
        self.fleet.lock().connected = true;
        let result = self
            .beat(
                connection,
                &channel,
                &lease,
                &mut inbox,
                &mut tokens,
                cancel,
            )
            .await;
        {
            let mut state = self.fleet.lock();
            state.connected = false;
            state.leader = false;
        }
        self.fleet.leading.send_replace(false);
        metrics::gauge!("chatbus_ingestor_fleet_leader").set(0.0);
        close_channel(&lease, "fleet session over").await;
        close_channel(&channel, "fleet session over").await;
        result
    }

    async fn beat(
        &mut self,
        connection: &Connection,
        channel: &lapin::Channel,
        lease: &lapin::Channel,
        inbox: &mut lapin::Consumer,
        tokens: &mut lapin::Consumer,
        cancel: &CancellationToken,
    ) -> Result<(), AmqpError> {
        let exchange = self.fleet.settings.exchange();
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mark = tokio::time::interval(MARK_EVERY);
        mark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut token: Option<(u64, Instant)> = None;
        // Back from a cut (or just started), this instance's view of the
        // others is stale: an instance silent for longer than the takeover
        // time looks dead to it until its next heartbeat. It assigns and
        // applies only once every live member had a beat to be heard, or a
        // clean handover would look like a takeover (a spurious gap as
        // wide as the cut).
        let connected = Instant::now();
        let settled = || connected.elapsed() >= SETTLE;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = mark.tick() => self.fleet.mark(),
                _ = tick.tick() => {
                    if let Some((tag, since)) = token && since.elapsed() >= RENEW_EVERY {
                        // Renew: back to the queue, and so back to us, the
                        // active consumer.
                        lease
                            .basic_nack(tag, BasicNackOptions { requeue: true, ..Default::default() })
                            .await
                            .map_err(AmqpError::protocol("basic.nack (fleet lease)"))?;
                        // Still the active consumer: it comes straight back.
                        token = None;
                    }
                    let leader = token.is_some();
                    if !self.defaults_published && self.fleet.wanted_loaded.is_loaded() {
                        self.publish_defaults(connection).await?;
                        self.defaults_published = true;
                    }
                    let beat = Message::Heartbeat(self.fleet.heartbeat(leader));
                    publish(channel, &exchange, &beat).await?;
                    if leader && self.fleet.wanted_loaded.is_loaded() && settled() {
                        let assignment = self.fleet.assign(&self.last_assignment);
                        self.last_assignment = assignment.owners.clone();
                        publish(channel, &exchange, &Message::Assignment(assignment)).await?;
                    }
                    if settled() {
                        self.fleet.apply();
                    }
                    let alive = {
                        let state = self.fleet.lock();
                        state.members.values().filter(|m| self.fleet.alive(m)).count()
                    };
                    metrics::gauge!("chatbus_ingestor_fleet_instances").set(alive as f64);
                }
                message = inbox.next() => {
                    let Some(Ok(delivery)) = message else {
                        return Err(AmqpError::ChannelClosed);
                    };
                    match serde_json::from_slice::<Message>(&delivery.data) {
                        Ok(Message::Heartbeat(beat)) => {
                            if beat.instance != self.fleet.settings.instance {
                                for source in &self.fleet.sources {
                                    if let Some(shared) = beat.platforms.get(source.platform()).and_then(|r| r.state.as_ref()) {
                                        source.adopt_fleet_state(shared);
                                    }
                                }
                            }
                            let mut state = self.fleet.lock();
                            state.members.insert(beat.instance.clone(), Member { beat, seen: Instant::now() });
                        }
                        Ok(Message::Assignment(a)) => {
                            let newer = {
                                let mut state = self.fleet.lock();
                                let newer = state.assignment.as_ref().is_none_or(|old| a.at >= old.at || old.leader != a.leader);
                                if newer {
                                    state.assignment = Some(a);
                                }
                                newer
                            };
                            // At once, not on the next beat: a takeover
                            // waits for no tick of the successor's.
                            if newer && settled() {
                                self.fleet.apply();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "a fleet message that does not decode; ignored"),
                    }
                }
                delivery = tokens.next() => {
                    let Some(Ok(delivery)) = delivery else {
                        return Err(AmqpError::ChannelClosed);
                    };
                    if token.is_none() {
                        if !self.fleet.lock().leader {
                            tracing::info!(instance = %self.fleet.settings.instance, "fleet: leading (holding the lease)");
                        }
                        token = Some((delivery.delivery_tag, Instant::now()));
                        self.fleet.lock().leader = true;
                        self.fleet.leading.send_replace(true);
                        metrics::gauge!("chatbus_ingestor_fleet_leader").set(1.0);
                    } else {
                        // A spare token: one is enough.
                        delivery
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(AmqpError::protocol("basic.ack (fleet token)"))?;
                    }
                }
                want = self.wants.recv() => {
                    let Some(want) = want else { return Ok(()) };
                    let body = serde_json::to_vec(&want.entry).expect("an entry serialises");
                    let id = uuid::Uuid::new_v4().to_string();
                    let result = stream::publish(connection, &self.fleet.settings.wanted_stream(), "wanted", &id, &body).await;
                    let _ = want.done.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
                    result?;
                }
            }
        }
    }

    /// Adds the configured channels the wanted set never heard of.
    async fn publish_defaults(&self, connection: &Connection) -> Result<(), AmqpError> {
        let missing: Vec<(String, String)> = {
            let state = self.fleet.lock();
            self.fleet
                .initial
                .iter()
                .filter(|k| !state.wanted.contains_key(*k))
                .cloned()
                .collect()
        };
        for (platform, channel) in missing {
            let entry = WantedEntry {
                platform,
                channel,
                wanted: true,
                at: Utc::now(),
                by: self.fleet.settings.instance.clone(),
            };
            let body = serde_json::to_vec(&entry).expect("an entry serialises");
            let id = uuid::Uuid::new_v4().to_string();
            stream::publish(
                connection,
                &self.fleet.settings.wanted_stream(),
                "wanted",
                &id,
                &body,
            )
            .await?;
            // Applied at once too (the follower will see it again).
            self.fleet.apply_wanted(&entry);
        }
        Ok(())
    }
}

async fn publish(
    channel: &lapin::Channel,
    exchange: &str,
    message: &Message,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(message).expect("a fleet message serialises");
    channel
        .basic_publish(
            short("exchange", exchange)?,
            short("routing key", "")?,
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type(common::amqp::CONTENT_TYPE.into()),
        )
        .await
        .map_err(AmqpError::protocol("basic.publish (fleet)"))?;
    Ok(())
}

impl Session for FleetSession {
    const NAME: &'static str = "fleet";
    const RECONNECTS_METRIC: &'static str = "chatbus_ingestor_fleet_reconnects_total";

    async fn run(&mut self, connection: &Connection, cancel: &CancellationToken) -> SessionEnd {
        let worked = tokio::select! {
            () = cancel.cancelled() => return SessionEnd::Finished,
            w = self.work(connection, cancel) => w,
        };
        match worked {
            Ok(()) => SessionEnd::Finished,
            Err(e) => SessionEnd::Lost {
                healthy: true,
                error: e.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_connection_gets_its_heartbeat_on_every_url() {
        assert_eq!(
            with_heartbeat("amqp://a/%2f", 2),
            "amqp://a/%2f?heartbeat=2"
        );
        assert_eq!(
            with_heartbeat("amqp://a/%2f?heartbeat=60&frame_max=8192", 2),
            "amqp://a/%2f?frame_max=8192&heartbeat=2"
        );
    }
}
