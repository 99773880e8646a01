//! Unit tests for [`decide`]: hand-written cases for every branch, then a table-driven
//! comparison against a deliberately naive reference model over many policies, sources
//! and server names.

use super::*;
use crate::proxy::Upstream;
use ipnet::IpNet;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

const DMZ: ZoneId = 1;
const LAN: ZoneId = 2;
const MGMT: ZoneId = 3;

/// Listener 0: clients from `wan`; listener 1: clients from `lan`.
const PUBLIC: ListenerId = 0;
const INSIDE: ListenerId = 1;

const ZONES: &[(&str, &[&str])] = &[
    ("wan", &[]),
    ("dmz", &["192.168.1.0/24"]),
    ("lan", &["10.0.0.0/8", "fd00:10::/32"]),
    ("mgmt", &["172.16.0.0/12"]),
];

const LISTENERS: &[(&str, &str, ZoneId)] = &[("public", "0.0.0.0:443", WAN), ("inside", "10.0.0.1:443", LAN)];

/// A service as the reference model sees it.
struct Svc {
    name: &'static str,
    listener: ListenerId,
    hosts: &'static [&'static str],
    zone: ZoneId,
    allow: &'static [&'static str],
}

const SERVICES: &[Svc] = &[
    // 0: wan -> dmz allow
    Svc {
        name: "router",
        listener: PUBLIC,
        hosts: &["router.school.example", "gw.school.example"],
        zone: DMZ,
        allow: &["203.0.113.0/24", "2001:db8:1::/48", "::ffff:127.0.0.0/104"],
    },
    // 1: wan -> lan explicit deny
    Svc {
        name: "nas",
        listener: PUBLIC,
        hosts: &["nas.school.example"],
        zone: LAN,
        allow: &["203.0.113.0/24", "2001:db8:1::/48"],
    },
    // 2: wan -> mgmt window
    Svc { name: "switch", listener: PUBLIC, hosts: &["switch.school.example"], zone: MGMT, allow: &["203.0.113.0/24"] },
    // 3: same host as 0, other listener: lan -> dmz allow
    Svc {
        name: "router-inside",
        listener: INSIDE,
        hosts: &["router.school.example"],
        zone: DMZ,
        allow: &["10.1.0.0/16", "fd00:10:1::/48"],
    },
    // 4: lan -> lan allow; a host written with capitals in the config
    Svc {
        name: "nas-inside",
        listener: INSIDE,
        hosts: &["nas.school.example", "Files.School.Example"],
        zone: LAN,
        allow: &["10.2.0.0/16"],
    },
    // 5: wan -> wan unlisted
    Svc { name: "cloud", listener: PUBLIC, hosts: &["cloud.school.example"], zone: WAN, allow: &["0.0.0.0/0"] },
    // 6: lan -> mgmt window
    Svc {
        name: "switch-inside",
        listener: INSIDE,
        hosts: &["switch.school.example"],
        zone: MGMT,
        allow: &["10.0.0.0/8"],
    },
    // 7: lan -> wan unlisted
    Svc {
        name: "cloud-inside",
        listener: INSIDE,
        hosts: &["cloud.school.example"],
        zone: WAN,
        allow: &["0.0.0.0/0", "::/0"],
    },
    // 8: lan -> dmz allow, but an empty allowlist
    Svc { name: "open", listener: INSIDE, hosts: &["open.school.example"], zone: DMZ, allow: &[] },
];

const BLOCKED: &[&str] = &["198.51.100.0/24", "203.0.113.66/32", "10.1.9.9/32", "2001:db8:bad::/48"];

/// The default rules; `wan -> wan` and `lan -> wan` are left unlisted.
const RULES: &[(ZoneId, ZoneId, Access)] = &[
    (WAN, DMZ, Access::Allow),
    (WAN, LAN, Access::Deny),
    (WAN, MGMT, Access::Window),
    (LAN, DMZ, Access::Allow),
    (LAN, LAN, Access::Allow),
    (LAN, MGMT, Access::Window),
];

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap_or_else(|e| panic!("{c}: {e}"))).collect()
}

fn set(cidrs: &[&str]) -> IpSet {
    IpSet::new(&nets(cidrs))
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(a.into())
}

