//! Server-to-client WebSocket frames, encoded here rather than by
//! tungstenite (RFC 6455 section 5.2).
//!
//! A server's frames are not masked, so an event's frame is the same bytes
//! for every client that receives it: the hub encodes it once and each
//! session copies it into its write buffer. Going through tungstenite would
//! cost, per frame and per client, a reference-count round trip on the
//! shared buffer (a cache line that every core fights over when 10,000
//! clients take the same event) plus tungstenite's own framing. Reading,
//! pongs and the closing handshake stay with tungstenite; the session hands
//! it the socket only after its own bytes are all written, and drains
//! tungstenite's buffer before writing its own (see `session::send_out`).

/// Opcode of a text frame.
const TEXT: u8 = 0x1;
/// Opcode of a ping.
const PING: u8 = 0x9;
/// The FIN bit: every frame here is a whole message.
const FIN: u8 = 0x80;

/// Appends the header of an unmasked, final frame carrying `len` bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(FIN | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends a text frame whose payload is the concatenation of `parts`.
pub(crate) fn push_text(out: &mut Vec<u8>, parts: &[&str]) {
    let len = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + 10);
    push_header(out, TEXT, len);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

/// Appends a ping with an empty payload.
pub(crate) fn push_ping(out: &mut Vec<u8>) {
    push_header(out, PING, 0);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// The text payloads of the frames in `bytes`, parsed the way the
    /// session's frames are meant to be: whole, unmasked frames.
    pub(crate) fn texts(mut bytes: &[u8]) -> Vec<String> {
        let mut texts = Vec::new();
        while let [first, second, rest @ ..] = bytes {
            assert_eq!(*first, FIN | TEXT, "a final text frame");
            let (len, rest) = match second {
                126 => (
                    usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                    &rest[2..],
                ),
                127 => (
                    usize::try_from(u64::from_be_bytes(rest[..8].try_into().unwrap())).unwrap(),
                    &rest[8..],
                ),
                n => (usize::from(*n), rest),
            };
            texts.push(String::from_utf8(rest[..len].to_vec()).unwrap());
            bytes = &rest[len..];
        }
        assert!(bytes.is_empty(), "no partial frame");
        texts
    }

    #[tokio::test]
    async fn tungstenite_reads_every_length_class() {
        // 0, the largest one-byte length, both ends of the two-byte
        // lengths, and an eight-byte one.
        let lengths = [0, 125, 126, 0xFFFF, 0x10000, 200_000];
        let payloads: Vec<String> = lengths
            .iter()
            .map(|&n| "é".repeat(n / 2) + &"x".repeat(n % 2))
            .collect();
        let mut bytes = Vec::new();
        for payload in &payloads {
            let middle = payload
                .char_indices()
                .nth(payload.chars().count() / 2)
                .map_or(payload.len(), |(i, _)| i);
            let (head, tail) = payload.split_at(middle);
            push_text(&mut bytes, &[head, tail]);
        }
        push_ping(&mut bytes);
        assert_eq!(texts(&bytes[..bytes.len() - 2]), payloads);

        let (mut server, client) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move { server.write_all(&bytes).await });
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await;
        for payload in &payloads {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => assert_eq!(text.as_str(), payload),
                other => panic!("expected text, got {other:?}"),
            }
        }
        assert!(matches!(ws.next().await.unwrap().unwrap(), Message::Ping(p) if p.is_empty()));
        writer.await.unwrap().unwrap();
    }
}
