//! The chatbus auth-server: an OAuth2 authorization-code flow that obtains
//! platform tokens into the token store, and a [`TokenManager`] per
//! provider that keeps them refreshed and validated.
//!
//! * [`routes`]: the status page, `/auth`, the callback, health and metrics.
//! * [`csrf_state`]: the single-use, browser-bound, expiring `state`.
//! * [`pages`]: the HTML.
//! * [`commands`]: `auth-server status`, `refresh`, `revoke`.

pub mod commands;
pub mod config;
pub mod csrf_state;
pub mod pages;
pub mod routes;

use std::sync::Arc;

use anyhow::Context as _;
use common::oauth::ProviderKind;
use common::shutdown::{CancellationToken, supervise};
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::TokenStore;
use tokio::net::TcpListener;

pub use config::Config;
use csrf_state::PendingStates;

/// Everything the routes share: configuration, one token manager per
/// configured provider, the pending authorization attempts.
#[derive(Debug)]
pub struct App {
    config: Config,
    store: TokenStore,
    managers: Vec<TokenManager>,
    states: PendingStates,
}

impl App {
    /// The app for `config`, with default token manager options.
    ///
    /// # Errors
    /// When a provider's settings are invalid (e.g. an unreadable secret file).
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Self::with_manager_options(config, TokenManagerOptions::default())
    }

    /// The app with explicit token manager options (tests shorten them).
    ///
    /// # Errors
    /// As [`App::new`].
    pub fn with_manager_options(
        config: Config,
        options: TokenManagerOptions,
    ) -> anyhow::Result<Self> {
        let store = config.oauth.token_store();
        let managers = config
            .oauth
            .providers()
            .context("provider settings")?
            .into_iter()
            .map(|p| TokenManager::with_options(store.clone(), p, options.clone()))
            .collect();
        Ok(Self {
            states: PendingStates::new(config.auth_state_ttl),
            config,
            store,
            managers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The token store.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// The manager of `kind`, if that provider is configured.
    pub fn manager(&self, kind: ProviderKind) -> Option<&TokenManager> {
        self.managers.iter().find(|m| m.provider().kind == kind)
    }

    /// Every configured provider's manager.
    pub fn managers(&self) -> &[TokenManager] {
        &self.managers
    }

    /// The pending authorization attempts.
    pub fn states(&self) -> &PendingStates {
        &self.states
    }
}

/// Runs the auth-server until `shutdown` is cancelled.
///
/// # Errors
/// When the providers' settings are invalid, or a token manager fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve(Arc::new(App::new(config)?), listener, shutdown).await
}

/// Serves `app` on `listener` and runs its token managers until `shutdown`
/// is cancelled.
///
/// # Errors
/// When a token manager ends on its own or fails.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: put the auth-server behind TLS or a firewall");
    }
    if app.managers().is_empty() {
        tracing::warn!(
            "no OAuth provider configured: set TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET"
        );
    }
    let tasks: Vec<_> = app
        .managers()
        .iter()
        .map(|m| {
            let manager = m.clone();
            let cancel = shutdown.clone();
            let name = match m.provider().kind {
                ProviderKind::Twitch => "token-manager-twitch",
                ProviderKind::Google => "token-manager-google",
                ProviderKind::Kick => "token-manager-kick",
            };
            supervise(
                name,
                shutdown.clone(),
                async move { manager.run(cancel).await },
            )
        })
        .collect();
    let routes = routes::routes(app.clone(), common::telemetry::metrics_handle());
    tracing::info!(%addr, redirect_url = %app.config().auth_redirect_url, "auth-server listening");
    common::http::serve(routes, listener, shutdown.clone()).await;
    shutdown.cancel();
    for task in tasks {
        task.await.context("token manager task panicked")??;
    }
    Ok(())
}
