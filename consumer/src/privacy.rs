//! Forget on request, as the consumer offers it (docs/privacy.md):
//!
//! * [`Privacy`]: an opt-out, opt-in or purge done in the store
//!   ([`crate::store::privacy`]) and then told to everyone: a notice on the
//!   `chat.privacy` stream (every service, and the live pages through the
//!   consumers' followers), a `privacy` event on the channel's routing key
//!   for a channel, and, for a purge, the subject's events dropped from
//!   chatbus's own `chat.unrouted` and `chat.dead-letter` queues.
//! * [`routes`]: the admin API (`CONSUMER_PRIVACY_TOKEN`):
//!   `GET /api/privacy/optouts`, `POST /api/privacy/optouts` (opt out,
//!   optionally purging), `DELETE /api/privacy/optouts` (opt in),
//!   `POST /api/privacy/purge`, `GET /api/privacy/audit`; and the public
//!   `POST /api/privacy/optout` that issues self-service codes.
//! * [`SelfService`]: `!optout <code>` typed in any channel by the login the
//!   code was issued to opts that author out (by their platform id) and
//!   purges them. The message itself is never stored.
//! * [`cli`]: `consumer privacy …`, the same operations from a shell, with
//!   the service's configuration, while it runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::ChatEvent;
use common::Secret;
use common::amqp::{ConnectOptions, Publisher, Topology};
use common::http::ApiError;
use common::privacy::{PrivacyAction, PrivacyNotice, Subject};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::store::Store;
use crate::store::privacy::{PurgeReport, check_opt_out_subject};

/// How long a self-service code is valid.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Codes one client address may ask for per [`CODE_WINDOW`].
pub const CODES_PER_ADDRESS: usize = 5;
/// The window of [`CODES_PER_ADDRESS`].
pub const CODE_WINDOW: Duration = Duration::from_secs(600);
/// Letters of a code: no 0/O, 1/I/L, so it can be read and typed.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters in a code (31^6, about 887 million).
const CODE_LEN: usize = 6;
/// How long announcing waits for the broker.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest JSON body of the privacy routes.
const MAX_BODY_BYTES: u64 = 4 * 1024;

/// Where a privacy operation is announced.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The broker.
    pub amqp_url: String,
    /// The stream (`PRIVACY_STREAM`); `None`: not announced (off).
    pub stream: Option<String>,
    /// The chat exchange and its unrouted and dead-letter queues.
    pub topology: Topology,
}

/// What an operation announced, for the caller to report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Announced {
    /// The notice went to the stream.
    pub stream: bool,
    /// A `privacy` event went to the channel's routing key.
    pub channel_event: bool,
    /// Subject's events dropped from chatbus's own queues.
    pub dropped_from_queues: u64,
    /// What failed, if anything (the store's part is done regardless).
    pub error: Option<String>,
}

/// The outcome of a purge through [`Privacy::purge`].
#[derive(Debug, Clone, Serialize)]
pub struct PurgeOutcome {
    /// What the store did.
    #[serde(flatten)]
    pub report: PurgeReport,
    /// What was told to whom.
    pub announced: Announced,
}

/// Opt-outs, opt-ins and purges: the store's part, then the announcements.
#[derive(Debug, Clone)]
pub struct Privacy {
    store: Arc<dyn Store>,
    announce: Announce,
    cancel: CancellationToken,
}

