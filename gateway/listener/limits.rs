//! Connection caps and new-connection rates, checked before a byte is read (so before
//! the TLS handshake is paid for): at most `max_connections` open on the proxy
//! listeners, `max_connections_per_source` from one source, and a governor token
//! bucket of `new_connections_per_source` per second (burst `new_connections_burst`).
//! An IPv6 source counts by its /64: one host usually has the whole prefix.
//! Over a limit: a deny record with reason `rate-limited`, and the connection closed.
//!
//! File descriptors bound `max_connections` too: at start the soft `RLIMIT_NOFILE` is
//! raised to the hard one, and if that still leaves too few for `max_connections`, the
//! proxy listeners admit fewer ([`Limits::cap_by_descriptors`]). Sockets towards
//! upstreams get the same number ([`upstream_socket`]): an HTTP/2 client's streams
//! can each want an upstream connection, so clients alone do not bound them. A flood then meets a
//! `rate-limited` refusal instead of `EMFILE`, and the admin listener, the log and the
//! window store keep the descriptors they need.

use crate::config::LimitSettings;
use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limits {
    settings: ArcSwap<LimitSettings>,
    rate: ArcSwap<DefaultKeyedRateLimiter<IpAddr>>,
    /// Open proxy connections.
    total: AtomicUsize,
    /// Open connections by source key (proxy and admin listeners).
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// How many proxy connections the process's file descriptors allow (`usize::MAX`:
    /// unknown or plenty); `max_connections` above it is clamped to it.
    fd_cap: AtomicUsize,
}

/// Descriptors kept back from the proxy listeners: listening sockets, the log files, the
/// window store, syslog and webhook connections, and the admin listener's sessions.
const FD_RESERVE: u64 = 64;

