//! The log's record types. Field names are the contract in DESIGN.md "Log records";
//! every field is always present (null when it does not apply), so a reader never has
//! to guess whether a field was forgotten or empty.

use serde::Serialize;
use std::net::IpAddr;

/// What happened; serialized after the common fields `seq`, `ts`, `event`, `gateway`.
#[derive(Debug, Clone)]
pub enum Event {
    ConnOpen(ConnOpen),
    ConnClose(ConnClose),
    HttpRequest(HttpRequest),
    GatewayStart(GatewayStart),
    GatewayStop(GatewayStop),
    Window(WindowEvent),
    AuthFailed(AuthFailed),
    Lockout(Lockout),
    LogRead(LogRead),
    Header(Header),
    Checkpoint(Checkpoint),
    Recovery(Recovery),
    Prune(Prune),
    Capacity(Capacity),
    WriteRecovered(WriteRecovered),
    SyslogGap(SyslogGap),
    ClockUnsynchronized(ClockUnsynchronized),
    FdLimit(FdLimit),
    ConnRefused(ConnRefused),
    ConfigReload(ConfigReload),
    ConfigReloadFailed(ConfigReloadFailed),
    Block(BlockEvent),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConnOpen(_) => "conn.open",
            Event::ConnClose(_) => "conn.close",
            Event::HttpRequest(_) => "http.request",
            Event::GatewayStart(_) => "gateway.start",
            Event::GatewayStop(_) => "gateway.stop",
            Event::Window(w) => w.event,
            Event::AuthFailed(_) => "admin.auth_failed",
            Event::Lockout(_) => "admin.lockout",
            Event::LogRead(_) => "admin.log_read",
            Event::Header(_) => "log.header",
            Event::Checkpoint(_) => "log.checkpoint",
            Event::Recovery(_) => "log.recovery",
            Event::Prune(_) => "log.prune",
            Event::Capacity(c) => c.event,
            Event::WriteRecovered(_) => "log.write_recovered",
            Event::SyslogGap(_) => "log.syslog_gap",
            Event::ClockUnsynchronized(_) => "clock.unsynchronized",
            Event::FdLimit(_) => "gateway.fd_limit",
            Event::ConnRefused(_) => "conn.refused",
            Event::ConfigReload(_) => "config.reload",
            Event::ConfigReloadFailed(_) => "config.reload_failed",
            Event::Block(b) => b.event,
        }
    }

    pub(super) fn write_fields(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Event::ConnOpen(e) => serde_json::to_writer(out, e),
            Event::ConnClose(e) => serde_json::to_writer(out, e),
            Event::HttpRequest(e) => serde_json::to_writer(out, e),
            Event::GatewayStart(e) => serde_json::to_writer(out, e),
            Event::GatewayStop(e) => serde_json::to_writer(out, e),
            Event::Window(e) => serde_json::to_writer(out, e),
            Event::AuthFailed(e) => serde_json::to_writer(out, e),
            Event::Lockout(e) => serde_json::to_writer(out, e),
            Event::LogRead(e) => serde_json::to_writer(out, e),
            Event::Header(e) => serde_json::to_writer(out, e),
            Event::Checkpoint(e) => serde_json::to_writer(out, e),
            Event::Recovery(e) => serde_json::to_writer(out, e),
            Event::Prune(e) => serde_json::to_writer(out, e),
            Event::Capacity(e) => serde_json::to_writer(out, e),
            Event::WriteRecovered(e) => serde_json::to_writer(out, e),
            Event::SyslogGap(e) => serde_json::to_writer(out, e),
            Event::ClockUnsynchronized(e) => serde_json::to_writer(out, e),
            Event::FdLimit(e) => serde_json::to_writer(out, e),
            Event::ConnRefused(e) => serde_json::to_writer(out, e),
            Event::ConfigReload(e) => serde_json::to_writer(out, e),
            Event::ConfigReloadFailed(e) => serde_json::to_writer(out, e),
            Event::Block(e) => serde_json::to_writer(out, e),
        }
    }
}

/// A connection arrived and was decided (allowed or denied).
#[derive(Debug, Clone, Serialize)]
pub struct ConnOpen {
    pub conn: u64,
    pub listener: String,
    /// `tls`, `tcp` or `plain` (plaintext bytes on a TLS port).
    pub proto: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub service: Option<String>,
    pub zone_from: String,
    pub zone_to: Option<String>,
    pub action: &'static str,
    pub reason: &'static str,
    pub window: Option<String>,
    pub identity: Option<String>,
    pub tls_version: Option<&'static str>,
    pub sni: Option<String>,
    /// The trusted load balancer whose PROXY header named `src_ip` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxied_by: Option<IpAddr>,
}