impl Privacy {
    /// Privacy operations on `store`, announced as `announce` says.
    pub fn new(store: Arc<dyn Store>, announce: Announce, cancel: CancellationToken) -> Self {
        Self {
            store,
            announce,
            cancel,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Opts `subject` (a user or channel) out or back in, and announces it.
    ///
    /// # Errors
    /// The subject cannot opt out, or the store failed (nothing changed
    /// then). A failed announcement is reported in [`Announced::error`].
    pub async fn set_opted_out(
        &self,
        subject: &Subject,
        opted_out: bool,
        requested_by: &str,
    ) -> anyhow::Result<Announced> {
        check_opt_out_subject(subject).map_err(anyhow::Error::msg)?;
        self.store
            .set_opted_out(subject, opted_out, requested_by)
            .await?;
        let action = if opted_out {
            PrivacyAction::OptOut
        } else {
            PrivacyAction::OptIn
        };
        let notice = PrivacyNotice::new(action, Some(subject.clone()), requested_by);
        self.store.record_notice(&notice.id).await?;
        Ok(self.tell(&notice, false).await)
    }

    /// Purges `subject` from the store and chatbus's queues, and announces
    /// it.
    ///
    /// # Errors
    /// The store failed (running the purge again finishes it).
    pub async fn purge(
        &self,
        subject: &Subject,
        requested_by: &str,
    ) -> anyhow::Result<PurgeOutcome> {
        let report = self.store.purge(subject, requested_by).await?;
        let mut notice =
            PrivacyNotice::new(PrivacyAction::Purge, Some(subject.clone()), requested_by);
        notice.horizon = Some(report.horizon);
        notice.rows = Some(report.deleted);
        self.store.record_notice(&notice.id).await?;
        let announced = self.tell(&notice, true).await;
        Ok(PurgeOutcome { report, announced })
    }

    /// Applies a notice another deployment published (its own store and
    /// announcements are its business) to this store, once: an opt-out,
    /// opt-in or purge it has not applied yet (`privacy_notices`). Nothing
    /// is announced again.
    ///
    /// # Errors
    /// The store failed (the notice is tried again at the next start).
    pub async fn adopt(&self, notice: &PrivacyNotice) -> anyhow::Result<()> {
        let Some(subject) = &notice.subject else {
            return Ok(());
        };
        if notice.action == PrivacyAction::Sync || self.store.notice_applied(&notice.id).await? {
            return Ok(());
        }
        // Claimed first: instances sharing the store each follow the
        // stream, and only one applies it.
        if !self.store.record_notice(&notice.id).await? {
            return Ok(());
        }
        let by = format!("stream: {}", notice.requested_by);
        let applied = match notice.action {
            PrivacyAction::OptOut | PrivacyAction::OptIn => {
                if check_opt_out_subject(subject).is_ok() {
                    self.store
                        .set_opted_out(subject, notice.action == PrivacyAction::OptOut, &by)
                        .await
                } else {
                    Ok(())
                }
            }
            PrivacyAction::Purge => self.store.purge(subject, &by).await.map(|_| ()),
            PrivacyAction::Sync => Ok(()),
        };
        if let Err(e) = applied {
            self.store.forget_notice(&notice.id).await?;
            return Err(e.into());
        }
        tracing::info!(action = notice.action.as_str(), subject = %subject.describe(), notice = %notice.id, "applied a privacy notice from the stream");
        Ok(())
    }

    /// Announces `notice` (and scrubs the queues when `scrub`); never
    /// fails: what went wrong is in the answer and the log.
    async fn tell(&self, notice: &PrivacyNotice, scrub: bool) -> Announced {
        let mut announced = Announced::default();
        let result = tokio::time::timeout(
            ANNOUNCE_TIMEOUT,
            self.tell_on(notice, scrub, &mut announced),
        )
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "RabbitMQ did not answer within {ANNOUNCE_TIMEOUT:?}"
            ))
        });
        if let Err(e) = result {
            let subject = notice
                .subject
                .as_ref()
                .map(Subject::describe)
                .unwrap_or_default();
            tracing::error!(
                error = format!("{e:#}"),
                subject = %subject,
                action = notice.action.as_str(),
                "done in the store but not announced; announce it again with the same command"
            );
            announced.error = Some(format!("{e:#}"));
        }
        announced
    }

    async fn tell_on(
        &self,
        notice: &PrivacyNotice,
        scrub: bool,
        announced: &mut Announced,
    ) -> anyhow::Result<()> {
        let options = ConnectOptions::new(&self.announce.amqp_url, "chatbus-consumer privacy");
        let connection = common::amqp::connect(&options, &self.cancel).await?;
        let result = async {
            if let Some(stream) = &self.announce.stream {
                common::amqp::privacy::publish(&connection, stream, notice)
                    .await
                    .context("publishing the notice to the privacy stream")?;
                announced.stream = true;
            }
            if let Some(Subject::Channel { platform, channel }) = &notice.subject
                && notice.action != PrivacyAction::OptIn
            {
                let publisher =
                    Publisher::open(&connection, &self.announce.topology, "chatbus-consumer")
                        .await?;
                publisher
                    .publish(&ChatEvent::privacy(
                        platform.clone(),
                        channel.clone(),
                        notice,
                    ))
                    .await
                    .context("publishing the channel's privacy event")?;
                publisher.close().await;
                announced.channel_event = true;
            }
            if scrub && let Some(subject) = &notice.subject {
                let horizon = notice.horizon;
                let covers =
                    |e: &ChatEvent| subject.covers(e) && horizon.is_none_or(|h| e.received_at <= h);
                for queue in [
                    &self.announce.topology.unrouted_queue,
                    &self.announce.topology.dead_letter_queue,
                ] {
                    let report = common::amqp::scrub::scrub_queue(&connection, queue, covers)
                        .await
                        .with_context(|| format!("dropping the subject's events from {queue}"))?;
                    announced.dropped_from_queues += report.dropped;
                }
            }
            anyhow::Ok(())
        }
        .await;
        common::amqp::close(&connection, "privacy announced").await;
        result
    }
}

