//! The REST API (documented in `docs/rest-api.md`):
//!
//! * `GET /api/channels`: every channel with its counts, newest event and
//!   live state (`stream`: from its newest stored `stream_online`,
//!   `stream_update` or `stream_offline`; null when none is stored).
//! * `GET /api/events?platform=&channel=&user=&kind=&q=&before=&after=&limit=&order=`:
//!   a page of events, newest first by default, with a `next` cursor.
//! * `GET /api/events/{platform}/{id}`: one event; both segments are
//!   percent-decoded (an id may hold `/`, spaces, anything).
//!
//! Every answer is JSON; errors are `{"error": code, "message": ...}`.
//! A search (`q`) keeps the store's bounds (`store::search`): too long is
//! 400 `search_too_long`; no free search slot is 503 `search_busy` with
//! `Retry-After`; cancelled at the statement timeout is 503
//! `search_timeout`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::ChatEvent;
use common::Secret;
use common::http::{ApiError, bearer_auth, percent_decode_path};
use common::schema::{EventBody, EventKind, StreamDetails};
use common::urlcode;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::store::{
    ChannelSummary, Cursor, EventFilter, EventQuery, Order, Store, StoreError, StoredEvent,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;

/// `GET /api/events` query parameters, as text so every mistake gets a
/// precise message.
#[derive(Debug, Default, Deserialize)]
struct EventsParams {
    platform: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn cursor(name: &str, value: Option<String>) -> Result<Option<Cursor>, ApiError> {
    non_empty(value)
        .map(|v| {
            v.parse::<Cursor>()
                .map_err(|e| ApiError::bad_request("invalid_cursor", format!("`{name}`: {e}")))
        })
        .transpose()
}

impl EventsParams {
    fn query(self) -> Result<EventQuery, ApiError> {
        let mut kinds = Vec::new();
        for k in non_empty(self.kind).iter().flat_map(|k| k.split(',')) {
            kinds.push(
                k.trim()
                    .parse::<EventKind>()
                    .map_err(|e| ApiError::bad_request("invalid_kind", e.to_string()))?,
            );
        }
        let limit = match non_empty(self.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_limit",
                        format!("`limit` must be 1 to {MAX_LIMIT}"),
                    ));
                }
            },
        };
        let order = match non_empty(self.order).as_deref() {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_order",
                    format!("`order` is `asc` or `desc`, not `{other}`"),
                ));
            }
        };
        Ok(EventQuery {
            filter: EventFilter {
                patterns: Vec::new(),
                platform: non_empty(self.platform),
                channel: non_empty(self.channel),
                user: non_empty(self.user),
                kinds,
                text: non_empty(self.q),
            },
            after: cursor("after", self.after)?,
            before: cursor("before", self.before)?,
            order,
            limit,
        })
    }
}

/// `GET /api/events` answer.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    /// The events, in the requested order.
    pub events: Vec<StoredEvent>,
    /// Pass as `before` (order `desc`) or `after` (order `asc`) for the
    /// next page; null when this page is the last.
    pub next: Option<Cursor>,
}

/// `GET /api/channels` answer.
#[derive(Debug, Serialize)]
pub struct Channels {
    /// Busiest first.
    pub channels: Vec<ChannelEntry>,
}

/// One channel of `GET /api/channels`: its summary and its live state.
#[derive(Debug, Serialize)]
pub struct ChannelEntry {
    /// Counts and newest event.
    #[serde(flatten)]
    pub summary: ChannelSummary,
    /// The live state its newest status event gives; null when the store
    /// holds none (never seen, or retention removed them).
    pub stream: Option<StreamState>,
}

/// A channel's live state, from its newest stored status event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamState {
    /// Live (`stream_online`, `stream_update`) or not (`stream_offline`).
    pub live: bool,
    /// The stream's title, when live and known.
    pub title: Option<String>,
    /// Its category, when live and known.
    pub category: Option<String>,
    /// Concurrent viewers at the last look, when live and known.
    pub viewer_count: Option<u64>,
    /// When the stream went live.
    pub started_at: Option<DateTime<Utc>>,
    /// `sent_at` of the status event this comes from.
    pub as_of: DateTime<Utc>,
    /// Its cursor.
    pub cursor: Cursor,
}

/// Status lookups `GET /api/channels` runs at once.
const STATUS_LOOKUPS: usize = 8;

/// The live state a stored status event gives (`None` for other kinds).
pub fn stream_state(stored: &StoredEvent) -> Option<StreamState> {
    let event = ChatEvent::from_json(stored.event.get().as_bytes()).ok()?;
    let (live, details) = match event.body {
        EventBody::StreamOnline(d) | EventBody::StreamUpdate(d) => (true, d),
        EventBody::StreamOffline(d) => (
            false,
            StreamDetails {
                started_at: d.started_at,
                ..StreamDetails::default()
            },
        ),
        _ => return None,
    };
    Some(StreamState {
        live,
        title: details.title,
        category: details.category,
        viewer_count: details.viewer_count,
        started_at: details.started_at,
        as_of: event.sent_at,
        cursor: stored.cursor,
    })
}

