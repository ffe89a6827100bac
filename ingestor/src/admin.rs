//! The ingestor's HTTP server: `/healthz`, `/readyz`, `/metrics`, and the
//! channel admin API of every source:
//!
//! * `GET /channels`: every channel of every platform (each has a
//!   `platform` field); `GET /channels/{platform}`: one platform's.
//! * `POST` / `DELETE /channels/{platform}/{channel}`: join / part, with
//!   the API key as a bearer token (`Authorization` header only). The
//!   older `/channels/{channel}` means Twitch.

use std::sync::Arc;

use common::Secret;
use common::http::{ApiError, bearer_header_auth};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::channels::{ChannelInfo, JoinError};
use crate::outbox::Outbox;
use crate::platforms::seam::{Source, SourceHealth};
use crate::privacy::Privacy;
use crate::publisher::BrokerStatus;

/// The webhook listener, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    /// The address it listens on.
    pub addr: String,
    /// The generic signed sources it serves (`/hooks/<name>`).
    pub sources: Vec<String>,
    /// The platforms that deliver through it (`/hooks/<platform>`: Kick).
    pub platforms: Vec<&'static str>,
}

/// A join or part in a fleet: recorded in the fleet's wanted set (the
/// fleet decides which instance reads it).
async fn fleet_change(
    fleet: &crate::fleet::Fleet,
    platform: &'static str,
    channel: &str,
    wanted: bool,
) -> Result<warp::reply::WithStatus<warp::reply::Json>, Rejection> {
    let changed = fleet.is_wanted(platform, channel) != wanted;
    fleet.want(platform, channel, wanted).await.map_err(|e| {
        warp::reject::custom(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet_unavailable",
            format!("the fleet's wanted set could not be changed: {e}"),
        ))
    })?;
    Ok(warp::reply::with_status(
        warp::reply::json(&ChannelChange {
            platform,
            channel,
            action: if wanted { "join" } else { "part" },
            changed,
        }),
        StatusCode::ACCEPTED,
    ))
}

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The webhook listener, when one runs.
    pub webhooks: Option<WebhookStatus>,
    /// Every running source.
    pub sources: Vec<Arc<dyn Source>>,
    /// Broker connectivity.
    pub broker: Arc<BrokerStatus>,
    /// Outbox figures.
    pub outbox: Arc<Outbox>,
    /// The privacy list (`PRIVACY_STREAM`).
    pub privacy: Arc<Privacy>,
    /// `/metrics`.
    pub metrics: PrometheusHandle,
    /// Key for join/part; `None` disables them.
    pub api_key: Option<Secret>,
    /// The fleet, in fleet mode: join/part change its wanted set.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl AdminState {
    fn source(&self, platform: &str) -> Result<&Arc<dyn Source>, Rejection> {
        self.sources
            .iter()
            .find(|s| s.platform() == platform)
            .ok_or_else(|| {
                let known: Vec<&str> = self.sources.iter().map(|s| s.platform()).collect();
                warp::reject::custom(ApiError::not_found(format!(
                    "no `{platform}` source runs here (running: {})",
                    known.join(", ")
                )))
            })
    }
}

/// `/metrics`: the recorder's page, then the per-channel counters.
fn metrics(
    handle: PrometheusHandle,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        let mut page = handle.render();
        page.push_str(&crate::channel_metrics::render());
        warp::reply::with_header(
            page,
            "content-type",
            "text/plain; version=0.0.4; charset=utf-8",
        )
    })
}

/// One source's part of `/readyz`.
#[derive(Serialize)]
struct SourceReadiness {
    #[serde(flatten)]
    health: SourceHealth,
    ready: bool,
    channels_wanted: usize,
    channels_joined: usize,
    /// The platform's channel capacity, and the setting or rule behind it.
    channel_limit: usize,
    channel_limit_reason: String,
}

/// The privacy list's part of `/readyz`.
#[derive(Serialize)]
struct PrivacyReadiness {
    /// The stream followed (`PRIVACY_STREAM`); `null`: off.
    stream: Option<String>,
    /// The whole stream was read once: nothing is published before.
    loaded: bool,
    /// Notices (opt-outs, opt-ins, purges) read so far.
    notices: u64,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    broker_connected: bool,
    /// Open IRC connections (Twitch), kept for older dashboards.
    irc_connections: usize,
    channels_wanted: usize,
    channels_joined: usize,
    outbox_unconfirmed: u64,
    spool_bytes: u64,
    events_dropped: u64,
    sources: Vec<SourceReadiness>,
    privacy: PrivacyReadiness,
    /// The webhook listener (absent when `WEBHOOK_HTTP_ADDR` is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhooks: Option<WebhookStatus>,
}

#[derive(Serialize)]
struct ChannelChange<'a> {
    platform: &'a str,
    channel: &'a str,
    action: &'a str,
    changed: bool,
}

