//! The web page (`GET /`) and the OBS overlay (`GET /overlay`): one static
//! page whose script (`assets/app.js`) talks to `/ws` (and, given a command
//! token in its URL fragment, posts to `/api/commands`). The assets are
//! compiled into the binary, the page's icon (`assets/icon.svg`) too;
//! `GET /favicon.ico`, which browsers ask for on their own, is a 204.

use warp::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use warp::{Filter, Rejection, Reply};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// Scripts and styles only from here; emote images from Twitch's CDN,
/// authors' pictures from YouTube's; WebSocket and fetch only to this
/// origin.
const CSP: &str = "default-src 'self'; img-src 'self' https://static-cdn.jtvnw.net \
     https://yt3.ggpht.com https://yt4.ggpht.com https://lh3.googleusercontent.com; \
     connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    let mut res = warp::reply::Response::new(body.into());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.parse().expect("valid header"));
    headers.insert(CACHE_CONTROL, "no-cache".parse().expect("valid header"));
    headers.insert(CONTENT_SECURITY_POLICY, CSP.parse().expect("valid header"));
    headers.insert(
        "x-content-type-options",
        "nosniff".parse().expect("valid header"),
    );
    res
}

/// `GET /`, `GET /overlay`, `GET /assets/*` and `GET /favicon.ico`. Open even when an API token
/// is set: the page holds no data; it passes `?access_token=` on to the API.
pub fn routes() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let html = || asset(INDEX, "text/html; charset=utf-8");
    let index = warp::path::end().and(warp::get()).map(html);
    let overlay = warp::path!("overlay").and(warp::get()).map(html);
    let js = warp::path!("assets" / "app.js")
        .and(warp::get())
        .map(|| asset(APP_JS, "text/javascript; charset=utf-8"));
    let css = warp::path!("assets" / "style.css")
        .and(warp::get())
        .map(|| asset(STYLE, "text/css; charset=utf-8"));
    let icon = warp::path!("assets" / "icon.svg")
        .and(warp::get())
        .map(|| asset(ICON, "image/svg+xml"));
    // The page names its icon; a browser that asks for /favicon.ico anyway
    // gets "nothing here" rather than a 404 in its console and our logs.
    let favicon = warp::path!("favicon.ico").and(warp::get()).map(|| {
        warp::reply::with_header(
            warp::reply::with_status(warp::reply(), warp::http::StatusCode::NO_CONTENT),
            CACHE_CONTROL,
            "max-age=86400",
        )
    });
    index.or(overlay).or(js).or(css).or(icon).or(favicon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn page_overlay_and_assets_are_served_with_types() {
        let routes = routes();
        for (path, ty) in [
            ("/", "text/html"),
            ("/overlay?channels=twitch:x", "text/html"),
            ("/assets/app.js", "text/javascript"),
            ("/assets/style.css", "text/css"),
            ("/assets/icon.svg", "image/svg+xml"),
        ] {
            let res = warp::test::request().path(path).reply(&routes).await;
            assert_eq!(res.status(), 200, "{path}");
            let ct = res.headers()[CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(ty), "{path}: {ct}");
            assert!(res.headers().contains_key(CONTENT_SECURITY_POLICY));
        }
        let page = warp::test::request().path("/").reply(&routes).await;
        let body = String::from_utf8_lossy(page.body());
        assert!(body.contains("/assets/app.js") && body.contains("id=\"chat\""));
        assert!(
            body.contains("href=\"/assets/icon.svg\""),
            "the page names its icon"
        );
    }

    #[tokio::test]
    async fn favicon_ico_is_no_content_not_a_404() {
        let res = warp::test::request()
            .path("/favicon.ico")
            .reply(&routes())
            .await;
        assert_eq!(res.status(), 204);
        assert!(res.body().is_empty());
    }
}
