//! A client for one provider's endpoints ([`OAuthClient`]): the authorize
//! URL, the code exchange, refresh, validation and revocation, and the
//! whole callback side of the flow ([`OAuthClient::authorize_account`]).
//!
//! The HTTP client follows no redirects and has a timeout, and reads at
//! most [`MAX_RESPONSE_BYTES`] of any answer (as a stream: a larger one is
//! refused with a clear error, nothing of it kept or stored). Nothing here
//! logs or displays a token or the client secret: they travel as
//! [`Secret`]s.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, HttpRequest, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenUrl,
};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use super::error::{Endpoint, OAuthError};
use super::providers::{ProviderKind, ProviderSettings};
use super::responses::{ProviderErrorResponse, ProviderTokenResponse, ValidateResponse};
use crate::body::{BodyError, read_limited};
use crate::secret::Secret;
use crate::telemetry::error_chain;
use crate::token_store::{AccountStatus, StoredToken};

type OAuth2Client = oauth2::Client<
    ProviderErrorResponse,
    ProviderTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The most bytes read of a provider's answer (token, validation,
/// revocation): real ones are well under 4 KiB; a larger one is refused.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

type TokenRequestError = RequestTokenError<HttpClientError<reqwest::Error>, ProviderErrorResponse>;

/// Tokens a token endpoint issued.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, if one was issued.
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token, if given.
    pub expires_in: Option<Duration>,
    /// Granted scopes, if the provider said.
    pub scopes: Option<Vec<String>>,
}

/// What the validation endpoint says about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The client id the token was issued to.
    pub client_id: Option<String>,
    /// The account's login (Twitch) or e-mail address (Google).
    pub login: Option<String>,
    /// The account's user id.
    pub user_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Remaining lifetime, if the token expires.
    pub expires_in: Option<Duration>,
}

/// The outcome of validating a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// The token is valid.
    Valid(TokenInfo),
    /// The provider says the token is invalid or expired.
    Invalid,
}

/// A client for one provider's endpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    settings: Arc<ProviderSettings>,
    http: reqwest::Client,
}

