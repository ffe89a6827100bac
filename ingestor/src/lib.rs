//! The chatbus ingestor: reads chat from every configured platform source
//! (Twitch IRC; YouTube live chat), normalises every event into a
//! `ChatEvent` and publishes it to the `chat` exchange with publisher
//! confirms, through a disk-backed outbox so nothing read is lost while the
//! broker is away.
//!
//! ```text
//! sources (twitch, youtube): read, normalise, batch
//!     --> EventSink --> outbox (spool on disk + memory cache) --> publisher (batches, confirms) --> RabbitMQ
//! ```

pub mod admin;
pub mod channels;
pub mod config;
pub mod outbox;
pub mod publisher;
pub mod source;
pub mod spool;
pub mod twitch;
pub mod youtube;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::amqp::{Backoff, ConnectOptions, Topology};
use common::shutdown::{CancellationToken, supervise};
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::account_key;
use tokio::net::TcpListener;

pub use config::Config;

use crate::channels::PersistedChannels;
use crate::outbox::Outbox;
use crate::publisher::{BrokerStatus, PipelineOptions};
use crate::source::{EventSink, Source};
use crate::twitch::login::IngestorLogin;
use crate::twitch::{Endpoint, TwitchSettings, TwitchSource};
use crate::youtube::api::Credentials;
use crate::youtube::{YoutubeSettings, YoutubeSource};

/// The runtime the ingestor runs on. Few worker threads: the ingestor's
/// work is I/O in batches, and lapin runs its own I/O thread. With one
/// worker, no event is handed between worker threads (docs/benchmarks.md).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.ingestor_worker_threads)
        .enable_all()
        .build()
}

