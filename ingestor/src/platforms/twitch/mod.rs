//! The Twitch source: chat over IRC, read by chatbus's own connection pool
//! with twitch-irc's message parser.
//!
//! * [`TwitchSource`] owns the pool: each wanted channel is assigned to a
//!   connection with room (`TWITCH_CHANNELS_PER_CONNECTION`), a new one is
//!   opened when all are full, and a connection left without channels is
//!   closed.
//! * [`connection`]: one task per connection, reading, normalising and
//!   spooling in batches, with JOINs rate-limited across connections.
//! * [`normalise`]: IRC lines to `ChatEvent`s; [`lines`]: line splitting
//!   and parsing; [`login`]: anonymous or token-store login.
//!
//! Reading is anonymous by default (`justinfanNNNNN`, no limit on
//! channels). With `TWITCH_LOGIN` every connection logs in as that account,
//! and Twitch then allows 100 joined channels: more are refused with a
//! clear error (docs/ingestor.md).

pub mod connection;
pub mod endpoint;
pub mod helix;
pub mod lines;
pub mod login;
pub mod normalise;
pub mod sender;
pub mod join_limiter;
pub mod settings;
mod shared;
pub mod standing;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::Backoff;
use common::schema::PLATFORM_TWITCH;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;

use crate::channels::{ChannelManager, JoinClient};
use crate::platforms::seam::{Context, EventSink, Reachability, Source, SourceHealth, Started};
pub use endpoint::Endpoint;
use connection::{Command, Connection};
pub use join_limiter::JoinLimiter;
use login::IngestorLogin;
use shared::Shared;
use normalise::Normaliser;
pub use settings::Settings;
use settings::{LOGGED_IN_CHANNEL_LIMIT, is_valid_login, normalise_channel};

/// Starts the Twitch platform: its login (and the token manager that keeps
/// the account's token fresh, when this process refreshes it itself), its
/// source, and the channels `settings` names.
///
/// # Errors
/// When the IRC endpoint or the login cannot be set up, or a configured
/// channel cannot be joined.
pub fn start(settings: &Settings, ctx: &Context) -> anyhow::Result<Option<Started>> {
    let (login, tokens) = IngestorLogin::from_settings(settings, &ctx.oauth)?;
    let standing = Arc::new(standing::Standing::default());
    let sender = sender::TwitchSender::from_settings(settings, &ctx.oauth, standing.clone())
        .context("setting up the Twitch sender")?;
    let source = TwitchSource::new(
        TwitchSettings {
            endpoint: Endpoint::parse(
                &settings.twitch_irc_addr,
                settings.twitch_irc_tls,
                settings.irc_max_line_bytes,
            )?
            .with_receive_buffer(settings.irc_receive_buffer),
            login,
            channels_per_connection: settings.twitch_channels_per_connection,
            join_limit: settings.twitch_join_limit,
            join_window: settings.twitch_join_window,
            join_timeout: settings.twitch_join_timeout,
            max_channels: settings.twitch_max_channels,
            include_raw: ctx.include_raw,
            keepalive: settings.twitch_keepalive,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: settings.twitch_reconnect_max_delay,
                max_attempts: None,
            },
            standing: sender.is_some().then_some(standing),
        },
        ctx.sink.clone(),
    );
    let initial = settings.initial_channels();
    if !ctx.fleet {
        for channel in &initial {
            source.channels().join(channel).with_context(|| {
                format!("joining twitch channel {channel} from the configuration")
            })?;
        }
    }
    let status = status_task(settings, ctx, source.channels().clone())?;
    let mut started = Started::source(source);
    if ctx.fleet {
        started.initial_channels = initial;
    }
    if let Some(task) = status {
        started.tasks.push(task);
    }
    started.sender = sender.map(|s| Arc::new(s) as Arc<dyn crate::platforms::seam::Sender>);
    if let Some(tokens) = tokens {
        let cancel = ctx.shutdown.clone();
        started.tasks.push((
            "token-manager",
            Box::pin(async move { tokens.run(cancel).await }),
        ));
    }
    Ok(Some(started))
}

/// The stream-status poller, when the app's client credentials are set;
/// otherwise status is off, said here once.
fn status_task(
    settings: &Settings,
    ctx: &Context,
    channels: Arc<ChannelManager>,
) -> anyhow::Result<Option<crate::platforms::seam::Task>> {
    let oauth = &ctx.oauth;
    let has_secret =
        !oauth.twitch_client_secret.is_empty() || oauth.twitch_client_secret_file.is_some();
    let provider = if oauth.twitch_client_id.trim().is_empty() || !has_secret {
        None
    } else {
        oauth.twitch().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Twitch client credentials unusable");
            None
        })
    };
    let Some(provider) = provider else {
        tracing::info!(
            "Twitch stream status is off: it needs TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET \
             (an app token for Helix Get Streams)"
        );
        return Ok(None);
    };
    let status_settings = status::StatusSettings {
        helix_url: settings.twitch_helix_url.clone(),
        token_url: provider.token_url.clone(),
        client_id: provider.client_id.clone(),
        client_secret: provider.client_secret.clone(),
        interval: settings.twitch_status_interval,
    };
    let sink = ctx.sink.clone();
    tracing::info!(
        interval = ?settings.twitch_status_interval,
        "Twitch stream status: every wanted channel is read with Helix Get Streams"
    );
    let cancel = ctx.shutdown.clone();
    Ok(Some((
        "twitch-status",
        Box::pin(async move {
            status::StatusPoller::new(status_settings, channels, sink)?
                .run(cancel)
                .await
        }),
    )))
}

