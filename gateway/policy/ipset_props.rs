//! Property tests of [`IpSet`]: for random sets of IPv4 and IPv6 CIDRs (overlapping,
//! nested, adjacent, with host bits, IPv4-mapped), `contains` answers exactly like a
//! naive scan with `ipnet::IpNet::contains`, at random addresses and at every range's
//! edges (network, broadcast and one beyond each).
//!
//! The oracle models the documented rule "IPv4-mapped addresses count as IPv4": an
//! address `::ffff:a.b.c.d` is the IPv4 address `a.b.c.d`, and a network
//! `::ffff:a.b.c.d/96+n` is the IPv4 network `a.b.c.d/n`. An IPv6 network shorter
//! than /96 that happens to span part of `::ffff:0:0/96` (`::/0`, `::/80`) is an IPv6
//! network: it does not match IPv4 clients, mapped or not.
//!
//! Failing seeds land in `proptest-regressions/policy/ipset_props.txt` (proptest's
//! default place for a source under `gateway/`, the folder with `lib.rs`).

use super::{normalize, IpSet};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `::ffff:a.b.c.d` -> `a.b.c.d`, from the RFC 4291 layout, not from std's helper.
fn oracle_normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => {
            let s = a.segments();
            if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
                let v = u128::from(a) as u32;
                IpAddr::V4(Ipv4Addr::from(v))
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// A network as the documented rule reads it (see the module doc).
fn oracle_net(n: &IpNet) -> IpNet {
    match n.trunc() {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => {
            let bits = u128::from(v6.network());
            if bits >> 32 == 0xffff {
                let v4 = Ipv4Net::new(Ipv4Addr::from(bits as u32), v6.prefix_len() - 96).expect("prefix");
                IpNet::V4(v4)
            } else {
                IpNet::V6(v6)
            }
        }
        other => other,
    }
}

fn oracle_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = oracle_normalize(ip);
    nets.iter().any(|n| oracle_net(n).contains(&ip))
}

// === strategies ===

/// A few hot spots so that random networks overlap, nest and touch.
const V4_SPOTS: [u32; 4] = [0x0a00_0000, 0xc0a8_0a00, 0x7f00_0000, 0xffff_ff00];
const V6_SPOTS: [u128; 3] = [0x2001_0db8_0010_0000_0000_0000_0000_0000, 0, u128::MAX << 16];

fn v4_addr() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (prop::sample::select(V4_SPOTS.to_vec()), 0u32..0x1_0000).prop_map(|(s, o)| s ^ o),]
}

fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        any::<u128>(),
        (prop::sample::select(V6_SPOTS.to_vec()), any::<u64>(), 0u32..128)
            .prop_map(|(s, o, sh)| s ^ (u128::from(o) >> (sh % 64))),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        // IPv4, short and long prefixes; host bits may be set (IpSet truncates).
        3 => (v4_addr(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(a.into(), p).expect("prefix"))),
        1 => (v4_addr(), 20u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(a.into(), p).expect("prefix"))),
        // IPv6 anywhere, and near the hot spots.
        2 => (v6_addr(), 0u8..=128).prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(a.into(), p).expect("prefix"))),
        // IPv4-mapped IPv6 networks.
        2 => (v4_addr(), 96u8..=128).prop_map(|(a, p)| {
            IpNet::V6(Ipv6Net::new(Ipv4Addr::from(a).to_ipv6_mapped(), p).expect("prefix"))
        }),
        // IPv6 networks shorter than /96 around the mapped range (::/0, ::/80, ::ffff:0:0/95…).
        1 => (0u8..96, prop_oneof![Just(0xffff_0000_0000u128), Just(0), Just(0x1_0000_0000_0000)])
            .prop_map(|(p, a)| IpNet::V6(Ipv6Net::new(a.into(), p).expect("prefix"))),
    ]
}

/// Addresses at and around every network's edges, in both notations where one exists.
fn edges(nets: &[IpNet]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for n in nets {
        match n.trunc() {
            IpNet::V4(v4) => {
                let (lo, hi) = (u32::from(v4.network()), u32::from(v4.broadcast()));
                for a in [Some(lo), Some(hi), lo.checked_sub(1), hi.checked_add(1)].into_iter().flatten() {
                    out.push(IpAddr::V4(a.into()));
                    out.push(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
                }
            }
            IpNet::V6(v6) => {
                let (lo, hi) = (u128::from(v6.network()), u128::from(v6.broadcast()));
                for a in [Some(lo), Some(hi), lo.checked_sub(1), hi.checked_add(1)].into_iter().flatten() {
                    let a = Ipv6Addr::from(a);
                    out.push(IpAddr::V6(a));
                    if let Some(v4) = a.to_ipv4_mapped() {
                        out.push(IpAddr::V4(v4));
                    }
                }
            }
        }
    }
    out
}

fn probe() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4_addr().prop_map(|a| IpAddr::V4(a.into())),
        v4_addr().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d): not mapped.
        v4_addr().prop_map(|a| IpAddr::V6(Ipv6Addr::from(u128::from(a)))),
        v4_addr().prop_map(|a| IpAddr::V6(Ipv6Addr::from((0x64_ff9bu128 << 96) | u128::from(a)))),
        v6_addr().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

proptest! {
    /// The heart of it: the compiled set and the naive scan agree everywhere tried.
    #[test]
    fn contains_matches_the_naive_oracle(
        nets in prop::collection::vec(net(), 0..12),
        probes in prop::collection::vec(probe(), 0..32),
    ) {
        let set = IpSet::new(&nets);
        for ip in edges(&nets).into_iter().chain(probes) {
            prop_assert_eq!(set.contains(ip), oracle_contains(&nets, ip), "{} in {:?}", ip, nets);
        }
        prop_assert_eq!(set.is_empty(), nets.is_empty());
    }

    /// Order and repetition do not matter; union is the set of both lists.
    #[test]
    fn order_duplicates_and_union(
        a in prop::collection::vec(net(), 0..8),
        b in prop::collection::vec(net(), 0..8),
        seed in any::<u64>(),
        probes in prop::collection::vec(probe(), 0..16),
    ) {
        let both: Vec<IpNet> = a.iter().chain(&b).copied().collect();
        let whole = IpSet::new(&both);
        // A shuffled copy with every network twice.
        let mut shuffled: Vec<IpNet> = both.iter().chain(&both).copied().collect();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&IpSet::new(&shuffled), &whole);
        let union = IpSet::new(&a).union(&IpSet::new(&b));
        prop_assert_eq!(&union, &whole);
        for ip in edges(&both).into_iter().chain(probes) {
            prop_assert_eq!(union.contains(ip), oracle_contains(&both, ip), "{}", ip);
        }
    }

    /// `normalize` maps exactly the IPv4-mapped addresses, and nothing else.
    #[test]
    fn normalize_maps_only_mapped_addresses(ip in probe()) {
        prop_assert_eq!(normalize(ip), oracle_normalize(ip));
        prop_assert_eq!(normalize(normalize(ip)), normalize(ip));
    }
}