/// The whole `main` of the ingestor binary: loads the configuration
/// (defaults, `file`, the environment), installs logging, builds the async
/// runtime with `INGESTOR_WORKER_THREADS` workers and runs until a signal.
/// Exit code 0 on a clean stop, 1 on failure, 2 for bad configuration or a
/// permanent error.
pub fn main_with(file: Option<&std::path::Path>) -> std::process::ExitCode {
    let config = match common::service::load::<Config>(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match runtime(&config) {
        Ok(runtime) => runtime.block_on(common::service::run(config, run)),
        Err(e) => {
            eprintln!("ingestor: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the ingestor until `shutdown` is cancelled or a task fails.
///
/// # Errors
/// When the spool cannot be opened, the configuration is unusable, or a
/// task fails (the others are then stopped).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = common::telemetry::metrics_handle();
    let (outbox, recovered) = Outbox::open(
        &config.spool_dir,
        config.spool_max_bytes,
        config.spool_segment_bytes,
        config.outbox_memory_events,
    )
    .with_context(|| format!("opening the spool in {}", config.spool_dir.display()))?;
    if recovered.records > 0 {
        tracing::info!(records = recovered.records, "recovered spooled events");
    }
    let outbox = Arc::new(outbox);
    let sink = EventSink::new(outbox.clone());

    let mut tasks = Vec::new();
    let (twitch_login, token_manager) = twitch_login(&config)?;
    if let Some(tokens) = token_manager {
        let c = shutdown.clone();
        tasks.push(supervise("token-manager", shutdown.clone(), async move {
            tokens.run(c).await
        }));
    }
    let twitch = TwitchSource::new(
        TwitchSettings {
            endpoint: Endpoint::parse(
                &config.twitch_irc_addr,
                config.twitch_irc_tls,
                config.irc_max_line_bytes,
            )?
            .with_receive_buffer(config.irc_receive_buffer),
            login: twitch_login,
            channels_per_connection: config.twitch_channels_per_connection,
            join_limit: config.twitch_join_limit,
            join_window: config.twitch_join_window,
            join_timeout: config.twitch_join_timeout,
            max_channels: config.twitch_max_channels,
            include_raw: config.ingest_include_raw,
            keepalive: config.twitch_keepalive,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: config.twitch_reconnect_max_delay,
                max_attempts: None,
            },
        },
        sink.clone(),
    );
    let mut sources: Vec<Arc<dyn Source>> = vec![twitch];
    if config.youtube_enabled() {
        let (credentials, google_tokens) = youtube_credentials(&config)?;
        if let Some(tokens) = google_tokens {
            let c = shutdown.clone();
            tasks.push(supervise(
                "token-manager-google",
                shutdown.clone(),
                async move { tokens.run(c).await },
            ));
        }
        let youtube = YoutubeSource::new(
            YoutubeSettings {
                api_url: config.youtube_api_url.clone(),
                grpc_url: config.youtube_grpc_url.clone(),
                credentials,
                streaming: config.youtube_streaming,
                live_check: config.youtube_live_check,
                offline_poll_interval: config.youtube_offline_poll_interval,
                daily_quota: config.youtube_daily_quota,
                quota_exceeded_wait: config.youtube_quota_exceeded_wait,
                max_channels: config.youtube_max_channels,
                include_raw: config.ingest_include_raw,
                request_timeout: config.youtube_request_timeout,
                backoff: Backoff {
                    initial: Duration::from_secs(1),
                    max: config.youtube_retry_max_delay,
                    max_attempts: None,
                },
            },
            sink.clone(),
        )
        .context("setting up the YouTube source")?;
        sources.push(youtube);
    }

    // Channels from config, plus every channel wanted before a restart
    // (remembered in the spool directory; those get a restart gap). A
    // channel removed from the config stays joined until it is parted
    // through the admin API.
    for source in &sources {
        let manager = source.channels();
        for channel in config.initial_channels(source.platform()) {
            manager.join(&channel).with_context(|| {
                format!(
                    "joining {} channel {channel} from the configuration",
                    source.platform()
                )
            })?;
        }
        if source.platform() == common::schema::PLATFORM_YOUTUBE {
            for asked in &config.youtube_channels {
                if let Ok(key) = source.parse_channel(asked) {
                    manager.set_requested_as(&key, asked.trim());
                }
            }
        }
        manager.restore(&PersistedChannels::load(
            &config.spool_dir,
            source.platform(),
        ));
    }
    let wanted: usize = sources.iter().map(|s| s.channels().counts().0).sum();
    if wanted == 0 {
        tracing::warn!(
            "no channels to read: set TWITCH_CHANNELS or YOUTUBE_CHANNELS (comma lists), or join channels through the admin API (POST /channels/{{platform}}/{{channel}} with INGESTOR_API_KEY)"
        );
    }

    let broker = Arc::new(BrokerStatus::default());
    let connect = ConnectOptions::new(&config.amqp_url, "chatbus-ingestor").with_backoff(Backoff {
        initial: Duration::from_millis(200),
        max: config.amqp_reconnect_max_delay,
        max_attempts: None,
    });
    let pipeline = PipelineOptions {
        // Several broker addresses: a cluster; its dead-letter and
        // unrouted queues are replicated too.
        topology: Topology {
            replicated: connect.urls().len() > 1,
            ..Topology::named(&config.chat_exchange)
        },
        connect,
        max_in_flight: config.publish_max_in_flight,
        confirm_timeout: config.publish_confirm_timeout,
    };
    if config.rabbitmq_policies {
        common::amqp::management::spawn_policies(
            &config.amqp_url,
            config.rabbitmq_management_url.as_deref(),
            pipeline.topology.policies(),
            shutdown.clone(),
        );
    }
    tasks.push(supervise(
        "publisher",
        shutdown.clone(),
        publisher::run(outbox.clone(), pipeline, broker.clone(), shutdown.clone()),
    ));
    for source in &sources {
        let name = match source.platform() {
            "twitch" => "twitch-source",
            "youtube" => "youtube-source",
            _ => "source",
        };
        tasks.push(supervise(
            name,
            shutdown.clone(),
            source.clone().run(shutdown.clone()),
        ));
    }
    {
        let (o, c, s, dir) = (
            outbox.clone(),
            shutdown.clone(),
            sources.clone(),
            config.spool_dir.clone(),
        );
        tasks.push(supervise("spool-sync", shutdown.clone(), async move {
            persist_loop(o, s, dir, c).await
        }));
    }
    let state = admin::AdminState {
        sources: sources.clone(),
        broker,
        outbox: outbox.clone(),
        metrics,
        api_key: config.ingestor_api_key.clone(),
    };
    tracing::info!(addr = %listener.local_addr()?, "ingestor admin HTTP listening");
    {
        let c = shutdown.clone();
        tasks.push(supervise("http", shutdown.clone(), async move {
            common::http::serve(admin::routes(state), listener, c).await;
            Ok(())
        }));
    }

    // The first failure is returned (and reported by the caller); any
    // later one is logged here.
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if first_error.is_some() {
                    tracing::error!("{e:#}");
                }
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert(anyhow::anyhow!("task panicked: {join}"));
            }
        }
    }
    outbox.sync();
    let stats = outbox.stats();
    tracing::info!(
        unconfirmed = stats.unconfirmed,
        spool_bytes = stats.spool_bytes,
        "ingestor stopped"
    );
    first_error.map_or(Ok(()), Err)
}

