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
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConnOpen(_) => "conn.open",
            Event::ConnClose(_) => "conn.close",
            Event::HttpRequest(_) => "http.request",
            Event::GatewayStart(_) => "gateway.start",
            Event::GatewayStop(_) => "gateway.stop",
        }
    }

    pub(super) fn write_fields(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Event::ConnOpen(e) => serde_json::to_writer(out, e),
            Event::ConnClose(e) => serde_json::to_writer(out, e),
            Event::HttpRequest(e) => serde_json::to_writer(out, e),
            Event::GatewayStart(e) => serde_json::to_writer(out, e),
            Event::GatewayStop(e) => serde_json::to_writer(out, e),
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
    pub listeners: Vec<String>,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayStop {
    pub version: &'static str,
    pub reason: &'static str,
    /// Connections still open when the drain deadline passed (cut).
    pub cut_connections: u64,
}
