//! Why this bench exists: `policy::decide` runs for every accepted connection, before
//! anything else happens to it, so the decision must stay under 1 µs even for a large
//! policy: 100,000 CIDRs across ip sets and 1,000 services. This bench builds such a
//! policy (deterministically, from a fixed-seed xorshift PRNG, no extra crates) and
//! measures the decision for each outcome, plus `IpSet::contains` alone on the 100k set.
//!
//! Shape of the policy:
//! - 50 ip sets of 2,000 CIDRs each (100,000 in all; ~90% IPv4 /16../32, ~10% IPv6);
//! - a `blocked` set of 10,000 CIDRs (IPv4 and IPv6);
//! - zones `wan`, `dmz`, `lan`; listeners `public` (from wan) and `inside` (from lan);
//! - rules wan→dmz allow, wan→lan window, lan→dmz allow, lan→lan allow;
//! - 1,000 services `svc-N.school.example`, alternating listeners and dmz/lan, each
//!   allowing 3 of the sets plus 2 literal CIDRs.
//!
//! Run: `cargo bench --bench decide -- --warm-up-time 1 --measurement-time 2`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use menshen::policy::{
    decide, Access, ConnInfo, IpSet, Listener, ListenerKind, OpenWindow, Policy, Reason, Service, WindowIndex, Zone,
};
use menshen::proxy::Upstream;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

const SETS: usize = 50;
const CIDRS_PER_SET: usize = 2_000;
const BLOCKED_CIDRS: usize = 10_000;
const SERVICES: usize = 1_000;
const SETS_PER_SERVICE: usize = 3;

const WAN: usize = 0;
const DMZ: usize = 1;
const LAN: usize = 2;
const PUBLIC: usize = 0;
const INSIDE: usize = 1;

/// xorshift64: deterministic across runs and machines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random CIDR: 9 in 10 IPv4 (/16../32), else IPv6 under 2000::/3 (/32../128).
    fn cidr(&mut self) -> IpNet {
        if self.below(10) != 0 {
            let a = Ipv4Addr::from(self.next() as u32);
            let len = 16 + self.below(17) as u8;
            IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc())
        } else {
            let hi = (0x2000_u128 | (self.next() as u128 & 0x1fff)) << 112;
            let a = Ipv6Addr::from(hi | (self.next() as u128) << 48 | self.next() as u128);
            let len = 32 + self.below(97) as u8;
            IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc())
        }
    }

    /// A random address in a random one of `nets`.
    fn pick(&mut self, nets: &[IpNet]) -> IpAddr {
        let net = nets[self.below(nets.len() as u64) as usize];
        self.addr_in(&net)
    }

    /// A random address somewhere in `net`.
    fn addr_in(&mut self, net: &IpNet) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let host = (self.next() as u32) & !u32::from(n.netmask());
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            IpNet::V6(n) => {
                let r = (self.next() as u128) << 64 | self.next() as u128;
                let host = r & !u128::from(n.netmask());
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }
        }
    }
}

struct Bench {
    policy: Policy,
    /// The CIDRs of each ip set as generated, to pick member addresses from.
    sets: Vec<Vec<IpNet>>,
    /// Which sets each service allows.
    service_sets: Vec<Vec<usize>>,
    blocked: Vec<IpNet>,
    /// All 100,000 set CIDRs in one set.
    all: IpSet,
}

