//! The decision state and the decision: who may reach which service, from where.
//!
//! A [`Policy`] is an immutable snapshot built from a validated config; the running
//! gateway holds one behind an `ArcSwap` and swaps in a new one on change. [`decide`]
//! is a pure function of the snapshot and the connection: no I/O, no locks, no
//! allocation, so it is exhaustively unit-tested and benchmarked (`benches/decide.rs`).
//!
//! The snapshot is two parts behind `Arc`s: the rules from the config, and the open
//! access windows; a window change builds a new snapshot sharing the same rules.
//!
//! Order of checks (deny by default):
//! ```text
//! blocked set ─▶ route (listener + SNI) ─▶ zone rule from→to ─▶ allowlist (allow rule only)
//!   blocked        no-route                 zone-deny             ─▶ open window covering
//!                                                                    source + service
//!                                                                  allowlist / window /
//!                                                                  not-allowed
//! ```

mod ipset;
mod windows;

pub use ipset::{normalize, IpSet};
pub use windows::{OpenWindow, WindowIndex, WindowRef};

use crate::proxy::Upstream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Index into [`Policy::zones`]; zone 0 is always `wan`.
pub type ZoneId = usize;
/// Index into [`Policy::listeners`].
pub type ListenerId = usize;
/// Index into [`Policy::services`].
pub type ServiceId = usize;

/// The zone of every address not in a listed zone.
pub const WAN: ZoneId = 0;

/// What a zone rule lets through between two zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sources in the service's allowlist may connect.
    Allow,
    /// Only through an active access window.
    Window,
    Deny,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "allow",
            Access::Window => "window",
            Access::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Https,
    /// Layer 4: bytes relayed after the service's protocol guard.
    Tcp,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Https => "https",
            ListenerKind::Tcp => "tcp",
        }
    }
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub bind: std::net::SocketAddr,
    /// Zone the clients of this listener come from.
    pub zone: ZoneId,
    pub kind: ListenerKind,
    /// Peers whose connections start with a PROXY header (then the client address is
    /// taken from it); `None`: PROXY headers are refused.
    pub proxy_protocol: Option<ProxyPeers>,
}

/// The trusted senders of PROXY headers on a listener.
#[derive(Debug)]
pub struct ProxyPeers {
    pub set: IpSet,
    /// As written (set names and CIDRs), for summaries.
    pub sources: Vec<String>,
}

#[derive(Debug)]
pub struct Zone {
    pub name: String,
    /// Where the zone's hosts live; empty for `wan` (everything not listed).
    pub networks: IpSet,
}

#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub listener: ListenerId,
    /// Lowercase host names; for https both SNI and Host must be one of them.
    pub hosts: Vec<String>,
    pub upstream: Arc<Upstream>,
    /// Zone the upstream lives in: the `to` of the zone rule.
    pub zone: ZoneId,
    /// Union of the named sets and literal CIDRs of the service's `allow`.
    pub allow: IpSet,
    /// The `allow` entries as written (set names and CIDRs), for summaries and reports.
    pub allow_sources: Vec<String>,
    /// The longest access window that may open this service; `None`: never.
    pub window_max: Option<Duration>,
    pub idle_timeout: Duration,
    pub upstream_timeout: Duration,
    /// tcp services: what the client must send before a byte reaches the upstream.
    pub guard: Option<crate::proxy::guard::Guard>,
    /// tcp services: send a PROXY v2 header to the upstream first.
    pub send_proxy: bool,
}

/// The whole decision state at one moment.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Arc<Rules>,
    pub windows: Arc<WindowIndex>,
    /// The runtime block list (`menshen block`), refused like the `blocked` set.
    pub blocks: Arc<IpSet>,
}

impl std::ops::Deref for Policy {
    type Target = Rules;
    fn deref(&self) -> &Rules {
        &self.rules
    }
}

/// What the config decides: zones, listeners, services, sets.
#[derive(Debug)]
pub struct Rules {
    pub zones: Vec<Zone>,
    pub listeners: Vec<Listener>,
    pub services: Vec<Service>,
    /// The special `blocked` ip set: refused first, everywhere.
    pub blocked: IpSet,
    /// `matrix[from * zones.len() + to]`; unlisted pairs are `Deny`.
    matrix: Vec<Access>,
    /// Per listener: lowercase host -> service.
    routes: Vec<HashMap<String, ServiceId>>,
    /// Per listener: the service a connection reaches without a name (a tcp listener's
    /// one service that lists no hosts).
    defaults: Vec<Option<ServiceId>>,
}

/// Why a connection was let in or refused. The names are the log's `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowlist,
    Window,
    NotAllowed,
    ZoneDeny,
    Blocked,
    RateLimited,
    TlsRequired,
    TlsVersion,
    TlsHandshake,
    NoRoute,
    Guard,
    LogFull,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowlist => "allowlist",
            Reason::Window => "window",
            Reason::NotAllowed => "not-allowed",
            Reason::ZoneDeny => "zone-deny",
            Reason::Blocked => "blocked",
            Reason::RateLimited => "rate-limited",
            Reason::TlsRequired => "tls-required",
            Reason::TlsVersion => "tls-version",
            Reason::TlsHandshake => "tls-handshake",
            Reason::NoRoute => "no-route",
            Reason::Guard => "guard",
            Reason::LogFull => "log-full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// What [`decide`] needs to know about a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo<'a> {
    pub listener: ListenerId,
    /// Already normalized (IPv4-mapped IPv6 -> IPv4).
    pub src: IpAddr,
    /// TLS server name, for https listeners.
    pub sni: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    pub service: Option<ServiceId>,
    pub zone_from: ZoneId,
    pub zone_to: Option<ZoneId>,
    /// The open window that let the connection in (reason `window`).
    pub window: Option<WindowRef>,
}

