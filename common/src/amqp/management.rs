//! The RabbitMQ management HTTP API, for what AMQP cannot do: policies
//! (the alternate exchange, max-length and dead-lettering chatbus used to
//! set as arguments, which could then never change) and reading the
//! broker's view of a queue.
//!
//! [`Topology::policies`] lists chatbus's policies; [`apply_policies`]
//! sets them (idempotent); [`Policy::rabbitmqctl`] prints the equivalent
//! command for operators who set them by hand (docs/rabbitmq.md).

use std::time::Duration;

use serde_json::json;

use super::Topology;
use crate::secret::Secret;
use crate::urlcode::{decode, encode};

/// Why a management API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The URL cannot be used.
    #[error("management API URL `{0}` is not usable")]
    BadUrl(String),
    /// The request failed (unreachable, refused, or an error status).
    #[error("management API {method} {path}: {source}")]
    Http {
        /// `GET`, `PUT` ...
        method: &'static str,
        /// The API path.
        path: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
}

/// A client of one virtual host's management API.
#[derive(Clone)]
pub struct Management {
    base: reqwest::Url,
    user: String,
    password: Secret,
    vhost: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("base", &self.base.as_str())
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

impl Management {
    /// A client for the API at `base` (`http://host:15672`), as `user`, for
    /// virtual host `vhost`.
    ///
    /// # Errors
    /// [`ManagementError::BadUrl`] when `base` is not an http(s) URL.
    pub fn new(
        base: &str,
        user: &str,
        password: Secret,
        vhost: &str,
    ) -> Result<Self, ManagementError> {
        let base = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ManagementError::BadUrl(base.to_owned()))?;
        Ok(Self {
            base,
            user: user.to_owned(),
            password,
            vhost: vhost.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|_| ManagementError::BadUrl("http client".into()))?,
        })
    }

    /// The management API of the broker at `amqp_url` (the first node of a
    /// comma list), unless `explicit` names one: same host, port 15672
    /// (15671 for `amqps`), same user, password and virtual host.
    ///
    /// # Errors
    /// [`ManagementError::BadUrl`] when neither gives a usable URL.
    pub fn for_broker(amqp_url: &str, explicit: Option<&str>) -> Result<Self, ManagementError> {
        let first = super::split_urls(amqp_url)
            .first()
            .copied()
            .unwrap_or_default()
            .to_owned();
        let amqp = reqwest::Url::parse(&first)
            .map_err(|_| ManagementError::BadUrl(super::redact_url(&first)))?;
        let user = match amqp.username() {
            "" => "guest".to_owned(),
            u => decode(u, false),
        };
        let password = Secret::new(
            amqp.password()
                .map_or("guest".to_owned(), |p| decode(p, false)),
        );
        let vhost = match amqp.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            v => decode(v, false),
        };
        let base = match explicit {
            Some(url) => url.to_owned(),
            None => {
                let host = amqp
                    .host_str()
                    .ok_or_else(|| ManagementError::BadUrl(super::redact_url(&first)))?;
                if amqp.scheme() == "amqps" {
                    format!("https://{host}:15671")
                } else {
                    format!("http://{host}:15672")
                }
            }
        };
        Self::new(&base, &user, password, &vhost)
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// GETs `path` (names encoded with [`encode`]) as JSON.
    ///
    /// # Errors
    /// [`ManagementError::Http`].
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ManagementError> {
        let err = |source| ManagementError::Http {
            method: "GET",
            path: path.to_owned(),
            source,
        };
        self.http
            .get(self.url(path))
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(err)?
            .json()
            .await
            .map_err(err)
    }

    /// PUTs `body` to `path`.
    ///
    /// # Errors
    /// [`ManagementError::Http`].
    pub async fn put_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), ManagementError> {
        self.http
            .put(self.url(path))
            .basic_auth(&self.user, Some(self.password.expose()))
            .json(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(drop)
            .map_err(|source| ManagementError::Http {
                method: "PUT",
                path: path.to_owned(),
                source,
            })
    }

    /// DELETEs `path` (a missing resource is fine).
    ///
    /// # Errors
    /// [`ManagementError::Http`].
    pub async fn delete(&self, path: &str) -> Result<(), ManagementError> {
        let resp = self
            .http
            .delete(self.url(path))
            .basic_auth(&self.user, Some(self.password.expose()))
            .header("X-Reason", "chatbus")
            .send()
            .await
            .map_err(|source| ManagementError::Http {
                method: "DELETE",
                path: path.to_owned(),
                source,
            })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        resp.error_for_status()
            .map(drop)
            .map_err(|source| ManagementError::Http {
                method: "DELETE",
                path: path.to_owned(),
                source,
            })
    }

    /// Sets (creates or replaces) `policy` in this virtual host.
    ///
    /// # Errors
    /// [`ManagementError::Http`].
    pub async fn put_policy(&self, policy: &Policy) -> Result<(), ManagementError> {
        let path = format!(
            "/api/policies/{}/{}",
            encode(&self.vhost),
            encode(&policy.name)
        );
        self.put_json(
            &path,
            &json!({
                "pattern": policy.pattern,
                "apply-to": policy.apply_to,
                "definition": policy.definition,
                "priority": policy.priority,
            }),
        )
        .await
    }

    /// Removes the policy `name` (if it exists).
    ///
    /// # Errors
    /// [`ManagementError::Http`].
    pub async fn delete_policy(&self, name: &str) -> Result<(), ManagementError> {
        self.delete(&format!(
            "/api/policies/{}/{}",
            encode(&self.vhost),
            encode(name)
        ))
        .await
    }
}

