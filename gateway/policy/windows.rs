//! The open access windows, indexed for `decide`: per service, which window (if any)
//! covers a source address.
//!
//! Window sources are CIDRs, so any two ranges are disjoint or nested (a laminar
//! family). Sorted by (start asc, end desc), each range keeps a link to the nearest
//! range enclosing it. Every range that contains `x` is then on the parent chain of
//! the last range starting at or before `x`: a binary search plus at most one step per
//! prefix length (33 for IPv4, 129 for IPv6), whatever the number of windows.

use super::ipset::normalize;
use super::ServiceId;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A window that may let connections in, as the policy sees it.
#[derive(Debug, Clone)]
pub struct OpenWindow {
    pub id: Arc<str>,
    /// The person it was granted to: the identity of connections riding it.
    pub requester: Arc<str>,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
    /// Cancelled when the window ends, is revoked or denied: every connection riding
    /// it holds a clone and closes at once.
    pub cut: CancellationToken,
}

/// Index into [`WindowIndex::windows`].
pub type WindowRef = u32;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node<T> {
    lo: T,
    hi: T,
    parent: u32,
    window: WindowRef,
}

#[derive(Debug, Default)]
struct Ranges {
    v4: Vec<Node<u32>>,
    v6: Vec<Node<u128>>,
}

#[derive(Debug, Default)]
pub struct WindowIndex {
    pub windows: Vec<OpenWindow>,
    /// Indexed by service id.
    per_service: Vec<Ranges>,
}

impl WindowIndex {
    /// `entries`: each open window with the services and sources it opens.
    pub fn new(services: usize, entries: Vec<(OpenWindow, Vec<ServiceId>, Vec<IpNet>)>) -> Self {
        let mut v4: Vec<Vec<Node<u32>>> = vec![Vec::new(); services];
        let mut v6: Vec<Vec<Node<u128>>> = vec![Vec::new(); services];
        let mut windows = Vec::with_capacity(entries.len());
        for (i, (w, svcs, sources)) in entries.into_iter().enumerate() {
            let window = WindowRef::try_from(i).unwrap_or(NONE - 1);
            for s in svcs.into_iter().filter(|s| *s < services) {
                for net in &sources {
                    match super::ipset::as_v4_or_v6(net) {
                        Ok(n) => {
                            v4[s].push(Node { lo: n.network().into(), hi: n.broadcast().into(), parent: NONE, window })
                        }
                        Err(n) => {
                            v6[s].push(Node { lo: n.network().into(), hi: n.broadcast().into(), parent: NONE, window })
                        }
                    }
                }
            }
            windows.push(w);
        }
        let per_service = v4.into_iter().zip(v6).map(|(a, b)| Ranges { v4: link(a), v6: link(b) }).collect();
        WindowIndex { windows, per_service }
    }

    /// An open window (at `now`) that covers `src` for `service`, if any.
    pub fn find(&self, service: ServiceId, src: IpAddr, now: jiff::Timestamp) -> Option<WindowRef> {
        let r = self.per_service.get(service)?;
        let open = |w: WindowRef| self.windows.get(w as usize).is_some_and(|w| w.start <= now && now < w.end);
        match normalize(src) {
            IpAddr::V4(a) => walk(&r.v4, u32::from(a), open),
            IpAddr::V6(a) => walk(&r.v6, u128::from(a), open),
        }
    }

