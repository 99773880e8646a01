//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Nothing here is interpreted; `super::validate` turns these into runtime types.
//! Every struct denies unknown fields: a misspelled key in a security gateway is an
//! error, never a silent default.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: RawGateway,
    pub tls: RawTls,
    #[serde(default)]
    pub log: RawLog,
    /// Named sets of CIDRs; `blocked` is special (refused first, everywhere).
    #[serde(default)]
    pub ip_sets: BTreeMap<String, Vec<String>>,
    /// Networks of each zone; `wan` is implicit (everything not listed).
    #[serde(default)]
    pub zones: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "zone_rule")]
    pub zone_rules: Vec<RawZoneRule>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "service")]
    pub services: Vec<RawService>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub windows: RawWindows,
    #[serde(default, rename = "account")]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub limits: RawLimits,
}

/// What one client may take; every key has a safe default (README "Limits").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<u32>,
    pub max_connections_per_source: Option<u32>,
    pub new_connections_per_source: Option<u32>,
    pub new_connections_burst: Option<u32>,
    pub header_read_timeout: Option<String>,
    pub max_request_head: Option<String>,
    pub max_headers: Option<u32>,
    pub h2_max_streams: Option<u32>,
    pub h2_max_header_list: Option<String>,
    pub h2_max_pending_resets: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: String,
    /// Set names or CIDRs that may reach the admin listener at all.
    pub allow: Vec<String>,
    /// Failed logins (per account and per source) before a lockout (DH-1.13.6).
    pub lockout_failures: Option<u32>,
    /// The span in which those failures count.
    pub lockout_window: Option<String>,
    /// How long a lockout lasts.
    pub lockout_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindows {
    #[serde(default)]
    pub allow_self_approval: bool,
    pub webhook: Option<String>,
    /// Widest IPv4 source a window may open (default 24: a /24).
    pub max_source_prefix_v4: Option<u8>,
    /// Widest IPv6 source a window may open (default 56).
    pub max_source_prefix_v6: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub name: String,
    pub role: String,
    pub token_sha256: String,
    pub vendor: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub name: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// How long a graceful stop waits for in-flight requests.
    pub drain_timeout: Option<String>,
    /// Plain-HTTP `/metrics` for a Prometheus on this host (loopback addresses only).
    pub metrics_bind: Option<String>,
}

fn default_timezone() -> String {
    "Asia/Taipei".into()
}

fn default_state_dir() -> String {
    "state".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    pub min_version: Option<String>,
    pub handshake_timeout: Option<String>,
    /// Generate a self-signed cert into `state_dir` when cert/key are missing
    /// (quickstart only; a loud warning at start).
    #[serde(default)]
    pub self_signed_if_missing: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub dir: Option<String>,
    pub retention_days: Option<i64>,
    pub max_disk: Option<String>,
    pub max_file: Option<String>,
    pub sync: Option<String>,
    pub on_full: Option<String>,
    pub http_requests: Option<bool>,
    /// `tcp://host:port` or `tls://host:port`: an RFC 5424 copy of every record.
    pub syslog: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZoneRule {
    pub from: String,
    pub to: String,
    pub access: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub bind: String,
    pub zone: String,
    pub kind: String,
    /// Peers (set names or CIDRs) whose connections start with a PROXY v1/v2 header.
    pub proxy_protocol: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub listener: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub upstream: String,
    pub zone: String,
    #[serde(default)]
    pub allow: Vec<String>,
    pub window_max: Option<String>,
    pub idle_timeout: Option<String>,
    /// PEM CA bundle that verifies an `https://` upstream instead of the system roots.
    pub upstream_ca: Option<String>,
    /// Name checked in the upstream's certificate (default: the upstream URL's host).
    pub upstream_server_name: Option<String>,
    /// How long to wait for the upstream's response headers (tcp: to connect).
    pub upstream_timeout: Option<String>,
    /// tcp services: what the client must speak first: ssh, tls, rdp-tls, none.
    pub guard: Option<String>,
    /// tcp services: "v2" sends a PROXY v2 header to the upstream.
    pub send_proxy: Option<String>,
}