impl OAuthClient {
    /// A client for `settings`: no redirects followed, `settings.timeout`
    /// per request.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (never in practice).
    pub fn new(settings: ProviderSettings) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("chatbus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client can be built");
        Self {
            settings: Arc::new(settings),
            http,
        }
    }

    /// The provider's settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    fn kind(&self) -> ProviderKind {
        self.settings.kind
    }

    fn oauth2(&self) -> Result<OAuth2Client, OAuthError> {
        let s = &self.settings;
        let bad =
            |what: &str, e: oauth2::url::ParseError| OAuthError::Settings(format!("{what}: {e}"));
        Ok(oauth2::Client::new(ClientId::new(s.client_id.clone()))
            .set_client_secret(ClientSecret::new(s.client_secret.expose().to_owned()))
            // Twitch takes client_id and client_secret in the form body only.
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(
                AuthUrl::new(s.authorize_url.clone()).map_err(|e| bad("authorize URL", e))?,
            )
            .set_token_uri(TokenUrl::new(s.token_url.clone()).map_err(|e| bad("token URL", e))?))
    }

    /// The URL to send the browser to: client id, `redirect_url`, the
    /// configured scopes and extra parameters, and `state`.
    ///
    /// # Errors
    /// [`OAuthError::Settings`] when a URL is malformed.
    pub fn authorize_url(&self, redirect_url: &str, state: &str) -> Result<Url, OAuthError> {
        self.authorize_url_with(redirect_url, state, None)
    }

    /// As [`OAuthClient::authorize_url`], with PKCE when the provider uses
    /// it ([`ProviderSettings::pkce`]): a fresh random verifier, whose S256
    /// challenge the URL carries (`code_challenge`,
    /// `code_challenge_method=S256`). The verifier is returned to be kept
    /// with the `state` and given to [`OAuthClient::authorize_account_with`].
    ///
    /// # Errors
    /// [`OAuthError::Settings`] when a URL is malformed.
    pub fn authorize_url_pkce(
        &self,
        redirect_url: &str,
        state: &str,
    ) -> Result<(Url, Option<Secret>), OAuthError> {
        if !self.settings.pkce {
            return Ok((self.authorize_url(redirect_url, state)?, None));
        }
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let url = self.authorize_url_with(redirect_url, state, Some(challenge))?;
        Ok((url, Some(Secret::new(verifier.into_secret()))))
    }

    fn authorize_url_with(
        &self,
        redirect_url: &str,
        state: &str,
        challenge: Option<PkceCodeChallenge>,
    ) -> Result<Url, OAuthError> {
        let redirect = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| OAuthError::Settings(format!("redirect URL: {e}")))?;
        let client = self.oauth2()?;
        let state = state.to_owned();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .set_redirect_uri(Cow::Owned(redirect))
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        for (name, value) in &self.settings.authorize_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        if let Some(challenge) = challenge {
            request = request.set_pkce_challenge(challenge);
        }
        Ok(request.url().0)
    }

    /// Exchanges an authorization code for tokens.
    ///
    /// # Errors
    /// [`OAuthError::Provider`] when the provider refuses the code,
    /// [`OAuthError::Timeout`], [`OAuthError::Http`], [`OAuthError::InvalidResponse`].
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_url: &str,
    ) -> Result<TokenGrant, OAuthError> {
        self.exchange_code_with(code, redirect_url, None).await
    }

    /// As [`OAuthClient::exchange_code`], sending the PKCE `verifier`
    /// (`code_verifier`) when there is one.
    ///
    /// # Errors
    /// As [`OAuthClient::exchange_code`].
    pub async fn exchange_code_with(
        &self,
        code: &str,
        redirect_url: &str,
        verifier: Option<&Secret>,
    ) -> Result<TokenGrant, OAuthError> {
        let redirect = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| OAuthError::Settings(format!("redirect URL: {e}")))?;
        let client = self.oauth2()?.set_redirect_uri(redirect);
        let status = StatusProbe::default();
        let http = status.client(&self.http);
        let mut request = client.exchange_code(AuthorizationCode::new(code.to_owned()));
        if let Some(verifier) = verifier {
            request =
                request.set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_owned()));
        }
        let result = request.request_async(&http).await;
        self.grant(Endpoint::CodeExchange, result, &status)
    }

    /// Exchanges a refresh token for new tokens.
    ///
    /// # Errors
    /// As [`OAuthError::is_refresh_rejection`] tells, [`OAuthError::Provider`]
    /// when the refresh token is refused; the others as [`OAuthClient::exchange_code`].
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenGrant, OAuthError> {
        let client = self.oauth2()?;
        let status = StatusProbe::default();
        let http = status.client(&self.http);
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await;
        self.grant(Endpoint::Refresh, result, &status)
    }

    fn grant(
        &self,
        endpoint: Endpoint,
        result: Result<ProviderTokenResponse, TokenRequestError>,
        status: &StatusProbe,
    ) -> Result<TokenGrant, OAuthError> {
        let response = result.map_err(|e| self.token_error(endpoint, e, status.get()))?;
        if response.access_token.secret().is_empty() {
            return Err(self.invalid(endpoint, "the access token is empty"));
        }
        Ok(TokenGrant {
            access_token: Secret::new(response.access_token.into_secret()),
            refresh_token: response
                .refresh_token
                .map(|t| Secret::new(t.into_secret()))
                .filter(|t| !t.is_empty()),
            expires_in: response.expires_in.map(Duration::from_secs),
            scopes: response
                .scopes
                .map(|v| v.into_iter().map(|s| s.to_string()).collect()),
        })
    }

    fn invalid(&self, endpoint: Endpoint, message: impl Into<String>) -> OAuthError {
        OAuthError::InvalidResponse {
            provider: self.kind(),
            endpoint,
            message: message.into(),
        }
    }

    fn transport(&self, endpoint: Endpoint, error: &reqwest::Error) -> OAuthError {
        if error.is_timeout() {
            OAuthError::Timeout {
                provider: self.kind(),
                endpoint,
                timeout: self.settings.timeout,
            }
        } else {
            OAuthError::Http {
                provider: self.kind(),
                endpoint,
                message: error_chain(error),
            }
        }
    }

    fn token_error(
        &self,
        endpoint: Endpoint,
        error: TokenRequestError,
        status: Option<reqwest::StatusCode>,
    ) -> OAuthError {
        let status_text = status.map_or_else(|| "an answer".to_owned(), |s| s.to_string());
        match error {
            RequestTokenError::ServerResponse(r) => OAuthError::Provider {
                provider: self.kind(),
                endpoint,
                status: status.map(|s| s.as_u16()).or(r.status),
                message: r.to_string(),
                error: r.error,
            },
            RequestTokenError::Request(HttpClientError::Reqwest(e)) => self.transport(endpoint, &e),
            // The answer was over MAX_RESPONSE_BYTES (StatusProbe::client).
            RequestTokenError::Request(HttpClientError::Other(message)) => {
                self.invalid(endpoint, format!("{status_text}: {message}"))
            }
            RequestTokenError::Request(e) => OAuthError::Http {
                provider: self.kind(),
                endpoint,
                message: error_chain(&e),
            },
            // Never include the body: a successful answer holds tokens.
            RequestTokenError::Parse(e, body) => {
                let message = if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                    format!("{status_text} whose body is not JSON")
                } else {
                    format!(
                        "{status_text} whose JSON lacks what OAuth requires (at `{}`)",
                        e.path()
                    )
                };
                self.invalid(endpoint, message)
            }
            // The oauth2 crate's own checks: wrong content type, empty body.
            RequestTokenError::Other(message) => {
                self.invalid(endpoint, format!("{status_text}: {message}"))
            }
        }
    }

    /// Asks the provider whether `access_token` is valid, and whose it is.
    /// Twitch: `GET` with `Authorization: OAuth <token>`; Google: `POST`
    /// with the token in the form body (never in a URL).
    ///
    /// # Errors
    /// [`OAuthError::Timeout`], [`OAuthError::Http`], [`OAuthError::Provider`]
    /// for answers other than valid/invalid, [`OAuthError::InvalidResponse`].
    pub async fn validate(&self, access_token: &Secret) -> Result<Validation, OAuthError> {
        let endpoint = Endpoint::Validate;
        let request = match self.kind() {
            ProviderKind::Twitch => {
                let mut auth = HeaderValue::from_str(&format!("OAuth {}", access_token.expose()))
                    .map_err(|_| {
                    self.invalid(endpoint, "the access token is not a valid header")
                })?;
                auth.set_sensitive(true);
                self.http
                    .get(&self.settings.validate_url)
                    .header(AUTHORIZATION, auth)
            }
            ProviderKind::Google => self
                .http
                .post(&self.settings.validate_url)
                .form(&[("access_token", access_token.expose())]),
            ProviderKind::Kick => self
                .http
                .get(&self.settings.validate_url)
                .bearer_auth(access_token.expose()),
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(endpoint, &e))?;
        let status = response.status();
        let body = match read_limited(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => body,
            Err(BodyError::Read(e)) => return Err(self.transport(endpoint, &e)),
            Err(e @ BodyError::TooLarge { .. }) => {
                return Err(self.invalid(endpoint, format!("{status}: {e}")));
            }
        };
        let invalid = match self.kind() {
            ProviderKind::Twitch | ProviderKind::Kick => {
                status == reqwest::StatusCode::UNAUTHORIZED
            }
            ProviderKind::Google => {
                status == reqwest::StatusCode::BAD_REQUEST
                    || status == reqwest::StatusCode::UNAUTHORIZED
            }
        };
        if invalid {
            return Ok(Validation::Invalid);
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<ProviderErrorResponse>(&body)
                .map_or_else(|_| "no JSON explanation".to_owned(), |r| r.to_string());
            return Err(OAuthError::Provider {
                provider: self.kind(),
                endpoint,
                status: Some(status.as_u16()),
                error: None,
                message: format!("{status}: {detail}"),
            });
        }
        if self.kind() == ProviderKind::Kick {
            return self.kick_user(&body, status);
        }
        let parsed: ValidateResponse = serde_json::from_slice(&body).map_err(|_| {
            self.invalid(
                endpoint,
                format!("{status} whose body is not the expected JSON"),
            )
        })?;
        Ok(Validation::Valid(TokenInfo {
            client_id: parsed.client_id.or(parsed.aud),
            login: parsed.login.or(parsed.email),
            user_id: parsed.user_id.or(parsed.sub),
            scopes: parsed.scopes.or(parsed.scope).unwrap_or_default(),
            // Twitch answers 0 for tokens that do not expire.
            expires_in: parsed
                .expires_in
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
        }))
    }

    /// Kick's users endpoint's answer, `{data: [{user_id, name, ...}]}`:
    /// the token's own user (its scopes and lifetime are the grant's).
    fn kick_user(
        &self,
        body: &[u8],
        status: reqwest::StatusCode,
    ) -> Result<Validation, OAuthError> {
        let parsed: KickUsers = serde_json::from_slice(body).map_err(|_| {
            self.invalid(
                Endpoint::Validate,
                format!("{status} whose body is not the expected JSON"),
            )
        })?;
        let user = parsed.data.into_iter().next().ok_or_else(|| {
            self.invalid(Endpoint::Validate, "Kick's users endpoint names no user")
        })?;
        Ok(Validation::Valid(TokenInfo {
            client_id: None,
            login: user.name,
            user_id: user.user_id.map(|id| match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            scopes: Vec::new(),
            expires_in: None,
        }))
    }

    /// Revokes `token` (access or refresh) at the provider.
    ///
    /// # Errors
    /// As [`OAuthClient::validate`]; an unknown token is not an error.
    pub async fn revoke(&self, token: &Secret) -> Result<(), OAuthError> {
        let endpoint = Endpoint::Revoke;
        let request = match self.kind() {
            // Kick documents the token as a query parameter of the POST.
            ProviderKind::Kick => self
                .http
                .post(&self.settings.revoke_url)
                .query(&[("token", token.expose())])
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                ),
            ProviderKind::Twitch | ProviderKind::Google => {
                self.http.post(&self.settings.revoke_url).form(&[
                    ("client_id", self.settings.client_id.as_str()),
                    ("token", token.expose()),
                ])
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(endpoint, &e))?;
        let status = response.status();
        // 400 "invalid token": already revoked or expired, which is the goal.
        if status.is_success() || status == reqwest::StatusCode::BAD_REQUEST {
            return Ok(());
        }
        Err(OAuthError::Provider {
            provider: self.kind(),
            endpoint,
            status: Some(status.as_u16()),
            error: None,
            message: status.to_string(),
        })
    }

    /// The whole callback side of the flow: exchanges `code`, validates the
    /// new access token to learn whose it is, and returns it ready for the
    /// token store. Writes nothing.
    ///
    /// # Errors
    /// As [`OAuthClient::exchange_code`] and [`OAuthClient::validate`];
    /// [`OAuthError::WrongClient`] when the token is another application's;
    /// [`OAuthError::InvalidResponse`] when the provider does not say whose
    /// the token is, or calls its brand-new token invalid.
    pub async fn authorize_account(
        &self,
        code: &str,
        redirect_url: &str,
    ) -> Result<StoredToken, OAuthError> {
        self.authorize_account_with(code, redirect_url, None).await
    }

    /// As [`OAuthClient::authorize_account`], with the PKCE `verifier` kept
    /// for this authorization ([`OAuthClient::authorize_url_pkce`]).
    ///
    /// # Errors
    /// As [`OAuthClient::authorize_account`].
    pub async fn authorize_account_with(
        &self,
        code: &str,
        redirect_url: &str,
        verifier: Option<&Secret>,
    ) -> Result<StoredToken, OAuthError> {
        let grant = self
            .exchange_code_with(code, redirect_url, verifier)
            .await?;
        let info = match self.validate(&grant.access_token).await? {
            Validation::Valid(info) => info,
            Validation::Invalid => {
                return Err(self.invalid(
                    Endpoint::Validate,
                    "the provider calls the token it just issued invalid",
                ));
            }
        };
        if let Some(found) = &info.client_id
            && *found != self.settings.client_id
        {
            return Err(OAuthError::WrongClient {
                expected: self.settings.client_id.clone(),
                found: found.clone(),
            });
        }
        let login = info
            .login
            .clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| self.invalid(Endpoint::Validate, "no login/e-mail for the token"))?
            .to_ascii_lowercase();
        let user_id = info
            .user_id
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| self.invalid(Endpoint::Validate, "no user id for the token"))?;
        let now = Utc::now();
        let scopes = if info.scopes.is_empty() {
            grant.scopes.clone().unwrap_or_default()
        } else {
            info.scopes.clone()
        };
        Ok(StoredToken {
            platform: self.settings.platform().to_owned(),
            login,
            user_id,
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_at: expiry(now, info.expires_in.or(grant.expires_in)),
            scopes,
            obtained_at: now,
            last_refreshed_at: None,
            last_validated_at: Some(now),
            status: AccountStatus::Valid,
            status_reason: None,
        })
    }
}