fn v6(a: u128) -> IpAddr {
    IpAddr::V6(a.into())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One upstream shared by every service (building a hyper client needs no runtime).
fn upstream() -> Arc<Upstream> {
    static UP: OnceLock<Arc<Upstream>> = OnceLock::new();
    UP.get_or_init(|| {
        let tls = crate::tls::upstream_client_config(rustls::RootCertStore::empty()).unwrap();
        Arc::new(Upstream::new("http://192.168.1.20:80", tls, None).unwrap())
    })
    .clone()
}

fn service(name: &str, listener: ListenerId, hosts: &[&str], zone: ZoneId, allow: &[&str]) -> Service {
    Service {
        name: name.into(),
        listener,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        upstream: upstream(),
        zone,
        allow: set(allow),
        allow_sources: allow.iter().map(|a| a.to_string()).collect(),
        window_max: None,
        idle_timeout: Duration::from_secs(60),
        upstream_timeout: Duration::from_secs(30),
        guard: None,
        send_proxy: false,
    }
}

fn zones() -> Vec<Zone> {
    ZONES.iter().map(|(name, cidrs)| Zone { name: name.to_string(), networks: set(cidrs) }).collect()
}

fn listeners() -> Vec<Listener> {
    LISTENERS
        .iter()
        .map(|(name, bind, zone)| Listener {
            name: name.to_string(),
            bind: bind.parse().unwrap(),
            zone: *zone,
            kind: ListenerKind::Https,
            proxy_protocol: None,
        })
        .collect()
}

fn services(specs: &[Svc]) -> Vec<Service> {
    specs.iter().map(|s| service(s.name, s.listener, s.hosts, s.zone, s.allow)).collect()
}

fn policy_with(specs: &[Svc], blocked: &[&str], rules: &[(ZoneId, ZoneId, Access)]) -> Policy {
    Policy::new(zones(), listeners(), services(specs), set(blocked), rules)
}

fn fixture() -> Policy {
    policy_with(SERVICES, BLOCKED, RULES)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::UNIX_EPOCH
}

fn run(p: &Policy, listener: ListenerId, src: &str, sni: Option<&str>) -> Decision {
    decide(p, &ConnInfo { listener, src: ip(src), sni }, now())
}

fn allow(service: ServiceId, zone_from: ZoneId, zone_to: ZoneId) -> Decision {
    Decision {
        action: Action::Allow,
        reason: Reason::Allowlist,
        service: Some(service),
        zone_from,
        zone_to: Some(zone_to),
        window: None,
    }
}

fn deny_at(reason: Reason, service: ServiceId, zone_from: ZoneId, zone_to: ZoneId) -> Decision {
    Decision { action: Action::Deny, reason, service: Some(service), zone_from, zone_to: Some(zone_to), window: None }
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

#[test]
fn reason_names_are_the_log_names() {
    let all = [
        (Reason::Allowlist, "allowlist"),
        (Reason::Window, "window"),
        (Reason::NotAllowed, "not-allowed"),
        (Reason::ZoneDeny, "zone-deny"),
        (Reason::Blocked, "blocked"),
        (Reason::RateLimited, "rate-limited"),
        (Reason::TlsRequired, "tls-required"),
        (Reason::TlsVersion, "tls-version"),
        (Reason::TlsHandshake, "tls-handshake"),
        (Reason::NoRoute, "no-route"),
        (Reason::Guard, "guard"),
        (Reason::LogFull, "log-full"),
    ];
    for (reason, name) in all {
        assert_eq!(reason.as_str(), name, "{reason:?}");
    }
    // Every variant is listed above (a new one must be added here).
    let check = |r: Reason| match r {
        Reason::Allowlist
        | Reason::Window
        | Reason::NotAllowed
        | Reason::ZoneDeny
        | Reason::Blocked
        | Reason::RateLimited
        | Reason::TlsRequired
        | Reason::TlsVersion
        | Reason::TlsHandshake
        | Reason::NoRoute
        | Reason::Guard
        | Reason::LogFull => (),
    };
    all.iter().for_each(|(r, _)| check(*r));
    let mut names: Vec<&str> = all.iter().map(|(_, n)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "log names must be distinct");
}

#[test]
fn action_access_and_kind_names() {
    assert_eq!(Action::Allow.as_str(), "allow");
    assert_eq!(Action::Deny.as_str(), "deny");
    assert_eq!(Access::Allow.as_str(), "allow");
    assert_eq!(Access::Window.as_str(), "window");
    assert_eq!(Access::Deny.as_str(), "deny");
    assert_eq!(ListenerKind::Https.as_str(), "https");
}

#[test]
fn decision_deny_helper() {
    let d = Decision::deny(LAN, Reason::TlsVersion);
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, Reason::TlsVersion);
    assert_eq!(d.service, None);
    assert_eq!(d.zone_from, LAN);
    assert_eq!(d.zone_to, None);
    assert!(!d.allowed());
    assert!(allow(0, WAN, DMZ).allowed());
}

// ---------------------------------------------------------------------------------------
// Blocked
// ---------------------------------------------------------------------------------------

#[test]
fn blocked_wins_over_everything() {
    let p = fixture();
    // 203.0.113.66 is inside router's allowlist (203.0.113.0/24) but blocked.
    assert!(p.services[0].allow.contains(ip("203.0.113.66")));
    for sni in [
        Some("router.school.example"),
        Some("ROUTER.school.example"),
        Some("nas.school.example"),
        Some("switch.school.example"),
        Some("cloud.school.example"),
        Some("unknown.school.example"),
        Some(""),
        None,
    ] {
        for src in ["203.0.113.66", "198.51.100.0", "198.51.100.255", "2001:db8:bad::1"] {
            assert_eq!(run(&p, PUBLIC, src, sni), Decision::deny(WAN, Reason::Blocked), "{src} {sni:?}");
        }
    }
    // 10.1.9.9 is in router-inside's allowlist (10.1.0.0/16) and in lan's network.
    assert!(p.services[3].allow.contains(ip("10.1.9.9")));
    for sni in [Some("router.school.example"), Some("cloud.school.example"), None] {
        assert_eq!(run(&p, INSIDE, "10.1.9.9", sni), Decision::deny(LAN, Reason::Blocked), "{sni:?}");
    }
    // Neighbours of blocked addresses are not blocked.
    assert_eq!(run(&p, PUBLIC, "203.0.113.65", Some("router.school.example")), allow(0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "203.0.113.67", Some("router.school.example")), allow(0, WAN, DMZ));
    assert_eq!(run(&p, INSIDE, "10.1.9.8", Some("router.school.example")), allow(3, LAN, DMZ));
}

#[test]
fn blocked_wins_even_with_allow_everything() {
    // A service that allows the whole address space, reached by an `allow` pair.
    let specs = [Svc {
        name: "all",
        listener: PUBLIC,
        hosts: &["all.school.example"],
        zone: DMZ,
        allow: &["0.0.0.0/0", "::/0"],
    }];
    let p = policy_with(&specs, &["192.0.2.7/32", "2001:db8::7/128"], RULES);
    let sni = Some("all.school.example");
    assert_eq!(run(&p, PUBLIC, "192.0.2.7", sni).reason, Reason::Blocked);
    assert_eq!(run(&p, PUBLIC, "2001:db8::7", sni).reason, Reason::Blocked);
    assert_eq!(run(&p, PUBLIC, "192.0.2.8", sni), allow(0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "2001:db8::8", sni), allow(0, WAN, DMZ));
}

#[test]
fn blocked_everything_blocks_everything() {
    let p = policy_with(SERVICES, &["0.0.0.0/0", "::/0"], RULES);
    for src in ["203.0.113.1", "10.1.0.1", "2001:db8:1::1", "::1", "0.0.0.0"] {
        for l in [PUBLIC, INSIDE] {
            assert_eq!(run(&p, l, src, Some("router.school.example")).reason, Reason::Blocked);
        }
    }
}

#[test]
fn empty_blocked_set_blocks_nothing() {
    let p = policy_with(SERVICES, &[], RULES);
    assert!(p.blocked.is_empty());
    assert_eq!(run(&p, PUBLIC, "203.0.113.66", Some("router.school.example")), allow(0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "198.51.100.1", Some("router.school.example")).reason, Reason::NotAllowed);
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_or_missing_sni_is_no_route() {
    let p = fixture();
    for src in ["203.0.113.1", "2001:db8:1::1", "8.8.8.8"] {
        for sni in [
            None,
            Some(""),
            Some("unknown.school.example"),
            Some("school.example"),
            Some("*.school.example"),
            Some("router"),
            Some("router.school.example."),
            Some("router.school.example.evil"),
            Some("xrouter.school.example"),
            Some(" router.school.example"),
            // Only on the inside listener.
            Some("open.school.example"),
            Some("files.school.example"),
        ] {
            assert_eq!(run(&p, PUBLIC, src, sni), Decision::deny(WAN, Reason::NoRoute), "{src} {sni:?}");
        }
    }
    // Only on the public listener.
    assert_eq!(run(&p, INSIDE, "10.1.0.1", Some("gw.school.example")), Decision::deny(LAN, Reason::NoRoute));
    assert_eq!(run(&p, INSIDE, "10.1.0.1", None), Decision::deny(LAN, Reason::NoRoute));
}

#[test]
fn sni_matching_is_case_insensitive() {
    let p = fixture();
    for sni in [
        "router.school.example",
        "ROUTER.SCHOOL.EXAMPLE",
        "Router.School.Example",
        "rOuTeR.sChOoL.eXaMpLe",
        "GW.school.example",
    ] {
        assert_eq!(run(&p, PUBLIC, "203.0.113.1", Some(sni)), allow(0, WAN, DMZ), "{sni}");
    }
    // A host written with capitals in the config matches in any case.
    for sni in ["files.school.example", "Files.School.Example", "FILES.SCHOOL.EXAMPLE"] {
        assert_eq!(run(&p, INSIDE, "10.2.0.1", Some(sni)), allow(4, LAN, LAN), "{sni}");
    }
    assert_eq!(p.route(INSIDE, "FiLeS.school.example"), Some(4));
    assert_eq!(p.route(PUBLIC, "FiLeS.school.example"), None);
}

#[test]
fn every_host_of_a_service_routes_to_it() {
    let p = fixture();
    for (id, s) in SERVICES.iter().enumerate() {
        for h in s.hosts {
            assert_eq!(p.route(s.listener, h), Some(id), "{h}");
            assert_eq!(p.route(s.listener, &h.to_ascii_uppercase()), Some(id), "{h}");
            assert_eq!(p.route(s.listener, &h.to_ascii_lowercase()), Some(id), "{h}");
        }
    }
}

#[test]
fn same_host_on_two_listeners_routes_to_different_services() {
    let p = fixture();
    let sni = Some("router.school.example");
    assert_eq!(p.route(PUBLIC, "router.school.example"), Some(0));
    assert_eq!(p.route(INSIDE, "router.school.example"), Some(3));
    assert_eq!(run(&p, PUBLIC, "203.0.113.1", sni), allow(0, WAN, DMZ));
    assert_eq!(run(&p, INSIDE, "10.1.2.3", sni), allow(3, LAN, DMZ));
    // Each listener checks its own service's allowlist.
    assert_eq!(run(&p, PUBLIC, "10.1.2.3", sni), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
    assert_eq!(run(&p, INSIDE, "203.0.113.1", sni), deny_at(Reason::NotAllowed, 3, LAN, DMZ));
    // nas: explicit deny from wan, allowed from lan.
    let sni = Some("nas.school.example");
    assert_eq!(run(&p, PUBLIC, "203.0.113.1", sni), deny_at(Reason::ZoneDeny, 1, WAN, LAN));
    assert_eq!(run(&p, INSIDE, "10.2.200.1", sni), allow(4, LAN, LAN));
}

#[test]
fn listener_zone_not_source_address_gives_zone_from() {
    // A lan address arriving on the public listener is judged as coming from wan.
    let p = fixture();
    assert_eq!(p.zone_of(ip("10.2.0.1")), LAN);
    assert_eq!(run(&p, PUBLIC, "10.2.0.1", Some("nas.school.example")), deny_at(Reason::ZoneDeny, 1, WAN, LAN));
    assert_eq!(run(&p, PUBLIC, "10.2.0.1", Some("unknown.school.example")), Decision::deny(WAN, Reason::NoRoute));
}

// ---------------------------------------------------------------------------------------
// Zone rules
// ---------------------------------------------------------------------------------------

#[test]
fn zone_deny_rule_and_unlisted_pair() {
    let p = fixture();
    // Explicit wan -> lan deny, even for a source in the allowlist.
    assert!(p.services[1].allow.contains(ip("203.0.113.1")));
    assert_eq!(run(&p, PUBLIC, "203.0.113.1", Some("nas.school.example")), deny_at(Reason::ZoneDeny, 1, WAN, LAN));
    assert_eq!(run(&p, PUBLIC, "2001:db8:1::1", Some("nas.school.example")), deny_at(Reason::ZoneDeny, 1, WAN, LAN));
    // Unlisted wan -> wan, with an allow-everything allowlist.
    assert_eq!(p.access(WAN, WAN), Access::Deny);
    assert_eq!(run(&p, PUBLIC, "8.8.8.8", Some("cloud.school.example")), deny_at(Reason::ZoneDeny, 5, WAN, WAN));
    // Unlisted lan -> wan.
    assert_eq!(p.access(LAN, WAN), Access::Deny);
    for src in ["10.1.0.1", "fd00:10:1::1", "8.8.8.8"] {
        assert_eq!(run(&p, INSIDE, src, Some("cloud.school.example")), deny_at(Reason::ZoneDeny, 7, LAN, WAN), "{src}");
    }
}

#[test]
fn rules_are_directional() {
    // Allowing lan -> dmz does not allow dmz -> lan, nor wan -> dmz.
    let rules = [(LAN, DMZ, Access::Allow)];
    let p = policy_with(SERVICES, BLOCKED, &rules);
    assert_eq!(p.access(LAN, DMZ), Access::Allow);
    assert_eq!(p.access(DMZ, LAN), Access::Deny);
    assert_eq!(p.access(WAN, DMZ), Access::Deny);
    assert_eq!(run(&p, INSIDE, "10.1.0.1", Some("router.school.example")), allow(3, LAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "203.0.113.1", Some("router.school.example")), deny_at(Reason::ZoneDeny, 0, WAN, DMZ));
}

#[test]
fn no_rules_at_all_deny_every_routed_connection() {
    let p = policy_with(SERVICES, BLOCKED, &[]);
    for (id, s) in SERVICES.iter().enumerate() {
        let from = LISTENERS[s.listener].2;
        for src in ["203.0.113.1", "10.1.0.1", "10.2.0.1", "2001:db8:1::1"] {
            assert_eq!(
                run(&p, s.listener, src, Some(s.hosts[0])),
                deny_at(Reason::ZoneDeny, id, from, s.zone),
                "{} {src}",
                s.name
            );
        }
    }
}

#[test]
fn window_rule_is_not_allowed_without_a_window() {
    let p = fixture();
    // wan -> mgmt is `window`; the source is in the allowlist, but no window is open.
    assert_eq!(p.access(WAN, MGMT), Access::Window);
    assert!(p.services[2].allow.contains(ip("203.0.113.1")));
    for t in [jiff::Timestamp::MIN, jiff::Timestamp::UNIX_EPOCH, jiff::Timestamp::now(), jiff::Timestamp::MAX] {
        let d =
            decide(&p, &ConnInfo { listener: PUBLIC, src: ip("203.0.113.1"), sni: Some("switch.school.example") }, t);
        assert_eq!(d, deny_at(Reason::NotAllowed, 2, WAN, MGMT), "{t}");
    }
    // lan -> mgmt is `window` too; in and out of the allowlist alike.
    for src in ["10.0.0.5", "10.255.0.1", "192.0.2.1", "fd00:10::1"] {
        assert_eq!(
            run(&p, INSIDE, src, Some("switch.school.example")),
            deny_at(Reason::NotAllowed, 6, LAN, MGMT),
            "{src}"
        );
    }
    // A window service with a `window_max` still needs a window.
    let mut svcs = services(SERVICES);
    svcs[2].window_max = Some(Duration::from_secs(3600));
    let p = Policy::new(zones(), listeners(), svcs, set(BLOCKED), RULES);
    assert_eq!(
        run(&p, PUBLIC, "203.0.113.1", Some("switch.school.example")),
        deny_at(Reason::NotAllowed, 2, WAN, MGMT)
    );
    // Never the `window` reason: that one is for a connection an open window let in.
    assert_ne!(run(&p, PUBLIC, "203.0.113.1", Some("switch.school.example")).reason, Reason::Window);
}

// ---------------------------------------------------------------------------------------
// Allowlist
// ---------------------------------------------------------------------------------------

#[test]
fn allow_rule_and_source_in_allowlist() {
    let p = fixture();
    for src in [
        "203.0.113.0",
        "203.0.113.1",
        "203.0.113.65",
        "203.0.113.67",
        "203.0.113.255",
        "127.0.0.3",
        "127.255.255.255",
        "2001:db8:1::",
        "2001:db8:1::1",
        "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
    ] {
        for sni in ["router.school.example", "gw.school.example"] {
            let d = run(&p, PUBLIC, src, Some(sni));
            assert_eq!(d, allow(0, WAN, DMZ), "{src} {sni}");
            assert!(d.allowed());
            assert_eq!(p.services[d.service.unwrap()].name, "router");
        }
    }
    for src in ["10.1.0.0", "10.1.255.255", "fd00:10:1::5"] {
        let d = run(&p, INSIDE, src, Some("router.school.example"));
        assert_eq!(d, allow(3, LAN, DMZ), "{src}");
        assert_eq!(p.services[d.service.unwrap()].name, "router-inside");
    }
    let d = run(&p, INSIDE, "10.2.3.4", Some("nas.school.example"));
    assert_eq!(d, allow(4, LAN, LAN));
    assert_eq!(p.services[4].name, "nas-inside");
}

#[test]
fn allow_rule_and_source_outside_allowlist() {
    let p = fixture();
    for src in [
        "203.0.112.255",
        "203.0.114.0",
        "128.0.0.0",
        "126.255.255.255",
        "0.0.0.0",
        "255.255.255.255",
        "192.168.1.5",
        "10.1.0.1",
        "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
        "2001:db8:2::",
        "::",
        "::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        // IPv4-compatible (not mapped) form: an IPv6 address, not 127.0.0.3.
        "::127.0.0.3",
    ] {
        assert_eq!(
            run(&p, PUBLIC, src, Some("router.school.example")),
            deny_at(Reason::NotAllowed, 0, WAN, DMZ),
            "{src}"
        );
    }
    for src in ["10.0.255.255", "10.2.0.0", "203.0.113.1", "fd00:10:2::1"] {
        assert_eq!(
            run(&p, INSIDE, src, Some("router.school.example")),
            deny_at(Reason::NotAllowed, 3, LAN, DMZ),
            "{src}"
        );
    }
}

#[test]
fn empty_allowlist_allows_nobody() {
    let p = fixture();
    assert!(p.services[8].allow.is_empty());
    for src in ["10.1.0.1", "0.0.0.0", "255.255.255.255", "::", "fd00:10::1"] {
        assert_eq!(
            run(&p, INSIDE, src, Some("open.school.example")),
            deny_at(Reason::NotAllowed, 8, LAN, DMZ),
            "{src}"
        );
    }
}

#[test]
fn ipv6_sources() {
    let p = fixture();
    let sni = Some("router.school.example");
    assert_eq!(run(&p, PUBLIC, "2001:db8:1:2::3", sni), allow(0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "2001:db8:2:2::3", sni), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "2001:db8:bad:1::1", sni), Decision::deny(WAN, Reason::Blocked));
    assert_eq!(run(&p, PUBLIC, "2001:db8:bae::1", sni), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "2001:db8:bac:ffff:ffff:ffff:ffff:ffff", sni), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
    assert_eq!(run(&p, INSIDE, "fd00:10:1:ffff::1", sni), allow(3, LAN, DMZ));
    assert_eq!(run(&p, PUBLIC, "2001:db8:1::1", Some("nas.school.example")), deny_at(Reason::ZoneDeny, 1, WAN, LAN));
    // A v4 literal does not match any v6 source, nor the reverse.
    assert_eq!(run(&p, INSIDE, "::a01:1", sni), deny_at(Reason::NotAllowed, 3, LAN, DMZ));
    // `::/0` allows every IPv6 source (the pair is unlisted, so it is still zone-deny).
    let rules = [(LAN, WAN, Access::Allow)];
    let p = policy_with(SERVICES, BLOCKED, &rules);
    assert_eq!(run(&p, INSIDE, "2001:db8:ffff::1", Some("cloud.school.example")), allow(7, LAN, WAN));
    assert_eq!(run(&p, INSIDE, "2001:db8:bad::1", Some("cloud.school.example")), Decision::deny(LAN, Reason::Blocked));
}

#[test]
fn ipv4_mapped_source_is_normalized_to_ipv4() {
    let p = fixture();
    let mapped = ip("::ffff:127.0.0.3");
    let plain = ip("127.0.0.3");
    assert_eq!(normalize(mapped), plain);
    assert_eq!(normalize(plain), plain);
    assert_eq!(normalize(ip("::127.0.0.3")), ip("::127.0.0.3"));
    assert_eq!(normalize(ip("2001:db8::1")), ip("2001:db8::1"));
    assert_eq!(normalize(ip("::ffff:0.0.0.0")), ip("0.0.0.0"));
    assert_eq!(normalize(ip("::ffff:255.255.255.255")), ip("255.255.255.255"));

    let conn = |src| ConnInfo { listener: PUBLIC, src, sni: Some("router.school.example") };
    let expected = allow(0, WAN, DMZ);
    assert_eq!(decide(&p, &conn(plain), now()), expected);
    assert_eq!(decide(&p, &conn(normalize(mapped)), now()), expected);
    // Unnormalized, the set lookup still normalizes: same answer.
    assert_eq!(decide(&p, &conn(mapped), now()), expected);

    // Mapped, in the blocked set.
    let m = ip("::ffff:198.51.100.7");
    assert_eq!(decide(&p, &conn(normalize(m)), now()).reason, Reason::Blocked);
    assert_eq!(decide(&p, &conn(m), now()).reason, Reason::Blocked);
    // Mapped, outside the allowlist.
    let m = ip("::ffff:128.0.0.1");
    assert_eq!(decide(&p, &conn(normalize(m)), now()), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
    assert_eq!(decide(&p, &conn(m), now()), deny_at(Reason::NotAllowed, 0, WAN, DMZ));
}

#[test]
fn ipset_matches_the_mapped_form() {
    // A set written with plain IPv4 CIDRs.
    let s = set(&["127.0.0.0/8", "203.0.113.0/24", "2001:db8::/32"]);
    assert!(s.contains(ip("127.0.0.3")));
    assert!(s.contains(ip("::ffff:127.0.0.3")));
    assert!(s.contains(ip("::ffff:203.0.113.255")));
    assert!(!s.contains(ip("::ffff:128.0.0.1")));
    assert!(!s.contains(ip("::127.0.0.3")));
    assert!(s.contains(ip("2001:db8::1")));
    // A set written with mapped CIDRs matches both forms.
    let s = set(&["::ffff:127.0.0.0/104", "::ffff:203.0.113.7/128"]);
    assert!(s.contains(ip("127.0.0.3")));
    assert!(s.contains(ip("::ffff:127.0.0.3")));
    assert!(s.contains(ip("203.0.113.7")));
    assert!(!s.contains(ip("203.0.113.8")));
    assert!(!s.contains(ip("::ffff:203.0.113.8")));
    assert_eq!(s, set(&["127.0.0.0/8", "203.0.113.7/32"]));
    // The whole mapped range is all of IPv4.
    assert_eq!(set(&["::ffff:0.0.0.0/96"]), set(&["0.0.0.0/0"]));
}

#[test]
fn ipv6_catch_all_does_not_cover_ipv4() {
    // `::/0` is "every IPv6 address"; IPv4 and mapped sources match as IPv4.
    let s = set(&["::/0"]);
    assert!(s.contains(ip("2001:db8::1")));
    assert!(s.contains(ip("::")));
    assert!(!s.contains(ip("1.2.3.4")));
    assert!(!s.contains(ip("::ffff:1.2.3.4")));
}

// ---------------------------------------------------------------------------------------
// Helpers on Policy
// ---------------------------------------------------------------------------------------

#[test]
fn zone_of_and_listener_id() {
    let p = fixture();
    assert_eq!(p.zone_of(ip("192.168.1.1")), DMZ);
    assert_eq!(p.zone_of(ip("10.9.9.9")), LAN);
    assert_eq!(p.zone_of(ip("fd00:10::1")), LAN);
    assert_eq!(p.zone_of(ip("::ffff:10.9.9.9")), LAN);
    assert_eq!(p.zone_of(ip("172.20.0.1")), MGMT);
    assert_eq!(p.zone_of(ip("8.8.8.8")), WAN);
    assert_eq!(p.zone_of(ip("2001:db8::1")), WAN);
    assert_eq!(p.listener_id("public"), Some(PUBLIC));
    assert_eq!(p.listener_id("inside"), Some(INSIDE));
    assert_eq!(p.listener_id("Public"), None);
    assert_eq!(p.listener_id("nope"), None);
}

#[test]
fn access_matrix_matches_rules() {
    let p = fixture();
    for from in 0..ZONES.len() {
        for to in 0..ZONES.len() {
            assert_eq!(p.access(from, to), ref_access(RULES, from, to), "{from}->{to}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reference model and table-driven comparison
// ---------------------------------------------------------------------------------------

/// `::ffff:a.b.c.d` -> `a.b.c.d`, written out by hand.
fn ref_normalize(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V6(a) => {
            let s = a.segments();
            if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
                let [.., a, b, c, d] = a.octets();
                IpAddr::from([a, b, c, d])
            } else {
                src
            }
        }
        v4 => v4,
    }
}

/// Linear scan over the CIDRs as written. A v6 CIDR inside `::ffff:0:0/96` is an IPv4
/// network in disguise; any other v6 CIDR only matches v6 addresses.
fn ref_contains(cidrs: &[IpNet], src: IpAddr) -> bool {
    let src = ref_normalize(src);
    cidrs.iter().any(|n| match (n, src) {
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V4(a)) => n.prefix_len() >= 96 && n.contains(&a.to_ipv6_mapped()),
        (IpNet::V4(_), IpAddr::V6(_)) => false,
    })
}

/// The last rule for a pair counts; no rule: deny.
fn ref_access(rules: &[(ZoneId, ZoneId, Access)], from: ZoneId, to: ZoneId) -> Access {
    rules.iter().rev().find(|r| r.0 == from && r.1 == to).map_or(Access::Deny, |r| r.2)
}

struct RefPolicy<'a> {
    services: &'a [Svc],
    allow: Vec<Vec<IpNet>>,
    blocked: Vec<IpNet>,
    rules: &'a [(ZoneId, ZoneId, Access)],
}

impl<'a> RefPolicy<'a> {
    fn new(services: &'a [Svc], blocked: &[&str], rules: &'a [(ZoneId, ZoneId, Access)]) -> Self {
        RefPolicy { services, allow: services.iter().map(|s| nets(s.allow)).collect(), blocked: nets(blocked), rules }
    }

    fn decide(&self, listener: ListenerId, src: IpAddr, sni: Option<&str>) -> Decision {
        let from = LISTENERS[listener].2;
        let deny = |reason| Decision {
            action: Action::Deny,
            reason,
            service: None,
            zone_from: from,
            zone_to: None,
            window: None,
        };
        if ref_contains(&self.blocked, src) {
            return deny(Reason::Blocked);
        }
        let Some(sni) = sni else {
            return deny(Reason::NoRoute);
        };
        let found = self
            .services
            .iter()
            .position(|s| s.listener == listener && s.hosts.iter().any(|h| h.eq_ignore_ascii_case(sni)));
        let Some(id) = found else {
            return deny(Reason::NoRoute);
        };
        let to = self.services[id].zone;
        let (action, reason) = match ref_access(self.rules, from, to) {
            Access::Deny => (Action::Deny, Reason::ZoneDeny),
            Access::Window => (Action::Deny, Reason::NotAllowed),
            Access::Allow if ref_contains(&self.allow[id], src) => (Action::Allow, Reason::Allowlist),
            Access::Allow => (Action::Deny, Reason::NotAllowed),
        };
        Decision { action, reason, service: Some(id), zone_from: from, zone_to: Some(to), window: None }
    }
}

/// xorshift64: deterministic, no crates.
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
}

/// Hand-picked edge addresses: set boundaries, blocked neighbours, extremes, mapped forms.
const EDGE_SOURCES: &[&str] = &[
    "203.0.112.255",
    "203.0.113.0",
    "203.0.113.1",
    "203.0.113.65",
    "203.0.113.66",
    "203.0.113.67",
    "203.0.113.255",
    "203.0.114.0",
    "198.51.99.255",
    "198.51.100.0",
    "198.51.100.255",
    "198.51.101.0",
    "10.0.255.255",
    "10.1.0.0",
    "10.1.9.8",
    "10.1.9.9",
    "10.1.9.10",
    "10.1.255.255",
    "10.2.0.0",
    "10.2.3.4",
    "10.2.255.255",
    "10.3.0.0",
    "10.255.255.255",
    "11.0.0.0",
    "126.255.255.255",
    "127.0.0.0",
    "127.0.0.3",
    "127.255.255.255",
    "128.0.0.0",
    "192.168.1.5",
    "172.16.0.1",
    "8.8.8.8",
    "0.0.0.0",
    "255.255.255.255",
    "2001:db8:1::",
    "2001:db8:1::1",
    "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:0:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:2::",
    "2001:db8:bac:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:bad::",
    "2001:db8:bad::1",
    "2001:db8:bad:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:bae::",
    "fd00:10:1::5",
    "fd00:10:2::5",
    "fd00:10::1",
    "::",
    "::1",
    "::127.0.0.3",
    "::a01:1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "::ffff:127.0.0.3",
    "::ffff:198.51.100.7",
    "::ffff:203.0.113.9",
    "::ffff:203.0.113.66",
    "::ffff:10.1.2.3",
    "::ffff:10.1.9.9",
    "::ffff:128.0.0.1",
    "::fffe:127.0.0.3",
];

const SNIS: &[Option<&str>] = &[
    None,
    Some(""),
    Some("router.school.example"),
    Some("ROUTER.School.Example"),
    Some("gw.school.example"),
    Some("nas.school.example"),
    Some("NAS.SCHOOL.EXAMPLE"),
    Some("files.school.example"),
    Some("Files.School.Example"),
    Some("switch.school.example"),
    Some("cloud.school.example"),
    Some("open.school.example"),
    Some("unknown.school.example"),
    Some("router.school.example."),
    Some("router.school.example.evil"),
    Some("school.example"),
    Some("*.school.example"),
];

/// Random sources that land near the fixture's networks as well as anywhere at all.
fn random_sources(rng: &mut Rng, n: usize) -> Vec<IpAddr> {
    let bases: [IpAddr; 8] = [
        ip("203.0.113.0"),
        ip("198.51.100.0"),
        ip("10.1.0.0"),
        ip("10.2.0.0"),
        ip("127.0.0.0"),
        ip("2001:db8:1::"),
        ip("2001:db8:bad::"),
        ip("fd00:10:1::"),
    ];
    (0..n)
        .map(|_| {
            let r = rng.next();
            match rng.below(4) {
                0 => v4(r as u32),
                1 => v6(u128::from(r) << 64 | u128::from(rng.next())),
                2 => IpAddr::V6(std::net::Ipv4Addr::from(r as u32).to_ipv6_mapped()),
                _ => match bases[rng.below(bases.len() as u64) as usize] {
                    // Within a /15 around the base: inside and just outside the /16s and /24s.
                    IpAddr::V4(b) => v4(u32::from(b).wrapping_add((r as u32) & 0x1_ffff)),
                    // Within a /47 around the base.
                    IpAddr::V6(b) => v6(u128::from(b).wrapping_add(u128::from(r) << 64 >> 47)),
                },
            }
        })
        .collect()
}

fn all_rule_options() -> [Option<Access>; 4] {
    [None, Some(Access::Allow), Some(Access::Window), Some(Access::Deny)]
}

/// Rule sets to try: the fixture's, one pair changed at a time, and random ones.
fn rule_sets(rng: &mut Rng) -> Vec<Vec<(ZoneId, ZoneId, Access)>> {
    let n = ZONES.len();
    let pairs: Vec<(ZoneId, ZoneId)> = (0..n).flat_map(|f| (0..n).map(move |t| (f, t))).collect();
    let mut out = vec![RULES.to_vec(), Vec::new()];
    for a in [Access::Allow, Access::Window, Access::Deny] {
        out.push(pairs.iter().map(|&(f, t)| (f, t, a)).collect());
    }
    for &(f, t) in &pairs {
        for opt in all_rule_options() {
            let mut rules: Vec<_> = RULES.iter().copied().filter(|r| (r.0, r.1) != (f, t)).collect();
            if let Some(a) = opt {
                rules.push((f, t, a));
            }
            out.push(rules);
        }
    }
    for _ in 0..40 {
        let rules =
            pairs.iter().filter_map(|&(f, t)| all_rule_options()[rng.below(4) as usize].map(|a| (f, t, a))).collect();
        out.push(rules);
    }
    out
}

#[test]
fn decide_agrees_with_reference_model() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sources: Vec<IpAddr> = EDGE_SOURCES.iter().map(|s| ip(s)).collect();
    sources.extend(random_sources(&mut rng, 160));
    let mut seen = std::collections::HashSet::new();
    let mut checked = 0usize;
    for rules in rule_sets(&mut rng) {
        let p = policy_with(SERVICES, BLOCKED, &rules);
        let r = RefPolicy::new(SERVICES, BLOCKED, &rules);
        for listener in [PUBLIC, INSIDE] {
            for &raw in &sources {
                // decide expects normalized sources; the unnormalized form must agree too.
                for src in [normalize(raw), raw] {
                    for &sni in SNIS {
                        let got = decide(&p, &ConnInfo { listener, src, sni }, now());
                        let want = r.decide(listener, src, sni);
                        assert_eq!(got, want, "rules={rules:?} listener={listener} src={src} sni={sni:?}");
                        assert_eq!(got.allowed(), got.action == Action::Allow);
                        seen.insert((got.action.as_str(), got.reason.as_str()));
                        checked += 1;
                    }
                }
            }
        }
    }
    // The table exercised every outcome decide can give.
    for outcome in [
        ("allow", "allowlist"),
        ("deny", "blocked"),
        ("deny", "no-route"),
        ("deny", "zone-deny"),
        ("deny", "not-allowed"),
    ] {
        assert!(seen.contains(&outcome), "never saw {outcome:?}");
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(checked > 100_000, "{checked}");
}

#[test]
fn random_ipsets_agree_with_reference() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..30 {
        // Small random sets with overlapping, nested, adjacent and mapped networks.
        let mut cidrs: Vec<IpNet> = Vec::new();
        for _ in 0..(1 + rng.below(40)) {
            let r = rng.next();
            let net = match rng.below(3) {
                0 => {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff));
                    IpNet::V4(ipnet::Ipv4Net::new(a, 8 + rng.below(25) as u8).unwrap())
                }
                1 => {
                    let a = std::net::Ipv6Addr::from(
                        0x2001_0db8_u128 << 96 | (u128::from(r) << 40) | u128::from(rng.next() as u16),
                    );
                    IpNet::V6(ipnet::Ipv6Net::new(a, 32 + rng.below(97) as u8).unwrap())
                }
                _ => {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff));
                    IpNet::V6(ipnet::Ipv6Net::new(a.to_ipv6_mapped(), 104 + rng.below(25) as u8).unwrap())
                }
            };
            cidrs.push(net);
        }
        let s = IpSet::new(&cidrs);
        let mut probes: Vec<IpAddr> = Vec::new();
        for n in &cidrs {
            // Each network's edges and their neighbours.
            match n.trunc() {
                IpNet::V4(n) => {
                    let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                    for x in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        probes.push(v4(x));
                        probes.push(IpAddr::V6(std::net::Ipv4Addr::from(x).to_ipv6_mapped()));
                    }
                }
                IpNet::V6(n) => {
                    let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                    for x in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        probes.push(v6(x));
                    }
                }
            }
        }
        for _ in 0..200 {
            let r = rng.next();
            probes.push(v4(0x0a00_0000 | (r as u32 & 0x00ff_ffff)));
        }
        for p in probes {
            assert_eq!(s.contains(p), ref_contains(&cidrs, p), "round {round}: {p} in {cidrs:?}");
        }
    }
}
