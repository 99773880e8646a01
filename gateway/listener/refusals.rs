//! Refusals made before a byte is read (`blocked`, `rate-limited`, and on the admin
//! listener sources outside `[admin].allow`) while a source floods: the first from a source is written in full (`conn.open`, action `deny`);
//! the rest are counted, and once a second each flooding source gets one
//! `conn.refused` record (listener, source, reason, count, first and last time). A
//! source quiet for a whole second starts over with a full record. Metrics count every
//! refusal.
//!
//! Why: a record per refused connection lets one address write tens of thousands of
//! records a second; the log fills, and with `on_full = "refuse"` the gateway then
//! shuts everyone out, admins included. Every refusal is still in the log, as a record
//! of its own or in its source's count; only the source ports of the counted ones are
//! not kept.
//!
//! ```text
//! refusal ─▶ source seen this second? ── no ──▶ full conn.open record
//!                       │ yes
//!                       ▼
//!                 count += 1 ─▶ (every second) conn.refused {count, first, last}
//! ```

use crate::policy::Reason;
use jiff::Timestamp;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Sources tracked at once. Past it, refusals of new sources are written in full: the
/// log is never short of a refusal, only less terse under a flood from very many
/// addresses (which the per-source rate does not cover anyway).
const MAX_SOURCES: usize = 65_536;

#[derive(Default)]
pub struct Refusals {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By listener name (so a reload that renames or reorders listeners cannot mix them
    /// up), then by source key (an IPv6 source counts by its /64, as the rate limit
    /// does: a host has the whole prefix) and reason.
    by_listener: HashMap<Arc<str>, HashMap<(IpAddr, Reason), Counted>>,
    sources: usize,
    /// Set by the last flush at stop: from then on every refusal is written in full.
    closed: bool,
}

/// Refusals of one source since its last full record or summary.
struct Counted {
    /// The address of the first refusal (for IPv6, one address of the /64).
    src: IpAddr,
    count: u64,
    first: Timestamp,
    last: Timestamp,
}

/// One `conn.refused` record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub listener: Arc<str>,
    pub src: IpAddr,
    /// `src`'s network the count covers: /32 (IPv4) or /64 (IPv6).
    pub net: ipnet::IpNet,
    pub reason: Reason,
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl Refusals {
    /// A refusal of `src` on `listener` now: true when it must be written in full,
    /// false when it was counted into the source's next summary.
    pub fn full_record(&self, src: IpAddr, reason: Reason, listener: &str, now: Timestamp) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.closed {
            return true;
        }
        let key = (super::limits::source_key(src), reason);
        if let Some(c) = inner.by_listener.get_mut(listener).and_then(|m| m.get_mut(&key)) {
            if c.count == 0 {
                c.first = now;
            }
            c.count += 1;
            c.last = now;
            return false;
        }
        if inner.sources < MAX_SOURCES {
            inner.sources += 1;
            let counted = Counted { src, count: 0, first: now, last: now };
            inner.by_listener.entry(Arc::from(listener)).or_default().insert(key, counted);
        }
        true
    }

    /// Once a second: the summaries of sources that were refused again, and forget the
    /// sources that were quiet. `last` (at stop): also close, so that a refusal after
    /// it is written in full rather than counted into a summary never written.
    pub fn drain(&self, last: bool) -> Vec<Summary> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.closed |= last;
        let mut out = Vec::new();
        for (listener, sources) in inner.by_listener.iter_mut() {
            sources.retain(|(key, reason), c| {
                if c.count == 0 {
                    return false;
                }
                let len = if key.is_ipv4() { 32 } else { 64 };
                out.push(Summary {
                    listener: listener.clone(),
                    src: c.src,
                    net: ipnet::IpNet::new(*key, len).unwrap_or_else(|_| ipnet::IpNet::from(*key)),
                    reason: *reason,
                    count: c.count,
                    first: c.first,
                    last: c.last,
                });
                c.count = 0;
                true
            });
        }
        inner.by_listener.retain(|_, sources| !sources.is_empty());
        inner.sources = inner.by_listener.values().map(HashMap::len).sum();
        out
    }
}

/// Write the summaries due: one `conn.refused` record per source refused again since
/// the last call. Called every second, and once more at stop.
pub async fn flush(shared: &super::Shared, last: bool) {
    for s in shared.refusals.drain(last) {
        let event = crate::audit::ConnRefused {
            listener: s.listener.to_string(),
            src_ip: s.src,
            src_net: s.net.to_string(),
            action: crate::policy::Action::Deny.as_str(),
            reason: s.reason.as_str(),
            count: s.count,
            first: shared.log.format_ts(s.first),
            last: shared.log.format_ts(s.last),
        };
        shared.log.record(crate::audit::Event::ConnRefused(event)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_full_then_counted_then_forgotten_when_quiet() {
        let r = Refusals::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t = |ms: i64| t0.checked_add(jiff::SignedDuration::from_millis(ms)).unwrap();
        assert!(r.full_record(a, Reason::RateLimited, "https", t(0)));
        assert!(!r.full_record(a, Reason::RateLimited, "https", t(10)));
        assert!(!r.full_record(a, Reason::RateLimited, "https", t(20)));
        assert!(r.full_record(a, Reason::Blocked, "https", t(30)), "another reason is another key");
        assert!(r.full_record(a, Reason::RateLimited, "ssh", t(35)), "another listener too");
        assert!(r.full_record(b, Reason::RateLimited, "https", t(40)));
        let got = r.drain(false);
        let net = "192.0.2.1/32".parse().unwrap();
        let want = Summary {
            listener: "https".into(),
            src: a,
            net,
            reason: Reason::RateLimited,
            count: 2,
            first: t(10),
            last: t(20),
        };
        assert_eq!(got, [want]);
        // Still flooding: counted from the first refusal on.
        assert!(!r.full_record(a, Reason::RateLimited, "https", t(1_100)));
        assert_eq!(r.drain(false)[0].count, 1);
        // A quiet second: forgotten, so the next refusal is written in full again.
        assert!(r.drain(false).is_empty());
        assert!(r.full_record(a, Reason::RateLimited, "https", t(3_000)));
        // After the last flush at stop, everything is written in full.
        assert!(r.drain(true).is_empty());
        assert!(r.full_record(a, Reason::RateLimited, "https", t(3_100)));
        assert!(r.full_record(a, Reason::RateLimited, "https", t(3_200)));
    }

    #[test]
    fn an_ipv6_source_counts_by_its_64() {
        let r = Refusals::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert!(r.full_record("2001:db8:1:2::1".parse().unwrap(), Reason::RateLimited, "https", now));
        for i in 2..50 {
            let src = format!("2001:db8:1:2:{i:x}::{i:x}").parse().unwrap();
            assert!(!r.full_record(src, Reason::RateLimited, "https", now), "{src}");
        }
        assert!(r.full_record("2001:db8:1:3::1".parse().unwrap(), Reason::RateLimited, "https", now));
        let got = r.drain(false);
        assert_eq!((got.len(), got[0].count), (1, 48));
        assert_eq!(got[0].net.to_string(), "2001:db8:1:2::/64");
        assert_eq!(got[0].src.to_string(), "2001:db8:1:2::1");
    }
}
