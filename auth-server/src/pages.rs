//! The HTML pages: the status page and the outcomes of an authorization.
//!
//! Every interpolated value is escaped. No page ever contains a token or the
//! client secret: pages are built from [`StoredToken`]'s public fields only.
//! Pages are sent with `Cache-Control: no-store`, `Referrer-Policy:
//! no-referrer` (the callback URL holds the authorization code) and a
//! content security policy that allows no scripts and no framing.

use chrono::{DateTime, Utc};
use common::oauth::ProviderKind;
use common::token_store::{AccountStatus, StoredToken};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

/// One provider on the status page.
#[derive(Debug)]
pub struct ProviderView {
    /// Which provider.
    pub kind: ProviderKind,
    /// Whether its client id and secret are configured.
    pub configured: bool,
    /// Its accounts in the token store.
    pub accounts: Vec<StoredToken>,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A rendered page and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// HTTP status.
    pub status: StatusCode,
    /// The whole document.
    pub html: String,
}

impl Page {
    /// The response, with the security headers.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(self.html.into());
        *response.status_mut() = self.status;
        secure_headers(&mut response, "text/html; charset=utf-8");
        response
    }
}

impl warp::Reply for Page {
    fn into_response(self) -> Response {
        Page::into_response(self)
    }
}

/// A page with the common layout.
pub fn html(status: StatusCode, title: &str, body: &str) -> Page {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · chatbus auth</title><style>{STYLE}</style></head>\n\
         <body><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
    );
    Page { status, html }
}

