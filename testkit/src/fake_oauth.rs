//! A fake OAuth2 provider on 127.0.0.1: a real HTTP server speaking
//! Twitch's wire format (and Google's, as a [`Flavour`]), for tests of the
//! authorization-code flow, refresh and validation.
//!
//! Endpoints, as the real providers have them:
//! * `GET /oauth2/authorize`: checks `client_id`, `response_type=code` and
//!   `redirect_uri`, then (instead of a login page) redirects straight back
//!   to `redirect_uri` with `code`, `scope` and `state`, or with an `error`
//!   if told to ([`AuthorizeAnswer`]).
//! * `POST /oauth2/token`: `authorization_code` and `refresh_token` grants,
//!   client credentials in the form body (as Twitch requires). Twitch
//!   flavour answers `scope` as a JSON array and rotates refresh tokens
//!   (a used refresh token and its access token stop working); errors are
//!   Twitch's `{"status":400,"message":"Invalid refresh token"}`. Google
//!   flavour answers `scope` as a string, issues a refresh token only with
//!   `access_type=offline`, and errors as RFC 6749 `invalid_grant`.
//! * `GET /oauth2/validate` (Twitch, `Authorization: OAuth <token>`) and
//!   `POST /tokeninfo` (Google, form `access_token`).
//! * `POST /oauth2/revoke` (form `client_id`, `token`).
//!
//! Kick flavour (OAuth 2.1, docs.kick.com/getting-started/generating-tokens-oauth2-flow)
//! serves Kick's paths: `GET /oauth/authorize` requires `state`,
//! `code_challenge` and `code_challenge_method=S256`; `POST /oauth/token`
//! requires the `code_verifier` whose S256 is that challenge, answers
//! `expires_in` as a string and `scope` as a string, rotates refresh
//! tokens, and errors as Kick's docs show (`400 {"error": "Invalid
//! request"}`); `GET /public/v1/users` (Bearer) answers the token's own
//! user; `POST /oauth/revoke?token=`.
//!
//! Tests steer it: failures and delays of the token endpoint, lifetimes,
//! revoking every refresh token, and read what it saw and issued.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::{Response, StatusCode};

/// The client id the fake accepts.
pub const CLIENT_ID: &str = "fake-client-id";
/// The client secret the fake accepts.
pub const CLIENT_SECRET: &str = "fake-client-secret-d0-n0t-log";

/// Which provider the fake imitates on the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Twitch: `scope` as a JSON array, rotating refresh tokens, Twitch errors.
    Twitch,
    /// Google: `scope` as a string, refresh token only with
    /// `access_type=offline`, RFC 6749 errors.
    Google,
    /// Kick: PKCE (S256) required, Kick's paths and answers.
    Kick,
}

/// The account that "logs in" at the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// Twitch login.
    pub login: String,
    /// User id.
    pub user_id: String,
    /// E-mail (Google's tokeninfo).
    pub email: String,
}

impl Default for FakeUser {
    fn default() -> Self {
        Self {
            login: "chatbus_bot".into(),
            user_id: "141981764".into(),
            email: "chatbus.bot@example.com".into(),
        }
    }
}

/// What the authorize endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeAnswer {
    /// The user agrees: redirect back with a code.
    Grant,
    /// The user declines: `error=access_denied`.
    Deny,
    /// Another error, e.g. `invalid_scope`.
    Error(String),
}

/// A canned failure of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// Answer this status, content type and body.
    Answer {
        /// HTTP status.
        status: u16,
        /// Content-Type header.
        content_type: String,
        /// Body.
        body: String,
    },
    /// Wait this long before handling the request normally.
    Delay(Duration),
}

impl TokenFailure {
    /// A 500 with an HTML body, as a broken proxy answers.
    pub fn not_json() -> Self {
        Self::Answer {
            status: 502,
            content_type: "text/html".into(),
            body: "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
        }
    }

