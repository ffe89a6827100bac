//! [`OutgoingMessage`]: a `ChatEvent` ready to publish, with the properties
//! and headers the message contract requires.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use super::{AmqpError, short};
use crate::routing::routing_key;
use crate::schema::{ChatEvent, EventKind, SCHEMA_VERSION};

/// Header names used on the bus.
pub mod headers {
    /// Platform of the event (`twitch`).
    pub const PLATFORM: &str = "platform";
    /// Channel login of the event.
    pub const CHANNEL: &str = "channel";
    /// Kind of the event (`message`, `ban` ...), same as the `type` property.
    pub const KIND: &str = "kind";
    /// Schema version of the payload.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Why a message was dead-lettered.
    pub const DEAD_LETTER_REASON: &str = "x-chatbus-reason";
    /// Which queue dead-lettered it.
    pub const DEAD_LETTER_QUEUE: &str = "x-chatbus-queue";
    /// The exchange it was originally published to.
    pub const DEAD_LETTER_EXCHANGE: &str = "x-chatbus-original-exchange";
    /// When it was dead-lettered (Unix seconds).
    pub const DEAD_LETTERED_AT: &str = "x-chatbus-dead-lettered-at";
}

/// The JSON content type of every event.
pub const CONTENT_TYPE: &str = "application/json";

/// An encoded event plus what is needed to publish it. Encoding once means a
/// retry after a reconnect sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingMessage {
    /// `chat.<platform>.<channel>`.
    pub routing_key: String,
    /// The event id; the AMQP `message_id`.
    pub message_id: String,
    /// The event kind; the AMQP `type` and the `kind` header.
    pub kind: EventKind,
    /// The event's platform (header).
    pub platform: String,
    /// The event's channel (header).
    pub channel: String,
    /// Seconds since the epoch of the event's `sent_at` (AMQP `timestamp`).
    pub timestamp: u64,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl OutgoingMessage {
    /// Encodes `event`.
    ///
    /// # Errors
    /// [`AmqpError::Encode`] if serialisation fails; [`AmqpError::TooLong`]
    /// if the id does not fit an AMQP `message_id`.
    pub fn from_event(event: &ChatEvent) -> Result<Self, AmqpError> {
        if event.id.len() > 255 {
            return Err(AmqpError::TooLong { what: "event id" });
        }
        Ok(Self {
            routing_key: routing_key(&event.platform, &event.channel),
            message_id: event.id.clone(),
            kind: event.kind(),
            platform: event.platform.clone(),
            channel: event.channel.clone(),
            timestamp: u64::try_from(event.sent_at.timestamp()).unwrap_or(0),
            body: event.to_json()?,
        })
    }

    /// The AMQP properties: JSON content type, persistent, message id, type,
    /// timestamp, app id and the `platform`/`channel`/`kind` headers.
    ///
    /// # Errors
    /// [`AmqpError::TooLong`] if a value does not fit a short string.
    pub fn properties(&self, app_id: &str) -> Result<BasicProperties, AmqpError> {
        let mut table = FieldTable::default();
        table.insert(headers::PLATFORM.into(), long(&self.platform));
        table.insert(headers::CHANNEL.into(), long(&self.channel));
        table.insert(headers::KIND.into(), long(self.kind.as_str()));
        table.insert(
            headers::SCHEMA_VERSION.into(),
            AMQPValue::LongUInt(SCHEMA_VERSION),
        );
        Ok(BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(short("message_id", self.message_id.clone())?)
            .with_type(self.kind.as_str().into())
            .with_timestamp(self.timestamp)
            .with_app_id(short("app_id", app_id)?)
            .with_headers(table))
    }
}

pub(crate) fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// Reads a string header (long or short string) from AMQP headers.
pub fn header_str<'a>(
    table: Option<&'a FieldTable>,
    name: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    match table?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{EventBody, MessageDetails};
    use chrono::Utc;

    #[test]
    fn properties_follow_the_contract() {
        let event = ChatEvent::new(
            "id-1",
            "twitch",
            "Some.Chan",
            Utc::now(),
            Utc::now(),
            EventBody::Message(MessageDetails::default()),
        );
        let msg = OutgoingMessage::from_event(&event).unwrap();
        assert_eq!(msg.routing_key, "chat.twitch.Some-2eChan");
        let props = msg.properties("chatbus-test").unwrap();
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            CONTENT_TYPE
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "id-1");
        assert_eq!(props.kind().as_ref().unwrap().as_str(), "message");
        let h = props.headers().as_ref();
        assert_eq!(header_str(h, headers::CHANNEL).unwrap(), "Some.Chan");
        assert_eq!(header_str(h, headers::KIND).unwrap(), "message");
        assert_eq!(header_str(h, headers::PLATFORM).unwrap(), "twitch");
    }

    #[test]
    fn over_long_ids_are_refused() {
        let event = ChatEvent::new(
            "x".repeat(256),
            "twitch",
            "c",
            Utc::now(),
            Utc::now(),
            EventBody::Message(MessageDetails::default()),
        );
        assert!(matches!(
            OutgoingMessage::from_event(&event),
            Err(AmqpError::TooLong { .. })
        ));
    }
}