fn build() -> Bench {
    let mut rng = Rng(0x853c_49e6_748f_ea9b);
    let sets: Vec<Vec<IpNet>> = (0..SETS).map(|_| (0..CIDRS_PER_SET).map(|_| rng.cidr()).collect()).collect();
    let compiled: Vec<IpSet> = sets.iter().map(|s| IpSet::new(s)).collect();
    let blocked: Vec<IpNet> = (0..BLOCKED_CIDRS).map(|_| rng.cidr()).collect();
    let all_cidrs: Vec<IpNet> = sets.iter().flatten().copied().collect();
    assert_eq!(all_cidrs.len(), 100_000);
    let all = IpSet::new(&all_cidrs);

    let tls = menshen::tls::upstream_client_config(rustls::RootCertStore::empty()).unwrap();
    let mut service_sets = Vec::with_capacity(SERVICES);
    let services: Vec<Service> = (0..SERVICES)
        .map(|i| {
            let chosen: Vec<usize> = (0..SETS_PER_SERVICE).map(|_| rng.below(SETS as u64) as usize).collect();
            let literals: Vec<IpNet> = (0..2).map(|_| rng.cidr()).collect();
            let mut allow = IpSet::new(&literals);
            for &s in &chosen {
                allow = allow.union(&compiled[s]);
            }
            let mut allow_sources: Vec<String> = chosen.iter().map(|s| format!("set-{s}")).collect();
            allow_sources.extend(literals.iter().map(|n| n.to_string()));
            service_sets.push(chosen);
            let url = format!("http://192.168.{}.{}:8080", 1 + i / 250, 1 + i % 250);
            Service {
                name: format!("svc-{i}"),
                listener: if i % 2 == 0 { PUBLIC } else { INSIDE },
                hosts: vec![format!("svc-{i}.school.example"), format!("alias-{i}.school.example")],
                upstream: Arc::new(Upstream::new(&url, tls.clone(), None).unwrap()),
                zone: if i % 4 < 2 { DMZ } else { LAN },
                allow,
                allow_sources,
                window_max: None,
                idle_timeout: Duration::from_secs(60),
                upstream_timeout: Duration::from_secs(30),
                guard: None,
                send_proxy: false,
            }
        })
        .collect();

    let zone = |name: &str, cidrs: &[&str]| Zone {
        name: name.into(),
        networks: IpSet::new(&cidrs.iter().map(|c| c.parse().unwrap()).collect::<Vec<_>>()),
    };
    let zones = vec![zone("wan", &[]), zone("dmz", &["192.168.0.0/16"]), zone("lan", &["10.0.0.0/8", "fd00::/8"])];
    let listener = |name: &str, bind: &str, zone| Listener {
        name: name.into(),
        bind: bind.parse().unwrap(),
        zone,
        kind: ListenerKind::Https,
        proxy_protocol: None,
    };
    let listeners = vec![listener("public", "0.0.0.0:443", WAN), listener("inside", "10.0.0.1:443", LAN)];
    let rules =
        [(WAN, DMZ, Access::Allow), (WAN, LAN, Access::Window), (LAN, DMZ, Access::Allow), (LAN, LAN, Access::Allow)];
    let policy = Policy::new(zones, listeners, services, IpSet::new(&blocked), &rules);
    Bench { policy, sets, service_sets, blocked, all }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::UNIX_EPOCH
}

fn run(p: &Policy, listener: usize, src: IpAddr, sni: Option<&str>) -> Reason {
    decide(p, &ConnInfo { listener, src, sni }, now()).reason
}

fn benches(c: &mut Criterion) {
    let b = build();
    let p = &b.policy;
    let mut rng = Rng(0xdead_beef_cafe_f00d);

    // svc-0: listener public (wan), zone dmz: wan->dmz allow.
    let svc = 0;
    let sni = "svc-0.school.example";
    assert_eq!(p.services[svc].listener, PUBLIC);
    assert_eq!(p.access(WAN, p.services[svc].zone), Access::Allow);

    // A source found in svc-0's allowlist (through one of its sets), not blocked.
    let allowed_src = loop {
        let set = &b.sets[b.service_sets[svc][rng.below(SETS_PER_SERVICE as u64) as usize]];
        let src = rng.pick(set);
        if !p.blocked.contains(src) {
            break src;
        }
    };
    assert_eq!(run(p, PUBLIC, allowed_src, Some(sni)), Reason::Allowlist);
    assert!(allowed_src.is_ipv4());

    // A source outside the allowlist and outside the blocked set.
    let denied_src = loop {
        let src = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
        if run(p, PUBLIC, src, Some(sni)) == Reason::NotAllowed {
            break src;
        }
    };

    // A source in the blocked set (an IPv4 one, like the others).
    let blocked_src = loop {
        let net = b.blocked[rng.below(b.blocked.len() as u64) as usize];
        if net.addr().is_ipv4() {
            break rng.addr_in(&net);
        }
    };
    assert_eq!(run(p, PUBLIC, blocked_src, Some(sni)), Reason::Blocked);
    assert_eq!(run(p, PUBLIC, denied_src, Some("nope.school.example")), Reason::NoRoute);

    let mut g = c.benchmark_group("decide");
    let case = |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, src, sni: Option<&str>| {
        let conn = ConnInfo { listener: PUBLIC, src, sni };
        g.bench_function(name, |bch| bch.iter(|| decide(black_box(p), black_box(&conn), black_box(now()))));
    };
    case(&mut g, "allowed", allowed_src, Some(sni));
    case(&mut g, "not-allowed", denied_src, Some(sni));
    case(&mut g, "blocked", blocked_src, Some(sni));
    case(&mut g, "unknown-sni", denied_src, Some("nope.school.example"));
    case(&mut g, "allowed-mixed-case-sni", allowed_src, Some("SVC-0.School.Example"));

    // Many different connections in turn (defeats the branch predictor and caches
    // that a single repeated input enjoys): random services, sources and outcomes.
    let mixed: Vec<(usize, IpAddr, String)> = (0..4096)
        .map(|_| {
            let s = rng.below(SERVICES as u64) as usize;
            let svc = &p.services[s];
            let src = if rng.below(2) == 0 {
                let set = &b.sets[b.service_sets[s][rng.below(SETS_PER_SERVICE as u64) as usize]];
                rng.pick(set)
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
            };
            (svc.listener, src, svc.hosts[0].clone())
        })
        .collect();
    let mut i = 0;
    g.bench_function("mixed-4096", |bch| {
        bch.iter(|| {
            i = (i + 1) & 4095;
            let (listener, src, sni) = &mixed[i];
            let conn = ConnInfo { listener: *listener, src: *src, sni: Some(sni.as_str()) };
            decide(black_box(p), black_box(&conn), black_box(now()))
        })
    });
    g.finish();

    // IpSet::contains alone, on the set of all 100,000 CIDRs.
    let mut g = c.benchmark_group("ipset-100k");
    let hit = loop {
        let set = &b.sets[rng.below(SETS as u64) as usize];
        let src = rng.pick(set);
        if src.is_ipv4() {
            break src;
        }
    };
    assert!(b.all.contains(hit));
    let miss = loop {
        let src = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
        if !b.all.contains(src) {
            break src;
        }
    };
    let hit6 = loop {
        let set = &b.sets[rng.below(SETS as u64) as usize];
        let src = rng.pick(set);
        if src.is_ipv6() {
            break src;
        }
    };
    assert!(b.all.contains(hit6));
    g.bench_function("contains-hit-v4", |bch| bch.iter(|| black_box(&b.all).contains(black_box(hit))));
    g.bench_function("contains-miss-v4", |bch| bch.iter(|| black_box(&b.all).contains(black_box(miss))));
    g.bench_function("contains-hit-v6", |bch| bch.iter(|| black_box(&b.all).contains(black_box(hit6))));
    let random: Vec<IpAddr> = (0..4096).map(|_| IpAddr::V4(Ipv4Addr::from(rng.next() as u32))).collect();
    let mut i = 0;
    g.bench_function("contains-random-4096", |bch| {
        bch.iter(|| {
            i = (i + 1) & 4095;
            black_box(&b.all).contains(black_box(random[i]))
        })
    });
    g.finish();
}

