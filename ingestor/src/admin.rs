//! The ingestor's HTTP server: `/healthz`, `/readyz`, `/metrics`, and the
//! channel admin API (`GET /channels`; `POST`/`DELETE /channels/{login}`
//! with the API key as a bearer token).

use std::sync::Arc;

use common::Secret;
use common::http::{ApiError, bearer_auth};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::channels::ChannelManager;
use crate::config::{is_valid_login, normalise_channel};
use crate::ingest::IrcStatus;
use crate::outbox::Outbox;
use crate::publisher::BrokerStatus;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Channel states.
    pub manager: Arc<ChannelManager>,
    /// Broker connectivity.
    pub broker: Arc<BrokerStatus>,
    /// IRC connectivity.
    pub irc: Arc<IrcStatus>,
    /// Outbox figures.
    pub outbox: Arc<Outbox>,
    /// `/metrics`.
    pub metrics: PrometheusHandle,
    /// Key for join/part; `None` disables them.
    pub api_key: Option<Secret>,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    broker_connected: bool,
    irc_connections: i64,
    channels_wanted: usize,
    channels_joined: usize,
    outbox_unconfirmed: u64,
    spool_bytes: u64,
    events_dropped: u64,
}

#[derive(Serialize)]
struct ChannelChange<'a> {
    channel: &'a str,
    action: &'a str,
    changed: bool,
}

/// All routes.
pub fn routes(
    state: AdminState,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let readyz = {
        let s = state.clone();
        warp::path!("readyz").and(warp::get()).map(move || {
            let (wanted, joined) = s.manager.counts();
            let stats = s.outbox.stats();
            let body = Readiness {
                ready: s.broker.connected() && s.irc.connections() > 0,
                broker_connected: s.broker.connected(),
                irc_connections: s.irc.connections(),
                channels_wanted: wanted,
                channels_joined: joined,
                outbox_unconfirmed: stats.unconfirmed,
                spool_bytes: stats.spool_bytes,
                events_dropped: stats.dropped,
            };
            let status = if body.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&body), status)
        })
    };
    let list = {
        let m = state.manager.clone();
        warp::path!("channels")
            .and(warp::get())
            .map(move || warp::reply::json(&m.snapshot()))
    };
    let admin = admin_auth(state.api_key.clone());
    let join = {
        let m = state.manager.clone();
        warp::path!("channels" / String)
            .and(warp::post())
            .and(admin.clone())
            .and_then(move |name: String| {
                let m = m.clone();
                async move {
                    let channel = valid_channel(&name)?;
                    let changed = m.join(&channel);
                    let status = if changed {
                        StatusCode::ACCEPTED
                    } else {
                        StatusCode::OK
                    };
                    Ok::<_, Rejection>(warp::reply::with_status(
                        warp::reply::json(&ChannelChange {
                            channel: &channel,
                            action: "join",
                            changed,
                        }),
                        status,
                    ))
                }
            })
    };
    let part = {
        let m = state.manager.clone();
        warp::path!("channels" / String)
            .and(warp::delete())
            .and(admin)
            .and_then(move |name: String| {
                let m = m.clone();
                async move {
                    let channel = valid_channel(&name)?;
                    if !m.part(&channel) {
                        return Err(warp::reject::custom(ApiError::not_found(format!(
                            "not joined to {channel}"
                        ))));
                    }
                    Ok::<_, Rejection>(warp::reply::with_status(
                        warp::reply::json(&ChannelChange {
                            channel: &channel,
                            action: "part",
                            changed: true,
                        }),
                        StatusCode::ACCEPTED,
                    ))
                }
            })
    };
    common::http::healthz()
        .or(readyz)
        .or(common::http::metrics(state.metrics.clone()))
        .or(list)
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
        .and(bearer_auth(key))
}

fn valid_channel(name: &str) -> Result<String, Rejection> {
    let channel = normalise_channel(name);
    if is_valid_login(&channel) {
        Ok(channel)
    } else {
        Err(warp::reject::custom(ApiError::bad_request(
            "invalid_channel",
            format!("`{name}` is not a Twitch login ([a-z0-9_], 1-25 characters)"),
        )))
    }
}
