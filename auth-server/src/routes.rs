//! The HTTP routes: `GET /` (status page), `GET /auth` and
//! `GET /auth/<provider>` (start an authorization), the callback (at the
//! redirect URL's path, `/auth/callback` by default), `/healthz` and
//! `/metrics`.
//!
//! The callback checks `state` (known, unused, unexpired, this browser's)
//! before anything else; a bad state is a 400 and nothing is written.
//! Provider errors, token-endpoint failures, timeouts and malformed answers
//! get a page saying what happened, are logged, and write nothing. Only a
//! token that was exchanged and validated is written to the store.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use common::oauth::{Endpoint, OAuthError, ProviderKind};
use common::token_store::StoredToken;
use metrics_exporter_prometheus::PrometheusHandle;
use warp::filters::path::FullPath;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::App;
use crate::csrf_state::{BROWSER_COOKIE, is_token, random_token};
use crate::pages::{self, Page, ProviderView, error_page, secure_headers};

/// Every route of the auth-server.
pub fn routes(
    app: Arc<App>,
    metrics: PrometheusHandle,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone + Send + Sync + 'static {
    let callback_path = Arc::new(app.config().callback_path());
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    // First: the callback path may look like /auth/<provider>.
    let callback = warp::get()
        .and(warp::path::full())
        .and_then(move |path: FullPath| {
            let matches = path.as_str() == callback_path.as_str();
            async move {
                if matches {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::cookie::optional::<String>(BROWSER_COOKIE))
        .and(with_app.clone())
        .then(callback);
    let status = warp::path::end()
        .and(warp::get())
        .and(with_app.clone())
        .then(status);
    let auth_default = warp::path!("auth").map(|| None::<String>);
    let auth_named = warp::path!("auth" / String).map(Some);
    let auth = auth_default
        .or(auth_named)
        .unify()
        .and(warp::get())
        .and(warp::header::optional::<String>("host"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::cookie::optional::<String>(BROWSER_COOKIE))
        .and(with_app)
        .map(begin);
    callback
        .or(status)
        .or(auth)
        .or(common::http::healthz())
        .or(common::http::metrics(metrics))
}

/// `GET /`.
async fn status(app: Arc<App>) -> Page {
    let now = Utc::now();
    let file = match app.store().load_async().await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the token store");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_unreadable",
                "Token store unreadable",
                &e.to_string(),
            );
        }
    };
    let views: Vec<ProviderView> = [ProviderKind::Twitch, ProviderKind::Google]
        .into_iter()
        .map(|kind| ProviderView {
            kind,
            configured: app.manager(kind).is_some(),
            accounts: file
                .accounts
                .values()
                .filter(|t| t.platform == kind.platform())
                .cloned()
                .collect(),
        })
        .collect();
    pages::status_page(
        &views,
        &app.config().auth_redirect_url,
        &app.store().path().display().to_string(),
        now,
    )
}

/// `GET /auth`, `GET /auth/<provider>`: sends the browser to the provider.
fn begin(
    provider: Option<String>,
    host: Option<String>,
    query: HashMap<String, String>,
    cookie: Option<String>,
    app: Arc<App>,
) -> Response {
    let kind = match provider.as_deref() {
        None | Some("twitch") => ProviderKind::Twitch,
        Some("google" | "youtube") => ProviderKind::Google,
        Some("kick") => ProviderKind::Kick,
        Some(other) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "unknown_provider",
                "Unknown provider",
                &format!(
                    "There is no provider called {other:?}; use /auth/twitch, /auth/google or /auth/kick."
                ),
            )
            .into_response();
        }
    };
    let Some(manager) = app.manager(kind) else {
        let key = kind.name().to_ascii_uppercase();
        return error_page(
            StatusCode::NOT_FOUND,
            "provider_not_configured",
            "Provider not configured",
            &format!(
                "{} is not configured: set {key}_CLIENT_ID and {key}_CLIENT_SECRET and restart.",
                kind.display_name()
            ),
        )
        .into_response();
    };
    let redirect_url = &app.config().auth_redirect_url;
    // The state cookie must be set on the origin the provider will send the
    // browser back to, or the callback cannot see it. A browser that came in
    // on another name (127.0.0.1 vs localhost) is first sent over there once.
    if let Some(origin) = other_origin(redirect_url, host.as_deref())
        && !query.contains_key("moved")
    {
        let target = format!("{origin}/auth/{}?moved=1", kind.name());
        return redirect(&target, None);
    }
    let browser = cookie.filter(|c| is_token(c)).unwrap_or_else(random_token);
    let state = crate::csrf_state::random_token();
    let url = match manager.client().authorize_url_pkce(redirect_url, &state) {
        Ok((url, verifier)) => {
            app.states().begin_with(&state, kind, &browser, verifier);
            url
        }
        Err(e) => {
            tracing::error!(provider = kind.name(), error = %e, "cannot build the authorize URL");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "settings",
                "Cannot start",
                &e.to_string(),
            )
            .into_response();
        }
    };
    let secure = if redirect_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{BROWSER_COOKIE}={browser}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        app.states().ttl().as_secs()
    );
    metrics::counter!("chatbus_auth_authorizations_started_total", "provider" => kind.name())
        .increment(1);
    tracing::info!(
        provider = kind.name(),
        "sending the browser to the provider"
    );
    redirect(url.as_str(), Some(&cookie))
}

