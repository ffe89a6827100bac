//! Moderation, the same for every backend: which event moderates what,
//! and the stored form of a mark.

use common::ChatEvent;
use common::schema::EventBody;

use super::{Cursor, Moderation, ModerationAction, StoreError};

/// A moderation action an event carries.
pub(crate) struct ModerationSpec {
    pub(crate) action: ModerationAction,
    pub(crate) target_event_id: Option<String>,
    pub(crate) target_login: Option<String>,
}

pub(crate) fn moderation_of(event: &ChatEvent) -> Option<ModerationSpec> {
    let (action, target_event_id, target_login) = match &event.body {
        EventBody::MessageDelete(d) => (
            ModerationAction::Deleted,
            Some(d.target_message_id.clone()),
            None,
        ),
        EventBody::Ban(d) => (
            ModerationAction::Banned,
            None,
            Some(d.user.login.to_lowercase()),
        ),
        EventBody::Timeout(d) => (
            ModerationAction::TimedOut,
            None,
            Some(d.user.login.to_lowercase()),
        ),
        EventBody::ChatClear(_) => (ModerationAction::Cleared, None, None),
        _ => return None,
    };
    Some(ModerationSpec {
        action,
        target_event_id,
        target_login,
    })
}

pub(crate) fn decode_moderation(
    seq: i64,
    action: Option<String>,
    by: Option<i64>,
) -> Result<Option<Moderation>, StoreError> {
    let (Some(action), Some(by)) = (action, by) else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        cursor: seq,
        reason,
    };
    let action = ModerationAction::parse(&action)
        .ok_or_else(|| corrupt(format!("unknown moderation `{action}`")))?;
    let by = Cursor::new(by).ok_or_else(|| corrupt(format!("bad moderated_by {by}")))?;
    Ok(Some(Moderation { action, by }))
}
