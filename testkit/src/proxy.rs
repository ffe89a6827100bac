//! A TCP proxy on 127.0.0.1 that a test can cut, freeze and restore: a
//! broker (or any server) "going away", or going silent, for one client
//! without disturbing anything else on the machine.

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
    /// New connections are accepted and held silent (a black hole).
    holding: AtomicBool,
    cuts: watch::Sender<u64>,
    freezes: watch::Sender<u64>,
    accepted: AtomicUsize,
}

impl TcpProxy {
    /// Starts a proxy on an ephemeral port of 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cuts, _) = watch::channel(0);
        let (freezes, _) = watch::channel(0);
        let state = Arc::new(State {
            enabled: AtomicBool::new(true),
            holding: AtomicBool::new(false),
            cuts,
            freezes,
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

    /// Stops forwarding on every open connection but keeps both of its
    /// sockets open: to each side the other has gone silent, with no close
    /// and no reset (a hung broker, a black-holed route). Connections made
    /// afterwards are forwarded normally. Frozen ones stay open until
    /// [`TcpProxy::cut`], [`TcpProxy::reset_connections`] or the drop.
    pub fn freeze_connections(&self) {
        self.state.freezes.send_modify(|g| *g += 1);
    }

    /// A black-holed route: every open connection freezes as with
    /// [`TcpProxy::freeze_connections`], and new ones are accepted but held
    /// silent too (a reconnect hangs rather than fails), until
    /// [`TcpProxy::heal`].
    pub fn black_hole(&self) {
        self.state.holding.store(true, Ordering::SeqCst);
        self.state.freezes.send_modify(|g| *g += 1);
    }

    /// Ends [`TcpProxy::black_hole`] as a route that comes back does: the
    /// held connections are closed (the server gave up on them long ago)
    /// and new ones are forwarded.
    pub fn heal(&self) {
        self.state.holding.store(false, Ordering::SeqCst);
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
        let mut cuts = state.cuts.subscribe();
        if state.holding.load(Ordering::SeqCst) {
            tokio::spawn(async move {
                let _ = cuts.changed().await;
                drop(client);
            });
            continue;
        }
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let mut freezes = state.freezes.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cuts.changed() => {}
                _ = freezes.changed() => {
                    // Silent: hold both sockets, read and write nothing.
                    let _ = cuts.changed().await;
                }
            }
            drop((client, server));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
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
        echo_addr
    }

    #[tokio::test]
    async fn a_frozen_connection_stays_open_and_silent_while_new_ones_work() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut frozen = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 2];
        frozen.write_all(b"hi").await.unwrap();
        frozen.read_exact(&mut buf).await.unwrap();

        proxy.freeze_connections();
        tokio::time::sleep(Duration::from_millis(50)).await;
        frozen.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), frozen.read(&mut b))
                .await
                .is_err(),
            "no echo and no close while frozen"
        );

        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh.write_all(b"ok").await.unwrap();
        fresh.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok", "new connections are forwarded");

        proxy.reset_connections();
        let n = tokio::time::timeout(Duration::from_secs(2), frozen.read(&mut b))
            .await
            .expect("a reset closes the frozen connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_black_hole_holds_old_and_new_connections_silent_until_healed() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 2];
        old.write_all(b"hi").await.unwrap();
        old.read_exact(&mut buf).await.unwrap();

        proxy.black_hole();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        for c in [&mut old, &mut new] {
            c.write_all(b"hi").await.unwrap();
            let mut b = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(300), c.read(&mut b))
                    .await
                    .is_err(),
                "silent, not closed"
            );
        }

        proxy.heal();
        for c in [&mut old, &mut new] {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
                .await
                .expect("healing closes the held connections")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh.write_all(b"ok").await.unwrap();
        fresh.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok", "then forwarded again");
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_restores() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        proxy.cut();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut rest))
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