// ------------------------------------------------------------ self-service --

/// A `!optout <code>` typed in a channel.
#[derive(Debug, Clone)]
pub struct OptOutAttempt {
    /// The platform it was typed on.
    pub platform: String,
    /// The author's login (the code was issued for it).
    pub login: String,
    /// The author's platform id (what is opted out).
    pub user_id: String,
    /// The code typed.
    pub code: String,
}

/// The code of a `!optout <code>` message, if `event` is one (a chat
/// message by a known author whose whole text is `!optout` and one word).
pub fn optout_command(event: &ChatEvent) -> Option<OptOutAttempt> {
    if !event.kind().is_chat() {
        return None;
    }
    let text = event.text.as_deref()?.trim();
    let mut words = text.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("!optout") {
        return None;
    }
    let code = words.next()?;
    if words.next().is_some() || code.len() > 32 {
        return None;
    }
    let author = event.author.as_ref()?;
    Some(OptOutAttempt {
        platform: event.platform.clone(),
        login: author.login.to_lowercase(),
        user_id: author.id.clone(),
        code: code.to_ascii_uppercase(),
    })
}

/// Where ingest hands `!optout` messages: a bounded queue (a flood of them
/// is dropped, not buffered) drained by [`SelfService::run`].
#[derive(Debug, Clone)]
pub struct SelfServiceInbox(mpsc::Sender<OptOutAttempt>);

impl SelfServiceInbox {
    /// Hands `attempt` over; drops it when the queue is full.
    pub fn offer(&self, attempt: OptOutAttempt) {
        metrics::counter!("chatbus_consumer_optout_messages_total").increment(1);
        if self.0.try_send(attempt).is_err() {
            metrics::counter!("chatbus_consumer_optout_messages_dropped_total").increment(1);
        }
    }
}

/// Redeems `!optout` codes: issue ([`SelfService::issue`]) and redeem.
#[derive(Debug)]
pub struct SelfService {
    privacy: Privacy,
    per_address: Mutex<HashMap<IpAddr, (Instant, usize)>>,
}

/// What `POST /api/privacy/optout` answers.
#[derive(Debug, Serialize)]
pub struct IssuedCode {
    /// The code to type.
    pub code: String,
    /// What to type, where.
    pub message: String,
    /// Until when the code works.
    pub expires_at: DateTime<Utc>,
}

