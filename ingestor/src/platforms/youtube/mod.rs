//! The YouTube source: live chat read through the YouTube Data API v3.
//!
//! * [`entry`]: what may be asked for (`@handle`, `UC…`, a video id or URL).
//! * [`follower`]: one task per entry: resolve it to the channel id (the
//!   channel word of `chat.youtube.<channel>`), find the live chat, read
//!   it, follow it to its end and on to the channel's next broadcast.
//! * [`stream`]: reading by `liveChatMessages.streamList` (gRPC); [`api`]:
//!   the JSON calls, and polling `liveChatMessages.list` where streaming is
//!   off or unavailable.
//! * [`resource`] and [`normalise`]: `liveChatMessage` to `ChatEvent`.
//! * [`quota`]: the daily quota (a budget this process never passes), its
//!   reset at midnight Pacific, and how often channels that are not live
//!   can be checked and chats polled within it.
//! * [`limits`]: the bounds on what YouTube sends (answer size, messages
//!   in a page, error text, polling interval).
//! * [`sender`]: carrying out commands (send, delete, timeout, ban, unban)
//!   in the chats the followers read ([`live_chats`]: the chat each
//!   channel reads now, shared by the two).
//!
//! The source is configured when `YOUTUBE_API_KEY` or `YOUTUBE_LOGIN` is
//! set, the sender when `YOUTUBE_SENDER` is set too (docs/ingestor.md).

pub mod api;
pub mod entry;
pub mod follower;
pub mod limits;
pub mod live_chats;
pub mod normalise;
pub mod quota;
pub mod recent;
pub mod resource;
pub mod sender;
pub mod settings;
mod shared;
pub(crate) mod status;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::Backoff;
use common::schema::PLATFORM_YOUTUBE;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;

use crate::channels::{ChannelManager, JoinClient};
use crate::platforms::seam::{Context, EventSink, Reachability, Source, SourceHealth, Started};
use api::{Api, Credentials};
pub use settings::{LiveCheck, Settings};
use shared::{Shared, Tuning};

/// Starts the YouTube platform when it is configured (`YOUTUBE_API_KEY` or
/// `YOUTUBE_LOGIN`): its credentials (and the token manager that keeps the
/// account's token fresh, when this process refreshes it itself), its
/// source, and the entries `settings` names.
///
/// # Errors
/// When the credentials or the API clients cannot be set up, or a
/// configured entry cannot be followed.
pub fn start(settings: &Settings, ctx: &Context) -> anyhow::Result<Option<Started>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let (credentials, tokens) = Credentials::from_settings(settings, &ctx.oauth)?;
    let source = YoutubeSource::new(
        YoutubeSettings {
            api_url: settings.youtube_api_url.clone(),
            grpc_url: settings.youtube_grpc_url.clone(),
            credentials,
            streaming: settings.youtube_streaming,
            live_check: settings.youtube_live_check,
            offline_poll_interval: settings.youtube_offline_poll_interval,
            daily_quota: settings.youtube_daily_quota,
            command_quota_share: settings.command_share(),
            quota_exceeded_wait: settings.youtube_quota_exceeded_wait,
            max_channels: settings.youtube_max_channels,
            include_raw: ctx.include_raw,
            request_timeout: settings.youtube_request_timeout,
            limits: limits::Limits {
                max_response_bytes: settings.youtube_max_response_bytes,
                max_page_items: settings.youtube_max_page_items,
                min_poll_interval: settings.youtube_min_poll_interval,
                max_poll_interval: settings.youtube_max_poll_interval,
            },
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: settings.youtube_retry_max_delay,
                max_attempts: None,
            },
        },
        ctx.sink.clone(),
    )
    .context("setting up the YouTube source")?;
    let manager = source.channels();
    let initial = settings.initial_channels();
    if !ctx.fleet {
        for channel in &initial {
            manager.join(channel).with_context(|| {
                format!("joining youtube channel {channel} from the configuration")
            })?;
        }
    }
    // A video entry keeps following that one video: remember how each
    // entry was asked for.
    for asked in &settings.youtube_channels {
        if let Ok(key) = source.parse_channel(asked) {
            manager.set_requested_as(&key, asked.trim());
        }
    }
    let sender = match settings.sender_account() {
        Some(account) => {
            let tokens = match ctx.oauth.google()? {
                Some(provider) => sender::Tokens::Managed(common::token_manager::TokenManager::new(
                    ctx.oauth.token_store(),
                    provider,
                )),
                None => sender::Tokens::Stored(ctx.oauth.token_store()),
            };
            let sender = sender::YoutubeSender::new(
                sender::SenderSettings {
                    api_url: settings.youtube_api_url.clone(),
                    account,
                    request_timeout: settings.youtube_request_timeout,
                    retry_max_delay: settings.youtube_retry_max_delay,
                    max_response_bytes: settings.youtube_max_response_bytes,
                },
                tokens,
                source.shared.live_chats.clone(),
                source.shared.quota.clone(),
            )
            .context("setting up the YouTube sender")?;
            Some(Arc::new(sender) as Arc<dyn crate::platforms::seam::Sender>)
        }
        None => None,
    };
    let mut started = Started::source(source);
    if ctx.fleet {
        started.initial_channels = initial;
    }
    started.sender = sender;
    if let Some(tokens) = tokens {
        let cancel = ctx.shutdown.clone();
        started.tasks.push((
            "token-manager-google",
            Box::pin(async move { tokens.run(cancel).await }),
        ));
    }
    Ok(Some(started))
}
use entry::Entry;
use follower::Follower;
use quota::Quota;
use stream::StreamClient;


