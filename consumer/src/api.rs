//! The REST API (documented in `docs/rest-api.md`):
//!
//! * `GET /api/channels`: every channel with its counts and newest event.
//! * `GET /api/events?platform=&channel=&user=&kind=&q=&before=&after=&limit=&order=`:
//!   a page of events, newest first by default, with a `next` cursor.
//! * `GET /api/events/{platform}/{id}`: one event; both segments are
//!   percent-decoded (an id may hold `/`, spaces, anything).
//!
//! Every answer is JSON; errors are `{"error": code, "message": ...}`.

use std::sync::Arc;

use common::Secret;
use common::http::{ApiError, bearer_auth, percent_decode_path};
use common::schema::EventKind;
use common::urlcode;
use serde::{Deserialize, Serialize};
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
    pub channels: Vec<ChannelSummary>,
}

fn store_error(e: StoreError) -> Rejection {
    if let StoreError::SearchTimeout(_) = e {
        return warp::reject::custom(ApiError::new(
            warp::http::StatusCode::SERVICE_UNAVAILABLE,
            "search_timeout",
            e.to_string(),
        ));
    }
    warp::reject::custom(if e.is_transient() {
        ApiError::unavailable(e)
    } else {
        ApiError::internal(e)
    })
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

/// How much a text search (`q`) may ask of the store: its words and bytes,
/// and how many run at once (the rest wait [`SEARCH_WAIT`], then 503).
#[derive(Debug, Clone)]
pub struct SearchLimits {
    max_words: usize,
    max_bytes: usize,
    running: Arc<tokio::sync::Semaphore>,
}

/// How long a search waits for one of the running ones to end.
pub const SEARCH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl SearchLimits {
    /// At most `max_words` words and `max_bytes` bytes, `concurrency` at once.
    pub fn new(max_words: usize, max_bytes: usize, concurrency: usize) -> Self {
        Self {
            max_words,
            max_bytes,
            running: Arc::new(tokio::sync::Semaphore::new(concurrency)),
        }
    }

    /// 400 `query_too_long` when `q` asks for more than the limits allow.
    fn check(&self, q: &str) -> Result<(), ApiError> {
        let words = crate::store::search_word_count(q);
        if q.len() > self.max_bytes || words > self.max_words {
            return Err(ApiError::bad_request(
                "query_too_long",
                format!(
                    "`q` has {words} words and {} bytes; at most {} words and {} bytes",
                    q.len(),
                    self.max_words,
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self::new(32, 512, 2)
    }
}

/// 503 `search_busy` with `Retry-After`.
fn search_busy() -> warp::reply::Response {
    let mut response = ApiError::new(
        warp::http::StatusCode::SERVICE_UNAVAILABLE,
        "search_busy",
        "too many searches are running; retry in a moment",
    )
    .into_response();
    response.headers_mut().insert(
        warp::http::header::RETRY_AFTER,
        warp::http::HeaderValue::from_static("1"),
    );
    response
}

/// The `/api` routes, behind the bearer token if one is set.
pub fn routes(
    store: Arc<dyn Store>,
    token: Option<Secret>,
    search: SearchLimits,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with_store = warp::any().map(move || store.clone());
    let api = warp::path("api").and(warp::get()).and(bearer_auth(token));

    let channels = api
        .clone()
        .and(warp::path!("channels"))
        .and(with_store.clone())
        .and_then(|store: Arc<dyn Store>| async move {
            let channels = store.channels().await.map_err(store_error)?;
            Ok::<_, Rejection>(warp::reply::json(&Channels { channels }))
        });

    let events = api
        .clone()
        .and(warp::path!("events"))
        .and(utf8_query())
        .and(warp::query::<EventsParams>())
        .and(with_store.clone())
        .and(warp::any().map(move || search.clone()))
        .and_then(
            |params: EventsParams, store: Arc<dyn Store>, search: SearchLimits| async move {
                let query = params.query().map_err(warp::reject::custom)?;
                // A text search is bounded: in size, and in how many run.
                let _running = match &query.filter.text {
                    Some(q) => {
                        search.check(q).map_err(warp::reject::custom)?;
                        match tokio::time::timeout(
                            SEARCH_WAIT,
                            search.running.clone().acquire_owned(),
                        )
                        .await
                        {
                            Ok(Ok(permit)) => Some(permit),
                            _ => return Ok::<_, Rejection>(search_busy()),
                        }
                    }
                    None => None,
                };
                let events = store.query(&query).await.map_err(store_error)?;
                let next = (events.len() == query.limit)
                    .then(|| events.last().map(|e| e.cursor))
                    .flatten();
                Ok(warp::reply::json(&EventsPage { events, next }).into_response())
            },
        );

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

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_store(dir: &std::path::Path) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.join("api.sqlite").display());
        crate::store::open(&url, &crate::store::StoreOptions::default())
            .await
            .unwrap()
    }

    async fn get(
        routes: &(impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone + 'static),
        path: &str,
    ) -> (u16, Option<String>, serde_json::Value) {
        let res = warp::test::request()
            .path(path)
            .reply(&routes.clone().recover(common::http::handle_rejection))
            .await;
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = serde_json::from_slice(res.body()).unwrap_or_default();
        (res.status().as_u16(), retry, body)
    }

    #[tokio::test]
    async fn a_search_over_the_limits_is_refused_with_query_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let routes = routes(
            sqlite_store(dir.path()).await,
            None,
            SearchLimits::new(3, 40, 1),
        );
        let (status, _, body) = get(&routes, "/api/events?q=a%20b%20c").await;
        assert_eq!(status, 200, "{body}");
        for q in ["a%20b%20c%20d", &"x".repeat(41), &"word%20".repeat(4081)] {
            let (status, _, body) = get(&routes, &format!("/api/events?q={q}")).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("query_too_long")),
                "{body}"
            );
        }
        // Words the stores drop (no letter or digit) do not count.
        let (status, _, _) = get(&routes, "/api/events?q=a%20-%20--%20b").await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn searches_past_the_concurrency_wait_get_503_and_other_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SearchLimits::new(32, 512, 1);
        let routes = routes(sqlite_store(dir.path()).await, None, limits.clone());
        // A search that holds the only slot.
        let running = limits.running.clone().acquire_owned().await.unwrap();
        let (status, retry, body) = get(&routes, "/api/events?q=hello").await;
        assert_eq!(
            (status, body["error"].as_str(), retry.as_deref()),
            (503, Some("search_busy"), Some("1")),
            "{body}"
        );
        // Reads that are not searches do not wait for the slot.
        let (status, _, _) = get(&routes, "/api/channels").await;
        assert_eq!(status, 200);
        let (status, _, _) = get(&routes, "/api/events").await;
        assert_eq!(status, 200);
        drop(running);
        let (status, _, _) = get(&routes, "/api/events?q=hello").await;
        assert_eq!(status, 200);
    }
}