impl SelfService {
    /// Self-service on `privacy`, and the inbox ingest feeds.
    pub fn new(privacy: Privacy) -> (Arc<Self>, SelfServiceInbox, mpsc::Receiver<OptOutAttempt>) {
        let (tx, rx) = mpsc::channel(256);
        (
            Arc::new(Self {
                privacy,
                per_address: Mutex::new(HashMap::new()),
            }),
            SelfServiceInbox(tx),
            rx,
        )
    }

    /// Issues a code for `login` of `platform`, asked from `address`.
    ///
    /// # Errors
    /// 429 when the address asked too often; 400 for a bad login; 503
    /// when the store fails.
    pub async fn issue(
        &self,
        platform: &str,
        login: &str,
        address: Option<IpAddr>,
    ) -> Result<IssuedCode, ApiError> {
        let login = login.trim().trim_start_matches('@').to_lowercase();
        if platform.is_empty()
            || !platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ApiError::bad_request(
                "invalid_platform",
                "`platform` is a platform name such as twitch or youtube",
            ));
        }
        if login.is_empty() || login.len() > 100 || login.chars().any(char::is_whitespace) {
            return Err(ApiError::bad_request(
                "invalid_login",
                "`login` is the name you chat as",
            ));
        }
        if let Some(address) = address {
            let key = crate::ws::admission::client_key(address);
            let mut map = self.per_address.lock().expect("code limiter lock");
            let now = Instant::now();
            map.retain(|_, (since, _)| now.duration_since(*since) < CODE_WINDOW);
            let entry = map.entry(key).or_insert((now, 0));
            if entry.1 >= CODES_PER_ADDRESS {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_codes",
                    format!(
                        "at most {CODES_PER_ADDRESS} codes per {} minutes; try again later",
                        CODE_WINDOW.as_secs() / 60
                    ),
                ));
            }
            entry.1 += 1;
        }
        let code: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..CODE_LEN)
                .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
                .collect()
        };
        let expires_at = Utc::now() + chrono::Duration::from_std(CODE_LIFETIME).expect("small");
        self.privacy
            .store
            .issue_code(&code, platform, &login, expires_at.timestamp_millis())
            .await
            .map_err(ApiError::unavailable)?;
        Ok(IssuedCode {
            message: format!(
                "type `!optout {code}` as {login} in any {platform} channel chatbus reads, within {} seconds",
                CODE_LIFETIME.as_secs()
            ),
            code,
            expires_at,
        })
    }

    /// Redeems the attempts ingest hands over until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        mut inbox: mpsc::Receiver<OptOutAttempt>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let attempt = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                a = inbox.recv() => match a { Some(a) => a, None => return Ok(()) },
            };
            if let Err(e) = self.redeem(&attempt).await {
                tracing::error!(error = format!("{e:#}"), platform = %attempt.platform, "a self-service opt-out failed; the person can ask again");
            }
        }
    }

    /// Opts the author out and purges them if their code is right.
    async fn redeem(&self, a: &OptOutAttempt) -> anyhow::Result<()> {
        let now = Utc::now().timestamp_millis();
        if !self
            .privacy
            .store
            .redeem_code(&a.code, &a.platform, &a.login, now)
            .await?
        {
            metrics::counter!("chatbus_consumer_optout_codes_refused_total").increment(1);
            return Ok(());
        }
        let subject = Subject::User {
            platform: a.platform.clone(),
            user_id: a.user_id.clone(),
        };
        self.privacy
            .set_opted_out(&subject, true, "self-service")
            .await?;
        self.privacy.purge(&subject, "self-service").await?;
        metrics::counter!("chatbus_consumer_optouts_self_service_total").increment(1);
        Ok(())
    }
}

// ------------------------------------------------------------------ routes --

/// A subject in a request body: exactly one of these.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectBody {
    user: Option<String>,
    channel: Option<String>,
    message: Option<String>,
    before: Option<String>,
    /// With an opt-out: also purge what is stored.
    #[serde(default)]
    purge: bool,
}

impl SubjectBody {
    /// The subject of an opt-out or opt-in: a user or a channel.
    fn opt_subject(&self) -> Result<Subject, ApiError> {
        let subject = self.subject()?;
        check_opt_out_subject(&subject).map_err(|e| ApiError::bad_request("invalid_subject", e))?;
        Ok(subject)
    }