/// A connection that was allowed has ended.
#[derive(Debug, Clone, Serialize)]
pub struct ConnClose {
    pub conn: u64,
    pub listener: String,
    pub service: Option<String>,
    pub src_ip: IpAddr,
    pub src_port: u16,
    /// RFC 3339 in the gateway's time zone.
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    /// Bytes received from the client / sent to the client (on the wire).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub close_reason: &'static str,
    pub upstream_ip: Option<IpAddr>,
    pub upstream_port: Option<u16>,
}

/// One HTTP request through an allowed connection. `path` never has the query string:
/// queries often carry tokens, and no secret goes into the log.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRequest {
    pub conn: u64,
    pub service: String,
    pub src_ip: IpAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayStart {
    pub version: &'static str,
    pub config: String,
    /// BLAKE3 of the config file as read.
    pub config_digest: String,
    pub listeners: Vec<String>,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayStop {
    pub version: &'static str,
    pub config_digest: String,
    pub reason: &'static str,
    /// Connections still open when the drain deadline passed (cut).
    pub cut_connections: u64,
}

/// A new config took effect without a restart (SIGHUP, `POST /api/v1/reload`).
/// `changes` names what changed (keys, listener/service/account names), never values:
/// the file may hold token hashes.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReload {
    /// Who asked: an admin account, or `system` for SIGHUP.
    pub identity: String,
    pub src_ip: Option<IpAddr>,
    /// `SIGHUP` or `api`.
    pub trigger: &'static str,
    pub config: String,
    pub config_digest: String,
    pub previous_digest: String,
    pub changes: Vec<String>,
    /// Live connections the new policy no longer allows, cut with `close_reason = "reload"`.
    pub cut_connections: u64,
    /// The copy kept in `state_dir/configs/` (the last 5 good configs are kept).
    pub saved_as: Option<String>,
}

/// A reload was refused; the running config stays in force.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReloadFailed {
    pub identity: String,
    pub src_ip: Option<IpAddr>,
    pub trigger: &'static str,
    pub config: String,
    /// Every problem found, each `file: key: reason`.
    pub errors: Vec<String>,
}

/// A window changed state (or was reviewed): `window.requested`, `window.approved`,
/// `window.active`, `window.expired`, `window.denied`, `window.revoked`,
/// `window.reviewed`. `identity` is who did it (`system` for the clock).
#[derive(Debug, Clone, Serialize)]
pub struct WindowEvent {
    #[serde(skip)]
    pub event: &'static str,
    pub identity: String,
    pub src_ip: Option<IpAddr>,
    pub window: String,
    pub state: &'static str,
    pub requester: String,
    pub approver: Option<String>,
    pub services: Vec<String>,
    pub sources: Vec<String>,
    pub start: String,
    pub end: String,
    pub reason: String,
    pub self_approved: bool,
    pub note: Option<String>,
}

impl WindowEvent {
    pub fn from_window(
        event: &str,
        w: &crate::windows::Window,
        identity: &str,
        src_ip: Option<IpAddr>,
        note: Option<&str>,
        log: &super::AuditLog,
    ) -> Self {
        let event = match event {
            "requested" => "window.requested",
            "approved" => "window.approved",
            "active" => "window.active",
            "expired" => "window.expired",
            "denied" => "window.denied",
            "revoked" => "window.revoked",
            _ => "window.reviewed",
        };
        WindowEvent {
            event,
            identity: identity.to_string(),
            src_ip,
            window: w.id.clone(),
            state: w.state.as_str(),
            requester: w.requester.clone(),
            approver: w.approver.clone(),
            services: w.services.clone(),
            sources: w.sources.iter().map(|n| n.to_string()).collect(),
            start: log.format_ts(w.start),
            end: log.format_ts(w.end),
            reason: w.reason.clone(),
            self_approved: w.self_approved,
            note: note.map(str::to_string),
        }
    }

    pub fn event_name(&self) -> &'static str {
        self.event
    }
}

