//! The config file: TOML (`raw`) validated into typed runtime settings and a [`Policy`].
//!
//! `load` reads and checks everything (certificates included) and either returns a
//! complete [`Config`] or every problem found, each naming the file, the key path and
//! the reason. Nothing downstream sees a config string. Relative paths resolve against
//! the config file's folder.

pub mod diff;
mod raw;
mod units;
mod validate;

pub use units::{parse_duration, parse_size};
pub use validate::parse_cidr;

use crate::policy::Policy;
use crate::tls::{CertInfo, MinVersion};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated config: settings for each part of the gateway and the policy snapshot.
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// BLAKE3 of the file as read: in gateway.start/stop, so a log shows which config ran.
    pub digest: String,
    /// The file's text as read: kept in `state_dir/configs/` and diffed on reload.
    pub text: String,
    pub gateway: GatewaySettings,
    pub tls: TlsSettings,
    pub log: LogSettings,
    pub policy: Policy,
    /// The admin listener, if configured.
    pub admin: Option<AdminSettings>,
    pub windows: WindowSettings,
    pub accounts: Vec<Account>,
    pub limits: LimitSettings,
    /// Accepted but worth a look: plaintext upstreams, self-signed certs.
    pub warnings: Vec<String>,
}

pub struct GatewaySettings {
    /// In every log record (and later in metrics).
    pub name: String,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub state_dir: PathBuf,
    /// How long a graceful stop waits for in-flight requests before cutting them.
    pub drain_timeout: Duration,
    /// Plain-HTTP `/metrics` on a loopback address, if asked for.
    pub metrics_bind: Option<std::net::SocketAddr>,
}

pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_version: MinVersion,
    pub handshake_timeout: Duration,
    /// Loaded and checked key pair (absent only when `check` skips a not-yet-generated cert).
    pub certified_key: Option<rustls::sign::CertifiedKey>,
    pub cert_info: Option<CertInfo>,
    pub self_signed_if_missing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync at least every second.
    Interval,
    /// fsync after every batch of records before the batch's senders go on.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Refuse,
    OverwriteOldest,
}

pub struct LogSettings {
    pub dir: PathBuf,
    pub retention_days: u32,
    pub max_disk: u64,
    pub max_file: u64,
    pub sync: SyncMode,
    pub on_full: OnFull,
    pub http_requests: bool,
    pub syslog: Option<crate::audit::syslog::Target>,
}

pub struct AdminSettings {
    pub bind: std::net::SocketAddr,
    pub allow: crate::policy::IpSet,
    pub allow_sources: Vec<String>,
    pub lockout: LockoutSettings,
}

#[derive(Debug, Clone, Copy)]
pub struct LockoutSettings {
    pub failures: u32,
    pub window: Duration,
    pub duration: Duration,
}

/// `[limits]`: connection caps and rates (a reload changes them), and the HTTP
/// parser's limits (restart-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Open client connections on all proxy listeners together.
    pub max_connections: usize,
    /// Open connections from one source (an IPv6 source counts by its /64).
    pub max_connections_per_source: usize,
    /// New connections per second from one source, sustained...
    pub new_connections_per_source: u32,
    /// ... and in a burst.
    pub new_connections_burst: u32,
    pub header_read_timeout: Duration,
    pub max_request_head: usize,
    pub max_headers: usize,
    pub h2_max_streams: u32,
    pub h2_max_header_list: u32,
    /// Streams a client may reset before the server has taken them (CVE-2023-44487).
    pub h2_max_pending_resets: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_connections: 4096,
            max_connections_per_source: 256,
            new_connections_per_source: 50,
            new_connections_burst: 100,
            header_read_timeout: Duration::from_secs(30),
            max_request_head: 64 * 1024,
            max_headers: 100,
            h2_max_streams: 100,
            h2_max_header_list: 64 * 1024,
            h2_max_pending_resets: 20,
        }
    }
}

#[derive(Clone)]
pub struct WindowSettings {
    pub allow_self_approval: bool,
    pub webhook: Option<http::Uri>,
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Approves, denies, revokes, reviews; changes blocks; reloads.
    Admin,
    /// Requests windows for its own services only.
    Vendor,
    /// Reads.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Vendor => "vendor",
            Role::Viewer => "viewer",
        }
    }
}