/// How the YouTube source reads.
#[derive(Debug, Clone)]
pub struct YoutubeSettings {
    /// The Data API's base URL (`YOUTUBE_API_URL`).
    pub api_url: String,
    /// The gRPC endpoint of streamList (`YOUTUBE_GRPC_URL`).
    pub grpc_url: String,
    /// API key or account.
    pub credentials: Credentials,
    /// Read chats with streamList (else poll `liveChatMessages.list`).
    pub streaming: bool,
    /// How live broadcasts are found.
    pub live_check: LiveCheck,
    /// Fixed wait between checks of a channel that is not live; `None`:
    /// derived from the quota.
    pub offline_poll_interval: Option<Duration>,
    /// Quota units a day.
    pub daily_quota: u64,
    /// Share of `daily_quota` reserved for commands (0 without a sender).
    pub command_quota_share: f64,
    /// Wait after `quotaExceeded`; `None`: until midnight Pacific.
    pub quota_exceeded_wait: Option<Duration>,
    /// Most entries wanted at once.
    pub max_channels: usize,
    /// Carry the resource in each event's `raw`.
    pub include_raw: bool,
    /// Timeout of one JSON call, and of connecting the stream.
    pub request_timeout: Duration,
    /// The bounds on what YouTube sends.
    pub limits: limits::Limits,
    /// Backoff after errors.
    pub backoff: Backoff,
}

/// What the channel manager asks of the source.
#[derive(Debug)]
enum Command {
    Join(String),
    Part(String),
}

struct Client(mpsc::UnboundedSender<Command>);

impl JoinClient for Client {
    fn join(&self, channel: &str) {
        let _ = self.0.send(Command::Join(channel.to_owned()));
    }

    fn part(&self, channel: &str) {
        let _ = self.0.send(Command::Part(channel.to_owned()));
    }
}