/// Each channel with its live state: the status event at the channel's
/// `status_cursor` (kept by the store as status events are written), read
/// by its cursor, [`STATUS_LOOKUPS`] at once.
///
/// # Errors
/// The store's error.
pub async fn with_stream_state(
    store: &dyn Store,
    channels: Vec<ChannelSummary>,
) -> Result<Vec<ChannelEntry>, StoreError> {
    use futures::StreamExt;
    let queries: Vec<Option<EventQuery>> = channels
        .iter()
        .map(|c| {
            let at = c.status_cursor?;
            Some(EventQuery {
                after: Cursor::new(at.get() - 1),
                before: Some(at.next()),
                order: Order::Asc,
                limit: 1,
                ..EventQuery::default()
            })
        })
        .collect();
    let states: Vec<Result<Option<StreamState>, StoreError>> =
        futures::stream::iter(queries.into_iter().map(|query| async move {
            let Some(query) = query else {
                return Ok(None);
            };
            let found = store.query(&query).await?;
            Ok(found.first().and_then(stream_state))
        }))
        .buffered(STATUS_LOOKUPS)
        .collect()
        .await;
    channels
        .into_iter()
        .zip(states)
        .map(|(summary, stream)| {
            Ok(ChannelEntry {
                summary,
                stream: stream?,
            })
        })
        .collect()
}

/// A write route's gate: off (403 `code`, saying `why`) without `token`,
/// else behind `Authorization: Bearer <token>` (the header only; the read
/// token never writes). `POST /api/commands` and the privacy admin API.
pub(crate) fn write_gate(
    token: Option<Secret>,
    code: &'static str,
    why: &'static str,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let on = token.is_some();
    warp::any()
        .and_then(move || async move {
            if on {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::new(
                    StatusCode::FORBIDDEN,
                    code,
                    why,
                )))
            }
        })
        .untuple_one()
        .and(common::http::bearer_header_auth(token))
}

/// Seconds a client is asked to wait after `search_busy`.
const SEARCH_RETRY_AFTER_SECS: u32 = 1;

fn store_error(e: StoreError) -> Rejection {
    warp::reject::custom(match &e {
        StoreError::SearchTooLong { .. } => ApiError::bad_request("search_too_long", e.to_string()),
        StoreError::SearchBusy => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_busy",
            e.to_string(),
        ),
        StoreError::SearchTimeout(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_timeout",
            e.to_string(),
        ),
        _ if e.is_transient() => ApiError::unavailable(e),
        _ => ApiError::internal(e),
    })
}

/// `search_busy` with its `Retry-After`, answered here rather than by the
/// shared rejection handler (which sets no headers).
fn events_answer(
    result: Result<EventsPage, StoreError>,
) -> Result<warp::reply::Response, Rejection> {
    match result {
        Ok(page) => Ok(warp::reply::json(&page).into_response()),
        Err(StoreError::SearchBusy) => {
            let mut res = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search_busy",
                StoreError::SearchBusy.to_string(),
            )
            .into_response();
            res.headers_mut().insert(
                "retry-after",
                warp::http::HeaderValue::from(SEARCH_RETRY_AFTER_SECS),
            );
            Ok(res)
        }
        Err(e) => Err(store_error(e)),
    }
}

/// Refuses a query string that is not UTF-8 once percent-decoded
/// (`q=%FF`): 400 `invalid_query`, rather than searching for a
/// replacement character the client never typed.
fn utf8_query() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            let valid = raw
                .split('&')
                .all(|pair| std::str::from_utf8(&urlcode::decode_bytes(pair, true)).is_ok());
            if valid {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::bad_request(
                    "invalid_query",
                    "the query string is not UTF-8 once percent-decoded",
                )))
            }
        })
        .untuple_one()
}

/// The `/api` routes, behind the bearer token if one is set.
pub fn routes(
    store: Arc<dyn Store>,
    token: Option<Secret>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with_store = warp::any().map(move || store.clone());
    let api = warp::path("api").and(warp::get()).and(bearer_auth(token));

    let channels = api
        .clone()
        .and(warp::path!("channels"))
        .and(with_store.clone())
        .and_then(|store: Arc<dyn Store>| async move {
            let channels = store.channels().await.map_err(store_error)?;
            let channels = with_stream_state(store.as_ref(), channels)
                .await
                .map_err(store_error)?;
            Ok::<_, Rejection>(warp::reply::json(&Channels { channels }))
        });

    let events = api
        .clone()
        .and(warp::path!("events"))
        .and(utf8_query())
        .and(warp::query::<EventsParams>())
        .and(with_store.clone())
        .and_then(|params: EventsParams, store: Arc<dyn Store>| async move {
            let query = params.query().map_err(warp::reject::custom)?;
            events_answer(store.query(&query).await.map(|events| {
                let next = (events.len() == query.limit)
                    .then(|| events.last().map(|e| e.cursor))
                    .flatten();
                EventsPage { events, next }
            }))
        });

    let one = api
        .and(warp::path!("events" / String / String))
        .and(with_store)
        .and_then(
            |platform: String, id: String, store: Arc<dyn Store>| async move {
                // warp hands path segments over as sent: `%20` is still
                // `%20`, and an id may hold any character.
                let platform = percent_decode_path(&platform);
                let id = percent_decode_path(&id);
                match store.get(&platform, &id).await.map_err(store_error)? {
                    Some(event) => Ok::<_, Rejection>(warp::reply::json(&event)),
                    None => Err(warp::reject::custom(ApiError::not_found(format!(
                        "no event {id} on {platform}"
                    )))),
                }
            },
        );

    channels.or(events).or(one)
}