    pub fn get(&self, w: WindowRef) -> Option<&OpenWindow> {
        self.windows.get(w as usize)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Sort and set each node's parent (nearest enclosing range).
fn link<T: Copy + Ord>(mut nodes: Vec<Node<T>>) -> Vec<Node<T>> {
    nodes.sort_unstable_by(|a, b| a.lo.cmp(&b.lo).then(b.hi.cmp(&a.hi)));
    let mut stack: Vec<u32> = Vec::new();
    for i in 0..nodes.len() {
        while let Some(&top) = stack.last() {
            if nodes[top as usize].hi < nodes[i].lo {
                stack.pop();
            } else {
                break;
            }
        }
        nodes[i].parent = stack.last().copied().unwrap_or(NONE);
        stack.push(u32::try_from(i).unwrap_or(NONE));
    }
    nodes
}

fn walk<T: Copy + Ord>(nodes: &[Node<T>], x: T, open: impl Fn(WindowRef) -> bool) -> Option<WindowRef> {
    let i = nodes.partition_point(|n| n.lo <= x);
    let mut j = if i == 0 { NONE } else { u32::try_from(i - 1).unwrap_or(NONE) };
    while let Some(n) = nodes.get(j as usize) {
        if n.hi >= x && open(n.window) {
            return Some(n.window);
        }
        j = n.parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn open(id: &str, start: &str, end: &str) -> OpenWindow {
        OpenWindow {
            id: id.into(),
            requester: "li".into(),
            start: ts(start),
            end: ts(end),
            cut: CancellationToken::new(),
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn finds_covering_open_windows_only() {
        let idx = WindowIndex::new(
            3,
            vec![
                (open("a", "2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z"), vec![0], nets(&["10.0.0.0/24"])),
                (
                    open("b", "2026-01-01T01:00:00Z", "2026-01-01T03:00:00Z"),
                    vec![0, 2],
                    nets(&["10.0.0.128/25", "2001:db8::/56"]),
                ),
                (open("c", "2026-01-01T00:00:00Z", "2026-01-01T09:00:00Z"), vec![1], nets(&["10.0.0.7/32"])),
            ],
        );
        let t = |s| ts(s);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(idx.find(0, ip("10.0.0.200"), t("2026-01-01T00:30:00Z")), Some(0));
        // Both cover it; at 02:30 only b is open: the walk goes past a to b (or b to a).
        assert_eq!(idx.find(0, ip("10.0.0.200"), t("2026-01-01T02:30:00Z")), Some(1));
        assert_eq!(idx.find(0, ip("10.0.0.5"), t("2026-01-01T02:30:00Z")), None);
        assert_eq!(idx.find(0, ip("10.0.1.5"), t("2026-01-01T00:30:00Z")), None);
        assert_eq!(idx.find(1, ip("10.0.0.7"), t("2026-01-01T05:00:00Z")), Some(2));
        assert_eq!(idx.find(1, ip("::ffff:10.0.0.7"), t("2026-01-01T05:00:00Z")), Some(2));
        assert_eq!(idx.find(2, ip("2001:db8:0:ff::1"), t("2026-01-01T01:30:00Z")), Some(1));
        assert_eq!(idx.find(2, ip("2001:db8:1::1"), t("2026-01-01T01:30:00Z")), None);
        assert_eq!(idx.find(9, ip("10.0.0.7"), t("2026-01-01T01:30:00Z")), None);
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        // Nested and disjoint ranges from a fixed PRNG, probed at their edges.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut entries = Vec::new();
        for i in 0..400 {
            let prefix = 8 + (next() % 25) as u8;
            let addr = std::net::Ipv4Addr::from((next() as u32) & 0x0aff_ffff);
            let net = IpNet::V4(ipnet::Ipv4Net::new(addr, prefix).unwrap().trunc());
            let start = t0 + jiff::SignedDuration::from_mins((next() % 100) as i64);
            let end = start + jiff::SignedDuration::from_mins(1 + (next() % 100) as i64);
            let w = OpenWindow {
                id: format!("w{i}").into(),
                requester: "r".into(),
                start,
                end,
                cut: CancellationToken::new(),
            };
            entries.push((w, vec![(next() % 3) as usize], vec![net]));
        }
        let naive = entries.clone();
        let idx = WindowIndex::new(3, entries);
        for (_, _, nets) in &naive {
            let n = match nets[0] {
                IpNet::V4(n) => n,
                IpNet::V6(_) => unreachable!(),
            };
            for probe in [
                u32::from(n.network()).wrapping_sub(1),
                n.network().into(),
                n.broadcast().into(),
                u32::from(n.broadcast()).wrapping_add(1),
            ] {
                let src = IpAddr::V4(probe.into());
                for m in (0..200).step_by(7) {
                    let now = t0 + jiff::SignedDuration::from_mins(m);
                    for svc in 0..3 {
                        let expect = naive
                            .iter()
                            .any(|(w, s, ns)| s[0] == svc && ns[0].contains(&src) && w.start <= now && now < w.end);
                        let got = idx.find(svc, src, now);
                        assert_eq!(got.is_some(), expect, "{src} svc {svc} at +{m}m");
                        if let Some(g) = got {
                            let (w, s, ns) = &naive[g as usize];
                            assert!(s[0] == svc && ns[0].contains(&src) && w.start <= now && now < w.end);
                        }
                    }
                }
            }
        }
    }
}