/// The YouTube source.
#[derive(Debug)]
pub struct YoutubeSource {
    shared: Arc<Shared>,
    describe: String,
    commands: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl YoutubeSource {
    /// A source that reads YouTube with `settings` into `sink` once run.
    ///
    /// # Errors
    /// When the HTTP or gRPC client cannot be built (a bad URL, TLS).
    pub fn new(settings: YoutubeSettings, sink: EventSink) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = Arc::new(
            ChannelManager::new(
                PLATFORM_YOUTUBE,
                Box::new(Client(tx)),
                settings.request_timeout,
            )
            .with_limit(settings.max_channels, "YOUTUBE_MAX_CHANNELS"),
        );
        let quota = Arc::new(
            Quota::new(settings.daily_quota, settings.quota_exceeded_wait)
                .with_command_share(settings.command_quota_share),
        );
        let reach = Arc::new(Reachability::new(
            PLATFORM_YOUTUBE,
            format!("the YouTube API at {}", settings.api_url),
            Duration::from_secs(60),
        ));
        let api = Api::new(
            &settings.api_url,
            settings.request_timeout,
            settings.credentials.clone(),
            quota.clone(),
            reach.clone(),
            settings.limits,
        )?;
        let stream = if settings.streaming {
            Some(StreamClient::new(
                &settings.grpc_url,
                settings.request_timeout,
                settings.credentials.clone(),
                quota.clone(),
                reach.clone(),
                settings.limits.max_response_bytes,
            )?)
        } else {
            None
        };
        let describe = format!(
            "{}; {}; live check by {:?}",
            settings.credentials.describe(),
            if settings.streaming {
                format!("streaming from {}", settings.grpc_url)
            } else {
                "polling".to_owned()
            },
            settings.live_check
        );
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                tuning: Tuning {
                    live_check: settings.live_check,
                    offline_poll_interval: settings.offline_poll_interval,
                    include_raw: settings.include_raw,
                    backoff: settings.backoff,
                    limits: settings.limits,
                },
                api,
                stream,
                quota,
                live_chats: Arc::default(),
                reach,
                manager,
                sink,
                resolved: Mutex::new(HashMap::new()),
                tasks: Mutex::new(HashMap::new()),
                next_task: AtomicU64::new(0),
                followers: AtomicUsize::new(0),
                polling: AtomicUsize::new(0),
                stream_off_until: Mutex::new(None),
            }),
            describe,
            commands: Mutex::new(Some(rx)),
        }))
    }

    async fn serve(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some(mut commands) = self.commands.lock().expect("commands lock").take() else {
            anyhow::bail!("the YouTube source was started twice");
        };
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Join(key)) => {
                        let mut running = self.shared.tasks.lock().expect("tasks lock");
                        if running.contains_key(&key) {
                            continue;
                        }
                        let task = self.shared.next_task.fetch_add(1, Ordering::SeqCst);
                        let token = cancel.child_token();
                        running.insert(key.clone(), (task, token.clone()));
                        drop(running);
                        tasks.spawn(Follower::new(self.shared.clone(), key, task, token).run());
                    }
                    Some(Command::Part(key)) => {
                        let token = self
                            .shared
                            .tasks
                            .lock()
                            .expect("tasks lock")
                            .get(&key)
                            .map(|(_, t)| t.clone());
                        match token {
                            // The follower confirms the part when it stops.
                            Some(token) => token.cancel(),
                            None => self.shared.manager.on_parted(&key),
                        }
                    }
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        anyhow::bail!("a YouTube follower task panicked: {e}");
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

impl Source for YoutubeSource {
    fn fleet_singleton(&self) -> bool {
        // One daily quota per Google project: one reader at a time.
        true
    }

    fn fleet_state(&self) -> Option<serde_json::Value> {
        Some(self.shared.quota.shared_state(chrono::Utc::now()))
    }

    fn adopt_fleet_state(&self, state: &serde_json::Value) {
        self.shared.quota.adopt(state, chrono::Utc::now());
    }

    fn platform(&self) -> &'static str {
        PLATFORM_YOUTUBE
    }

    fn channels(&self) -> &Arc<ChannelManager> {
        &self.shared.manager
    }

    fn parse_channel(&self, input: &str) -> Result<String, String> {
        let key = Entry::parse(input)?.key().to_owned();
        Ok(self
            .shared
            .resolved
            .lock()
            .expect("resolved lock")
            .get(&key)
            .cloned()
            .unwrap_or(key))
    }

    fn health(&self) -> SourceHealth {
        // A followed channel counts as a connection whether its chat is
        // streamed, polled, or its next broadcast is watched for.
        self.shared
            .reach
            .health(self.shared.followers.load(Ordering::SeqCst))
    }

    fn run(self: Arc<Self>, cancel: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        tracing::info!(platform = PLATFORM_YOUTUBE, setup = %self.describe, "starting the YouTube source");
        Box::pin(self.serve(cancel))
    }
}