    /// Hostile: a 200 whose `access_token` is `bytes` long (a well-formed
    /// token answer otherwise).
    pub fn huge_access_token(bytes: usize) -> Self {
        let mut body = String::with_capacity(bytes + 100);
        body.push_str(r#"{"token_type":"bearer","expires_in":3600,"access_token":""#);
        body.extend(std::iter::repeat_n('a', bytes));
        body.push_str(r#""}"#);
        Self::Answer {
            status: 200,
            content_type: "application/json".into(),
            body,
        }
    }

    /// A 200 whose body is not JSON.
    pub fn ok_not_json() -> Self {
        Self::Answer {
            status: 200,
            content_type: "application/json".into(),
            body: "this is not json".into(),
        }
    }
}

/// What the fake has counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful authorization-code grants.
    pub code_grants: usize,
    /// Successful refresh grants.
    pub refresh_grants: usize,
    /// Refresh grants refused (unknown or revoked refresh token).
    pub rejected_refreshes: usize,
    /// Validation requests (either endpoint).
    pub validations: usize,
    /// Revocations.
    pub revocations: usize,
}

/// Tokens the fake issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Access token.
    pub access_token: String,
    /// Refresh token, if one was issued.
    pub refresh_token: Option<String>,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

#[derive(Debug)]
struct CodeGrant {
    redirect_uri: String,
    scopes: Vec<String>,
    offline: bool,
    /// The PKCE `code_challenge` (S256), when one was given.
    challenge: Option<String>,
}

#[derive(Debug, Clone)]
struct AccessInfo {
    scopes: Vec<String>,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct RefreshInfo {
    scopes: Vec<String>,
    access_token: String,
}

#[derive(Debug)]
struct State {
    flavour: Flavour,
    user: FakeUser,
    expires_in: u64,
    authorize_answer: AuthorizeAnswer,
    token_failures: VecDeque<TokenFailure>,
    refresh_delay: Duration,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessInfo>,
    refresh: HashMap<String, RefreshInfo>,
    issued: Vec<String>,
    authorize_requests: Vec<HashMap<String, String>>,
    stats: Stats,
}

/// A running fake provider. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeOAuth {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for FakeOAuth {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Form = HashMap<String, String>;

impl FakeOAuth {
    /// Starts a Twitch-flavoured fake on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_flavour(Flavour::Twitch).await
    }

    /// Starts a fake of the given flavour.
    pub async fn start_flavour(flavour: Flavour) -> Self {
        let state = Arc::new(Mutex::new(State {
            flavour,
            user: FakeUser::default(),
            expires_in: 14_400,
            authorize_answer: AuthorizeAnswer::Grant,
            token_failures: VecDeque::new(),
            refresh_delay: Duration::ZERO,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            issued: Vec::new(),
            authorize_requests: Vec::new(),
            stats: Stats::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake OAuth provider");
        let addr = listener.local_addr().expect("fake OAuth address");
        let stop = CancellationToken::new();
        let routes = routes(state.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move { stopped.cancelled().await })
                .run()
                .await;
        });
        Self { addr, state, stop }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, the base of every endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Who logs in from now on.
    pub fn set_user(&self, user: FakeUser) {
        self.state().user = user;
    }

    /// The user who logs in.
    pub fn user(&self) -> FakeUser {
        self.state().user.clone()
    }

    /// Lifetime in seconds of access tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.state().expires_in = secs;
    }

    /// What the authorize endpoint answers from now on.
    pub fn set_authorize_answer(&self, answer: AuthorizeAnswer) {
        self.state().authorize_answer = answer;
    }

    /// The next `times` token requests get `failure`.
    pub fn fail_token_requests(&self, failure: TokenFailure, times: usize) {
        let mut s = self.state();
        for _ in 0..times {
            s.token_failures.push_back(failure.clone());
        }
    }

    /// Every refresh grant waits this long before answering (to widen race
    /// windows between concurrent refreshers).
    pub fn set_refresh_delay(&self, delay: Duration) {
        self.state().refresh_delay = delay;
    }

    /// Issues tokens directly, as if the user had authorized earlier (to
    /// seed a token store).
    pub fn issue(&self, scopes: &[&str]) -> Issued {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        issue(&mut self.state(), scopes, true)
    }

    /// Revokes every refresh token (as a user disconnecting the app does).
    pub fn revoke_all_refresh_tokens(&self) {
        self.state().refresh.clear();
    }

    /// Makes every access token issued so far invalid.
    pub fn invalidate_access_tokens(&self) {
        self.state().access.clear();
    }

    /// Whether `token` is a valid, unexpired access token.
    pub fn is_valid_access(&self, token: &str) -> bool {
        self.state()
            .access
            .get(token)
            .is_some_and(|a| a.expires > Instant::now())
    }

    /// Whether `token` is a usable refresh token.
    pub fn is_valid_refresh(&self, token: &str) -> bool {
        self.state().refresh.contains_key(token)
    }

    /// Every token issued so far (for checking logs never show them).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.state().stats
    }