impl Decision {
    /// A refusal for a reason found outside the policy (TLS, rate, log state).
    pub fn deny(zone_from: ZoneId, reason: Reason) -> Self {
        Decision { action: Action::Deny, reason, service: None, zone_from, zone_to: None, window: None }
    }

    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// Decide a connection from the policy snapshot alone, at `now` (windows are open in
/// `[start, end)`).
pub fn decide(policy: &Policy, conn: &ConnInfo<'_>, now: jiff::Timestamp) -> Decision {
    let zone_from = policy.listeners[conn.listener].zone;
    if policy.is_blocked(conn.src) {
        return Decision::deny(zone_from, Reason::Blocked);
    }
    let routed = conn.sni.and_then(|sni| policy.route(conn.listener, sni));
    let Some(service_id) = routed.or(policy.defaults[conn.listener]) else {
        return Decision::deny(zone_from, Reason::NoRoute);
    };
    let service = &policy.services[service_id];
    let decision = |action, reason, window| Decision {
        action,
        reason,
        service: Some(service_id),
        zone_from,
        zone_to: Some(service.zone),
        window,
    };
    match policy.access(zone_from, service.zone) {
        Access::Deny => decision(Action::Deny, Reason::ZoneDeny, None),
        Access::Allow if service.allow.contains(conn.src) => decision(Action::Allow, Reason::Allowlist, None),
        // A window opens a `window` pair, and an `allow` pair to sources outside the list.
        Access::Allow | Access::Window => match policy.windows.find(service_id, conn.src, now) {
            Some(w) => decision(Action::Allow, Reason::Window, Some(w)),
            None => decision(Action::Deny, Reason::NotAllowed, None),
        },
    }
}

impl Policy {
    /// Assemble a snapshot with no open windows. `rules` are (from, to, access);
    /// unlisted pairs deny.
    pub fn new(
        zones: Vec<Zone>,
        listeners: Vec<Listener>,
        services: Vec<Service>,
        blocked: IpSet,
        rules: &[(ZoneId, ZoneId, Access)],
    ) -> Self {
        let n = zones.len();
        let mut matrix = vec![Access::Deny; n * n];
        for &(from, to, access) in rules {
            matrix[from * n + to] = access;
        }
        let mut routes = vec![HashMap::new(); listeners.len()];
        let mut defaults = vec![None; listeners.len()];
        for (id, s) in services.iter().enumerate() {
            for h in &s.hosts {
                routes[s.listener].insert(h.to_ascii_lowercase(), id);
            }
            let alone = services.iter().filter(|o| o.listener == s.listener).count() == 1;
            if listeners[s.listener].kind == ListenerKind::Tcp && s.hosts.is_empty() && alone {
                defaults[s.listener] = Some(id);
            }
        }
        let rules = Rules { zones, listeners, services, blocked, matrix, routes, defaults };
        Policy { rules: Arc::new(rules), windows: Arc::new(WindowIndex::default()), blocks: Arc::default() }
    }

    /// The same rules and blocks with another set of open windows.
    pub fn with_windows(&self, windows: WindowIndex) -> Policy {
        Policy { rules: self.rules.clone(), windows: Arc::new(windows), blocks: self.blocks.clone() }
    }

    /// The same rules and windows with another runtime block list.
    pub fn with_blocks(&self, blocks: Arc<IpSet>) -> Policy {
        Policy { rules: self.rules.clone(), windows: self.windows.clone(), blocks }
    }

    /// In the config's `blocked` set or the runtime block list.
    #[inline]
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.rules.blocked.contains(ip) || self.blocks.contains(ip)
    }
}

impl Rules {
    #[inline]
    pub fn access(&self, from: ZoneId, to: ZoneId) -> Access {
        self.matrix[from * self.zones.len() + to]
    }

    /// The service a listener serves for a host name (case-insensitive).
    #[inline]
    pub fn route(&self, listener: ListenerId, host: &str) -> Option<ServiceId> {
        let map = &self.routes[listener];
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return map.get(host).copied();
        }
        // Lowercase on the stack: a DNS name is at most 253 bytes.
        let mut buf = [0u8; 253];
        let lower = buf.get_mut(..host.len())?;
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        map.get(std::str::from_utf8(lower).ok()?).copied()
    }

    /// Zone of an address, by the configured zone networks (`wan` if none).
    pub fn zone_of(&self, ip: IpAddr) -> ZoneId {
        self.zones.iter().position(|z| z.networks.contains(ip)).unwrap_or(WAN)
    }

    /// The service a connection on `listener` reaches without a name, if there is one.
    pub fn default_service(&self, listener: ListenerId) -> Option<ServiceId> {
        self.defaults[listener]
    }

    pub fn listener_id(&self, name: &str) -> Option<ListenerId> {
        self.listeners.iter().position(|l| l.name == name)
    }
}

#[cfg(test)]
mod tests;