/// A RabbitMQ policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Regular expression over exchange or queue names.
    pub pattern: String,
    /// `exchanges` or `queues`.
    pub apply_to: &'static str,
    /// The keys it sets (`alternate-exchange`, `max-length` ...).
    pub definition: serde_json::Value,
    /// Higher wins when several match (policies do not merge).
    pub priority: i32,
}

impl Policy {
    /// The `rabbitmqctl set_policy` command that sets this policy.
    pub fn rabbitmqctl(&self, vhost: &str) -> String {
        format!(
            "rabbitmqctl set_policy -p '{vhost}' --apply-to {} --priority {} '{}' '{}' '{}'",
            self.apply_to, self.priority, self.name, self.pattern, self.definition
        )
    }
}

/// The priority of chatbus's policies: above a catch-all `.*` policy
/// (priority 0), which they would otherwise lose to. Policies do not merge:
/// an operator with other policies on these names folds these keys into
/// theirs and turns chatbus's off (`RABBITMQ_POLICIES=false`).
pub const POLICY_PRIORITY: i32 = 10;

impl Topology {
    /// The policies the topology relies on: the main exchange's alternate
    /// exchange, and the unrouted queue's length limit (oldest dropped).
    pub fn policies(&self) -> Vec<Policy> {
        vec![
            Policy {
                name: format!("chatbus-{}-alternate-exchange", self.exchange),
                pattern: exact(&self.exchange),
                apply_to: "exchanges",
                definition: json!({ "alternate-exchange": self.unrouted_exchange }),
                priority: POLICY_PRIORITY,
            },
            Policy {
                name: format!("chatbus-{}-max-length", self.unrouted_queue),
                pattern: exact(&self.unrouted_queue),
                apply_to: "queues",
                definition: json!({
                    "max-length": self.unrouted_max_length,
                    "overflow": "drop-head",
                }),
                priority: POLICY_PRIORITY,
            },
        ]
    }

    /// The policy that dead-letters what a consumer queue rejects
    /// (`basic.nack` without requeue, expired messages) to the topology's
    /// dead-letter exchange. chatbus's own dead-lettering (with a reason)
    /// publishes there directly and does not need it.
    pub fn queue_policy(&self, queue: &str) -> Policy {
        Policy {
            name: format!("chatbus-{queue}-dead-letter"),
            pattern: exact(queue),
            apply_to: "queues",
            definition: json!({ "dead-letter-exchange": self.dead_letter_exchange }),
            priority: POLICY_PRIORITY,
        }
    }
}