/// 10,000 open access windows over the window-only (wan -> lan) services of the public
/// listener: each window opens 1-3 services to 1-4 IPv4 sources (/24../32).
fn window_benches(c: &mut Criterion) {
    const WINDOWS: usize = 10_000;
    let b = build();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // Public-listener services in zone lan: wan -> lan is window-only.
    let window_only: Vec<usize> = (0..SERVICES).filter(|i| i % 2 == 0 && i % 4 >= 2).collect();
    let start = now() - jiff::SignedDuration::from_hours(1);
    let end = now() + jiff::SignedDuration::from_hours(1);
    let mut entries = Vec::with_capacity(WINDOWS);
    let mut probes = Vec::new();
    for i in 0..WINDOWS {
        let svcs: Vec<usize> =
            (0..1 + rng.below(3)).map(|_| window_only[rng.below(window_only.len() as u64) as usize]).collect();
        let sources: Vec<IpNet> = (0..1 + rng.below(4))
            .map(|_| {
                let a = Ipv4Addr::from(rng.next() as u32);
                IpNet::V4(Ipv4Net::new(a, 24 + rng.below(9) as u8).unwrap().trunc())
            })
            .collect();
        if i % 10 == 0 {
            probes.push((svcs[0], sources[0].network()));
        }
        let w =
            OpenWindow { id: format!("w-{i}").into(), requester: "vendor".into(), start, end, cut: Default::default() };
        entries.push((w, svcs, sources));
    }
    let policy = b.policy.with_windows(WindowIndex::new(SERVICES, entries));
    assert_eq!(policy.windows.len(), WINDOWS);
    let (svc, src) = probes[0];
    let sni = format!("svc-{svc}.school.example");
    let conn = ConnInfo { listener: PUBLIC, src, sni: Some(&sni) };
    assert_eq!(decide(&policy, &conn, now()).reason, Reason::Window);
    let outside = ConnInfo { listener: PUBLIC, src: IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)), sni: Some(&sni) };
    assert_eq!(decide(&policy, &outside, now()).reason, Reason::NotAllowed);

    let mut g = c.benchmark_group("decide-10k-windows");
    g.bench_function("window", |bch| bch.iter(|| decide(black_box(&policy), black_box(&conn), black_box(now()))));
    g.bench_function("no-window", |bch| bch.iter(|| decide(black_box(&policy), black_box(&outside), black_box(now()))));
    let snis: Vec<String> = probes.iter().map(|(s, _)| format!("svc-{s}.school.example")).collect();
    let mut i = 0;
    g.bench_function("mixed-1000", |bch| {
        bch.iter(|| {
            i = (i + 1) % probes.len();
            let c = ConnInfo { listener: PUBLIC, src: probes[i].1, sni: Some(&snis[i]) };
            decide(black_box(&policy), black_box(&c), black_box(now()))
        })
    });
    g.finish();
}

criterion_group! {
    name = decide_benches;
    config = Criterion::default();
    targets = benches, window_benches
}
criterion_main!(decide_benches);