    /// The query parameters of every authorize request, oldest first.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.state().authorize_requests.clone()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn issue(s: &mut State, scopes: Vec<String>, with_refresh: bool) -> Issued {
    let access_token = random_token("fa");
    s.access.insert(
        access_token.clone(),
        AccessInfo {
            scopes: scopes.clone(),
            expires: Instant::now() + Duration::from_secs(s.expires_in),
        },
    );
    s.issued.push(access_token.clone());
    let refresh_token = with_refresh.then(|| {
        let token = random_token("fr");
        s.refresh.insert(
            token.clone(),
            RefreshInfo {
                scopes: scopes.clone(),
                access_token: access_token.clone(),
            },
        );
        s.issued.push(token.clone());
        token
    });
    Issued {
        access_token,
        refresh_token,
        expires_in: s.expires_in,
        scopes,
    }
}

fn json_reply(status: u16, body: serde_json::Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .expect("response")
}

fn routes(
    state: Arc<Mutex<State>>,
) -> impl Filter<Extract = (Response<String>,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    let with = move || {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let authorize = warp::path!("oauth2" / "authorize")
        .and(warp::get())
        .and(warp::query::<Form>())
        .and(with())
        .map(authorize);
    let token = warp::path!("oauth2" / "token")
        .and(warp::post())
        .and(warp::body::form::<Form>())
        .and(with())
        .then(token);
    let validate = warp::path!("oauth2" / "validate")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with())
        .map(validate_twitch);
    let tokeninfo = warp::path!("tokeninfo")
        .and(warp::post())
        .and(warp::body::form::<Form>())
        .and(with())
        .map(tokeninfo_google);
    let revoke = warp::path!("oauth2" / "revoke")
        .and(warp::post())
        .and(warp::body::form::<Form>())
        .and(with())
        .map(revoke);
    // Kick's paths.
    let kick_authorize = warp::path!("oauth" / "authorize")
        .and(warp::get())
        .and(warp::query::<Form>())
        .and(with())
        .map(self::authorize);
    let kick_token = warp::path!("oauth" / "token")
        .and(warp::post())
        .and(warp::body::form::<Form>())
        .and(with())
        .then(self::token);
    let kick_users = warp::path!("public" / "v1" / "users")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with())
        .map(users_kick);
    let kick_revoke = warp::path!("oauth" / "revoke")
        .and(warp::post())
        .and(warp::query::<Form>())
        .and(with())
        .map(revoke_kick);
    let kick = kick_authorize
        .or(kick_token)
        .unify()
        .or(kick_users)
        .unify()
        .or(kick_revoke)
        .unify();
    authorize
        .or(token)
        .unify()
        .or(kick)
        .unify()
        .or(validate)
        .unify()
        .or(tokeninfo)
        .unify()
        .or(revoke)
        .unify()
}

