//! Who may open a WebSocket: a cap on the connections in total and per
//! client address (an IPv4 address, or an IPv6 /64: see [`client_key`]),
//! checked before the upgrade (a refusal is an HTTP 503), and the
//! process's open-file limit they all count against.
//!
//! A connection is counted by an [`Admitted`] guard from the moment it is
//! admitted until its session ends (or its upgrade fails): dropping the
//! guard gives the place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use common::http::ApiError;
use warp::http::StatusCode;

/// The caps and the connections counted against them. Cheap to share
/// (`Arc`).
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// What the per-address cap counts a client address as: an IPv4 address
/// as it is (also when it arrives IPv4-mapped, `::ffff:a.b.c.d`), an IPv6
/// address as its /64 prefix. One IPv6 host usually holds a whole /64, so
/// counting single IPv6 addresses would give it 2^64 times the cap.
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Admission {
    /// At most `max_total` connections, `max_per_address` of them from one
    /// IPv4 address or IPv6 /64 ([`client_key`]).
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Counts a connection from `address` (`None`: unknown, counted in the
    /// total only) if both caps allow it.
    ///
    /// # Errors
    /// A 503 [`ApiError`]: `too_many_connections` when the server is full,
    /// `too_many_connections_from_address` when this address is.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Admitted, ApiError> {
        let address = address.map(client_key);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            drop(counts);
            metrics::counter!("chatbus_consumer_ws_refused_total", "reason" => "total")
                .increment(1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!(
                    "the server holds its maximum of {} WebSocket connections; try again later",
                    self.max_total
                ),
            ));
        }
        if let Some(address) = address {
            let from_address = counts.per_address.entry(address).or_default();
            if *from_address >= self.max_per_address {
                drop(counts);
                metrics::counter!("chatbus_consumer_ws_refused_total", "reason" => "address")
                    .increment(1);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_connections_from_address",
                    format!(
                        "at most {} WebSocket connections per address (per /64 for IPv6); close one first",
                        self.max_per_address
                    ),
                ));
            }
            *from_address += 1;
        }
        counts.total += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            address,
        })
    }

    /// Connections counted now.
    pub fn connections(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total -= 1;
        if let Some(address) = self.address
            && let Some(n) = counts.per_address.get_mut(&address)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&address);
            }
        }
    }
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard
/// limit, where the system allows it: every WebSocket connection is a file
/// descriptor. Returns the soft limit in force afterwards, or `None` if it
/// cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return None;
        }
    };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            Some(soft)
        }
    }
}

/// Raises the open-file limit ([`raise_open_file_limit`]) and logs it,
/// with a warning when `max_connections` (plus room for the store, the
/// broker and other files) does not fit under it.
pub fn prepare_open_file_limit(max_connections: usize) {
    /// Descriptors the process needs besides WebSocket connections: the
    /// store's files and pool, the broker, REST requests.
    const OTHER_FILES: u64 = 256;
    let Some(limit) = raise_open_file_limit() else {
        return;
    };
    let wanted = max_connections as u64 + OTHER_FILES;
    if limit < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections,
            "the open-file limit is below CONSUMER_WS_MAX_CONNECTIONS + {OTHER_FILES}: \
             connections may fail with `too many open files` before the cap refuses them; \
             raise the hard limit (ulimit -Hn, LimitNOFILE=, docker --ulimit nofile=)"
        );
    } else {
        tracing::info!(open_file_limit = limit, max_connections, "open-file limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn caps_count_per_address_and_in_total_and_free_on_drop() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(ip(1)).unwrap();
        let a2 = admission.admit(ip(1)).unwrap();
        let err = admission.admit(ip(1)).unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code, "too_many_connections_from_address");
        let b1 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.connections(), 3);
        let err = admission.admit(ip(3)).unwrap_err();
        assert_eq!(err.code, "too_many_connections");
        assert_eq!(
            admission.admit(None).unwrap_err().code,
            "too_many_connections"
        );
        drop(a1);
        let a3 = admission.admit(ip(1)).unwrap();
        drop((a2, a3, b1));
        assert_eq!(admission.connections(), 0);
        assert!(admission.lock().per_address.is_empty());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address_and_mapped_ipv4_as_its_ipv4() {
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let admission = Admission::new(10, 2);
        let _a = admission.admit(v6("2001:db8:1:2::1")).unwrap();
        let _b = admission
            .admit(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .unwrap();
        let err = admission.admit(v6("2001:db8:1:2:abcd::9")).unwrap_err();
        assert_eq!(err.code, "too_many_connections_from_address");
        // The next /64 is another address.
        let _c = admission.admit(v6("2001:db8:1:3::1")).unwrap();
        // An IPv4 client seen through a dual-stack socket is its IPv4.
        let _d = admission.admit(v6("::ffff:192.0.2.7")).unwrap();
        let _e = admission.admit(Some(IpAddr::from([192, 0, 2, 7]))).unwrap();
        assert_eq!(
            admission.admit(v6("::ffff:192.0.2.7")).unwrap_err().code,
            "too_many_connections_from_address"
        );
        assert_eq!(
            client_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("::1".parse().unwrap()),
            "::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let limit = raise_open_file_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(limit, soft);
        assert_eq!(soft, hard);
    }
}