/// Sets every policy of `policies`.
///
/// # Errors
/// The first [`ManagementError`].
pub async fn apply_policies(
    management: &Management,
    policies: &[Policy],
) -> Result<(), ManagementError> {
    for policy in policies {
        management.put_policy(policy).await?;
    }
    Ok(())
}

/// What every service does at start: finds the management API of the
/// broker at `amqp_url` (or `explicit`, `RABBITMQ_MANAGEMENT_URL`) and
/// spawns [`keep_policies`] with `policies`, retrying every minute until
/// `cancel`. A management URL that cannot be derived is logged at WARN:
/// chatbus works without its policies.
pub fn spawn_policies(
    amqp_url: &str,
    explicit: Option<&str>,
    policies: Vec<Policy>,
    cancel: tokio_util::sync::CancellationToken,
) {
    match Management::for_broker(amqp_url, explicit) {
        Ok(management) => {
            tokio::spawn(keep_policies(
                management,
                policies,
                Duration::from_secs(60),
                cancel,
            ));
        }
        Err(e) => tracing::warn!(error = %e, "RabbitMQ policies not set"),
    }
}

/// Sets `policies` now, and while the management API cannot be reached,
/// again every `retry` until it can or `cancel` fires. The first failure
/// is logged once at WARN, with the `rabbitmqctl` commands that set the
/// same policies by hand; chatbus works without them (no alternate
/// exchange or length limit).
pub async fn keep_policies(
    management: Management,
    policies: Vec<Policy>,
    retry: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut failed_before = false;
    loop {
        match apply_policies(&management, &policies).await {
            Ok(()) => {
                if failed_before {
                    tracing::info!(policies = policies.len(), "RabbitMQ policies set");
                } else {
                    tracing::debug!(policies = policies.len(), "RabbitMQ policies set");
                }
                return;
            }
            Err(e) if !failed_before => {
                failed_before = true;
                let commands: Vec<String> = policies
                    .iter()
                    .map(|p| p.rabbitmqctl(management.vhost()))
                    .collect();
                tracing::warn!(
                    error = %e,
                    "cannot set chatbus's RabbitMQ policies (alternate exchange, max-length, dead-lettering) through the management API; retrying every {}; to set them by hand: {}",
                    humantime::format_duration(retry),
                    commands.join(" ; ")
                );
            }
            Err(e) => tracing::debug!(error = %e, "RabbitMQ policies still not set"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// A regular expression matching exactly `name`.
fn exact(name: &str) -> String {
    let mut out = String::from("^");
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_found_from_the_amqp_url() {
        let m = Management::for_broker("amqp://bob:s%40cret@rabbit.local:5672/chat", None).unwrap();
        assert_eq!(m.base.as_str(), "http://rabbit.local:15672/");
        assert_eq!((m.user.as_str(), m.password.expose()), ("bob", "s@cret"));
        assert_eq!(m.vhost(), "chat");
        let m = Management::for_broker("amqp://guest:guest@a:5680/%2f,amqp://b:5681/%2f", None)
            .unwrap();
        assert_eq!((m.base.as_str(), m.vhost()), ("http://a:15672/", "/"));
        let m =
            Management::for_broker("amqps://u:hunter2@h/%2f", Some("https://mgmt:443")).unwrap();
        assert_eq!(m.base.as_str(), "https://mgmt/");
        assert!(
            !format!("{m:?}").contains("hunter2"),
            "no password in Debug"
        );
    }

    #[test]
    fn policies_match_exactly_their_names() {
        let t = Topology::named("chat");
        let p = t.policies();
        assert_eq!(p[0].pattern, "^chat$");
        assert_eq!(p[0].definition["alternate-exchange"], "chat.unrouted");
        assert_eq!(p[1].pattern, "^chat\\.unrouted$");
        assert_eq!(
            t.queue_policy("chat.consumer").definition["dead-letter-exchange"],
            "chat.dlx"
        );
        assert!(
            p[0].rabbitmqctl("/")
                .starts_with("rabbitmqctl set_policy -p '/'")
        );
    }
}
