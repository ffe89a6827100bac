//! A minimal WebSocket client (RFC 6455) for the fan-out benchmark.
//!
//! With 10,000 tungstenite clients on the same two cores as the consumer,
//! the clients took more CPU than the server they measured: per frame a
//! buffer split, a UTF-8 check and a waker registration, and a zeroed
//! buffer per read. This client does only what a receiver must: the
//! opening handshake, parsing the server's (unmasked) frames straight out
//! of one reused buffer read up to [`READ`] bytes at a time, answering
//! pings with masked pongs, and reading the close code. It does not check
//! UTF-8 or reassemble fragments (the consumer never fragments: a
//! fragment is an error here); the consumer's tests read its frames with
//! tungstenite.

use std::pin::Pin;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Bytes asked of the socket per read.
const READ: usize = 16 * 1024;
/// The handshake key of RFC 6455's example, and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// One connection.
pub(crate) struct RawClient {
    stream: TcpStream,
    /// Bytes read and not yet parsed start at `start`.
    buf: Vec<u8>,
    start: usize,
}

/// How [`RawClient::read_texts`] ended.
pub(crate) enum Ended {
    /// The callback asked to stop.
    Done,
    /// The server sent a close frame with this code (1005: none).
    Closed(u16),
    /// The connection ended without a close frame, or the deadline passed.
    Gone,
}

impl RawClient {
    /// Connects to `addr` and upgrades `GET path`.
    pub(crate) async fn connect(addr: &str, path: &str) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(READ);
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("the server closed during the handshake");
            }
            if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).context("response head")?;
                ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
                ensure!(head.contains(ACCEPT), "wrong Sec-WebSocket-Accept: {head}");
                // Frames may have come with the response.
                buf.drain(..end + 4);
                return Ok(Self {
                    stream,
                    buf,
                    start: 0,
                });
            }
        }
    }

    /// Hands each text frame's payload to `on_text` until it returns false,
    /// the server closes, the connection ends or `deadline` passes.
    /// Answers pings.
    ///
    /// # Errors
    /// A frame this client does not expect from the consumer (masked,
    /// fragmented, binary or of an unknown opcode), or a socket error.
    pub(crate) async fn read_texts(
        &mut self,
        deadline: &mut Pin<&mut Sleep>,
        mut on_text: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<Ended> {
        loop {
            let mut pongs = Vec::new();
            while let Some((opcode, header, len)) = parse_header(&self.buf[self.start..])? {
                let begin = self.start + header;
                let Some(end) = begin.checked_add(len).filter(|end| *end <= self.buf.len()) else {
                    break;
                };
                let payload = &self.buf[begin..end];
                self.start = end;
                let ended = match opcode {
                    0x1 => (!on_text(payload)).then_some(Ended::Done),
                    0x8 => Some(Ended::Closed(
                        payload
                            .get(..2)
                            .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
                    )),
                    0x9 => {
                        ensure!(payload.len() <= 125, "a ping of {} bytes", payload.len());
                        // FIN + pong, masked with the all-zero key (a
                        // valid mask that leaves the payload as it is).
                        pongs.extend_from_slice(&[0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
                        pongs.extend_from_slice(payload);
                        None
                    }
                    0xA => None,
                    other => bail!("unexpected frame opcode {other:#x}"),
                };
                if let Some(ended) = ended {
                    // Pings read before the end still get their pongs.
                    if !pongs.is_empty() {
                        self.stream.write_all(&pongs).await?;
                    }
                    return Ok(ended);
                }
            }
            if !pongs.is_empty() {
                self.stream.write_all(&pongs).await?;
            }
            // Keep the unparsed tail at the front, then read more after it.
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.reserve(READ);
            let read = tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => read?,
                () = deadline.as_mut() => return Ok(Ended::Gone),
            };
            if read == 0 {
                return Ok(Ended::Gone);
            }
        }
    }
}

/// `(opcode, header length, payload length)` of the frame at the start of
/// `bytes`, or `None` if its header is not complete yet.
fn parse_header(bytes: &[u8]) -> anyhow::Result<Option<(u8, usize, usize)>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    ensure!(first & 0x80 != 0, "a fragmented message");
    ensure!(second & 0x80 == 0, "a masked frame from the server");
    let opcode = first & 0x0F;
    let (header, len) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (4, usize::from(u16::from_be_bytes([*a, *b]))),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(len) => (
                10,
                usize::try_from(u64::from_be_bytes(len.try_into()?)).context("frame length")?,
            ),
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    Ok(Some((opcode, header, len)))
}