    fn subject(&self) -> Result<Subject, ApiError> {
        let given = [&self.user, &self.channel, &self.message, &self.before]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            return Err(ApiError::bad_request(
                "invalid_subject",
                "give exactly one of `user` (<platform>:<user id>), `channel` (<platform>:<channel>), \
                 `message` (<platform>:<event id>) or `before` (RFC 3339)",
            ));
        }
        let bad = |e: String| ApiError::bad_request("invalid_subject", e);
        if let Some(v) = &self.user {
            return Subject::parse_pair("user", v).map_err(bad);
        }
        if let Some(v) = &self.channel {
            return Subject::parse_pair("channel", v).map_err(bad);
        }
        if let Some(v) = &self.message {
            return Subject::parse_pair("message", v).map_err(bad);
        }
        let v = self.before.as_deref().unwrap_or_default();
        DateTime::parse_from_rfc3339(v)
            .map(|t| Subject::Before {
                before: t.with_timezone(&Utc),
            })
            .map_err(|e| {
                bad(format!(
                    "`before`: {e} (expected RFC 3339, e.g. 2026-01-31T00:00:00Z)"
                ))
            })
    }
}

/// `POST /api/privacy/optout` body.
#[derive(Debug, Deserialize)]
struct CodeRequest {
    platform: String,
    login: String,
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    limit: Option<i64>,
}

fn failed(e: &anyhow::Error) -> Rejection {
    warp::reject::custom(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "privacy_failed",
        format!("{e:#}"),
    ))
}

/// The privacy routes (see the module docs). The admin routes are off
/// (403) without `token`; the code route is public.
pub fn routes(
    privacy: Privacy,
    self_service: Arc<SelfService>,
    token: Option<Secret>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let admin = crate::api::write_gate(
        token,
        "privacy_admin_off",
        "the privacy admin API is off on this consumer: set CONSUMER_PRIVACY_TOKEN",
    );
    let with = move || {
        let p = privacy.clone();
        warp::any().map(move || p.clone())
    };
    let body =
        || warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::json::<SubjectBody>());

    let list = warp::path!("api" / "privacy" / "optouts")
        .and(warp::get())
        .and(admin.clone())
        .and(with())
        .and_then(|p: Privacy| async move {
            let list = p.store.opt_outs().await.map_err(|e| failed(&e.into()))?;
            Ok::<_, Rejection>(warp::reply::json(&list))
        });
    let opt_out = warp::path!("api" / "privacy" / "optouts")
        .and(warp::post())
        .and(admin.clone())
        .and(body())
        .and(with())
        .and_then(|b: SubjectBody, p: Privacy| async move {
            let subject = b.opt_subject().map_err(warp::reject::custom)?;
            // Carried out by a task of its own: a client that goes away does
            // not stop it half-way.
            let answer = tokio::spawn(async move {
                let announced = p.set_opted_out(&subject, true, "admin-api").await?;
                let purged = if b.purge {
                    Some(p.purge(&subject, "admin-api").await?)
                } else {
                    None
                };
                anyhow::Ok(serde_json::json!({"opted_out": subject, "announced": announced, "purge": purged}))
            })
            .await
            .map_err(|e| failed(&e.into()))?
            .map_err(|e| failed(&e))?;
            Ok::<_, Rejection>(warp::reply::json(&answer))
        });
    let opt_in = warp::path!("api" / "privacy" / "optouts")
        .and(warp::delete())
        .and(admin.clone())
        .and(body())
        .and(with())
        .and_then(|b: SubjectBody, p: Privacy| async move {
            let subject = b.opt_subject().map_err(warp::reject::custom)?;
            let announced = p
                .set_opted_out(&subject, false, "admin-api")
                .await
                .map_err(|e| failed(&e))?;
            Ok::<_, Rejection>(warp::reply::json(
                &serde_json::json!({"opted_in": subject, "announced": announced}),
            ))
        });
    let purge = warp::path!("api" / "privacy" / "purge")
        .and(warp::post())
        .and(admin.clone())
        .and(body())
        .and(with())
        .and_then(|b: SubjectBody, p: Privacy| async move {
            let subject = b.subject().map_err(warp::reject::custom)?;
            let outcome = tokio::spawn(async move { p.purge(&subject, "admin-api").await })
                .await
                .map_err(|e| failed(&e.into()))?
                .map_err(|e| failed(&e))?;
            Ok::<_, Rejection>(warp::reply::json(&outcome))
        });
    let audit = warp::path!("api" / "privacy" / "audit")
        .and(warp::get())
        .and(admin)
        .and(warp::query::<AuditParams>())
        .and(with())
        .and_then(|q: AuditParams, p: Privacy| async move {
            let limit = q.limit.unwrap_or(100).clamp(1, 1000);
            let rows = p
                .store
                .audit_log(limit)
                .await
                .map_err(|e| failed(&e.into()))?;
            Ok::<_, Rejection>(warp::reply::json(&rows))
        });
    let code = warp::path!("api" / "privacy" / "optout")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::json::<CodeRequest>())
        .and(warp::addr::remote())
        .and(warp::any().map(move || self_service.clone()))
        .and_then(
            |r: CodeRequest, addr: Option<std::net::SocketAddr>, s: Arc<SelfService>| async move {
                let issued = s
                    .issue(&r.platform, &r.login, addr.map(|a| a.ip()))
                    .await
                    .map_err(warp::reject::custom)?;
                Ok::<_, Rejection>(warp::reply::json(&issued))
            },
        );
    list.or(opt_out)
        .unify()
        .or(opt_in)
        .unify()
        .or(purge)
        .unify()
        .or(audit)
        .unify()
        .or(code)
        .unify()
}