fn authorize(query: Form, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    s.authorize_requests.push(query.clone());
    let field = |k: &str| query.get(k).cloned().unwrap_or_default();
    if field("client_id") != CLIENT_ID {
        return json_reply(400, json!({"status": 400, "message": "invalid client"}));
    }
    if field("response_type") != "code" {
        return json_reply(
            400,
            json!({"status": 400, "message": "unsupported response_type"}),
        );
    }
    let Ok(mut target) = reqwest::Url::parse(&field("redirect_uri")) else {
        return json_reply(
            400,
            json!({"status": 400, "message": "parameter redirect_uri does not match registered URI"}),
        );
    };
    let state_param = field("state");
    if s.flavour == Flavour::Kick
        && (state_param.is_empty()
            || field("code_challenge").is_empty()
            || field("code_challenge_method") != "S256")
    {
        return json_reply(400, json!({"error": "Invalid request"}));
    }
    let scopes: Vec<String> = field("scope")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    {
        let mut q = target.query_pairs_mut();
        match s.authorize_answer.clone() {
            AuthorizeAnswer::Grant => {
                let code = random_token("code");
                q.append_pair("code", &code);
                q.append_pair("scope", &scopes.join(" "));
                s.codes.insert(
                    code,
                    CodeGrant {
                        redirect_uri: field("redirect_uri"),
                        scopes,
                        offline: field("access_type") == "offline",
                        challenge: query.get("code_challenge").cloned(),
                    },
                );
            }
            AuthorizeAnswer::Deny => {
                q.append_pair("error", "access_denied");
                q.append_pair("error_description", "The user denied you access");
            }
            AuthorizeAnswer::Error(error) => {
                q.append_pair("error", &error);
                q.append_pair("error_description", "The provider refused the request");
            }
        }
        if !state_param.is_empty() {
            q.append_pair("state", &state_param);
        }
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", target.as_str())
        .body(String::new())
        .expect("redirect")
}

async fn token(form: Form, state: Arc<Mutex<State>>) -> Response<String> {
    let failure = lock(&state).token_failures.pop_front();
    match failure {
        Some(TokenFailure::Answer {
            status,
            content_type,
            body,
        }) => {
            return Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(body)
                .expect("response");
        }
        Some(TokenFailure::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return json_reply(
            403,
            json!({"status": 403, "message": "invalid client secret"}),
        );
    }
    match field("grant_type").as_str() {
        "authorization_code" => {
            let mut s = lock(&state);
            let grant = s.codes.remove(&field("code"));
            match grant {
                Some(g)
                    if s.flavour == Flavour::Kick && !pkce_matches(&g, &field("code_verifier")) =>
                {
                    invalid_grant(s.flavour, "code_verifier does not match the code_challenge")
                }
                Some(g) if g.redirect_uri == field("redirect_uri") => {
                    let with_refresh = s.flavour != Flavour::Google || g.offline;
                    let issued = issue(&mut s, g.scopes, with_refresh);
                    s.stats.code_grants += 1;
                    token_answer(s.flavour, &issued)
                }
                Some(_) => invalid_grant(s.flavour, "Parameter redirect_uri does not match"),
                None => invalid_grant(s.flavour, "Invalid authorization code"),
            }
        }
        "refresh_token" => {
            let delay = lock(&state).refresh_delay;
            tokio::time::sleep(delay).await;
            let mut s = lock(&state);
            let presented = field("refresh_token");
            let Some(info) = s.refresh.get(&presented).cloned() else {
                s.stats.rejected_refreshes += 1;
                return invalid_grant(s.flavour, "Invalid refresh token");
            };
            s.stats.refresh_grants += 1;
            match s.flavour {
                Flavour::Twitch | Flavour::Kick => {
                    // Rotation: the used refresh token and its access token end.
                    s.refresh.remove(&presented);
                    s.access.remove(&info.access_token);
                    let issued = issue(&mut s, info.scopes, true);
                    token_answer(s.flavour, &issued)
                }
                Flavour::Google => {
                    let issued = issue(&mut s, info.scopes, false);
                    if let Some(r) = s.refresh.get_mut(&presented) {
                        r.access_token = issued.access_token.clone();
                    }
                    token_answer(Flavour::Google, &issued)
                }
            }
        }
        other => json_reply(
            400,
            json!({"status": 400, "message": format!("unsupported grant_type {other:?}")}),
        ),
    }
}

fn token_answer(flavour: Flavour, issued: &Issued) -> Response<String> {
    let mut body = match flavour {
        Flavour::Twitch => json!({
            "access_token": issued.access_token,
            "expires_in": issued.expires_in,
            "scope": issued.scopes,
            "token_type": "bearer",
        }),
        Flavour::Google => json!({
            "access_token": issued.access_token,
            "expires_in": issued.expires_in,
            "scope": issued.scopes.join(" "),
            "token_type": "Bearer",
        }),
        // Kick's docs show every field as a string.
        Flavour::Kick => json!({
            "access_token": issued.access_token,
            "expires_in": issued.expires_in.to_string(),
            "scope": issued.scopes.join(" "),
            "token_type": "Bearer",
        }),
    };
    if let Some(r) = &issued.refresh_token {
        body["refresh_token"] = json!(r);
    }
    json_reply(200, body)
}

fn invalid_grant(flavour: Flavour, message: &str) -> Response<String> {
    match flavour {
        Flavour::Twitch => json_reply(400, json!({"status": 400, "message": message})),
        Flavour::Google => json_reply(
            400,
            json!({"error": "invalid_grant", "error_description": message}),
        ),
        Flavour::Kick => json_reply(
            400,
            json!({"error": "Invalid request", "error_description": message}),
        ),
    }
}

/// Whether `verifier` is the PKCE verifier of `grant`'s S256 challenge
/// (RFC 7636: BASE64URL-NOPAD(SHA-256(verifier))).
fn pkce_matches(grant: &CodeGrant, verifier: &str) -> bool {
    use base64::Engine as _;
    use sha2::Digest as _;
    if verifier.len() < 43 || verifier.len() > 128 {
        return false;
    }
    let computed =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier));
    grant.challenge.as_deref() == Some(computed.as_str())
}

