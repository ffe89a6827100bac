//! Kick's webhook signatures (docs.kick.com/events/webhook-security): RSA
//! PKCS#1 v1.5 with SHA-256 over `<Kick-Event-Message-Id>.<Kick-Event-Message-Timestamp>.<raw body>`,
//! base64 in `Kick-Event-Signature`, under Kick's public key (PEM, `PUBLIC KEY`).
//!
//! [`KeyCache`] holds the key fetched from `GET /public/v1/public-key`: fetched
//! on first use, and again after a signature fails to verify, at most once a
//! minute (Kick may rotate it; a forger cannot make us fetch more often).
//!
//! The key is read with `rsa` (PEM, SPKI or PKCS#1) and signatures are
//! verified with `ring`: in the webhook benchmark `rsa`'s generic big-number
//! arithmetic took 61 % of the ingestor's CPU (about 200 µs a delivery);
//! `ring`'s verification is assembly from BoringSSL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPublicKey, pkcs1::DecodeRsaPublicKey as _};
use tokio::sync::Mutex;

use super::api::{Api, KickApiError};

/// Shortest time between two fetches of the key after a failed check.
pub const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// The bytes Kick signs.
pub fn signed_payload(message_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message_id.len() + timestamp.len() + body.len() + 2);
    out.extend_from_slice(message_id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// An RSA public key, as its modulus and exponent (big-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Reads a PEM public key (`PUBLIC KEY`, SubjectPublicKeyInfo, as Kick
/// publishes it; `RSA PUBLIC KEY`, PKCS#1, too).
///
/// # Errors
/// Why it is not an RSA public key.
pub fn parse_public_key(pem: &str) -> Result<PublicKey, String> {
    let pem = pem.trim();
    let key = RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("not an RSA public key in PEM: {e}"))?;
    Ok(PublicKey {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    })
}

/// Whether `signature` (base64) is `key`'s RSA PKCS#1 v1.5 SHA-256
/// signature of the delivery (keys of 2048 to 8192 bits).
pub fn verify(
    key: &PublicKey,
    message_id: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    ring::signature::RsaPublicKeyComponents {
        n: &key.n,
        e: &key.e,
    }
    .verify(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &signed_payload(message_id, timestamp, body),
        &signature,
    )
    .is_ok()
}

/// Why a delivery's signature could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key could not be fetched (nothing to check against).
    #[error("Kick's public key could not be fetched: {0}")]
    Fetch(#[from] KickApiError),
    /// Kick's answer held no usable key.
    #[error("{0}")]
    Invalid(String),
}

/// Kick's public key, fetched when needed.
#[derive(Debug)]
pub struct KeyCache {
    api: Arc<Api>,
    state: Mutex<KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    key: Option<Arc<PublicKey>>,
    fetched_at: Option<Instant>,
}

impl KeyCache {
    /// A cache fetching through `api`.
    pub fn new(api: Arc<Api>) -> Self {
        Self {
            api,
            state: Mutex::new(KeyState::default()),
        }
    }

    async fn fetch(&self, state: &mut KeyState) -> Result<Arc<PublicKey>, KeyError> {
        state.fetched_at = Some(Instant::now());
        let pem = self.api.public_key().await?;
        let key = Arc::new(parse_public_key(&pem).map_err(KeyError::Invalid)?);
        state.key = Some(key.clone());
        Ok(key)
    }

    /// Checks a delivery's signature: true when it verifies under the
    /// cached key, or under a key fetched again because it did not (at most
    /// once a [`REFETCH_AFTER`]).
    ///
    /// # Errors
    /// [`KeyError`] when there is no key to check against.
    pub async fn check(
        &self,
        message_id: &str,
        timestamp: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<bool, KeyError> {
        let cached = self.state.lock().await.key.clone();
        let key = match cached {
            Some(key) => key,
            None => {
                let mut state = self.state.lock().await;
                match state.key.clone() {
                    Some(key) => key,
                    None => self.fetch(&mut state).await?,
                }
            }
        };
        if verify(&key, message_id, timestamp, body, signature) {
            return Ok(true);
        }
        let mut state = self.state.lock().await;
        if state
            .fetched_at
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER)
        {
            return Ok(false);
        }
        let fresh = self.fetch(&mut state).await?;
        drop(state);
        if *fresh == *key {
            return Ok(false);
        }
        metrics::counter!("chatbus_ingestor_kick_public_key_changes_total").increment(1);
        Ok(verify(&fresh, message_id, timestamp, body, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kick's published key (docs.kick.com/events/webhook-security).
    const KICK_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAq/+l1WnlRrGSolDMA+A8
6rAhMbQGmQ2SapVcGM3zq8ANXjnhDWocMqfWcTd95btDydITa10kDvHzw9WQOqp2
MZI7ZyrfzJuz5nhTPCiJwTwnEtWft7nV14BYRDHvlfqPUaZ+1KR4OCaO/wWIk/rQ
L/TjY0M70gse8rlBkbo2a8rKhu69RQTRsoaf4DVhDPEeSeI5jVrRDGAMGL3cGuyY
6CLKGdjVEM78g3JfYOvDU/RvfqD7L89TZ3iN94jrmWdGz34JNlEI5hqK8dd7C5EF
BEbZ5jgB8s8ReQV8H+MkuffjdAj3ajDDX3DOJMIut1lBrUVD1AaSrGCKHooWoL2e
twIDAQAB
-----END PUBLIC KEY-----";

    #[test]
    fn kicks_published_key_parses_and_rejects_what_it_did_not_sign() {
        let key = parse_public_key(KICK_KEY).unwrap();
        assert!(!verify(&key, "01J", "2025-01-14T16:08:06Z", b"{}", "AAAA"));
        assert!(!verify(&key, "01J", "2025-01-14T16:08:06Z", b"{}", "not base64!"));
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
    }

    #[test]
    fn the_signed_bytes_are_id_dot_timestamp_dot_body() {
        assert_eq!(
            signed_payload("01HX", "2025-01-14T16:08:06Z", br#"{"a":1}"#),
            br#"01HX.2025-01-14T16:08:06Z.{"a":1}"#
        );
    }
}