/// One person's credential (never shared: KL-玖.二.(二)2).
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token as sent.
    pub token_sha256: [u8; 32],
    pub vendor: Option<String>,
    /// For vendors: the services they may request windows for.
    pub services: Vec<String>,
}

/// Whether loading may write files (the quickstart's self-signed certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `menshen check`: read only; a missing self-signed-if-missing cert is a warning.
    Check,
    /// `menshen run`: generate the quickstart certificate when asked and missing.
    Run,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Key path, such as `service[1].upstream`; empty for whole-file problems.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Read, parse and validate a config file.
pub fn load(path: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: file.clone(), key: String::new(), reason: format!("cannot read: {e}") }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let raw = parse(&file, &text)?;
    let mut cfg = validate::validate(raw, path, &base, mode)?;
    cfg.digest = blake3::hash(text.as_bytes()).to_hex().to_string();
    cfg.text = text;
    Ok(cfg)
}

impl Config {
    /// The settings a running gateway cannot change without a restart, as
    /// (key, value shown to the admin). A reload that changes one is refused whole.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        let g = &self.gateway;
        let l = &self.log;
        let opt = |v: Option<String>| v.unwrap_or_else(|| "(unset)".into());
        vec![
            ("gateway.name", g.name.clone()),
            ("gateway.timezone", g.timezone_name.clone()),
            ("gateway.state_dir", g.state_dir.display().to_string()),
            ("gateway.metrics_bind", opt(g.metrics_bind.map(|a| a.to_string()))),
            ("tls.min_version", format!("{:?}", self.tls.min_version)),
            ("tls.handshake_timeout", format!("{:?}", self.tls.handshake_timeout)),
            ("log.dir", l.dir.display().to_string()),
            ("log.retention_days", l.retention_days.to_string()),
            ("log.max_disk", l.max_disk.to_string()),
            ("log.max_file", l.max_file.to_string()),
            ("log.sync", format!("{:?}", l.sync)),
            ("log.on_full", format!("{:?}", l.on_full)),
            ("log.http_requests", l.http_requests.to_string()),
            ("log.syslog", opt(l.syslog.as_ref().map(|t| format!("{t:?}")))),
            ("admin", if self.admin.is_some() { "present".into() } else { "absent".into() }),
            ("admin.bind", opt(self.admin.as_ref().map(|a| a.bind.to_string()))),
            // A webhook URL often carries its secret: compared by digest, never shown.
            ("limits.header_read_timeout", format!("{:?}", self.limits.header_read_timeout)),
            ("limits.max_request_head", self.limits.max_request_head.to_string()),
            ("limits.max_headers", self.limits.max_headers.to_string()),
            ("limits.h2_max_streams", self.limits.h2_max_streams.to_string()),
            ("limits.h2_max_header_list", self.limits.h2_max_header_list.to_string()),
            ("limits.h2_max_pending_resets", self.limits.h2_max_pending_resets.to_string()),
            ("windows.webhook", opt(self.windows.webhook.as_ref().map(|u| secret_digest(&u.to_string())))),
        ]
    }
}

/// Stands for a secret in comparisons and messages.
fn secret_digest(s: &str) -> String {
    format!("(a value with digest {})", &blake3::hash(s.as_bytes()).to_hex()[..12])
}

/// The restart-only settings `new` changes from `running` (see [`Config::restart_only`]),
/// each as an error naming the key.
pub fn restart_only_changes(running: &[(&'static str, String)], new: &Config) -> Vec<ConfigError> {
    let file = new.path.display().to_string();
    running
        .iter()
        .zip(new.restart_only())
        .filter(|((_, old), (_, now))| old != now)
        .map(|((key, old), (_, now))| ConfigError {
            file: file.clone(),
            key: (*key).to_string(),
            reason: format!("changed from {old} to {now}: this setting takes a restart (systemctl restart menshen)"),
        })
        .collect()
}

/// Parse TOML into the raw structs; a serde error names the key path and line.
fn parse(file: &str, text: &str) -> Result<raw::RawConfig, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
        let reason = match line {
            Some(l) => format!("{} (line {l})", inner.message()),
            None => inner.message().to_string(),
        };
        let key = if key == "." { String::new() } else { key };
        ConfigErrors(vec![ConfigError { file: file.to_string(), key, reason }])
    })
}