/// The redirect URL's origin (`scheme://host:port`), when the request came
/// in on a different `Host`.
fn other_origin(redirect_url: &str, host: Option<&str>) -> Option<String> {
    let url = reqwest::Url::parse(redirect_url).ok()?;
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str()?),
        None => url.host_str()?.to_owned(),
    };
    let host = host?;
    (!host.eq_ignore_ascii_case(&authority)).then(|| format!("{}://{authority}", url.scheme()))
}

fn redirect(location: &str, cookie: Option<&str>) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::FOUND;
    secure_headers(&mut response, "text/plain; charset=utf-8");
    let headers = response.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert("location", v);
        }
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "settings",
                "Cannot start",
                "the authorize URL is not a valid header value",
            )
            .into_response();
        }
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("set-cookie", cookie);
    }
    response
}

fn count(kind: Option<ProviderKind>, outcome: &'static str) {
    let provider = kind.map_or("unknown", ProviderKind::name);
    metrics::counter!("chatbus_auth_callbacks_total", "provider" => provider, "outcome" => outcome)
        .increment(1);
}

/// The callback: state, provider error, code exchange, validation, store.
async fn callback(query: HashMap<String, String>, cookie: Option<String>, app: Arc<App>) -> Page {
    let state = param(&query, "state");
    let error = param(&query, "error");
    let description = param(&query, "error_description");
    let code = param(&query, "code");
    let (kind, verifier) = match app
        .states()
        .finish_with(state.as_deref(), cookie.as_deref())
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(code = e.code(), "callback refused: {e}");
            count(None, e.code());
            return error_page(
                StatusCode::BAD_REQUEST,
                e.code(),
                "Authorization refused",
                &format!("{e}. Nothing was stored; start again from the status page."),
            );
        }
    };
    let provider = kind.display_name();
    if let Some(error) = error.as_deref() {
        let description = description.as_deref().unwrap_or("no description");
        tracing::warn!(
            provider = kind.name(),
            error,
            description,
            "the provider refused the authorization"
        );
        count(Some(kind), "provider_error");
        let (status, code, title) = match error {
            "access_denied" => (StatusCode::FORBIDDEN, "access_denied", "Access denied"),
            "temporarily_unavailable" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "Provider unavailable",
            ),
            "server_error" => (StatusCode::BAD_GATEWAY, "provider_error", "Provider error"),
            _ => (
                StatusCode::BAD_REQUEST,
                "provider_error",
                "Authorization refused",
            ),
        };
        let message = if error == "access_denied" {
            format!("Access was denied at {provider} ({description}); nothing was stored.")
        } else {
            format!("{provider} refused the authorization: {error}: {description}.")
        };
        return error_page(status, code, title, &message);
    }
    let Some(code) = code.as_deref() else {
        tracing::warn!(provider = kind.name(), "callback without code or error");
        count(Some(kind), "missing_code");
        return error_page(
            StatusCode::BAD_REQUEST,
            "missing_code",
            "Authorization refused",
            "The callback carries neither a code nor an error.",
        );
    };
    let Some(manager) = app.manager(kind).cloned() else {
        count(Some(kind), "not_configured");
        return error_page(
            StatusCode::NOT_FOUND,
            "provider_not_configured",
            "Provider not configured",
            provider,
        );
    };
    let token = match manager
        .client()
        .authorize_account_with(code, &app.config().auth_redirect_url, verifier.as_ref())
        .await
    {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(provider = kind.name(), error = %e, "authorization failed; nothing stored");
            let (status, code) = classify(&e);
            count(Some(kind), code);
            return error_page(status, code, "Authorization failed", &e.to_string());
        }
    };
    if let Err(e) = manager.store_authorized(token.clone()).await {
        tracing::error!(provider = kind.name(), error = %e, "cannot write the token store");
        count(Some(kind), "store_failed");
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failed",
            "Cannot store the token",
            &e.to_string(),
        );
    }
    count(Some(kind), "stored");
    stored_page(&token, kind)
}

fn param(query: &HashMap<String, String>, key: &str) -> Option<String> {
    query.get(key).filter(|v| !v.is_empty()).cloned()
}

fn stored_page(token: &StoredToken, kind: ProviderKind) -> Page {
    pages::success_page(token, kind, Utc::now())
}

/// The status and stable code of a failed exchange or validation.
fn classify(e: &OAuthError) -> (StatusCode, &'static str) {
    match e {
        OAuthError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "provider_timeout"),
        OAuthError::Provider {
            endpoint: Endpoint::CodeExchange,
            ..
        } => (StatusCode::BAD_GATEWAY, "code_rejected"),
        OAuthError::Provider { .. } => (StatusCode::BAD_GATEWAY, "provider_error"),
        OAuthError::Http { .. } => (StatusCode::BAD_GATEWAY, "provider_unreachable"),
        OAuthError::InvalidResponse { .. } => {
            (StatusCode::BAD_GATEWAY, "provider_invalid_response")
        }
        OAuthError::WrongClient { .. } => (StatusCode::BAD_GATEWAY, "wrong_client"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_another_name_is_sent_to_the_redirect_origin() {
        let r = "http://localhost:3000/auth/callback";
        assert_eq!(other_origin(r, Some("localhost:3000")), None);
        assert_eq!(other_origin(r, Some("LOCALHOST:3000")), None);
        assert_eq!(
            other_origin(r, Some("127.0.0.1:3000")).as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            other_origin("https://a.example/cb", Some("a.example")),
            None
        );
        assert_eq!(other_origin(r, None), None);
    }
}