fn readiness(state: &AdminState) -> Readiness {
    let sources: Vec<SourceReadiness> = state
        .sources
        .iter()
        .map(|s| {
            let (wanted, joined) = s.channels().counts();
            let health = s.health();
            // A platform with nothing to read is ready whatever it says;
            // one with channels must be reachable.
            let ready = wanted == 0 || (health.reachable && health.connections > 0);
            let capacity = s.capacity();
            SourceReadiness {
                ready,
                channels_wanted: wanted,
                channels_joined: joined,
                channel_limit: capacity.max,
                channel_limit_reason: capacity.why,
                health,
            }
        })
        .collect();
    let stats = state.outbox.stats();
    let broker = state.broker.connected();
    let privacy = PrivacyReadiness {
        stream: state.privacy.stream().map(str::to_owned),
        loaded: state.privacy.is_loaded(),
        notices: state.privacy.notices(),
    };
    Readiness {
        ready: broker && privacy.loaded && sources.iter().all(|s| s.ready),
        broker_connected: broker,
        irc_connections: sources
            .iter()
            .filter(|s| s.health.platform == common::schema::PLATFORM_TWITCH)
            .map(|s| s.health.connections)
            .sum(),
        channels_wanted: sources.iter().map(|s| s.channels_wanted).sum(),
        channels_joined: sources.iter().map(|s| s.channels_joined).sum(),
        outbox_unconfirmed: stats.unconfirmed,
        spool_bytes: stats.spool_bytes,
        events_dropped: stats.dropped,
        sources,
        privacy,
        webhooks: state.webhooks.clone(),
    }
}

fn all_channels(state: &AdminState) -> Vec<ChannelInfo> {
    state
        .sources
        .iter()
        .flat_map(|s| s.channels().snapshot())
        .collect()
}

/// All routes.
pub fn routes(
    state: AdminState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with_state = {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: AdminState| {
            let body = readiness(&s);
            let status = if body.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&body), status)
        });
    let list = warp::path!("channels")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: AdminState| warp::reply::json(&all_channels(&s)));
    let list_platform = warp::path!("channels" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and_then(|platform: String, s: AdminState| async move {
            let source = s.source(&platform)?;
            Ok::<_, Rejection>(warp::reply::json(&source.channels().snapshot()))
        });
    let fleet = warp::path!("fleet")
        .and(warp::get())
        .and(with_state.clone())
        .and_then(|s: AdminState| async move {
            match &s.fleet {
                Some(fleet) => Ok::<_, Rejection>(warp::reply::json(&fleet.snapshot())),
                None => Err(warp::reject::custom(ApiError::not_found(
                    "this ingestor is not in a fleet (INGESTOR_FLEET is unset)",
                ))),
            }
        });
    let admin = admin_auth(state.api_key.clone());
    // `/channels/{platform}/{channel}`, or `/channels/{channel}` for Twitch.
    let target = warp::path("channels")
        .and(
            warp::path!(String / String)
                .map(|platform: String, channel: String| (platform, channel))
                .or(warp::path!(String)
                    .map(|channel: String| (common::schema::PLATFORM_TWITCH.to_owned(), channel)))
                .unify(),
        )
        .and(with_state.clone());
    let join = target
        .clone()
        .and(warp::post())
        .and(admin.clone())
        .and_then(
            |(platform, name): (String, String), s: AdminState| async move {
                let source = s.source(&platform)?;
                let channel = valid_channel(source.as_ref(), &name)?;
                if let Some(fleet) = &s.fleet {
                    return fleet_change(fleet, source.platform(), &channel, true).await;
                }
                let changed = source.channels().join(&channel).map_err(|e| match e {
                    JoinError::Limit { .. } => warp::reject::custom(ApiError::new(
                        StatusCode::CONFLICT,
                        "channel_limit",
                        e.to_string(),
                    )),
                })?;
                source
                    .channels()
                    .set_requested_as(&channel, &percent_decoded(&name));
                let status = if changed {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                Ok::<_, Rejection>(warp::reply::with_status(
                    warp::reply::json(&ChannelChange {
                        platform: source.platform(),
                        channel: &channel,
                        action: "join",
                        changed,
                    }),
                    status,
                ))
            },
        );
    let part = target.and(warp::delete()).and(admin).and_then(
        |(platform, name): (String, String), s: AdminState| async move {
            let source = s.source(&platform)?;
            let channel = valid_channel(source.as_ref(), &name)?;
            if let Some(fleet) = &s.fleet {
                return fleet_change(fleet, source.platform(), &channel, false).await;
            }
            if !source.channels().part(&channel) {
                return Err(warp::reject::custom(ApiError::not_found(format!(
                    "not joined to {platform} channel {channel}"
                ))));
            }
            Ok::<_, Rejection>(warp::reply::with_status(
                warp::reply::json(&ChannelChange {
                    platform: source.platform(),
                    channel: &channel,
                    action: "part",
                    changed: true,
                }),
                StatusCode::ACCEPTED,
            ))
        },
    );
    common::http::healthz()
        .or(readyz)
        .or(metrics(state.metrics.clone()))
        .or(list)
        .or(list_platform)
        .or(fleet)
        .or(join)
        .or(part)
}

fn admin_auth(key: Option<Secret>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let enabled = key.as_ref().is_some_and(|k| !k.is_empty());
    warp::any()
        .and_then(move || async move {
            if enabled {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "admin_disabled",
                    "joining and parting over HTTP is disabled: set INGESTOR_API_KEY",
                )))
            }
        })
        .untuple_one()
        .and(bearer_header_auth(key))
}

fn percent_decoded(segment: &str) -> String {
    common::http::percent_decode_path(segment)
}

fn valid_channel(source: &dyn Source, name: &str) -> Result<String, Rejection> {
    source
        .parse_channel(&percent_decoded(name))
        .map_err(|message| warp::reject::custom(ApiError::bad_request("invalid_channel", message)))
}