/// Kick's `GET /public/v1/users` answer.
#[derive(Debug, serde::Deserialize)]
struct KickUsers {
    #[serde(default)]
    data: Vec<KickUser>,
}

#[derive(Debug, serde::Deserialize)]
struct KickUser {
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
}

/// `now + lifetime`, if there is a lifetime.
pub fn expiry(now: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
    lifetime
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d))
}

/// Records the HTTP status of the answer the oauth2 crate sees, which it
/// does not report itself, so errors can name it.
#[derive(Debug, Default, Clone)]
struct StatusProbe(Arc<Mutex<Option<reqwest::StatusCode>>>);

type HttpFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>>,
            > + Send,
    >,
>;

impl StatusProbe {
    fn get(&self) -> Option<reqwest::StatusCode> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An HTTP client for the oauth2 crate that records the status and
    /// reads at most [`MAX_RESPONSE_BYTES`] of the answer. Owns what it
    /// uses, so the futures it makes borrow nothing.
    fn client(&self, http: &reqwest::Client) -> impl Fn(HttpRequest) -> HttpFuture + use<> {
        let slot = self.0.clone();
        let http = http.clone();
        move |request| {
            let slot = slot.clone();
            let http = http.clone();
            Box::pin(async move {
                let request = reqwest::Request::try_from(request).map_err(Box::new)?;
                let response = http.execute(request).await.map_err(Box::new)?;
                let status = response.status();
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
                let mut answer = oauth2::http::Response::builder().status(status);
                for (name, value) in response.headers() {
                    answer = answer.header(name, value);
                }
                let body =
                    read_limited(response, MAX_RESPONSE_BYTES)
                        .await
                        .map_err(|e| match e {
                            BodyError::Read(e) => HttpClientError::Reqwest(Box::new(e)),
                            e @ BodyError::TooLarge { .. } => HttpClientError::Other(e.to_string()),
                        })?;
                Ok(answer.body(body)?)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_carries_client_redirect_scopes_state_and_extras() {
        let client = OAuthClient::new(
            ProviderSettings::google("cid", Secret::new("shh")).with_base_url("http://127.0.0.1:9"),
        );
        let url = client
            .authorize_url("http://localhost:3000/auth/callback", "st4te")
            .unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/oauth2/authorize");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "http://localhost:3000/auth/callback");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert!(q["scope"].contains("youtube.readonly"));
        assert!(
            !url.as_str().contains("shh"),
            "the secret never goes in a URL"
        );
    }
}
