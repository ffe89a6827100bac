//! warp plumbing shared by the services: one [`ApiError`] type, one
//! [`handle_rejection`] for `.recover(...)`, bearer-token auth, `/healthz`,
//! `/metrics`, and serving on a given listener until shutdown.

use std::convert::Infallible;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::secret::Secret;

/// An error answered as JSON `{"error": code, "message": message}`.
///
/// `code` is a stable snake_case identifier clients can match on; `message`
/// is for humans. For 5xx errors the cause is logged, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_cursor`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`: logs `cause`, answers a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(error_id = %id, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error (id {id}); see the server log"),
        )
    }

    /// 503 `unavailable`: logs `cause`, answers a generic message.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "service unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "temporarily unavailable",
        )
    }

    /// This error as a warp reply.
    pub fn into_response(self) -> warp::reply::Response {
        let body = warp::reply::json(&ErrorBody {
            error: self.code,
            message: &self.message,
        });
        let mut res = warp::reply::with_status(body, self.status).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                "www-authenticate",
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

/// The single rejection handler: every rejection becomes a JSON [`ApiError`].
///
/// # Errors
/// Never: the `Result` is what `Filter::recover` requires.
pub async fn handle_rejection(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::not_found("no such route")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("invalid_query", e.to_string())
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::bad_request("invalid_body", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request("missing_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingCookie>() {
        ApiError::bad_request("missing_cookie", e.to_string())
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the body with a Content-Length",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        )
    } else {
        ApiError::internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(error.into_response())
}

/// A filter that passes when `token` is `None` (auth disabled) or the request
/// carries `Authorization: Bearer <token>` (or `?access_token=<token>`, for
/// browsers' WebSocket API, which cannot set headers). Otherwise 401.
pub fn bearer_auth(token: Option<Secret>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    bearer(token, true)
}

/// As [`bearer_auth`], but only the `Authorization` header counts: for
/// keys that must not end up in URLs (and so in proxy and access logs).
pub fn bearer_header_auth(
    token: Option<Secret>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    bearer(token, false)
}

fn bearer(
    token: Option<Secret>,
    allow_query: bool,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let token = std::sync::Arc::new(token.filter(|t| !t.is_empty()));
    warp::header::optional::<String>("authorization")
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and_then(move |header: Option<String>, query: String| {
            let token = token.clone();
            async move {
                let Some(expected) = token.as_ref() else {
                    return Ok(());
                };
                let from_header = header.as_deref().and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                });
                let from_query = query
                    .split('&')
                    .filter(|_| allow_query)
                    .find_map(|kv| kv.strip_prefix("access_token="))
                    .map(|v| percent_decode(v, true));
                let offered = from_header.map(str::to_owned).or(from_query);
                match offered {
                    Some(t) if constant_time_eq(t.as_bytes(), expected.expose().as_bytes()) => {
                        Ok(())
                    }
                    _ => Err(warp::reject::custom(ApiError::unauthorized())),
                }
            }
        })
        .untuple_one()
}

/// Decodes `%XX` escapes of a URL path segment (`+` stays `+`); invalid
/// UTF-8 is replaced.
pub fn percent_decode_path(s: &str) -> String {
    crate::urlcode::decode(s, false)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    crate::urlcode::decode(s, plus_is_space)
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /healthz`: 200 `ok` while the process serves HTTP.
pub fn healthz() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(|| "ok")
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(
    handle: PrometheusHandle,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            handle.render(),
            "content-type",
            "text/plain; version=0.0.4; charset=utf-8",
        )
    })
}

/// Serves `filter` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve<F>(filter: F, listener: TcpListener, shutdown: CancellationToken)
where
    F: Filter<Error = Rejection> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    no_delay(&listener);
    let filter = filter.recover(handle_rejection);
    warp::serve(filter)
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await })
        .run()
        .await;
}

/// Turns Nagle's algorithm off for every connection `listener` accepts.
///
/// Replies and WebSocket frames are small and wanted at once. With Nagle on,
/// a frame written while the previous one is unacknowledged waits for the
/// ACK, which a client that only reads delays by up to 40 ms. warp has no
/// per-connection hook, so this is set on the listener: Linux copies
/// `TCP_NODELAY` to each accepted socket (tested below). Elsewhere it may
/// not be copied, which costs latency, not correctness.
fn no_delay(listener: &TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on the listener; small replies may be delayed");
    }
}

/// Binds `addr`, naming it in the error.
///
/// # Errors
/// When the address is in use or not ours.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let before = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted_before, _) = listener.accept().await.unwrap();
        assert!(
            !accepted_before.nodelay().unwrap(),
            "the default is Nagle on, or this test proves nothing"
        );
        no_delay(&listener);
        let after = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is inherited");
        drop((before, after));
    }

    #[tokio::test]
    async fn rejections_become_json_errors() {
        let route = warp::path!("x")
            .and(warp::get())
            .and_then(|| async {
                Err::<String, _>(warp::reject::custom(ApiError::bad_request(
                    "bad_thing",
                    "nope",
                )))
            })
            .recover(handle_rejection);
        let res = warp::test::request().path("/x").reply(&route).await;
        assert_eq!(res.status(), 400);
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "bad_thing", "message": "nope"})
        );
        let res = warp::test::request().path("/nope").reply(&route).await;
        assert_eq!(res.status(), 404);
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let res = ApiError::internal("database password is hunter2").into_response();
        assert_eq!(res.status(), 500);
        let body = format!("{:?}", res.body());
        assert!(!body.contains("hunter2"));
    }

    #[tokio::test]
    async fn bearer_auth_accepts_header_or_query_and_rejects_others() {
        let route = bearer_auth(Some(Secret::new("s3cret")))
            .map(|| "in")
            .recover(handle_rejection);
        let ok = warp::test::request()
            .header("authorization", "Bearer s3cret")
            .reply(&route)
            .await;
        assert_eq!(ok.status(), 200);
        let ok = warp::test::request()
            .path("/?access_token=s3cret")
            .reply(&route)
            .await;
        assert_eq!(ok.status(), 200);
        for bad in ["Bearer nope", "Basic s3cret", ""] {
            let res = warp::test::request()
                .header("authorization", bad)
                .reply(&route)
                .await;
            assert_eq!(res.status(), 401, "{bad}");
        }
        let open = bearer_auth(None).map(|| "in").recover(handle_rejection);
        assert_eq!(warp::test::request().reply(&open).await.status(), 200);
    }

    #[test]
    fn percent_decoding_handles_edge_cases() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("%zz%", true), "%zz%");
        assert_eq!(percent_decode("é%C3%A9", true), "éé");
        assert_eq!(percent_decode_path("a%20b+c%2Fd"), "a b+c/d");
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
