//! Who may act as whom (`COMMANDS_ALLOW`): the token-store accounts commands
//! may use, whether each may moderate, and optionally which RabbitMQ users
//! (the AMQP `user_id` property, which RabbitMQ checks against the
//! connection's user) may use it.
//!
//! Each entry is `<platform>:<account>[:send|:moderate][:users=<u1>/<u2>]`:
//! `twitch:chatbot` (send only), `twitch:modbot:moderate` (send and
//! moderate), `youtube:UCx…:moderate:users=dashboard/bots`.

use common::command::CommandAction;

/// One allowed account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Its platform.
    pub platform: String,
    /// The token-store account (login or channel id).
    pub account: String,
    /// Whether moderation kinds (delete, timeout, ban, unban) are allowed.
    pub moderate: bool,
    /// The RabbitMQ users whose commands may use it; `None`: any.
    pub users: Option<Vec<String>>,
}

/// The allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Allowed>);

impl AllowList {
    /// Parses `COMMANDS_ALLOW`'s entries.
    ///
    /// # Errors
    /// A message naming the entry that is not `<platform>:<account>[:send|:moderate][:users=a/b]`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in entries {
            let bad = || {
                format!(
                    "`{entry}` is not <platform>:<account>[:send|:moderate][:users=<user>/<user>]"
                )
            };
            let mut parts = entry.split(':');
            let platform = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
            let account = parts.next().filter(|a| !a.is_empty()).ok_or_else(bad)?;
            let mut allowed = Allowed {
                platform: platform.to_ascii_lowercase(),
                account: account.to_owned(),
                moderate: false,
                users: None,
            };
            for part in parts {
                match part {
                    "send" => {}
                    "moderate" => allowed.moderate = true,
                    _ => {
                        let users = part.strip_prefix("users=").ok_or_else(bad)?;
                        let users: Vec<String> = users
                            .split('/')
                            .filter(|u| !u.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if users.is_empty() {
                            return Err(bad());
                        }
                        allowed.users = Some(users);
                    }
                }
            }
            out.push(allowed);
        }
        Ok(Self(out))
    }

    /// Whether no account is allowed (commands are then off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The platforms with an allowed account.
    pub fn platforms(&self) -> Vec<&str> {
        let mut p: Vec<&str> = self.0.iter().map(|a| a.platform.as_str()).collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Whether `account` of `platform` may do `action` for RabbitMQ user
    /// `user` (the command's `user_id` property); `Err` says why not.
    ///
    /// # Errors
    /// The reason (`not_allowed: ...`).
    pub fn check(
        &self,
        platform: &str,
        account: &str,
        action: &CommandAction,
        user: Option<&str>,
    ) -> Result<(), String> {
        let Some(entry) = self
            .0
            .iter()
            .find(|a| a.platform == platform && a.account.eq_ignore_ascii_case(account))
        else {
            return Err(format!(
                "not_allowed: {platform} account `{account}` is not in COMMANDS_ALLOW"
            ));
        };
        if action.moderates() && !entry.moderate {
            return Err(format!(
                "not_allowed: {platform} account `{account}` may not moderate ({})",
                action.kind()
            ));
        }
        if let Some(users) = &entry.users
            && !user.is_some_and(|u| users.iter().any(|x| x == u))
        {
            return Err(format!(
                "not_allowed: RabbitMQ user `{}` may not act as {platform} account `{account}`",
                user.unwrap_or("(none: set the user_id property)")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send() -> CommandAction {
        CommandAction::Send {
            text: "hi".into(),
            reply_to: None,
        }
    }

    fn ban() -> CommandAction {
        CommandAction::Ban {
            user_id: "1".into(),
            reason: None,
        }
    }

    #[test]
    fn entries_name_accounts_moderation_and_users() {
        let list = AllowList::parse(&[
            "twitch:chatbot".into(),
            "twitch:modbot:moderate:users=dash/bots".into(),
            "youtube:UCabc:send".into(),
        ])
        .unwrap();
        assert_eq!(list.platforms(), ["twitch", "youtube"]);
        assert!(list.check("twitch", "chatbot", &send(), None).is_ok());
        assert!(list.check("twitch", "ChatBot", &send(), None).is_ok());
        let e = list.check("twitch", "chatbot", &ban(), None).unwrap_err();
        assert!(
            e.starts_with("not_allowed:") && e.contains("moderate"),
            "{e}"
        );
        assert!(list.check("twitch", "modbot", &ban(), Some("dash")).is_ok());
        let e = list
            .check("twitch", "modbot", &ban(), Some("other"))
            .unwrap_err();
        assert!(e.contains("`other`"), "{e}");
        assert!(list.check("twitch", "modbot", &send(), None).is_err());
        assert!(list.check("twitch", "stranger", &send(), None).is_err());
        assert!(list.check("youtube", "UCabc", &send(), None).is_ok());
        for bad in [
            "twitch",
            "twitch:",
            ":x",
            "twitch:a:admin",
            "twitch:a:users=",
        ] {
            assert!(AllowList::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