/// How often the wanted channels are saved when only their `last_seen`
/// moved (a change of which channels are wanted, or a channel seen for the
/// first time, is saved within a second). A restart's gap then starts at
/// most this much before the real last event: conservative, never short.
const LAST_SEEN_SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Every second: flushes the spool (fsync) and saves each platform's
/// wanted channels when they changed, until cancelled (then once more).
async fn persist_loop(
    outbox: Arc<Outbox>,
    sources: Vec<Arc<dyn Source>>,
    dir: std::path::PathBuf,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut saved: Vec<(PersistedChannels, tokio::time::Instant)> = sources
        .iter()
        .map(|_| (PersistedChannels::default(), tokio::time::Instant::now()))
        .collect();
    loop {
        let stop = tokio::select! {
            () = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        // fsyncs: off the async workers.
        let (o, s, d) = (outbox.clone(), sources.clone(), dir.clone());
        saved = tokio::task::spawn_blocking(move || {
            o.sync();
            s.iter()
                .zip(saved)
                .map(|(source, (before, at))| {
                    let now = source.channels().persisted();
                    if !save_due(&before, &now, at.elapsed(), stop) {
                        return (before, at);
                    }
                    match now.save(&d, source.platform()) {
                        Ok(()) => (now, tokio::time::Instant::now()),
                        Err(e) => {
                            tracing::warn!(platform = source.platform(), error = %e, "cannot save the channel state");
                            (before, at)
                        }
                    }
                })
                .collect()
        })
        .await?;
        if stop {
            return Ok(());
        }
    }
}

/// Whether a platform's channel file must be written: at once when the
/// wanted channels changed or one was seen for the first time; when only
/// `last_seen` moved, every [`LAST_SEEN_SAVE_INTERVAL`] and at shutdown;
/// never when nothing changed.
fn save_due(
    saved: &PersistedChannels,
    now: &PersistedChannels,
    since_save: Duration,
    stopping: bool,
) -> bool {
    !now.same_shape(saved) || (now != saved && (stopping || since_save >= LAST_SEEN_SAVE_INTERVAL))
}

/// The Twitch login, and the token manager that keeps its token fresh
/// when this process refreshes it itself.
fn twitch_login(config: &Config) -> anyhow::Result<(IngestorLogin, Option<TokenManager>)> {
    let Some(login) = &config.twitch_login else {
        return Ok((IngestorLogin::anonymous(), None));
    };
    match config.oauth.twitch()? {
        Some(settings) => {
            // Only its own account: others in the store are not ours to
            // validate or refresh.
            let options = TokenManagerOptions {
                only_account: Some(account_key(common::schema::PLATFORM_TWITCH, login)),
                ..TokenManagerOptions::default()
            };
            let manager = TokenManager::with_options(config.oauth.token_store(), settings, options);
            Ok((
                IngestorLogin::managed(manager.clone(), login),
                Some(manager),
            ))
        }
        None => {
            tracing::warn!(%login, "no TWITCH_CLIENT_ID: using the stored token as the auth-server keeps it fresh");
            Ok((
                IngestorLogin::Stored {
                    store: config.oauth.token_store(),
                    login: login.clone(),
                },
                None,
            ))
        }
    }
}

/// The YouTube source's credentials, and the token manager that keeps its
/// account's token fresh when this process refreshes it itself.
fn youtube_credentials(config: &Config) -> anyhow::Result<(Credentials, Option<TokenManager>)> {
    let Some(login) = config.youtube_account() else {
        let key = config
            .youtube_api_key
            .clone()
            .context("YOUTUBE_API_KEY or YOUTUBE_LOGIN is needed")?;
        return Ok((Credentials::ApiKey(key), None));
    };
    if config.youtube_api_key.is_some() {
        tracing::info!(account = %login, "YOUTUBE_LOGIN and YOUTUBE_API_KEY are both set: reading as the account");
    }
    let account = account_key(common::schema::PLATFORM_YOUTUBE, &login);
    match config.oauth.google()? {
        Some(settings) => {
            let options = TokenManagerOptions {
                only_account: Some(account.clone()),
                ..TokenManagerOptions::default()
            };
            let manager = TokenManager::with_options(config.oauth.token_store(), settings, options);
            Ok((
                Credentials::Managed {
                    manager: manager.clone(),
                    account,
                },
                Some(manager),
            ))
        }
        None => {
            tracing::warn!(%account, "no GOOGLE_CLIENT_ID: using the stored token as the auth-server keeps it fresh");
            Ok((
                Credentials::Stored {
                    store: config.oauth.token_store(),
                    login,
                },
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::PersistedChannel;

    fn channels(seen: &[(&str, Option<i64>)]) -> PersistedChannels {
        PersistedChannels {
            channels: seen
                .iter()
                .map(|(c, at)| {
                    (
                        (*c).to_owned(),
                        PersistedChannel {
                            last_seen: at.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
                            requested_as: None,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_channel_file_is_written_only_when_it_changed() {
        let a = channels(&[("a", Some(1))]);
        let second = Duration::from_secs(1);
        assert!(!save_due(&a, &a, second, false), "nothing changed");
        assert!(!save_due(&a, &a, LAST_SEEN_SAVE_INTERVAL, true));
        let more = channels(&[("a", Some(1)), ("b", None)]);
        assert!(save_due(&a, &more, second, false), "a channel joined");
        assert!(save_due(&more, &a, second, false), "a channel parted");
        let first_seen = channels(&[("a", Some(1)), ("b", Some(5))]);
        assert!(
            save_due(&more, &first_seen, second, false),
            "seen for the first time"
        );
        let later = channels(&[("a", Some(9)), ("b", Some(5))]);
        assert!(
            !save_due(&first_seen, &later, second, false),
            "only last_seen moved"
        );
        assert!(save_due(
            &first_seen,
            &later,
            LAST_SEEN_SAVE_INTERVAL,
            false
        ));
        assert!(save_due(&first_seen, &later, second, true), "at shutdown");
    }
}