// --------------------------------------------------------------------- cli --

/// `consumer privacy …`: the admin API's operations from a shell, with the
/// service's configuration (file and environment), while it runs.
pub mod cli {
    use super::{Privacy, Subject};
    use crate::Config;
    use crate::store::StoreOptions;
    use chrono::{DateTime, Utc};

    /// `consumer privacy <command>`.
    #[derive(Debug, clap::Subcommand)]
    pub enum Command {
        /// Opt a user or channel out: nothing of theirs is stored or
        /// published from now on.
        Optout {
            #[command(flatten)]
            who: Who,
            /// Also purge what is stored of them.
            #[arg(long)]
            purge: bool,
        },
        /// Opt a user or channel back in.
        Optin {
            #[command(flatten)]
            who: Who,
        },
        /// List the opted-out users and channels.
        List,
        /// Delete what a subject covers, everywhere chatbus keeps it.
        Purge {
            #[command(flatten)]
            what: What,
        },
        /// Show the newest audit rows.
        Audit {
            /// How many.
            #[arg(long, default_value_t = 50)]
            limit: i64,
        },
    }

    /// A user or a channel.
    #[derive(Debug, clap::Args)]
    #[group(required = true, multiple = false)]
    pub struct Who {
        /// `<platform>:<user id>` (the platform's id, not the login).
        #[arg(long)]
        user: Option<String>,
        /// `<platform>:<channel>`.
        #[arg(long)]
        channel: Option<String>,
    }

    /// What to purge: exactly one.
    #[derive(Debug, clap::Args)]
    #[group(required = true, multiple = false)]
    pub struct What {
        /// `<platform>:<user id>`: the user's events in every channel.
        #[arg(long)]
        user: Option<String>,
        /// `<platform>:<channel>`: the channel's events.
        #[arg(long)]
        channel: Option<String>,
        /// `<platform>:<event id>`: one event.
        #[arg(long)]
        message: Option<String>,
        /// Everything sent before this moment (RFC 3339).
        #[arg(long)]
        before: Option<String>,
    }

    fn who(w: &Who) -> Result<Subject, String> {
        match (&w.user, &w.channel) {
            (Some(u), _) => Subject::parse_pair("user", u),
            (_, Some(c)) => Subject::parse_pair("channel", c),
            _ => Err("give --user or --channel".into()),
        }
    }