/// A request to the admin API with a missing or wrong token. `identity` is the account
/// the token claimed (its `name.` prefix), if any; never the token.
#[derive(Debug, Clone, Serialize)]
pub struct AuthFailed {
    pub identity: Option<String>,
    pub src_ip: IpAddr,
    pub reason: &'static str,
}

/// An account or a source locked out after repeated failures (DH-1.13.6).
#[derive(Debug, Clone, Serialize)]
pub struct Lockout {
    pub identity: Option<String>,
    pub src_ip: IpAddr,
    /// `account` or `source`: what is locked.
    pub locked: &'static str,
    pub until: String,
}

/// The runtime block list changed: `block.added`, `block.removed`, `block.expired`
/// (`identity` = `system` for expiry).
#[derive(Debug, Clone, Serialize)]
pub struct BlockEvent {
    #[serde(skip)]
    pub event: &'static str,
    pub identity: String,
    pub src_ip: Option<IpAddr>,
    pub cidr: String,
    pub reason: String,
    /// RFC 3339 in the gateway's zone; absent: until removed.
    pub expires: Option<String>,
    /// Live connections from the blocked sources, cut (`close_reason = "blocked"`).
    pub cut_connections: u64,
}

/// An admin read the log through the API (HL-1.4(8)1: access to sensitive data).
#[derive(Debug, Clone, Serialize)]
pub struct LogRead {
    pub identity: String,
    pub src_ip: IpAddr,
    /// What was read, e.g. `window w-3f9a1c2b7d activity`.
    pub what: String,
}

/// The first record of every file: the key that signs the checkpoints, and the file
/// before it (whose last hash this record's `prev` is).
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub file: String,
    pub previous_file: Option<String>,
    pub pubkey: String,
    pub version: &'static str,
}

/// A signature over the chain head: the hash of the record just before this one.
/// Written at each rotation, every 10,000 records, every 60 s and at stop.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub signed_seq: u64,
    pub signed_hash: String,
    pub sig: String,
}

/// Written at start after a crash: the torn end of the last file (a record cut short)
/// was removed; its length and BLAKE3 say exactly what.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub file: String,
    pub torn_bytes: u64,
    pub torn_blake3: String,
}

/// Files removed by retention or by `on_full = "overwrite-oldest"`; `last_hash` is the
/// hash their last record had, which the next remaining file's header links to.
#[derive(Debug, Clone, Serialize)]
pub struct Prune {
    pub reason: &'static str,
    pub files: Vec<String>,
    pub last_seq: u64,
    pub last_hash: String,
}

/// `log.capacity_warning` (70 % of `max_disk`, DH-1.13.7), `log.full` (100 %) and
/// `log.capacity_ok` (back under).
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    #[serde(skip)]
    pub event: &'static str,
    pub usage_bytes: u64,
    pub max_disk: u64,
    pub ratio: f64,
    pub on_full: &'static str,
}

/// Writing failed for a while and works again.
#[derive(Debug, Clone, Serialize)]
pub struct WriteRecovered {
    pub error: String,
    pub failed_ms: u64,
    pub refused_connections: u64,
}

/// Records the syslog copy lost (its buffer overflowed while the collector was away).
#[derive(Debug, Clone, Serialize)]
pub struct SyslogGap {
    pub dropped: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// At start: the kernel does not report the clock as NTP-synchronized, so the times in
/// this log may drift (DH-1.17.3).
#[derive(Debug, Clone, Serialize)]
pub struct ClockUnsynchronized {
    pub note: &'static str,
}

/// At start: the process may open too few file descriptors for `limits.max_connections`,
/// so the proxy listeners admit only `effective` connections at once. The rest of the
/// descriptors stay free for the admin listener, the log and the window store.
#[derive(Debug, Clone, Serialize)]
pub struct FdLimit {
    /// RLIMIT_NOFILE in force (after raising the soft limit to the hard one).
    pub nofile: u64,
    pub max_connections: usize,
    pub effective: usize,
}

/// Connections from one source refused before a byte was read (`blocked` or
/// `rate-limited`) after the one written in full as `conn.open`: how many, and when
/// the first and last came (see `listener::refusals`). One per flooding source a second.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRefused {
    pub listener: String,
    /// The first refused address; `src_net` is what the count covers (IPv6: its /64).
    pub src_ip: IpAddr,
    pub src_net: String,
    pub action: &'static str,
    pub reason: &'static str,
    pub count: u64,
    /// RFC 3339 in the gateway's time zone.
    pub first: String,
    pub last: String,
}
