//! The chatbus ingestor: reads chat from every configured platform
//! (`platforms/`, one folder each), normalises every event into a
//! `ChatEvent` and publishes it to the `chat` exchange with publisher
//! confirms, through a disk-backed outbox so nothing read is lost while the
//! broker is away.
//!
//! ```text
//! platforms/<name>: read, normalise, batch
//!     --> EventSink (drops what chat.privacy refuses) --> outbox (spool on disk + memory cache) --> publisher (batches, confirms) --> RabbitMQ
//! ```

pub mod admin;
pub mod channel_metrics;
pub mod channels;
pub mod commands;
pub mod config;
pub mod fleet;
pub mod outbox;
pub mod platforms;
pub mod privacy;
pub mod publisher;
pub mod spool;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use common::amqp::{Backoff, ConnectOptions, Topology};
use common::shutdown::{CancellationToken, supervise};
use tokio::net::TcpListener;
use warp::Filter as _;

pub use config::Config;

use crate::channels::PersistedChannels;
use crate::outbox::Outbox;
use crate::platforms::seam::{Context, EventSink, Source};
use crate::privacy::Privacy;
use crate::publisher::{BrokerStatus, PipelineOptions};

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
    signal: CancellationToken,
) -> anyhow::Result<()> {
    // Everything stops on `shutdown`; a signal cancels it at once, or, in
    // a fleet, once this instance handed its channels over (`drain`).
    let shutdown = CancellationToken::new();
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

    let mut tasks = Vec::new();
    let connect = ConnectOptions::new(&config.amqp_url, "chatbus-ingestor").with_backoff(Backoff {
        initial: Duration::from_millis(200),
        max: config.amqp_reconnect_max_delay,
        max_attempts: None,
    });
    let privacy = follow_privacy(&config, &connect, &outbox, &shutdown, &mut tasks);
    let context = Context {
        sink: EventSink::new(outbox.clone(), privacy.clone()),
        oauth: config.oauth.clone(),
        include_raw: config.ingest_include_raw,
        shutdown: shutdown.clone(),
        webhook_max_body_bytes: config.webhook_max_body_bytes,
        fleet: config.ingestor_fleet.is_some(),
    };
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    let mut senders = Vec::new();
    let mut platform_routes: Vec<(&'static str, platforms::seam::Routes)> = Vec::new();
    let mut initial_channels = Vec::new();
    for platform in platforms::start(&config.platforms, &context)? {
        initial_channels.extend(
            platform
                .initial_channels
                .iter()
                .map(|c| (platform.source.platform().to_owned(), c.clone())),
        );
        if let Some(routes) = platform.routes {
            if config.webhook_http_addr.is_none() {
                anyhow::bail!(
                    "the {} platform delivers by webhooks: set WEBHOOK_HTTP_ADDR (docs/ingestor.md)",
                    platform.source.platform()
                );
            }
            platform_routes.push((platform.source.platform(), routes));
        }
        for (name, task) in platform.tasks {
            tasks.push(supervise(name, shutdown.clone(), task));
        }
        sources.push(platform.source);
        senders.extend(platform.sender);
    }

    // Every channel wanted before a restart (remembered in the spool
    // directory; those get a restart gap), beside those the platforms
    // joined from the configuration. A channel removed from the config
    // stays joined until it is parted through the admin API.
    // In a fleet the fleet's wanted set says what is read, and the fleet
    // assigns it: nothing is restored.
    if config.ingestor_fleet.is_none() {
        for source in &sources {
            source.channels().restore(&PersistedChannels::load(
                &config.spool_dir,
                &source.state_file(),
            ));
        }
    }
    let wanted: usize = sources.iter().map(|s| s.channels().counts().0).sum();
    if wanted == 0 && config.ingestor_fleet.is_none() {
        // Each platform's channel list is `<PLATFORM>_CHANNELS`.
        let keys: Vec<String> = sources
            .iter()
            .map(|s| format!("{}_CHANNELS", s.platform().to_ascii_uppercase()))
            .collect();
        tracing::warn!(
            "no channels to read: set {} (comma lists), or join channels through the admin API (POST /channels/{{platform}}/{{channel}} with INGESTOR_API_KEY)",
            keys.join(" or ")
        );
    }

    let fleet = match &config.ingestor_fleet {
        Some(name) => {
            let instance = if config.ingestor_instance.is_empty() {
                default_instance_name()
            } else {
                config.ingestor_instance.clone()
            };
            let settings = fleet::FleetSettings {
                name: name.clone(),
                instance: instance.clone(),
                takeover: config.ingestor_fleet_takeover,
                connect: connect.clone(),
                replicated: connect.urls().len() > 1,
            };
            let (fleet, follower) =
                fleet::Fleet::start(settings, sources.clone(), initial_channels, &shutdown);
            fleet.watch_outbox(outbox.clone());
            tasks.push(supervise("fleet-wanted", shutdown.clone(), async move {
                follower.await?
            }));
            tasks.push(supervise(
                "fleet",
                shutdown.clone(),
                fleet.clone().run(shutdown.clone()),
            ));
            tracing::info!(fleet = %name, instance = %instance, "joining the fleet");
            Some(fleet)
        }
        None => None,
    };
    {
        // The signal: hand the channels over first, in a fleet.
        let (fleet, signal, shutdown) = (fleet.clone(), signal.clone(), shutdown.clone());
        let drain_for = config.ingestor_fleet_takeover * 3;
        tokio::spawn(async move {
            tokio::select! {
                () = signal.cancelled() => {
                    if let Some(fleet) = fleet {
                        fleet.drain(drain_for).await;
                    }
                    shutdown.cancel();
                }
                () = shutdown.cancelled() => {}
            }
        });
    }

    let broker = Arc::new(BrokerStatus::default());
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
    let mut command_connect = pipeline.connect.clone();
    command_connect.name = "chatbus-ingestor-commands".into();
    tasks.push(supervise(
        "publisher",
        shutdown.clone(),
        publisher::run(
            outbox.clone(),
            pipeline,
            broker.clone(),
            privacy.clone(),
            shutdown.clone(),
        ),
    ));
    if let Some(intake) = command_intake(&config, senders)? {
        let (options, cancel) = (command_connect, shutdown.clone());
        let mut intake = intake;
        // In a fleet only the leader takes commands: it reads the
        // platforms whose senders need their reader (YouTube's live chat),
        // and the send windows live in one place.
        let leadership = fleet.as_ref().map(|f| f.leadership());
        tasks.push(supervise("commands", shutdown.clone(), async move {
            let Some(mut leading) = leadership else {
                return common::amqp::reconnect_loop(&options, &mut intake, &cancel).await;
            };
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    r = leading.wait_for(|l| *l) => if r.is_err() { return Ok(()) },
                }
                tracing::info!("leading the fleet: taking commands");
                let lost = cancel.child_token();
                let stop = lost.clone();
                let mut watch = leading.clone();
                let watcher = tokio::spawn(async move {
                    let _ = watch.wait_for(|l| !*l).await;
                    stop.cancel();
                });
                let result = common::amqp::reconnect_loop(&options, &mut intake, &lost).await;
                watcher.abort();
                result?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                tracing::info!("no longer leading the fleet: not taking commands");
            }
        }));
    }
    for source in &sources {
        tasks.push(supervise(
            format!("{}-source", source.platform()),
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
    let webhooks = match &config.webhook_http_addr {
        Some(addr) => {
            let hooks = webhooks::Webhooks::new(
                webhooks::parse_sources(&config.webhook_sources, platforms::NAMES)?,
                context.sink.clone(),
                webhooks::Limits {
                    max_body_bytes: config.webhook_max_body_bytes,
                    max_age: config.webhook_max_age,
                },
            );
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the webhook listener to {addr}"))?;
            let bound = listener.local_addr()?;
            let platform_names: Vec<&'static str> =
                platform_routes.iter().map(|(n, _)| *n).collect();
            tracing::info!(addr = %bound, sources = ?hooks.source_names(), platforms = ?platform_names, "webhook listener listening");
            // Each platform's own routes first, then the generic sources.
            let mut routes = webhooks::routes(hooks.clone()).boxed();
            for (_, platform) in platform_routes.into_iter().rev() {
                routes = platform.or(routes).unify().boxed();
            }
            let c = shutdown.clone();
            tasks.push(supervise("webhooks", shutdown.clone(), async move {
                common::http::serve(routes, listener, c).await;
                Ok(())
            }));
            Some(admin::WebhookStatus {
                addr: bound.to_string(),
                sources: hooks.source_names(),
                platforms: platform_names,
            })
        }
        None => None,
    };
    let state = admin::AdminState {
        webhooks,
        sources: sources.clone(),
        broker,
        outbox: outbox.clone(),
        privacy,
        metrics,
        api_key: config.ingestor_api_key.clone(),
        fleet: fleet.clone(),
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

/// A fleet instance's name when `INGESTOR_INSTANCE` is empty: the host
/// name and a random suffix.
fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ingestor".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// Follows `PRIVACY_STREAM` (on its own connection to the publisher's
/// brokers) and keeps the returned [`Privacy`] in step, both as supervised
/// `tasks`; with the setting empty, a [`Privacy`] that refuses nothing.
fn follow_privacy(
    config: &Config,
    connect: &ConnectOptions,
    outbox: &Arc<Outbox>,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> Arc<Privacy> {
    if config.privacy_stream.is_empty() {
        tracing::info!("PRIVACY_STREAM is empty: no opt-outs are honoured");
        return Arc::new(Privacy::off());
    }
    let mut options = connect.clone();
    options.name = "chatbus-ingestor-privacy".into();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (feed, follower) = common::amqp::privacy::follow(
        options,
        config.privacy_stream.clone(),
        "ingestor".into(),
        Some(tx),
        shutdown.clone(),
    );
    let privacy = Arc::new(Privacy::new(feed, config.privacy_stream.clone()));
    tasks.push(supervise(
        "privacy-follower",
        shutdown.clone(),
        async move { follower.await? },
    ));
    tasks.push(supervise(
        "privacy",
        shutdown.clone(),
        privacy::run(privacy.clone(), outbox.clone(), rx, shutdown.clone()),
    ));
    privacy
}

/// The command intake, when `COMMANDS_ALLOW` names accounts.
///
/// # Errors
/// When the command journal in `SPOOL_DIR` cannot be opened.
fn command_intake(
    config: &Config,
    senders: Vec<Arc<dyn platforms::seam::Sender>>,
) -> anyhow::Result<Option<commands::Intake>> {
    if config.commands_allow.is_empty() {
        return Ok(None);
    }
    let allow = commands::allow::AllowList::parse(&config.commands_allow)
        .map_err(|e| anyhow::anyhow!("COMMANDS_ALLOW: {e}"))?;
    let journal = commands::journal::Journal::open(&config.spool_dir, commands::journal::KEEP)
        .with_context(|| {
            format!(
                "opening the command journal in {}",
                config.spool_dir.display()
            )
        })?;
    let intake = commands::Intake::new(
        commands::Settings {
            exchange: config.commands_exchange.clone(),
            queue: config.commands_queue.clone(),
            allow,
            prefetch: config.commands_prefetch,
            replicated: common::amqp::split_urls(&config.amqp_url).len() > 1,
            queue_expires: None,
        },
        senders,
        Arc::new(journal),
    );
    if intake.platforms().is_empty() {
        tracing::warn!(
            allow = ?config.commands_allow,
            "COMMANDS_ALLOW names no platform that can send here (each needs its sender configured); taking no commands"
        );
        return Ok(None);
    }
    Ok(Some(intake))
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
                    match now.save(&d, &source.state_file()) {
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
