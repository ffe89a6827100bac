//! Spawns the auth-server on 127.0.0.1:0 against a fake OAuth provider.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auth_server::{App, Config};
use chrono::Utc;
use common::Secret;
use common::config::ServiceConfig;
use common::oauth::ProviderSettings;
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::{AccountStatus, StoredToken, TokenFile, TokenStore};
use testkit::fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth, Flavour};
use tokio_util::sync::CancellationToken;

/// A running auth-server and its fake provider.
pub(crate) struct TestServer {
    pub(crate) url: String,
    pub(crate) fake: FakeOAuth,
    pub(crate) store: TokenStore,
    pub(crate) app: Arc<App>,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The config pointing every endpoint of both providers at `fake`.
pub(crate) fn config_for(
    fake: &FakeOAuth,
    flavour: Flavour,
    store_path: PathBuf,
    redirect_url: String,
) -> Config {
    let mut c = Config {
        auth_redirect_url: redirect_url,
        ..Config::default()
    };
    let base = fake.base_url();
    c.oauth.token_store_path = store_path;
    c.oauth.oauth_timeout = Duration::from_secs(2);
    match flavour {
        Flavour::Twitch => {
            c.oauth.twitch_client_id = CLIENT_ID.into();
            c.oauth.twitch_client_secret = Secret::new(CLIENT_SECRET);
            c.oauth.twitch_authorize_url = format!("{base}/oauth2/authorize");
            c.oauth.twitch_token_url = format!("{base}/oauth2/token");
            c.oauth.twitch_validate_url = format!("{base}/oauth2/validate");
            c.oauth.twitch_revoke_url = format!("{base}/oauth2/revoke");
        }
        Flavour::Google => {
            c.oauth.google_client_id = CLIENT_ID.into();
            c.oauth.google_client_secret = Secret::new(CLIENT_SECRET);
            c.oauth.google_authorize_url = format!("{base}/oauth2/authorize");
            c.oauth.google_token_url = format!("{base}/oauth2/token");
            c.oauth.google_validate_url = format!("{base}/tokeninfo");
            c.oauth.google_revoke_url = format!("{base}/oauth2/revoke");
        }
        Flavour::Kick => {
            c.oauth.kick_client_id = CLIENT_ID.into();
            c.oauth.kick_client_secret = Secret::new(CLIENT_SECRET);
            c.oauth.kick_authorize_url = format!("{base}/oauth/authorize");
            c.oauth.kick_token_url = format!("{base}/oauth/token");
            c.oauth.kick_validate_url = format!("{base}/public/v1/users");
            c.oauth.kick_revoke_url = format!("{base}/oauth/revoke");
        }
    }
    c
}

/// Starts a Twitch-flavoured fake and the server.
pub(crate) async fn start() -> TestServer {
    start_with(Flavour::Twitch, |_| {}).await
}

/// Starts a fake of `flavour` and the server, with `tweak` applied to its config.
pub(crate) async fn start_with(flavour: Flavour, tweak: impl FnOnce(&mut Config)) -> TestServer {
    testkit::init_logging();
    let fake = FakeOAuth::start_flavour(flavour).await;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut config = config_for(
        &fake,
        flavour,
        dir.path().join("tokenStore.json"),
        format!("{url}/auth/callback"),
    );
    tweak(&mut config);
    config.validate().expect("test config is valid");
    let store = config.oauth.token_store();
    let app = Arc::new(App::new(config).unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(auth_server::serve(app.clone(), listener, shutdown.clone()));
    TestServer {
        url,
        fake,
        store,
        app,
        _dir: dir,
        shutdown,
        handle,
    }
}

impl TestServer {
    /// The whole token store.
    pub(crate) fn file(&self) -> TokenFile {
        self.store.load().unwrap()
    }

    /// Whether the store file exists at all.
    pub(crate) fn store_exists(&self) -> bool {
        self.store.path().exists()
    }

    /// Stops the server and checks it ended cleanly.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        testkit::within(10, "auth-server stops", self.handle)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A browser: keeps cookies, follows redirects.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A browser that keeps cookies but does not follow redirects.
pub(crate) fn manual_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Follows `/auth` to the provider and back, stopping before the callback:
/// returns the callback URL (with code and state) the provider sent.
pub(crate) async fn callback_url(client: &reqwest::Client, server: &TestServer) -> String {
    let to_provider = client
        .get(format!("{}/auth", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(to_provider.status(), 302);
    let provider_url = location(&to_provider);
    let back = client.get(&provider_url).send().await.unwrap();
    assert_eq!(back.status(), 302, "the fake redirects back");
    location(&back)
}

pub(crate) fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// GET `url`, returning status and body.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Provider settings pointing at `fake`.
pub(crate) fn twitch_settings(fake: &FakeOAuth) -> ProviderSettings {
    let mut s = ProviderSettings::twitch(CLIENT_ID, Secret::new(CLIENT_SECRET))
        .with_base_url(&fake.base_url());
    s.timeout = Duration::from_secs(5);
    s
}

/// Options for managers in tests: hourly validation pushed out of the way.
pub(crate) fn quiet_options() -> TokenManagerOptions {
    TokenManagerOptions {
        validate_every: Duration::from_secs(3600),
        poll_every: Duration::from_millis(200),
        retry_after: Duration::from_millis(200),
        ..TokenManagerOptions::default()
    }
}

/// Seeds `store` with tokens the fake issued, obtained `age` ago and
/// expiring `left` from now. Returns the account key.
pub(crate) fn seed(
    store: &TokenStore,
    fake: &FakeOAuth,
    age: chrono::Duration,
    left: chrono::Duration,
) -> (String, StoredToken) {
    let issued = fake.issue(&["chat:read", "chat:edit"]);
    let now = Utc::now();
    let user = fake.user();
    let token = StoredToken {
        platform: "twitch".into(),
        login: user.login.clone(),
        user_id: user.user_id.clone(),
        access_token: Secret::new(issued.access_token),
        refresh_token: issued.refresh_token.map(Secret::new),
        expires_at: Some(now + left),
        scopes: vec!["chat:read".into()],
        obtained_at: now - age,
        last_refreshed_at: None,
        last_validated_at: Some(now),
        status: AccountStatus::Valid,
        status_reason: None,
    };
    let key = token.key();
    let t = token.clone();
    store
        .update(move |f| f.accounts.insert(t.key(), t))
        .unwrap();
    (key, token)
}

/// A manager for `fake`'s Twitch accounts in `store`.
pub(crate) fn manager(
    store: &TokenStore,
    fake: &FakeOAuth,
    options: TokenManagerOptions,
) -> TokenManager {
    TokenManager::with_options(store.clone(), twitch_settings(fake), options)
}