/// How the Twitch source connects and reads.
#[derive(Debug, Clone)]
pub struct TwitchSettings {
    /// The IRC server.
    pub endpoint: Endpoint,
    /// Anonymous or an account.
    pub login: IngestorLogin,
    /// Channels per IRC connection.
    pub channels_per_connection: usize,
    /// Most JOINs per `join_window` over all connections.
    pub join_limit: u32,
    /// The window of `join_limit`.
    pub join_window: Duration,
    /// A JOIN not confirmed within this is sent again.
    pub join_timeout: Duration,
    /// Most channels wanted at once.
    pub max_channels: usize,
    /// Carry the raw IRC line in events.
    pub include_raw: bool,
    /// Ping a connection silent this long; drop it if it stays silent as
    /// long again.
    pub keepalive: Duration,
    /// Reconnect backoff (after a connection that did not last).
    pub backoff: Backoff,
    /// The sending accounts' standing, learnt from their badges as read.
    pub standing: Option<Arc<standing::Standing>>,
}

/// What the channel manager asks of the pool.
#[derive(Debug)]
enum PoolCommand {
    Join(String),
    Part(String),
}

/// The channel manager's handle on the pool.
struct PoolClient(mpsc::UnboundedSender<PoolCommand>);

impl JoinClient for PoolClient {
    fn join(&self, channel: &str) {
        let _ = self.0.send(PoolCommand::Join(channel.to_owned()));
    }

    fn part(&self, channel: &str) {
        let _ = self.0.send(PoolCommand::Part(channel.to_owned()));
    }
}

/// The Twitch source.
#[derive(Debug)]
pub struct TwitchSource {
    shared: Arc<Shared>,
    channels_per_connection: usize,
    commands: Mutex<Option<mpsc::UnboundedReceiver<PoolCommand>>>,
}