/// Kick's `GET /public/v1/users` for the token's own user.
fn users_kick(auth: Option<String>, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    s.stats.validations += 1;
    let token = auth
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if valid_access(&s, token).is_none() {
        return json_reply(401, json!({"message": "Unauthorized"}));
    }
    let user_id: serde_json::Value = s
        .user
        .user_id
        .parse::<u64>()
        .map_or_else(|_| json!(s.user.user_id), |n| json!(n));
    json_reply(
        200,
        json!({"data": [{"user_id": user_id, "name": s.user.login, "email": s.user.email,
                         "profile_picture": ""}], "message": "OK"}),
    )
}

/// Kick's `POST /oauth/revoke?token=`.
fn revoke_kick(query: Form, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    let token = query.get("token").cloned().unwrap_or_default();
    let known = s.access.remove(&token).is_some() | s.refresh.remove(&token).is_some();
    if !known {
        return json_reply(400, json!({"error": "Invalid request"}));
    }
    s.stats.revocations += 1;
    Response::builder()
        .status(200)
        .body("OK".to_owned())
        .expect("response")
}

fn valid_access(s: &State, token: &str) -> Option<(AccessInfo, u64)> {
    let info = s.access.get(token)?;
    let left = info.expires.checked_duration_since(Instant::now())?;
    // Whole seconds, rounded up: a token with 2.9 s left says 3.
    Some((info.clone(), left.as_millis().div_ceil(1000) as u64))
}

fn validate_twitch(auth: Option<String>, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    s.stats.validations += 1;
    let token = auth
        .as_deref()
        .and_then(|h| {
            h.strip_prefix("OAuth ")
                .or_else(|| h.strip_prefix("Bearer "))
        })
        .unwrap_or_default();
    match valid_access(&s, token) {
        Some((info, left)) => json_reply(
            200,
            json!({
                "client_id": CLIENT_ID,
                "login": s.user.login,
                "scopes": info.scopes,
                "user_id": s.user.user_id,
                "expires_in": left,
            }),
        ),
        None => json_reply(
            401,
            json!({"status": 401, "message": "invalid access token"}),
        ),
    }
}

fn tokeninfo_google(form: Form, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    s.stats.validations += 1;
    let token = form.get("access_token").cloned().unwrap_or_default();
    match valid_access(&s, &token) {
        Some((info, left)) => json_reply(
            200,
            json!({
                "azp": CLIENT_ID,
                "aud": CLIENT_ID,
                "sub": s.user.user_id,
                "scope": info.scopes.join(" "),
                "exp": "0",
                "expires_in": left.to_string(),
                "email": s.user.email,
                "email_verified": "true",
                "access_type": "offline",
            }),
        ),
        None => json_reply(
            400,
            json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ),
    }
}

fn revoke(form: Form, state: Arc<Mutex<State>>) -> Response<String> {
    let mut s = lock(&state);
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return json_reply(400, json!({"status": 400, "message": "invalid client"}));
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let known = s.access.remove(&token).is_some() | s.refresh.remove(&token).is_some();
    if !known {
        return json_reply(400, json!({"status": 400, "message": "Invalid token"}));
    }
    s.stats.revocations += 1;
    json_reply(200, json!({}))
}
