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

/// Source, reason and listener (its index in the policy; the admin listener is
/// [`ADMIN`]).
type Key = (IpAddr, Reason, usize);

/// The admin listener's place in a [`Key`].
pub const ADMIN: usize = usize::MAX;

#[derive(Default)]
pub struct Refusals {
    sources: Mutex<HashMap<Key, Counted>>,
}

/// Refusals of one source since its last full record or summary.
struct Counted {
    listener: Arc<str>,
    count: u64,
    first: Timestamp,
    last: Timestamp,
}

/// One `conn.refused` record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub listener: Arc<str>,
    pub src: IpAddr,
    pub reason: Reason,
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl Refusals {
    /// A refusal of `src` on `listener` now: true when it must be written in full,
    /// false when it was counted into the source's next summary.
    pub fn full_record(&self, src: IpAddr, reason: Reason, lid: usize, listener: &str, now: Timestamp) -> bool {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&(src, reason, lid)) {
            Some(c) => {
                if c.count == 0 {
                    c.first = now;
                }
                c.count += 1;
                c.last = now;
                false
            }
            None => {
                if map.len() < MAX_SOURCES {
                    let listener = Arc::from(listener);
                    map.insert((src, reason, lid), Counted { listener, count: 0, first: now, last: now });
                }
                true
            }
        }
    }

    /// Once a second: the summaries of sources that were refused again, and forget the
    /// sources that were quiet.
    pub fn drain(&self) -> Vec<Summary> {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        map.retain(|(src, reason, _), c| {
            if c.count == 0 {
                return false;
            }
            out.push(Summary {
                listener: c.listener.clone(),
                src: *src,
                reason: *reason,
                count: c.count,
                first: c.first,
                last: c.last,
            });
            c.count = 0;
            true
        });
        out
    }
}

/// Write the summaries due: one `conn.refused` record per source refused again since
/// the last call. Called every second, and once more at stop.
pub async fn flush(shared: &super::Shared) {
    for s in shared.refusals.drain() {
        let event = crate::audit::ConnRefused {
            listener: s.listener.to_string(),
            src_ip: s.src,
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
        let l: Arc<str> = "https".into();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t = |ms: i64| t0.checked_add(jiff::SignedDuration::from_millis(ms)).unwrap();
        assert!(r.full_record(a, Reason::RateLimited, 0, &l, t(0)));
        assert!(!r.full_record(a, Reason::RateLimited, 0, &l, t(10)));
        assert!(!r.full_record(a, Reason::RateLimited, 0, &l, t(20)));
        assert!(r.full_record(a, Reason::Blocked, 0, &l, t(30)), "another reason is another key");
        assert!(r.full_record(b, Reason::RateLimited, 0, &l, t(40)));
        let got = r.drain();
        assert_eq!(
            got,
            [Summary { listener: l.clone(), src: a, reason: Reason::RateLimited, count: 2, first: t(10), last: t(20) }]
        );
        // Still flooding: counted from the first refusal on.
        assert!(!r.full_record(a, Reason::RateLimited, 0, &l, t(1_100)));
        assert_eq!(r.drain()[0].count, 1);
        // A quiet second: forgotten, so the next refusal is written in full again.
        assert!(r.drain().is_empty());
        assert!(r.full_record(a, Reason::RateLimited, 0, &l, t(3_000)));
    }
}
