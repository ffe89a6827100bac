//! The Kick source: Kick's official API delivers chat only by webhooks
//! (docs.kick.com/events/introduction), so this platform reads nothing
//! itself. It keeps this app's event subscriptions in step with the wanted
//! channels and serves the webhook Kick posts to.
//!
//! * [`settings`]: the `KICK_*` keys; [`api`]: the app token, the public
//!   key, slugs to broadcaster ids and the subscriptions API.
//! * [`signature`]: checking Kick's RSA signature of each delivery.
//! * [`webhook`]: `POST /hooks/kick`, mounted on the webhook listener.
//! * [`normalise`]: Kick's events to `ChatEvent`.
//! * [`sender`]: commands (send, delete, timeout, ban, unban) as a user,
//!   when `KICK_SENDER` is set.
//!
//! ```text
//!  join/part/timer --> reconcile: slug -> broadcaster id, GET subscriptions, POST missing, DELETE unwanted
//!  Kick --POST /hooks/kick--> verify --> normalise --> EventSink (200 once spooled)
//! ```
//!
//! A channel is `joined` once every event of [`EVENTS`] is subscribed for
//! it. The Kick app must be this deployment's own: subscriptions of
//! broadcasters it does not want are deleted.

pub mod api;
pub mod normalise;
pub mod sender;
pub mod settings;
pub mod signature;
pub mod status;
pub mod webhook;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelManager, JoinClient, JoinState};
use crate::platforms::seam::{Context, EventSink, Reachability, Source, SourceHealth, Started};
use api::Api;
pub use settings::Settings;

/// The events subscribed for every channel (docs.kick.com/events/event-types, version 1 each).
pub const EVENTS: &[&str] = &[
    "chat.message.sent",
    "channel.followed",
    "channel.subscription.renewal",
    "channel.subscription.gifts",
    "channel.subscription.new",
    "channel.reward.redemption.updated",
    "livestream.status.updated",
    "livestream.metadata.updated",
    "moderation.banned",
    "kicks.gifted",
];

/// Starts the Kick platform when `KICK_CLIENT_ID` is set: its source (the
/// subscriptions' reconciler), its webhook route and the channels
/// `KICK_CHANNELS` names.
///
/// # Errors
/// When the client secret cannot be read or the HTTP client built, or a
/// configured channel cannot be joined.
pub fn start(settings: &Settings, ctx: &Context) -> anyhow::Result<Option<Started>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let api = Arc::new(
        Api::new(
            &settings.kick_api_url,
            &settings.kick_oauth_url,
            settings.kick_client_id.as_deref().unwrap_or_default(),
            settings.client_secret()?,
            settings.kick_request_timeout,
        )
        .context("setting up the Kick API client")?,
    );
    let wake = Arc::new(Notify::new());
    let manager = Arc::new(
        ChannelManager::new(
            normalise::PLATFORM,
            Box::new(Wake(wake.clone())),
            settings.kick_request_timeout,
        )
        .with_limit(settings.kick_max_channels, "KICK_MAX_CHANNELS"),
    );
    let initial = settings.initial_channels();
    if !ctx.fleet {
        for channel in &initial {
            manager.join(channel).with_context(|| {
                format!("joining kick channel {channel} from the configuration")
            })?;
        }
    }
    let shared = Arc::new(Shared {
        channels: manager,
        ids: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
    });
    let hooks = Arc::new(webhook::KickHooks {
        keys: signature::KeyCache::new(api.clone()),
        shared: shared.clone(),
        sink: ctx.sink.clone(),
        max_age: settings.kick_webhook_max_age,
        include_raw: ctx.include_raw,
        seen: crate::webhooks::Dedup::default(),
    });
    let source = Arc::new(KickSource {
        api: api.clone(),
        shared: shared.clone(),
        sink: ctx.sink.clone(),
        wake,
        interval: settings.kick_reconcile_interval,
        reach: Reachability::new(
            normalise::PLATFORM,
            format!("Kick's API at {}", settings.kick_api_url),
            std::time::Duration::from_secs(300),
        ),
    });
    // With the Kick OAuth provider (the same KICK_CLIENT_ID and secret),
    // this process refreshes the sender's tokens itself when due or refused.
    let manager = ctx
        .oauth
        .kick()
        .context("the Kick OAuth settings")?
        .map(|provider| {
            common::token_manager::TokenManager::with_options(
                ctx.oauth.token_store(),
                provider,
                common::token_manager::TokenManagerOptions::default(),
            )
        });
    let sender =
        sender::KickSender::from_settings(settings, api.clone(), ctx.oauth.token_store(), manager);
    let mut started = Started::source(source);
    if ctx.fleet {
        started.initial_channels = initial;
    }
    started.tasks.push((
        "kick-status",
        Box::pin(status::run(
            api.clone(),
            shared.clone(),
            ctx.sink.clone(),
            settings.kick_status_interval,
            ctx.shutdown.clone(),
        )),
    ));
    started.routes = Some(webhook::routes(hooks, ctx.webhook_max_body_bytes));
    started.sender = sender.map(|s| Arc::new(s) as Arc<dyn crate::platforms::seam::Sender>);
    Ok(Some(started))
}

