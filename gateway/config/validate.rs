//! Raw config -> runtime [`Config`]. Collects every problem instead of stopping at the
//! first, so `menshen check` shows the admin the whole list at once.

use super::raw::{RawConfig, RawService};
use super::units::{parse_duration, parse_size};
use super::*;
use crate::policy::{Access, IpSet, Listener, ListenerKind, Policy, Service, Zone, WAN};
use crate::proxy::guard::Guard;
use crate::proxy::Upstream;
use crate::tls;
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// Logs must be kept at least six months (HL-1.4(8)3).
pub const MIN_RETENTION_DAYS: i64 = 180;

struct Ctx {
    file: String,
    base: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Ctx {
    fn err(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError { file: self.file.clone(), key: key.into(), reason: reason.into() });
    }

    fn warn(&mut self, key: &str, reason: impl fmt::Display) {
        self.warnings.push(format!("{}: {key}: {reason}", self.file));
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(key, e);
                default
            }
        }
    }

    fn size(&mut self, key: &str, v: Option<&str>, default: u64) -> u64 {
        match v.map(parse_size) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(key, e);
                default
            }
        }
    }

    /// Parse a list of CIDRs (a bare address means /32 or /128).
    fn cidrs(&mut self, key: &str, list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            match parse_cidr(s) {
                Ok(n) => out.push(n),
                Err(e) => self.err(format!("{key}[{i}]"), e),
            }
        }
        out
    }
}

/// A CIDR such as `192.168.10.0/24` or `2001:db8::/56`, or a bare address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        if n.trunc() != n {
            return Err(format!("{s:?} has host bits set (did you mean {}?)", n.trunc()));
        }
        return Ok(n);
    }
    t.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| format!("{s:?} is not a CIDR or IP address"))
}