/// Descriptors one proxy connection needs: the client's socket and its upstream
/// connection. (Idle upstream connections are few: the pool keeps them for reuse by
/// the next client, and the reserve covers the rest.)
const FDS_PER_CONNECTION: u64 = 2;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (systemd's default soft limit is
/// 1024, its hard limit far higher) and return the soft limit in force afterwards
/// (`None`: unlimited or unknown).
pub fn raise_nofile() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (now.current, now.maximum) {
        if current < maximum {
            let raised = Rlimit { current: Some(maximum), maximum: Some(maximum) };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "cannot raise the open-files limit from {current} to {maximum}");
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Permits for sockets towards upstreams, all services together. Process-wide, set
/// once at start, because what it shares out is process-wide: the open-files limit.
/// (Upstream clients are built by config validation, which knows nothing of it.)
/// With it, how many permits it was set with (for the error message).
static UPSTREAM_SOCKETS: OnceLock<(Arc<Semaphore>, usize)> = OnceLock::new();

/// Allow at most `n` upstream sockets open at once (called once, at start).
pub fn budget_upstream_sockets(n: usize) {
    let n = n.min(Semaphore::MAX_PERMITS);
    let _ = UPSTREAM_SOCKETS.set((Arc::new(Semaphore::new(n)), n));
}

/// All upstream sockets the descriptors allow are open.
#[derive(Debug, thiserror::Error)]
#[error("no file descriptors left for another upstream connection ({0} open): raise LimitNOFILE")]
pub struct NoUpstreamSocket(pub usize);

/// A permit for one more upstream socket, held while it is open (`None`: no budget,
/// e.g. in `menshen check`). Never waits: without a descriptor, fail now (502).
pub fn upstream_socket() -> Result<Option<OwnedSemaphorePermit>, NoUpstreamSocket> {
    match UPSTREAM_SOCKETS.get() {
        None => Ok(None),
        Some((s, n)) => s.clone().try_acquire_owned().map(Some).map_err(|_| NoUpstreamSocket(*n)),
    }
}

/// How many proxy connections `nofile` descriptors carry, after the reserve.
pub fn connections_for(nofile: u64) -> usize {
    let n = nofile.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

/// Why a connection was not admitted (both are logged as `rate-limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Rate,
    Connections,
}

/// A counted open connection; dropping it gives the slot back.
pub struct Slot {
    limits: Arc<Limits>,
    key: IpAddr,
    counts_total: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.counts_total {
            self.limits.total.fetch_sub(1, Ordering::Relaxed);
        }
        let mut map = self.limits.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The key a source is counted under: the address, or an IPv6 address's /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
    }
}

fn limiter(s: &LimitSettings) -> DefaultKeyedRateLimiter<IpAddr> {
    let rate = NonZeroU32::new(s.new_connections_per_source).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(s.new_connections_burst).unwrap_or(rate);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

impl Limits {
    pub fn new(s: LimitSettings) -> Arc<Self> {
        Arc::new(Limits {
            rate: ArcSwap::from_pointee(limiter(&s)),
            settings: ArcSwap::from_pointee(s),
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
            fd_cap: AtomicUsize::new(usize::MAX),
        })
    }

    /// Bound the proxy connections by the descriptors there are (`nofile`, from
    /// [`raise_nofile`]). Returns the number now in force when it is below the
    /// configured `max_connections`, for the start-up warning.
    pub fn cap_by_descriptors(&self, nofile: Option<u64>) -> Option<usize> {
        let cap = nofile.map_or(usize::MAX, connections_for);
        self.fd_cap.store(cap, Ordering::Relaxed);
        let configured = self.settings.load().max_connections;
        (cap < configured).then_some(cap)
    }

    /// The limits as configured.
    pub fn settings(&self) -> Arc<LimitSettings> {
        self.settings.load_full()
    }

    /// The cap on open proxy connections in force: `max_connections`, or less when the
    /// file descriptors allow fewer.
    pub fn max_connections(&self) -> usize {
        self.settings.load().max_connections.min(self.fd_cap.load(Ordering::Relaxed))
    }

    /// New numbers from a reload (a changed rate starts with fresh buckets).
    pub fn apply(&self, s: LimitSettings) {
        let old = self.settings.load();
        if (old.new_connections_per_source, old.new_connections_burst)
            != (s.new_connections_per_source, s.new_connections_burst)
        {
            self.rate.store(Arc::new(limiter(&s)));
        }
        self.settings.store(Arc::new(s));
    }

    /// Admit a new connection from `src` on a proxy listener (`proxy`) or the admin
    /// listener (not counted in `max_connections`, so a flood of proxy connections
    /// never locks the admins out).
    pub fn admit(self: &Arc<Self>, src: IpAddr, proxy: bool) -> Result<Slot, Over> {
        let key = source_key(src);
        if self.rate.load().check_key(&key).is_err() {
            return Err(Over::Rate);
        }
        let s = self.settings.load();
        let max = s.max_connections.min(self.fd_cap.load(Ordering::Relaxed));
        if proxy && self.total.fetch_add(1, Ordering::Relaxed) >= max {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Over::Connections);
        }
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= s.max_connections_per_source {
            drop(map);
            if proxy {
                self.total.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(Over::Connections);
        }
        *n += 1;
        Ok(Slot { limits: self.clone(), key, counts_total: proxy })
    }

    /// Forget rate state of sources not seen lately (keeps memory bounded).
    pub fn sweep(&self) {
        let rate = self.rate.load();
        rate.retain_recent();
        rate.shrink_to_fit();
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(total: usize, per: usize, rate: u32) -> LimitSettings {
        LimitSettings {
            max_connections: total,
            max_connections_per_source: per,
            new_connections_per_source: rate,
            new_connections_burst: rate,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn caps_count_open_connections_and_give_slots_back() {
        let l = Limits::new(settings(3, 2, 1000));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.admit(a, true).unwrap();
        let _s2 = l.admit(a, true).unwrap();
        assert_eq!(l.admit(a, true).err(), Some(Over::Connections), "per source");
        let _s3 = l.admit(b, true).unwrap();
        assert_eq!(l.admit(b, true).err(), Some(Over::Connections), "total");
        // The admin listener is outside the total, inside the per-source cap.
        let admin = l.admit("192.0.2.9".parse().unwrap(), false).unwrap();
        assert_eq!(l.open(), 3);
        drop(s1);
        assert_eq!(l.open(), 2);
        let _s4 = l.admit(b, true).unwrap();
        drop(admin);
        assert!(l.per_source.lock().unwrap().get(&"192.0.2.9".parse::<IpAddr>().unwrap()).is_none());
    }

    #[test]
    fn too_few_descriptors_lower_the_cap() {
        let l = Limits::new(settings(4096, 4096, 1000));
        assert_eq!(l.cap_by_descriptors(None), None, "unknown: the configured cap");
        assert_eq!(l.cap_by_descriptors(Some(1 << 20)), None, "plenty: the configured cap");
        assert_eq!(l.max_connections(), 4096);
        assert_eq!(l.cap_by_descriptors(Some(1024)), Some(480), "(1024 - 64) / 2");
        assert_eq!(l.max_connections(), 480);
        assert_eq!(connections_for(10), 1, "never zero");
        let held: Vec<Slot> =
            (0..480u32).map(|i| l.admit(IpAddr::from((0xc000_0200 + i).to_be_bytes()), true).unwrap()).collect();
        assert_eq!(l.admit("198.51.100.1".parse().unwrap(), true).err(), Some(Over::Connections));
        assert!(l.admit("198.51.100.1".parse().unwrap(), false).is_ok(), "the admin listener is outside the cap");
        drop(held);
    }

    #[test]
    fn rate_is_per_source_and_ipv6_counts_by_64() {
        let l = Limits::new(settings(1000, 1000, 3));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut kept = Vec::new();
        for i in 0..3 {
            kept.push(l.admit(v6(&format!("2001:db8:1:2::{i}")), true).unwrap());
        }
        assert_eq!(l.admit(v6("2001:db8:1:2:ffff::1"), true).err(), Some(Over::Rate), "same /64");
        assert!(l.admit(v6("2001:db8:1:3::1"), true).is_ok(), "another /64");
        assert!(l.admit("192.0.2.1".parse().unwrap(), true).is_ok());
    }
}