/// The channel manager's joins and parts wake the reconciler.
struct Wake(Arc<Notify>);

impl JoinClient for Wake {
    fn join(&self, _channel: &str) {
        self.0.notify_one();
    }
    fn part(&self, _channel: &str) {
        self.0.notify_one();
    }
}

/// What the reconciler and the webhook share: the channels and the
/// broadcaster id of each wanted slug.
#[derive(Debug)]
pub struct Shared {
    channels: Arc<ChannelManager>,
    ids: Mutex<HashMap<String, u64>>,
    /// Each channel's live state as last published (webhooks and the
    /// status poller both publish transitions: each one once).
    live: Mutex<HashMap<String, bool>>,
}

impl Shared {
    /// The channel manager.
    pub fn channels(&self) -> &Arc<ChannelManager> {
        &self.channels
    }

    /// Whether `event` says something new: a `stream_online` or
    /// `stream_offline` only when it changes the channel's last published
    /// state (which it then becomes); any other event always.
    pub fn is_news(&self, event: &common::schema::ChatEvent) -> bool {
        let live = match event.kind() {
            common::schema::EventKind::StreamOnline => true,
            common::schema::EventKind::StreamOffline => false,
            _ => return true,
        };
        self.live
            .lock()
            .expect("kick live lock")
            .insert(event.channel.clone(), live)
            != Some(live)
    }

    /// Whether `broadcaster` is a channel this deployment reads.
    pub fn is_wanted(&self, broadcaster: u64) -> bool {
        let ids = self.ids.lock().expect("kick ids lock");
        ids.iter().any(|(slug, id)| {
            *id == broadcaster
                && !matches!(self.channels.state(slug), None | Some(JoinState::Parting))
        })
    }
}

/// The Kick source.
#[derive(Debug)]
pub struct KickSource {
    api: Arc<Api>,
    shared: Arc<Shared>,
    sink: EventSink,
    wake: Arc<Notify>,
    interval: std::time::Duration,
    reach: Reachability,
}