/// A network as the policy matches it: an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) is the IPv4 network it maps (`10.0.0.0/8`).
fn as_matched(net: &IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => n
            .network()
            .to_ipv4_mapped()
            .and_then(|a| ipnet::Ipv4Net::new(a, n.prefix_len() - 96).ok())
            .map_or(IpNet::V6(n), IpNet::V4),
        other => other,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_host(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(super) fn validate(raw: RawConfig, path: &Path, base: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx { file: path.display().to_string(), base: base.to_path_buf(), errors: vec![], warnings: vec![] };

    // [gateway]
    if !valid_name(&raw.gateway.name) {
        cx.err("gateway.name", format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", raw.gateway.name));
    }
    let timezone = match jiff::tz::TimeZone::get(&raw.gateway.timezone) {
        Ok(tz) => tz,
        Err(_) => {
            cx.err(
                "gateway.timezone",
                format!("{:?} is not a known IANA time zone (e.g. \"Asia/Taipei\")", raw.gateway.timezone),
            );
            jiff::tz::TimeZone::UTC
        }
    };
    let gateway = GatewaySettings {
        name: raw.gateway.name.clone(),
        timezone,
        timezone_name: raw.gateway.timezone.clone(),
        state_dir: cx.path(&raw.gateway.state_dir),
        drain_timeout: cx.duration(
            "gateway.drain_timeout",
            raw.gateway.drain_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        metrics_bind: match raw.gateway.metrics_bind.as_deref().map(str::parse::<SocketAddr>) {
            None => None,
            Some(Ok(a)) if a.ip().is_loopback() => Some(a),
            Some(Ok(a)) => {
                cx.err(
                    "gateway.metrics_bind",
                    format!("{a}: plaintext metrics only on a loopback address (use the admin listener's TLS /metrics from elsewhere)"),
                );
                None
            }
            Some(Err(_)) => {
                cx.err("gateway.metrics_bind", "is not an address:port (e.g. \"127.0.0.1:9464\")");
                None
            }
        },
    };

    // [tls]
    let tls = validate_tls(&mut cx, &raw, &gateway, mode);

    // [log]
    let log = validate_log(&mut cx, &raw);

    // [ip_sets]
    let mut sets: HashMap<&str, IpSet> = HashMap::new();
    for (name, list) in &raw.ip_sets {
        if !valid_name(name) {
            cx.err(format!("ip_sets.{name}"), "set names are 1-64 letters, digits, '-', '_' or '.'");
        }
        let nets = cx.cidrs(&format!("ip_sets.{name}"), list);
        sets.insert(name.as_str(), IpSet::new(&nets));
    }
    let blocked = sets.get("blocked").cloned().unwrap_or_default();

    // [zones]
    let mut zones = vec![Zone { name: "wan".into(), networks: IpSet::default() }];
    let mut zone_nets: Vec<(String, Vec<IpNet>)> = Vec::new();
    for (name, list) in &raw.zones {
        if name == "wan" {
            cx.err("zones.wan", "`wan` is everything not in another zone; it takes no networks");
            continue;
        }
        if !valid_name(name) {
            cx.err(format!("zones.{name}"), "zone names are 1-64 letters, digits, '-', '_' or '.'");
        }
        let nets = cx.cidrs(&format!("zones.{name}"), list);
        for (other, onets) in &zone_nets {
            let overlap = |a: &IpNet, b: &IpNet| {
                let (a, b) = (as_matched(a), as_matched(b));
                a.contains(&b) || b.contains(&a)
            };
            if let Some((a, b)) = nets.iter().find_map(|a| onets.iter().find(|b| overlap(a, b)).map(|b| (a, b))) {
                cx.err(
                    format!("zones.{name}"),
                    format!("{a} overlaps {b} of zone {other:?}: a host lives in one zone"),
                );
            }
        }
        zones.push(Zone { name: name.clone(), networks: IpSet::new(&nets) });
        zone_nets.push((name.clone(), nets));
    }
    let zone_id = |name: &str| zones.iter().position(|z| z.name == name);

    // [[zone_rule]]
    let mut rules = Vec::new();
    let mut seen_pairs = HashSet::new();
    for (i, r) in raw.zone_rules.iter().enumerate() {
        let key = format!("zone_rule[{i}]");
        let from = zone_id(&r.from);
        let to = zone_id(&r.to);
        if from.is_none() {
            cx.err(format!("{key}.from"), format!("unknown zone {:?} (zones: {})", r.from, names(&zones)));
        }
        if to.is_none() {
            cx.err(format!("{key}.to"), format!("unknown zone {:?} (zones: {})", r.to, names(&zones)));
        }
        let access = match r.access.as_str() {
            "allow" => Some(Access::Allow),
            "window" => Some(Access::Window),
            "deny" => Some(Access::Deny),
            other => {
                cx.err(format!("{key}.access"), format!("{other:?} must be \"allow\", \"window\" or \"deny\""));
                None
            }
        };
        if let (Some(f), Some(t), Some(a)) = (from, to, access) {
            if !seen_pairs.insert((f, t)) {
                cx.err(key, format!("duplicate rule for {} -> {}", r.from, r.to));
            } else {
                rules.push((f, t, a));
            }
        }
    }
    let access_of = |f, t| rules.iter().find(|r| r.0 == f && r.1 == t).map(|r| r.2).unwrap_or(Access::Deny);

    // [[listener]]
    let mut listeners: Vec<Listener> = Vec::new();
    let mut binds = HashMap::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let key = format!("listener[{i}]");
        if !valid_name(&l.name) {
            cx.err(format!("{key}.name"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", l.name));
        }
        if listeners.iter().any(|x| x.name == l.name) {
            cx.err(format!("{key}.name"), format!("duplicate listener name {:?}", l.name));
        }
        if l.name == crate::admin::server::LISTENER {
            cx.err(format!("{key}.name"), "\"admin\" is the admin listener's name in logs and metrics; pick another");
        }
        let bind = match l.bind.parse::<SocketAddr>() {
            Ok(b) => {
                // Port 0 asks the system for any free port: never a clash.
                if let Some(prev) = binds.insert(b, l.name.clone()).filter(|_| b.port() != 0) {
                    cx.err(format!("{key}.bind"), format!("{b} is already the bind of listener {prev:?}"));
                }
                b
            }
            Err(_) => {
                cx.err(
                    format!("{key}.bind"),
                    format!("{:?} is not an address:port (e.g. \"0.0.0.0:443\", \"[::]:443\")", l.bind),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        let zone = zone_id(&l.zone).unwrap_or_else(|| {
            cx.err(format!("{key}.zone"), format!("unknown zone {:?} (zones: {})", l.zone, names(&zones)));
            WAN
        });
        let kind = match l.kind.as_str() {
            "https" => ListenerKind::Https,
            "tcp" => ListenerKind::Tcp,
            other => {
                cx.err(format!("{key}.kind"), format!("{other:?} must be \"https\" or \"tcp\""));
                ListenerKind::Https
            }
        };
        let proxy_protocol = l.proxy_protocol.as_ref().map(|peers| {
            if peers.is_empty() {
                cx.err(
                    format!("{key}.proxy_protocol"),
                    "an empty list trusts nobody: name the load balancers' addresses, or remove the key",
                );
            }
            let set = resolve_sources(&mut cx, &format!("{key}.proxy_protocol"), peers, &sets);
            crate::policy::ProxyPeers { set, sources: peers.clone() }
        });
        listeners.push(Listener { name: l.name.clone(), bind, zone, kind, proxy_protocol });
    }

    // [[service]]
    let mut roots_cache: HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>> = HashMap::new();
    let mut services: Vec<Service> = Vec::new();
    let mut routes: HashMap<(usize, String), String> = HashMap::new();
    for (i, s) in raw.services.iter().enumerate() {
        if let Some(svc) =
            validate_service(&mut cx, i, s, &listeners, &zones, &sets, &access_of, &mut roots_cache, &mut routes)
        {
            if services.iter().any(|x| x.name == svc.name) {
                cx.err(format!("service[{i}].name"), format!("duplicate service name {:?}", svc.name));
            }
            services.push(svc);
        }
    }

    check_tcp_listeners(&mut cx, &listeners, &services, &raw);
    let admin = raw.admin.as_ref().map(|a| validate_admin(&mut cx, a, &sets, &listeners));
    let windows = validate_windows(&mut cx, &raw);
    let limits = validate_limits(&mut cx, &raw.limits);
    let accounts = validate_accounts(&mut cx, &raw, &services);

    if !cx.errors.is_empty() {
        return Err(ConfigErrors(cx.errors));
    }
    let policy = Policy::new(zones, listeners, services, blocked, &rules);
    Ok(Config {
        path: path.to_path_buf(),
        digest: String::new(),
        text: String::new(),
        gateway,
        tls,
        log,
        policy,
        admin,
        windows,
        accounts,
        limits,
        warnings: cx.warnings,
    })
}

fn names(zones: &[Zone]) -> String {
    zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn validate_tls(cx: &mut Ctx, raw: &RawConfig, gateway: &GatewaySettings, mode: Mode) -> TlsSettings {
    let min_version = match raw.tls.min_version.as_deref() {
        None | Some("1.2") => MinVersion::Tls12,
        Some("1.3") => MinVersion::Tls13,
        Some(v @ ("1.0" | "1.1" | "1" | "ssl3")) => {
            cx.err(
                "tls.min_version",
                format!(
                    "TLS {v} is refused: maintenance traffic needs TLS 1.2 or newer (MOE-18); use \"1.2\" or \"1.3\""
                ),
            );
            MinVersion::Tls12
        }
        Some(v) => {
            cx.err("tls.min_version", format!("{v:?} must be \"1.2\" or \"1.3\""));
            MinVersion::Tls12
        }
    };
    let handshake_timeout =
        cx.duration("tls.handshake_timeout", raw.tls.handshake_timeout.as_deref(), Duration::from_secs(10));
    let cert = cx.path(&raw.tls.cert);
    let key = cx.path(&raw.tls.key);
    let mut settings = TlsSettings {
        cert: cert.clone(),
        key: key.clone(),
        min_version,
        handshake_timeout,
        certified_key: None,
        cert_info: None,
        self_signed_if_missing: raw.tls.self_signed_if_missing,
    };
    let missing = !cert.exists() && !key.exists();
    if missing && raw.tls.self_signed_if_missing {
        if mode == Mode::Check {
            cx.warn(
                "tls.cert",
                format!("{} does not exist yet; `menshen run` will generate a self-signed certificate", cert.display()),
            );
            return settings;
        }
        let names = vec!["localhost".to_string(), gateway.name.clone()];
        if let Err(e) = tls::generate_self_signed(&cert, &key, names) {
            cx.err("tls.cert", e.to_string());
            return settings;
        }
        tracing::warn!(cert = %cert.display(), "GENERATED A SELF-SIGNED CERTIFICATE: clients cannot verify this gateway; install a real certificate before production use");
    }
    match tls::load_certified_key(&cert, &key) {
        Ok((ck, info)) => {
            if info.self_signed {
                cx.warn(
                    "tls.cert",
                    format!("{} is self-signed ({}): clients cannot verify it", cert.display(), info.subject),
                );
            }
            settings.certified_key = Some(ck);
            settings.cert_info = Some(info);
        }
        Err(e) => {
            let key_name = if e.to_string().starts_with(&key.display().to_string()) { "tls.key" } else { "tls.cert" };
            cx.err(key_name, e.to_string());
        }
    }
    settings
}

fn validate_log(cx: &mut Ctx, raw: &RawConfig) -> LogSettings {
    let l = &raw.log;
    let retention = l.retention_days.unwrap_or(MIN_RETENTION_DAYS);
    if retention < MIN_RETENTION_DAYS {
        cx.err(
            "log.retention_days",
            format!("{retention} is under {MIN_RETENTION_DAYS}: core systems keep logs at least 6 months (HL-1.4(8)3)"),
        );
    }
    let sync = match l.sync.as_deref() {
        None | Some("interval") => SyncMode::Interval,
        Some("always") => SyncMode::Always,
        Some(o) => {
            cx.err("log.sync", format!("{o:?} must be \"interval\" or \"always\""));
            SyncMode::Interval
        }
    };
    let on_full = match l.on_full.as_deref() {
        None | Some("refuse") => OnFull::Refuse,
        Some("overwrite-oldest") => OnFull::OverwriteOldest,
        Some(o) => {
            cx.err("log.on_full", format!("{o:?} must be \"refuse\" or \"overwrite-oldest\""));
            OnFull::Refuse
        }
    };
    let max_disk = cx.size("log.max_disk", l.max_disk.as_deref(), 20 << 30);
    let max_file = cx.size("log.max_file", l.max_file.as_deref(), 256 << 20);
    if max_file > max_disk {
        cx.err("log.max_file", "is larger than log.max_disk");
    }
    LogSettings {
        dir: cx.path(l.dir.as_deref().unwrap_or("log")),
        retention_days: u32::try_from(retention.max(0)).unwrap_or(u32::MAX),
        max_disk,
        max_file,
        sync,
        on_full,
        http_requests: l.http_requests.unwrap_or(true),
        syslog: match l.syslog.as_deref().map(crate::audit::syslog::Target::parse) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                cx.err("log.syslog", e);
                None
            }
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_service(
    cx: &mut Ctx,
    i: usize,
    s: &RawService,
    listeners: &[Listener],
    zones: &[Zone],
    sets: &HashMap<&str, IpSet>,
    access_of: &dyn Fn(usize, usize) -> Access,
    roots_cache: &mut HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>,
    routes: &mut HashMap<(usize, String), String>,
) -> Option<Service> {
    let key = format!("service[{i}]");
    let errors_before = cx.errors.len();
    if !valid_name(&s.name) {
        cx.err(format!("{key}.name"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", s.name));
    }
    let listener = listeners.iter().position(|l| l.name == s.listener);
    if listener.is_none() {
        let known: Vec<_> = listeners.iter().map(|l| l.name.as_str()).collect();
        cx.err(
            format!("{key}.listener"),
            format!("unknown listener {:?} (listeners: {})", s.listener, known.join(", ")),
        );
    }
    let kind = listener.map(|l| listeners[l].kind);
    if s.hosts.is_empty() && kind == Some(ListenerKind::Https) {
        cx.err(format!("{key}.hosts"), "an https service needs at least one host name (SNI and Host must match it)");
    }
    let guard = validate_guard(cx, &key, s, kind);
    let send_proxy = match (s.send_proxy.as_deref(), kind) {
        (None, _) => false,
        (Some("v2"), Some(ListenerKind::Tcp)) => true,
        (Some("v2"), _) => {
            cx.err(format!("{key}.send_proxy"), "only tcp services send a PROXY header to their upstream");
            false
        }
        (Some(other), _) => {
            cx.err(format!("{key}.send_proxy"), format!("{other:?} must be \"v2\""));
            false
        }
    };
    let mut hosts = Vec::new();
    for (j, h) in s.hosts.iter().enumerate() {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        if !valid_host(&h) {
            cx.err(format!("{key}.hosts[{j}]"), format!("{h:?} is not a DNS host name"));
            continue;
        }
        if let Some(l) = listener {
            if let Some(prev) = routes.insert((l, h.clone()), s.name.clone()) {
                cx.err(
                    format!("{key}.hosts[{j}]"),
                    format!("{h:?} on listener {:?} is already routed to service {prev:?}", s.listener),
                );
            }
        }
        hosts.push(h);
    }
    let zone = zones.iter().position(|z| z.name == s.zone);
    if zone.is_none() {
        cx.err(format!("{key}.zone"), format!("unknown zone {:?} (zones: {})", s.zone, names(zones)));
    }
    if let (Some(l), Some(z)) = (listener, zone) {
        let from = &zones[listeners[l].zone].name;
        match access_of(listeners[l].zone, z) {
            Access::Deny => cx.err(
                format!("{key}.zone"),
                format!(
                    "the zone rule {from} -> {} is deny (or unlisted): listener {:?} may not reach zone {:?}",
                    s.zone, s.listener, s.zone
                ),
            ),
            Access::Window if s.window_max.is_none() => cx.warn(
                &format!("{key}.window_max"),
                format!(
                    "zone rule {from} -> {} is window-only but service {:?} has no window_max: nobody can reach it",
                    s.zone, s.name
                ),
            ),
            _ => {}
        }
    }

    let allow = resolve_sources(cx, &format!("{key}.allow"), &s.allow, sets);

    let window_max =
        s.window_max.as_deref().map(|w| cx.duration(&format!("{key}.window_max"), Some(w), Duration::ZERO));
    let idle_timeout =
        cx.duration(&format!("{key}.idle_timeout"), s.idle_timeout.as_deref(), Duration::from_secs(15 * 60));
    let upstream_timeout =
        cx.duration(&format!("{key}.upstream_timeout"), s.upstream_timeout.as_deref(), Duration::from_secs(60));

    let ca = s.upstream_ca.as_deref().map(|p| cx.path(p));
    let tls_cfg = match roots_cache.get(&ca) {
        Some(c) => Some(c.clone()),
        None => match tls::upstream_roots(ca.as_deref()).and_then(tls::upstream_client_config) {
            Ok(c) => {
                roots_cache.insert(ca.clone(), c.clone());
                Some(c)
            }
            Err(e) => {
                cx.err(format!("{key}.upstream_ca"), e.to_string());
                None
            }
        },
    };
    let server_name = match s.upstream_server_name.as_deref().map(rustls::pki_types::ServerName::try_from) {
        None => None,
        Some(Ok(n)) => Some(n.to_owned()),
        Some(Err(_)) => {
            cx.err(format!("{key}.upstream_server_name"), "is not a DNS name or IP address");
            None
        }
    };
    let upstream = match tls_cfg.map(|t| Upstream::new(&s.upstream, t, server_name)) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            cx.err(format!("{key}.upstream"), format!("{:?} {e}", s.upstream));
            None
        }
        None => None,
    };
    if let (Some(u), Some(kind)) = (&upstream, kind) {
        let tcp = u.scheme == crate::proxy::Scheme::Tcp;
        if tcp != (kind == ListenerKind::Tcp) {
            let want = if kind == ListenerKind::Tcp { "tcp://HOST:PORT" } else { "http:// or https://" };
            cx.err(
                format!("{key}.upstream"),
                format!(
                    "{:?}: service {:?} is on a {} listener, so its upstream is {want}",
                    s.upstream,
                    s.name,
                    kind.as_str()
                ),
            );
        }
    }
    if let Some(u) = &upstream {
        if u.scheme == crate::proxy::Scheme::Http {
            cx.warn(
                &format!("{key}.upstream"),
                format!(
                    "{:?} is plaintext: traffic from the gateway to service {:?} is not encrypted (KL-玖.二.(四))",
                    s.upstream, s.name
                ),
            );
        }
        if s.upstream_ca.is_some() && u.scheme == crate::proxy::Scheme::Http {
            cx.err(format!("{key}.upstream_ca"), "only applies to https:// upstreams");
        }
        if u.ip.is_none() {
            cx.warn(
                &format!("{key}.upstream"),
                format!("{:?} names a host, not an address: its zone {:?} cannot be checked", s.upstream, s.zone),
            );
        }
        if let (Some(ip), Some(z)) = (u.ip, zone) {
            let actual = zones.iter().position(|zn| zn.networks.contains(ip)).unwrap_or(WAN);
            let has_networks = zones.iter().any(|zn| !zn.networks.is_empty());
            if has_networks && actual != z {
                cx.err(
                    format!("{key}.zone"),
                    format!("upstream address {ip} is in zone {:?}, not {:?}", zones[actual].name, s.zone),
                );
            }
        }
    }

    if cx.errors.len() > errors_before {
        return None;
    }
    Some(Service {
        name: s.name.clone(),
        listener: listener?,
        hosts,
        upstream: Arc::new(upstream?),
        zone: zone?,
        allow,
        allow_sources: s.allow.clone(),
        window_max,
        idle_timeout,
        upstream_timeout,
        guard,
        send_proxy,
    })
}

/// `guard`: required (and explicit) for tcp services, refused for https ones.
fn validate_guard(cx: &mut Ctx, key: &str, s: &RawService, kind: Option<ListenerKind>) -> Option<Guard> {
    match (s.guard.as_deref(), kind) {
        (None, Some(ListenerKind::Tcp)) => {
            cx.err(
                format!("{key}.guard"),
                "a tcp service must say what its clients speak first: \"ssh\", \"tls\", \"rdp-tls\", or \"none\" (plaintext allowed)",
            );
            None
        }
        (None, _) => None,
        (Some(_), Some(ListenerKind::Https)) => {
            cx.err(format!("{key}.guard"), "only tcp services have a guard (https services are TLS-terminated)");
            None
        }
        (Some(g), _) => match Guard::parse(g) {
            Some(Guard::None) => {
                cx.warn(
                    &format!("{key}.guard"),
                    format!(
                        "\"none\": service {:?} accepts any bytes, plaintext included (not TLS-only transport, MOE-18)",
                        s.name
                    ),
                );
                Some(Guard::None)
            }
            Some(g) => Some(g),
            None => {
                cx.err(format!("{key}.guard"), format!("{g:?} must be \"ssh\", \"tls\", \"rdp-tls\" or \"none\""));
                None
            }
        },
    }
}

/// A tcp listener serves one service, or several `guard = "tls"` services told apart
/// by SNI (each with hosts).
fn check_tcp_listeners(cx: &mut Ctx, listeners: &[Listener], services: &[Service], raw: &RawConfig) {
    for (id, l) in listeners.iter().enumerate() {
        if l.kind != ListenerKind::Tcp {
            continue;
        }
        let key = format!("listener[{id}]");
        let on: Vec<&Service> = services.iter().filter(|s| s.listener == id).collect();
        let index_of = |name: &str| raw.services.iter().position(|r| r.name == name).unwrap_or(0);
        match on.as_slice() {
            [] => cx.warn(&key, format!("tcp listener {:?} has no service: every connection is refused", l.name)),
            [one] if !one.hosts.is_empty() && one.guard != Some(Guard::Tls) => cx.err(
                format!("service[{}].hosts", index_of(&one.name)),
                "only guard = \"tls\" services are routed by name (SNI); remove hosts",
            ),
            [_] => {}
            many => {
                for s in many {
                    if s.guard != Some(Guard::Tls) || s.hosts.is_empty() {
                        cx.err(
                            format!("service[{}].listener", index_of(&s.name)),
                            format!(
                                "tcp listener {:?} has several services: each must be guard = \"tls\" with hosts (routed by SNI)",
                                l.name
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Resolve a list of set names and CIDRs into one set.
fn resolve_sources(cx: &mut Ctx, key: &str, list: &[String], sets: &HashMap<&str, IpSet>) -> IpSet {
    let mut out = IpSet::default();
    for (j, a) in list.iter().enumerate() {
        if a == "blocked" {
            cx.err(format!("{key}[{j}]"), "the `blocked` set cannot be allowed");
        } else if let Some(set) = sets.get(a.as_str()) {
            out = out.union(set);
        } else if a.contains('/') || a.parse::<std::net::IpAddr>().is_ok() {
            match parse_cidr(a) {
                Ok(n) => out = out.union(&IpSet::new(&[n])),
                Err(e) => cx.err(format!("{key}[{j}]"), e),
            }
        } else {
            let mut known: Vec<_> = sets.keys().copied().collect();
            known.sort_unstable();
            cx.err(format!("{key}[{j}]"), format!("unknown ip set {a:?} (sets: {})", known.join(", ")));
        }
    }
    out
}

fn validate_admin(
    cx: &mut Ctx,
    a: &super::raw::RawAdmin,
    sets: &HashMap<&str, IpSet>,
    listeners: &[Listener],
) -> AdminSettings {
    let bind = match a.bind.parse::<SocketAddr>() {
        Ok(b) => {
            if let Some(l) = listeners.iter().find(|l| l.bind == b && b.port() != 0) {
                cx.err("admin.bind", format!("{b} is already the bind of listener {:?}", l.name));
            }
            b
        }
        Err(_) => {
            cx.err("admin.bind", format!("{:?} is not an address:port (e.g. \"127.0.0.1:9443\")", a.bind));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    if a.allow.is_empty() {
        cx.err("admin.allow", "an empty list lets nobody reach the admin listener; name the maintenance sources");
    }
    let allow = resolve_sources(cx, "admin.allow", &a.allow, sets);
    let failures = a.lockout_failures.unwrap_or(5);
    if failures == 0 {
        cx.err("admin.lockout_failures", "must be at least 1");
    }
    let fifteen = Duration::from_secs(15 * 60);
    let lockout = LockoutSettings {
        failures: failures.max(1),
        window: cx.duration("admin.lockout_window", a.lockout_window.as_deref(), fifteen),
        duration: cx.duration("admin.lockout_duration", a.lockout_duration.as_deref(), fifteen),
    };
    AdminSettings { bind, allow, allow_sources: a.allow.clone(), lockout }
}

fn validate_limits(cx: &mut Ctx, l: &super::raw::RawLimits) -> LimitSettings {
    let d = LimitSettings::default();
    let mut count = |key: &str, v: Option<u32>, default: usize, max: u32| -> usize {
        match v {
            None => default,
            Some(0) => {
                cx.err(format!("limits.{key}"), "must be at least 1");
                default
            }
            Some(n) if n > max => {
                cx.err(format!("limits.{key}"), format!("must be at most {max}"));
                default
            }
            Some(n) => n as usize,
        }
    };
    let max_connections = count("max_connections", l.max_connections, d.max_connections, 1_000_000);
    let per_source =
        count("max_connections_per_source", l.max_connections_per_source, d.max_connections_per_source, 1_000_000);
    let rate = count(
        "new_connections_per_source",
        l.new_connections_per_source,
        d.new_connections_per_source as usize,
        100_000,
    );
    let burst = count("new_connections_burst", l.new_connections_burst, d.new_connections_burst as usize, 1_000_000);
    let max_headers = count("max_headers", l.max_headers, d.max_headers, 10_000);
    let h2_streams = count("h2_max_streams", l.h2_max_streams, d.h2_max_streams as usize, 10_000);
    let resets = count("h2_max_pending_resets", l.h2_max_pending_resets, d.h2_max_pending_resets, 10_000);
    if per_source > max_connections {
        cx.warn("limits.max_connections_per_source", "is above max_connections: one source may take every slot");
    }
    let head = cx.size("limits.max_request_head", l.max_request_head.as_deref(), d.max_request_head as u64);
    let list = cx.size("limits.h2_max_header_list", l.h2_max_header_list.as_deref(), u64::from(d.h2_max_header_list));
    // hyper needs room for a request line and a few headers; too much invites floods.
    let bounded = |cx: &mut Ctx, key: &str, v: u64, default: u64| -> u64 {
        if (8 * 1024..=1024 * 1024).contains(&v) {
            v
        } else {
            cx.err(format!("limits.{key}"), "must be between 8KiB and 1MiB");
            default
        }
    };
    let head = bounded(cx, "max_request_head", head, d.max_request_head as u64);
    let list = bounded(cx, "h2_max_header_list", list, u64::from(d.h2_max_header_list));
    LimitSettings {
        max_connections,
        max_connections_per_source: per_source,
        new_connections_per_source: u32::try_from(rate).unwrap_or(u32::MAX),
        new_connections_burst: u32::try_from(burst.max(rate)).unwrap_or(u32::MAX),
        header_read_timeout: cx.duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_deref(),
            d.header_read_timeout,
        ),
        max_request_head: usize::try_from(head).unwrap_or(d.max_request_head),
        max_headers,
        h2_max_streams: u32::try_from(h2_streams).unwrap_or(d.h2_max_streams),
        h2_max_header_list: u32::try_from(list).unwrap_or(d.h2_max_header_list),
        h2_max_pending_resets: resets,
    }
}

fn validate_windows(cx: &mut Ctx, raw: &RawConfig) -> WindowSettings {
    let w = &raw.windows;
    let webhook = match w.webhook.as_deref().map(|u| u.parse::<http::Uri>()) {
        None => None,
        Some(Ok(u)) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
        Some(Ok(u)) if u.scheme_str() == Some("http") && u.host().is_some() => {
            cx.warn("windows.webhook", "is plaintext http://: window notices travel unencrypted");
            Some(u)
        }
        Some(_) => {
            cx.err("windows.webhook", "must be an https:// (or http://) URL with a host");
            None
        }
    };
    let v4 = w.max_source_prefix_v4.unwrap_or(24);
    let v6 = w.max_source_prefix_v6.unwrap_or(56);
    if v4 > 32 {
        cx.err("windows.max_source_prefix_v4", "must be 0-32");
    }
    if v6 > 128 {
        cx.err("windows.max_source_prefix_v6", "must be 0-128");
    }
    if w.allow_self_approval {
        cx.warn(
            "windows.allow_self_approval",
            "requesters may approve their own windows; each is flagged for review (DH-1.3.3)",
        );
    }
    WindowSettings {
        allow_self_approval: w.allow_self_approval,
        webhook,
        max_prefix_v4: v4.min(32),
        max_prefix_v6: v6.min(128),
    }
}

fn validate_accounts(cx: &mut Ctx, raw: &RawConfig, services: &[Service]) -> Vec<Account> {
    let mut out: Vec<Account> = Vec::new();
    for (i, a) in raw.accounts.iter().enumerate() {
        let key = format!("account[{i}]");
        if !valid_name(&a.name) {
            cx.err(format!("{key}.name"), format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", a.name));
        } else if a.name.contains('.') {
            cx.err(format!("{key}.name"), "must not contain '.': tokens are `name.secret`");
        }
        if out.iter().any(|o| o.name == a.name) {
            cx.err(format!("{key}.name"), format!("duplicate account {:?}: one account per person", a.name));
        }
        let role = match a.role.as_str() {
            "admin" => Role::Admin,
            "vendor" => Role::Vendor,
            "viewer" => Role::Viewer,
            other => {
                cx.err(format!("{key}.role"), format!("{other:?} must be \"admin\", \"vendor\" or \"viewer\""));
                Role::Viewer
            }
        };
        let hash = crate::admin::auth::parse_hex32(&a.token_sha256);
        if hash.is_none() {
            cx.err(format!("{key}.token_sha256"), "must be 64 hex digits (`menshen token` prints one)");
        }
        let hash = hash.unwrap_or([0u8; 32]);
        if hash == [0u8; 32] && cx.errors.iter().all(|e| e.key != format!("{key}.token_sha256")) {
            cx.warn(
                &format!("{key}.token_sha256"),
                format!(
                    "is a placeholder: account {:?} cannot log in until you set it (`menshen token --account {}`)",
                    a.name, a.name
                ),
            );
        }
        if hash != [0u8; 32] && out.iter().any(|o| o.token_sha256 == hash) {
            cx.err(format!("{key}.token_sha256"), "the same token as another account: no shared credentials");
        }
        if role == Role::Vendor {
            if a.vendor.as_deref().unwrap_or("").is_empty() {
                cx.err(format!("{key}.vendor"), "a vendor account names its company");
            }
            if a.services.is_empty() {
                cx.err(format!("{key}.services"), "a vendor account lists the services it may request");
            }
            for (j, s) in a.services.iter().enumerate() {
                match services.iter().find(|x| x.name == *s) {
                    None => cx.err(format!("{key}.services[{j}]"), format!("unknown service {s:?}")),
                    Some(x) if x.window_max.is_none() => cx.err(
                        format!("{key}.services[{j}]"),
                        format!("service {s:?} has no window_max: windows can never open it"),
                    ),
                    Some(_) => {}
                }
            }
        } else if a.vendor.is_some() || !a.services.is_empty() {
            cx.err(format!("{key}.services"), "only vendor accounts take `vendor` and `services`");
        }
        out.push(Account {
            name: a.name.clone(),
            role,
            token_sha256: hash,
            vendor: a.vendor.clone(),
            services: a.services.clone(),
        });
    }
    out
}
