//! A TCP proxy on 127.0.0.1 that a test can cut and restore: a broker (or
//! any server) "going away" for one client without disturbing anything else
//! on the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    enabled: AtomicBool,
    cuts: watch::Sender<u64>,
    accepted: AtomicUsize,
}

impl TcpProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cuts, _) = watch::channel(0);
        let state = Arc::new(State {
            enabled: AtomicBool::new(true),
            cuts,
            accepted: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Self {
            addr,
            upstream,
            state,
            accept,
        }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the proxy's address, e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f` -> `...@127.0.0.1:<proxy>/%2f`.
    pub fn url(&self, url: &str) -> String {
        url.replace(&self.upstream.to_string(), &self.addr.to_string())
    }

    /// Closes every proxied connection and refuses new ones until
    /// [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.state.enabled.store(false, Ordering::SeqCst);
        self.state.cuts.send_modify(|g| *g += 1);
    }

    /// Closes every proxied connection but keeps accepting new ones (a
    /// connection reset, as when the server restarts quickly).
    pub fn reset_connections(&self) {
        self.state.cuts.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.state.enabled.store(true, Ordering::SeqCst);
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cuts.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        if !state.enabled.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let mut cuts = state.cuts.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_then_cuts_then_restores() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(echo_addr).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        proxy.cut();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "cut closes the connection");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(
            refused.read(&mut b).await.unwrap_or(0),
            0,
            "new connections are dropped"
        );

        proxy.restore();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ok").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}