impl TwitchSource {
    /// A source that will read Twitch with `settings` into `sink` once run.
    pub fn new(settings: TwitchSettings, sink: EventSink) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (max, why) = if settings.login.is_anonymous()
            || settings.max_channels <= LOGGED_IN_CHANNEL_LIMIT
        {
            (settings.max_channels, "TWITCH_MAX_CHANNELS".to_owned())
        } else {
            (
                LOGGED_IN_CHANNEL_LIMIT,
                "Twitch lets a logged-in account join 100 channels; unset TWITCH_LOGIN to read anonymously, without that limit".to_owned(),
            )
        };
        let manager = Arc::new(
            ChannelManager::new(
                PLATFORM_TWITCH,
                Box::new(PoolClient(tx)),
                settings.join_timeout,
            )
            .retrying_unconfirmed_joins()
            .with_limit(max, why),
        );
        let what = format!("Twitch IRC at {}", settings.endpoint.addr());
        let shared = Arc::new(Shared {
            limiter: Arc::new(JoinLimiter::new(settings.join_limit, settings.join_window)),
            manager,
            sink,
            normaliser: Normaliser::new(settings.include_raw),
            reach: Reachability::new(PLATFORM_TWITCH, what, Duration::from_secs(60)),
            open: AtomicUsize::new(0),
            backoff: settings.backoff,
            keepalive: settings.keepalive,
            endpoint: settings.endpoint,
            login: settings.login,
            standing: settings.standing,
        });
        Arc::new(Self {
            shared,
            channels_per_connection: settings.channels_per_connection.max(1),
            commands: Mutex::new(Some(rx)),
        })
    }

    async fn pool(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some(mut commands) = self.commands.lock().expect("pool lock").take() else {
            anyhow::bail!("the Twitch source was started twice");
        };
        let mut pool = Pool::default();
        let mut tasks = JoinSet::new();
        {
            let (m, c) = (self.shared.manager.clone(), cancel.clone());
            tasks.spawn(async move { m.watchdog(c).await });
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(PoolCommand::Join(channel)) => {
                        if let Some(spawn) = pool.join(channel, self.channels_per_connection) {
                            let connection = Connection::new(spawn.slot, self.shared.clone(), spawn.commands, cancel.clone());
                            tasks.spawn(connection.run());
                        }
                    }
                    Some(PoolCommand::Part(channel)) => pool.part(&channel),
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        anyhow::bail!("a Twitch IRC connection task panicked: {e}");
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

impl Source for TwitchSource {
    fn platform(&self) -> &'static str {
        PLATFORM_TWITCH
    }

    fn channels(&self) -> &Arc<ChannelManager> {
        &self.shared.manager
    }

    fn state_file(&self) -> String {
        // The name it had before there were other platforms.
        "channels.json".to_owned()
    }

    fn parse_channel(&self, input: &str) -> Result<String, String> {
        let channel = normalise_channel(input);
        if is_valid_login(&channel) {
            Ok(channel)
        } else {
            Err(format!(
                "`{input}` is not a Twitch login ([a-z0-9_], 1-25 characters)"
            ))
        }
    }

    fn account(&self) -> Option<crate::platforms::seam::Account> {
        (!self.shared.login.is_anonymous()).then(|| crate::platforms::seam::Account {
            name: self.shared.login.login().to_owned(),
            max_channels: LOGGED_IN_CHANNEL_LIMIT,
        })
    }

    fn set_join_share(&self, instances: usize) {
        self.shared.limiter.set_share(instances);
    }

    fn health(&self) -> SourceHealth {
        self.shared
            .reach
            .health(self.shared.open.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn run(self: Arc<Self>, cancel: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        tracing::info!(
            login = self.shared.login.login(),
            addr = %self.shared.endpoint.addr(),
            tls = self.shared.endpoint.tls,
            "starting the Twitch source"
        );
        Box::pin(self.pool(cancel))
    }
}

/// A connection to start.
struct Spawn {
    slot: u64,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// Which connection carries which channel.
#[derive(Default)]
struct Pool {
    slots: BTreeMap<u64, Slot>,
    assigned: HashMap<String, u64>,
    next_slot: u64,
}

struct Slot {
    tx: mpsc::UnboundedSender<Command>,
    channels: BTreeSet<String>,
}

impl Pool {
    /// Routes a join to the channel's connection, or to one with room;
    /// returns the connection to start when a new one is needed.
    fn join(&mut self, channel: String, per_connection: usize) -> Option<Spawn> {
        if let Some(slot) = self.assigned.get(&channel) {
            // A JOIN that went unanswered: ask the same connection again.
            let _ = self.slots[slot].tx.send(Command::Join(channel));
            return None;
        }
        let room = self
            .slots
            .iter()
            .find(|(_, s)| s.channels.len() < per_connection)
            .map(|(id, _)| *id);
        let (slot, spawn) = match room {
            Some(slot) => (slot, None),
            None => {
                self.next_slot += 1;
                let slot = self.next_slot;
                let (tx, rx) = mpsc::unbounded_channel();
                self.slots.insert(
                    slot,
                    Slot {
                        tx,
                        channels: BTreeSet::new(),
                    },
                );
                (slot, Some(Spawn { slot, commands: rx }))
            }
        };
        let s = self.slots.get_mut(&slot).expect("slot exists");
        s.channels.insert(channel.clone());
        let _ = s.tx.send(Command::Join(channel.clone()));
        self.assigned.insert(channel, slot);
        spawn
    }

    /// Routes a part; a connection left without channels is shut down.
    fn part(&mut self, channel: &str) {
        let Some(slot) = self.assigned.remove(channel) else {
            return;
        };
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        s.channels.remove(channel);
        let _ = s.tx.send(Command::Part(channel.to_owned()));
        if s.channels.is_empty() {
            let _ = s.tx.send(Command::Shutdown);
            self.slots.remove(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Command>) -> Vec<Command> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push(c);
        }
        out
    }

    #[test]
    fn the_pool_fills_connections_and_closes_empty_ones() {
        let mut pool = Pool::default();
        let mut first = pool.join("a".into(), 2).expect("a first connection");
        assert!(pool.join("b".into(), 2).is_none(), "room on the first");
        let mut second = pool.join("c".into(), 2).expect("a second connection");
        assert_eq!(
            drain(&mut first.commands),
            [Command::Join("a".into()), Command::Join("b".into())]
        );
        assert_eq!(drain(&mut second.commands), [Command::Join("c".into())]);
        // A retried join goes to the same connection.
        assert!(pool.join("a".into(), 2).is_none());
        assert_eq!(drain(&mut first.commands), [Command::Join("a".into())]);
        // Parting the last channel of a connection closes it.
        pool.part("c");
        assert_eq!(
            drain(&mut second.commands),
            [Command::Part("c".into()), Command::Shutdown]
        );
        assert_eq!(pool.slots.len(), 1);
        // Room freed on the first is used before a new connection.
        pool.part("b");
        assert!(pool.join("d".into(), 2).is_none());
        assert_eq!(
            drain(&mut first.commands),
            [Command::Part("b".into()), Command::Join("d".into())]
        );
    }
}
