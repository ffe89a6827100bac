//! Splitting what an IRC connection reads into lines, with a length cap,
//! and parsing each line (twitch-irc's parser). A malformed line, invalid
//! UTF-8 (decoded lossily) or an over-long line is logged, counted and
//! skipped; the connection carries on.

use common::log_limit::LogLimit;
use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;
use twitch_irc::message::IRCMessage;

/// One frame from the line decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete line (with its `\n`).
    Line(BytesMut),
    /// A line longer than the limit was discarded; its length in bytes.
    TooLong(usize),
}

/// Splits bytes into lines, never buffering more than `max` bytes of one.
#[derive(Debug)]
pub(crate) struct LineCodec {
    pub(crate) max: usize,
    next_index: usize,
    discarding: Option<usize>,
}

impl LineCodec {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            next_index: 0,
            discarding: None,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let newline = buf[self.next_index..].iter().position(|b| *b == b'\n');
        match (newline, self.discarding) {
            (Some(offset), Some(discarded)) => {
                let end = self.next_index + offset + 1;
                buf.advance(end);
                self.next_index = 0;
                self.discarding = None;
                Ok(Some(Frame::TooLong(discarded + end)))
            }
            (Some(offset), None) => {
                let end = self.next_index + offset + 1;
                self.next_index = 0;
                if end - 1 > self.max {
                    buf.advance(end);
                    return Ok(Some(Frame::TooLong(end)));
                }
                Ok(Some(Frame::Line(buf.split_to(end))))
            }
            (None, Some(discarded)) => {
                self.discarding = Some(discarded + buf.len());
                buf.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, None) if buf.len() > self.max => {
                self.discarding = Some(buf.len());
                buf.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, None) => {
                self.next_index = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if let Some(discarded) = self.discarding.take() {
            return Ok(Some(Frame::TooLong(discarded)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.next_index = 0;
        Ok(Some(Frame::Line(buf.split())))
    }
}

/// What one raw line becomes.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A parsed message and the line as received (lossily decoded if it
    /// was not UTF-8), without its line ending.
    Message(Box<IRCMessage>, Cow<'a, str>),
    /// Empty or malformed (logged and counted).
    Skip,
}

/// The log of bad lines: a few per reason every 10 s, the rest counted
/// (every one is in `chatbus_ingestor_irc_bad_lines_total`).
static BAD_LINE_LOG: LogLimit = LogLimit::per_10s(5);

/// Decodes one line; bad lines are logged (within [`BAD_LINE_LOG`]),
/// counted and skipped.
pub(crate) fn decode_line(bytes: &[u8], conn: u64) -> Decoded<'_> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.is_empty() {
        return Decoded::Skip;
    }
    let line = match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(e) => {
            metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "invalid_utf8")
                .increment(1);
            if let Some(held_back) = BAD_LINE_LOG.allow("invalid_utf8") {
                tracing::warn!(conn, error = %e, line = %preview(&String::from_utf8_lossy(bytes)), held_back, "IRC line is not valid UTF-8; decoded with replacement characters (held_back: more like this since the last such line)");
            }
            String::from_utf8_lossy(bytes)
        }
    };
    match IRCMessage::parse(&line) {
        Ok(msg) => Decoded::Message(Box::new(msg), line),
        Err(e) => {
            metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "malformed")
                .increment(1);
            if let Some(held_back) = BAD_LINE_LOG.allow("malformed") {
                tracing::warn!(conn, error = %e, line = %preview(&line), held_back, "malformed IRC line skipped (held_back: more like this since the last such line)");
            }
            Decoded::Skip
        }
    }
}

pub(crate) fn preview(line: &str) -> String {
    const MAX: usize = 200;
    if line.len() <= MAX {
        return line.to_owned();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, input: &[&[u8]]) -> Vec<Frame> {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let f = frames(100, &[b"PING :a\r\nPRIV", b"MSG #c :hi\r\n", b"tail"]);
        assert_eq!(
            f,
            [
                Frame::Line(BytesMut::from(&b"PING :a\r\n"[..])),
                Frame::Line(BytesMut::from(&b"PRIVMSG #c :hi\r\n"[..])),
                Frame::Line(BytesMut::from(&b"tail"[..])),
            ]
        );
    }

    #[test]
    fn over_long_lines_are_skipped_without_buffering_them() {
        let big = vec![b'x'; 1000];
        let f = frames(100, &[&big[..500], &big[500..], b"\r\nPING :ok\r\n"]);
        assert_eq!(f[0], Frame::TooLong(1002));
        assert_eq!(f[1], Frame::Line(BytesMut::from(&b"PING :ok\r\n"[..])));
        // A long line that arrives in one read, then a good one.
        let mut one = vec![b'y'; 300];
        one.extend_from_slice(b"\nPING :x\n");
        let f = frames(100, &[&one]);
        assert!(matches!(f[0], Frame::TooLong(301)));
        assert_eq!(f[1], Frame::Line(BytesMut::from(&b"PING :x\n"[..])));
    }

    #[test]
    fn bad_lines_are_skipped_and_odd_bytes_decoded() {
        assert!(matches!(
            decode_line(b"@bad-tags-without-command\r\n", 1),
            Decoded::Skip
        ));
        assert!(matches!(decode_line(b"\r\n", 1), Decoded::Skip));
        match decode_line(b":a!a@a PRIVMSG #c :caf\xe9\r\n", 1) {
            Decoded::Message(m, _) => assert_eq!(m.params[1], "caf\u{FFFD}"),
            Decoded::Skip => panic!("lossy decode keeps the line"),
        }
        match decode_line(b"@id=1 :a!a@a PRIVMSG #c :hi\r\n", 1) {
            Decoded::Message(m, raw) => {
                assert_eq!(raw, "@id=1 :a!a@a PRIVMSG #c :hi");
                assert_eq!(m.command, "PRIVMSG");
            }
            Decoded::Skip => panic!(),
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_reader(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..10)) {
            let mut codec = LineCodec::new(64);
            let mut buf = BytesMut::new();
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    if let Frame::Line(l) = f {
                        proptest::prop_assert!(l.len() <= 65);
                        let _ = decode_line(&l, 0);
                    }
                }
            }
        }
    }
}
