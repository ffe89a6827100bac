//! Where and how the Twitch source connects: the IRC server's host and
//! port, TLS, the longest line accepted and the socket's receive buffer.

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Wrap the connection in TLS (server name = `host`).
    pub tls: bool,
    /// Longest accepted line in bytes.
    pub max_line_bytes: usize,
    /// The socket's receive buffer (`SO_RCVBUF`), if set: what the kernel
    /// may hold read from the server and not yet taken by the ingestor,
    /// i.e. (with one read) what a `kill -9` can lose.
    pub receive_buffer: Option<usize>,
}

impl Endpoint {
    /// Parses `host:port`.
    ///
    /// # Errors
    /// When there is no `:port`.
    pub fn parse(addr: &str, tls: bool, max_line_bytes: usize) -> anyhow::Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("IRC address `{addr}` is not host:port"))?;
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse()?,
            tls,
            max_line_bytes,
            receive_buffer: None,
        })
    }

    /// With a receive buffer of `bytes` (see [`Endpoint::receive_buffer`]).
    pub fn with_receive_buffer(mut self, bytes: usize) -> Self {
        self.receive_buffer = Some(bytes);
        self
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
