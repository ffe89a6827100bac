//! What the providers' endpoints answer, as serde types: the token
//! endpoint's grant ([`ProviderTokenResponse`]) and error
//! ([`ProviderErrorResponse`]), and the validation endpoint's answer.
//!
//! Code exchange and refresh go through the `oauth2` crate with our own
//! token response type, because Twitch answers `scope` as a JSON array where
//! RFC 6749 (and oauth2's `StandardTokenResponse`) expects a space-delimited
//! string; [`ProviderTokenResponse`] accepts both. Google's `tokeninfo`
//! spells numbers as strings; Twitch's `/oauth2/validate` as numbers.

use std::time::Duration;

use oauth2::{AccessToken, RefreshToken, Scope};
use serde::{Deserialize, Deserializer, Serialize};

/// A token endpoint's answer, Twitch's (`scope` a JSON array) or the RFC's
/// (`scope` a space-delimited string) alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderTokenResponse {
    pub(super) access_token: AccessToken,
    #[serde(default)]
    token_type: ProviderTokenType,
    /// A number, or a numeric string (Kick's docs show `"expires_in": ""`).
    #[serde(
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) refresh_token: Option<RefreshToken>,
    #[serde(
        rename = "scope",
        default,
        deserialize_with = "scopes_list_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) scopes: Option<Vec<Scope>>,
}

/// A token type as the provider spells it (`bearer`, `Bearer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderTokenType(String);

impl Default for ProviderTokenType {
    fn default() -> Self {
        Self("bearer".into())
    }
}

impl oauth2::TokenType for ProviderTokenType {}

impl oauth2::TokenResponse for ProviderTokenResponse {
    type TokenType = ProviderTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &ProviderTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

/// `scope` as a JSON array (Twitch), a space-delimited string (RFC 6749,
/// Google), or absent/null.
fn scopes_list_or_string<'de, D>(deserializer: D) -> Result<Option<Vec<Scope>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(string_list(deserializer)?.map(|v| v.into_iter().map(Scope::new).collect()))
}

fn string_list<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(
        Option::<ListOrString>::deserialize(deserializer)?.map(|v| match v {
            ListOrString::List(v) => v,
            ListOrString::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        }),
    )
}

/// A number given as a number (Twitch) or as a string (Google's tokeninfo).
fn lenient_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match Option::<NumberOrString>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::String(s)) if s.trim().is_empty() => Ok(None),
        Some(NumberOrString::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected a number of seconds")),
    }
}

/// A token endpoint's error answer: RFC 6749's `error` / `error_description`
/// or Twitch's `status` / `message`. Accepts any JSON object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderErrorResponse {
    /// RFC 6749 error code (Twitch sometimes puts the status text here).
    #[serde(default)]
    pub error: Option<String>,
    /// RFC 6749 description.
    #[serde(default)]
    pub error_description: Option<String>,
    /// Twitch's message.
    #[serde(default)]
    pub message: Option<String>,
    /// Twitch's copy of the HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
}

impl std::fmt::Display for ProviderErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> = [&self.error, &self.error_description, &self.message]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if parts.is_empty() {
            f.write_str("no explanation given")
        } else {
            f.write_str(&parts.join(": "))
        }
    }
}

impl oauth2::ErrorResponse for ProviderErrorResponse {}

/// The validation endpoint's answer: Twitch's `/oauth2/validate`
/// (`client_id`, `login`, `user_id`, `scopes`) or Google's `tokeninfo`
/// (`aud`, `email`, `sub`, `scope`).
#[derive(Deserialize)]
pub(super) struct ValidateResponse {
    #[serde(default)]
    pub(super) client_id: Option<String>,
    #[serde(default)]
    pub(super) aud: Option<String>,
    #[serde(default)]
    pub(super) login: Option<String>,
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    pub(super) user_id: Option<String>,
    #[serde(default)]
    pub(super) sub: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub(super) scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string_list")]
    pub(super) scope: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use oauth2::TokenResponse;

    #[test]
    fn twitch_scope_array_is_parsed() {
        let json = r#"{"access_token":"a","expires_in":14124,"refresh_token":"r",
            "scope":["channel:moderate","chat:edit","chat:read"],"token_type":"bearer"}"#;
        let r: ProviderTokenResponse = serde_json::from_str(json).unwrap();
        let scopes: Vec<String> = r.scopes().unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(scopes, ["channel:moderate", "chat:edit", "chat:read"]);
        assert_eq!(r.expires_in(), Some(Duration::from_secs(14124)));
        assert_eq!(r.refresh_token().unwrap().secret(), "r");
    }

    #[test]
    fn rfc_scope_string_and_missing_scope_are_parsed() {
        let r: ProviderTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"Bearer","scope":"x y"}"#)
                .unwrap();
        assert_eq!(r.scopes().unwrap().len(), 2);
        let r: ProviderTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer","scope":null}"#)
                .unwrap();
        assert!(r.scopes().is_none());
        let r: ProviderTokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert!(r.scopes().is_none() && r.refresh_token().is_none());
        assert!(serde_json::from_str::<ProviderTokenResponse>(r#"{"scope":"x"}"#).is_err());
    }

    #[test]
    fn debug_of_a_token_response_hides_the_tokens() {
        let r: ProviderTokenResponse = serde_json::from_str(
            r#"{"access_token":"sekrit-access","refresh_token":"sekrit-refresh"}"#,
        )
        .unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");
    }

    #[test]
    fn error_responses_of_both_shapes_are_understood() {
        let twitch: ProviderErrorResponse =
            serde_json::from_str(r#"{"status":400,"message":"Invalid refresh token"}"#).unwrap();
        assert_eq!(twitch.to_string(), "Invalid refresh token");
        let rfc: ProviderErrorResponse = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap();
        assert_eq!(
            rfc.to_string(),
            "invalid_grant: Token has been expired or revoked."
        );
    }

    #[test]
    fn validate_answers_of_both_providers_parse() {
        let twitch: ValidateResponse = serde_json::from_str(
            r#"{"client_id":"c","login":"bot","scopes":["chat:read"],"user_id":"42","expires_in":5520}"#,
        )
        .unwrap();
        assert_eq!(twitch.expires_in, Some(5520));
        assert_eq!(twitch.scopes.unwrap(), ["chat:read"]);
        let google: ValidateResponse = serde_json::from_str(
            r#"{"aud":"c","sub":"1","scope":"openid email","expires_in":"3599","email":"a@b"}"#,
        )
        .unwrap();
        assert_eq!(google.expires_in, Some(3599));
        assert_eq!(google.scope.unwrap(), ["openid", "email"]);
        let null_scopes: ValidateResponse =
            serde_json::from_str(r#"{"login":"x","scopes":null}"#).unwrap();
        assert!(null_scopes.scopes.is_none());
    }
}