    fn what(w: &What) -> Result<Subject, String> {
        if let Some(u) = &w.user {
            return Subject::parse_pair("user", u);
        }
        if let Some(c) = &w.channel {
            return Subject::parse_pair("channel", c);
        }
        if let Some(m) = &w.message {
            return Subject::parse_pair("message", m);
        }
        let before = w
            .before
            .as_deref()
            .ok_or("give one of --user, --channel, --message, --before")?;
        DateTime::parse_from_rfc3339(before)
            .map(|t| Subject::Before {
                before: t.with_timezone(&Utc),
            })
            .map_err(|e| format!("--before `{before}`: {e} (expected RFC 3339)"))
    }

    /// Runs `command` with `config`; prints the outcome as JSON. Exit code
    /// 0 when done and announced, 1 when the store's part failed, 3 when
    /// it is done but could not be announced (run it again), 2 for bad
    /// arguments.
    pub fn run(config: &Config, command: &Command) -> std::process::ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("consumer privacy: cannot start the async runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        runtime.block_on(async {
            match execute(config, command).await {
                Ok((json, announced_ok)) => {
                    println!("{}", serde_json::to_string_pretty(&json).expect("JSON"));
                    if announced_ok {
                        std::process::ExitCode::SUCCESS
                    } else {
                        eprintln!("consumer privacy: done in the store, but not announced on the bus: run the same command again");
                        std::process::ExitCode::from(3)
                    }
                }
                Err(Bad(e)) => {
                    eprintln!("consumer privacy: {e}");
                    std::process::ExitCode::from(2)
                }
                Err(Failed(e)) => {
                    eprintln!("consumer privacy: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        })
    }

    enum Error {
        Bad(String),
        Failed(anyhow::Error),
    }
    use Error::{Bad, Failed};

    impl<E: Into<anyhow::Error>> From<E> for Error {
        fn from(e: E) -> Self {
            Failed(e.into())
        }
    }

    async fn execute(
        config: &Config,
        command: &Command,
    ) -> Result<(serde_json::Value, bool), Error> {
        let store = crate::store::open(
            &config.database_url,
            &StoreOptions {
                max_connections: 2,
                moderation_lookback: config.consumer_moderation_lookback,
                search: config.search_limits(),
            },
        )
        .await?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let privacy = Privacy::new(store.clone(), config.privacy_announce(), cancel);
        let result = match command {
            Command::Optout { who: w, purge } => {
                let subject = who(w).map_err(Bad)?;
                let announced = privacy.set_opted_out(&subject, true, "cli").await?;
                let mut ok = announced.error.is_none();
                let purged = if *purge {
                    let p = privacy.purge(&subject, "cli").await?;
                    ok &= p.announced.error.is_none();
                    Some(p)
                } else {
                    None
                };
                (
                    serde_json::json!({"opted_out": subject, "announced": announced, "purge": purged}),
                    ok,
                )
            }
            Command::Optin { who: w } => {
                let subject = who(w).map_err(Bad)?;
                let announced = privacy.set_opted_out(&subject, false, "cli").await?;
                let ok = announced.error.is_none();
                (
                    serde_json::json!({"opted_in": subject, "announced": announced}),
                    ok,
                )
            }
            Command::List => (serde_json::to_value(store.opt_outs().await?)?, true),
            Command::Purge { what: w } => {
                let subject = what(w).map_err(Bad)?;
                let outcome = privacy.purge(&subject, "cli").await?;
                let ok = outcome.announced.error.is_none();
                (serde_json::to_value(outcome)?, ok)
            }
            Command::Audit { limit } => {
                (serde_json::to_value(store.audit_log(*limit).await?)?, true)
            }
        };
        store.close().await;
        Ok(result)
    }

    impl std::fmt::Debug for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Bad(e) => write!(f, "{e}"),
                Failed(e) => write!(f, "{e:#}"),
            }
        }
    }
}