impl KickSource {
    /// One pass: resolve new slugs, subscribe what is missing, delete what
    /// is not wanted, confirm parts.
    async fn reconcile(&self) -> Result<(), api::KickApiError> {
        let snapshot = self.shared.channels.snapshot();
        let mut wanted: HashMap<u64, String> = HashMap::new();
        let mut parting = Vec::new();
        for info in &snapshot {
            if info.state == JoinState::Parting {
                parting.push(info.channel.clone());
                continue;
            }
            let known = self.shared.ids.lock().expect("kick ids lock").get(&info.channel).copied();
            let id = match known {
                Some(id) => id,
                None => match self.api.broadcaster_id(&info.channel).await? {
                    Some(id) => {
                        self.shared
                            .ids
                            .lock()
                            .expect("kick ids lock")
                            .insert(info.channel.clone(), id);
                        id
                    }
                    None => {
                        let now = chrono::Utc::now();
                        self.shared.channels.set_state(
                            &info.channel,
                            JoinState::Waiting {
                                since: now,
                                reason: "not_found".into(),
                                detail: Some("Kick has no channel with this slug".into()),
                                next_check: Some(now + self.interval),
                            },
                        );
                        continue;
                    }
                },
            };
            wanted.insert(id, info.channel.clone());
        }
        let subscriptions = self.api.subscriptions().await?;
        let mut have: HashMap<u64, BTreeSet<&str>> = HashMap::new();
        let mut unwanted = Vec::new();
        for s in &subscriptions {
            match s.broadcaster_user_id {
                Some(id) if wanted.contains_key(&id) => {
                    have.entry(id).or_default().insert(s.event.as_str());
                }
                _ => unwanted.push(s.id.clone()),
            }
        }
        for (id, slug) in &wanted {
            let got = have.get(id);
            let missing: Vec<&str> = EVENTS
                .iter()
                .copied()
                .filter(|e| got.is_none_or(|g| !g.contains(e)))
                .collect();
            if !missing.is_empty() {
                self.api.subscribe(*id, &missing).await?;
                metrics::counter!("chatbus_ingestor_kick_subscriptions_created_total")
                    .increment(missing.len() as u64);
                tracing::info!(channel = %slug, broadcaster = id, events = ?missing, "subscribed Kick events");
            }
            if !matches!(
                self.shared.channels.state(slug),
                Some(JoinState::Joined { .. })
            ) && let Some(gap) = self.shared.channels.on_joined(slug, chrono::Utc::now())
            {
                self.sink.emit(std::slice::from_ref(&gap));
            }
        }
        if !unwanted.is_empty() {
            self.api.unsubscribe(&unwanted).await?;
            tracing::info!(count = unwanted.len(), "deleted Kick subscriptions of channels not read here");
        }
        for slug in parting {
            self.shared.ids.lock().expect("kick ids lock").remove(&slug);
            self.shared.channels.on_parted(&slug);
        }
        Ok(())
    }
}

impl Source for KickSource {
    fn fleet_singleton(&self) -> bool {
        // Its event subscriptions and its webhooks: one subscriber.
        true
    }

    fn platform(&self) -> &'static str {
        normalise::PLATFORM
    }

    fn channels(&self) -> &Arc<ChannelManager> {
        &self.shared.channels
    }

    fn parse_channel(&self, input: &str) -> Result<String, String> {
        settings::parse_slug(input)
    }

    fn health(&self) -> SourceHealth {
        let joined = self
            .shared
            .channels
            .snapshot()
            .iter()
            .filter(|c| matches!(c.state, JoinState::Joined { .. }))
            .count();
        self.reach.health(joined)
    }

    fn run(self: Arc<Self>, cancel: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut backoff = std::time::Duration::from_secs(1);
            loop {
                let wait = match self.reconcile().await {
                    Ok(()) => {
                        self.reach.succeeded();
                        backoff = std::time::Duration::from_secs(1);
                        self.interval
                    }
                    Err(e) => {
                        let error = e.to_string();
                        self.reach.failed(&error);
                        let wanted: Vec<String> = self
                            .shared
                            .channels
                            .snapshot()
                            .into_iter()
                            .filter(|c| !matches!(c.state, JoinState::Joined { .. } | JoinState::Parting))
                            .map(|c| c.channel)
                            .collect();
                        self.shared.channels.on_unreachable(&wanted, &error);
                        let wait = backoff.min(self.interval);
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(300));
                        wait
                    }
                };
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}
