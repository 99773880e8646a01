//! Connection caps and new-connection rates, checked before a byte is read (so before
//! the TLS handshake is paid for): at most `max_connections` open on the proxy
//! listeners, `max_connections_per_source` from one source, and a governor token
//! bucket of `new_connections_per_source` per second (burst `new_connections_burst`).
//! An IPv6 source counts by its /64: one host usually has the whole prefix.
//! Over a limit: a deny record with reason `rate-limited`, and the connection closed.

use crate::config::LimitSettings;
use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Limits {
    settings: ArcSwap<LimitSettings>,
    rate: ArcSwap<DefaultKeyedRateLimiter<IpAddr>>,
    /// Open proxy connections.
    total: AtomicUsize,
    /// Open connections by source key (proxy and admin listeners).
    per_source: Mutex<HashMap<IpAddr, usize>>,
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
        })
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
        if proxy && self.total.fetch_add(1, Ordering::Relaxed) >= s.max_connections {
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