/// Adds the headers every page and redirect carries.
pub fn secure_headers(response: &mut Response, content_type: &'static str) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", content_type),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
main{max-width:60rem}table{border-collapse:collapse;margin:.5rem 0 1rem}\
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
.bad{color:#b00020;font-weight:bold}.ok{color:#0a7a2f;font-weight:bold}\
code{background:#f4f4f4;padding:0 .2rem}a.button{display:inline-block;padding:.4rem .8rem;\
background:#6441a5;color:#fff;text-decoration:none;border-radius:4px}";

/// A duration as people read it: `3h 12m`, `45s`, `2d 4h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `2026-01-01 12:00:00 UTC (in 3h 12m)` or `(... ago)`.
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = (t - now).num_seconds();
    let relative = if delta >= 0 {
        format!("in {}", human_duration(delta))
    } else {
        format!("{} ago", human_duration(delta))
    };
    format!("{} ({relative})", t.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn when_opt(t: Option<DateTime<Utc>>, now: DateTime<Utc>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), |t| when(t, now))
}

fn authorize_path(kind: ProviderKind) -> String {
    format!("/auth/{}", kind.name())
}

/// The state of one account, for people.
pub fn account_state(token: &StoredToken, now: DateTime<Utc>) -> (&'static str, String) {
    match token.status {
        AccountStatus::ReauthRequired => (
            "reauth_required",
            format!(
                "reauthorization required: {}",
                token
                    .status_reason
                    .as_deref()
                    .unwrap_or("the refresh token was rejected")
            ),
        ),
        AccountStatus::Valid if token.expires_at.is_some_and(|t| t <= now) => (
            "expired",
            if token.refresh_token.is_some() {
                "access token expired; it will be refreshed".to_owned()
            } else {
                "access token expired and there is no refresh token".to_owned()
            },
        ),
        AccountStatus::Valid => ("valid", "authorized".to_owned()),
    }
}

/// `GET /`: every provider, its accounts and a link to authorize.
pub fn status_page(
    providers: &[ProviderView],
    redirect_url: &str,
    store_path: &str,
    now: DateTime<Utc>,
) -> Page {
    let mut body = String::new();
    for p in providers {
        let name = p.kind.display_name();
        body.push_str(&format!(
            "<section data-provider=\"{}\">\n<h2>{}</h2>\n",
            p.kind.name(),
            escape(name)
        ));
        if !p.configured {
            let key = p.kind.name().to_ascii_uppercase();
            body.push_str(&format!(
                "<p>Not configured. Set <code>{key}_CLIENT_ID</code> and \
                 <code>{key}_CLIENT_SECRET</code> (or <code>{key}_CLIENT_SECRET_FILE</code>); \
                 see <code>docs/auth.md</code>.</p>\n"
            ));
        } else {
            if p.accounts.is_empty() {
                body.push_str(&format!(
                    "<p class=\"bad\">No {} account is authorized yet.</p>\n",
                    escape(name)
                ));
            } else {
                body.push_str(
                    "<table><tr><th>Account</th><th>User id</th><th>Scopes</th><th>Expires</th>\
                     <th>Last refresh</th><th>Last validated</th><th>State</th></tr>\n",
                );
                for t in &p.accounts {
                    let (code, text) = account_state(t, now);
                    let class = if code == "valid" { "ok" } else { "bad" };
                    body.push_str(&format!(
                        "<tr data-account=\"{key}\" data-status=\"{code}\"><td>{login}</td><td>{uid}</td>\
                         <td>{scopes}</td><td>{expires}</td><td>{refreshed}</td><td>{validated}</td>\
                         <td class=\"{class}\">{text}</td></tr>\n",
                        key = escape(&t.key()),
                        login = escape(&t.login),
                        uid = escape(&t.user_id),
                        scopes = escape(&t.scopes.join(" ")),
                        expires = escape(&when_opt(t.expires_at, now, "never")),
                        refreshed = escape(&when_opt(t.last_refreshed_at, now, "never")),
                        validated = escape(&when_opt(t.last_validated_at, now, "never")),
                        text = escape(&text),
                    ));
                }
                body.push_str("</table>\n");
            }
            body.push_str(&format!(
                "<p><a class=\"button\" href=\"{}\">Authorize a {} account</a></p>\n",
                authorize_path(p.kind),
                escape(name)
            ));
        }
        body.push_str("</section>\n");
    }
    body.push_str(&format!(
        "<p>Redirect URL to register with each provider: <code>{}</code><br>\
         Token store: <code>{}</code></p>",
        escape(redirect_url),
        escape(store_path)
    ));
    html(StatusCode::OK, "Accounts", &body)
}

/// The callback's success page: what was stored, never the token.
pub fn success_page(token: &StoredToken, kind: ProviderKind, now: DateTime<Utc>) -> Page {
    let refresh = if token.refresh_token.is_some() {
        "a refresh token (it will be kept fresh automatically)"
    } else {
        "no refresh token: the provider issued none, so the account must be authorized again when the access token expires"
    };
    let body = format!(
        "<p class=\"ok\" data-outcome=\"stored\">Stored {provider} account <strong>{login}</strong> \
         (user id {uid}) as <code>{key}</code>.</p>\n<ul>\n<li>Scopes: {scopes}</li>\n\
         <li>Access token expires: {expires}</li>\n<li>With {refresh}</li>\n</ul>\n\
         <p><a href=\"/\">Back to all accounts</a></p>",
        provider = escape(kind.display_name()),
        login = escape(&token.login),
        uid = escape(&token.user_id),
        key = escape(&token.key()),
        scopes = escape(&token.scopes.join(" ")),
        expires = escape(&when_opt(token.expires_at, now, "never")),
    );
    html(StatusCode::OK, "Authorized", &body)
}

/// A failure page with a stable `code`.
pub fn error_page(status: StatusCode, code: &str, title: &str, message: &str) -> Page {
    let body = format!(
        "<p class=\"bad\" data-error=\"{code}\">{message}</p>\n\
         <p>Error code: <code>{code}</code>. Nothing was stored.</p>\n\
         <p><a href=\"/\">Back to all accounts</a></p>",
        code = escape(code),
        message = escape(message),
    );
    html(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Secret;

    fn token() -> StoredToken {
        let now = Utc::now();
        StoredToken {
            platform: "twitch".into(),
            login: "<script>bot".into(),
            user_id: "1".into(),
            access_token: Secret::new("access-SECRET"),
            refresh_token: Some(Secret::new("refresh-SECRET")),
            expires_at: Some(now + chrono::Duration::hours(4)),
            scopes: vec!["chat:read".into()],
            obtained_at: now,
            last_refreshed_at: None,
            last_validated_at: Some(now),
            status: AccountStatus::Valid,
            status_reason: None,
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(-125), "2m 5s");
        assert_eq!(human_duration(3 * 3600 + 12 * 60 + 9), "3h 12m");
        assert_eq!(human_duration(2 * 86_400 + 4 * 3600), "2d 4h");
    }

    #[test]
    fn states_for_people() {
        let now = Utc::now();
        let mut t = token();
        assert_eq!(account_state(&t, now).0, "valid");
        t.expires_at = Some(now - chrono::Duration::seconds(1));
        assert_eq!(account_state(&t, now).0, "expired");
        t.status = AccountStatus::ReauthRequired;
        t.status_reason = Some("Invalid refresh token".into());
        let (code, text) = account_state(&t, now);
        assert_eq!(code, "reauth_required");
        assert!(text.contains("Invalid refresh token"));
    }

    #[test]
    fn pages_never_show_tokens_and_escape_what_they_show() {
        let now = Utc::now();
        let view = ProviderView {
            kind: ProviderKind::Twitch,
            configured: true,
            accounts: vec![token()],
        };
        let status = status_page(
            &[view],
            "http://localhost:3000/auth/callback",
            "t.json",
            now,
        );
        let text = status.html.clone();
        let response = status.into_response();
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("<script>") && text.contains("&lt;script&gt;bot"));
        assert!(text.contains("href=\"/auth/twitch\""));
        let text = success_page(&token(), ProviderKind::Twitch, now).html;
        assert!(
            !text.contains("SECRET") && text.contains("chat:read"),
            "{text}"
        );
    }
}
