//! The HTTP reverse proxy for one allowed connection.
//!
//! Per request: route check (exactly one host, from Host / `:authority`; it must belong
//! to the connection's service, else 421) -> framing check (no transfer coding but
//! `chunked`) -> rewrite (hop-by-hop headers out, client-sent forwarding headers and
//! their `_` look-alikes out, the real client in `X-Forwarded-For` / `Forwarded`) ->
//! forward (timeout: 504, unreachable: 502, the client's body broke: 400) -> respond
//! (HSTS added) -> log `http.request` when the response body ends or is abandoned.

use super::request::{client_body_failed, request_host, strip_lookalikes, transfer_coding_is_chunked_only};
use crate::audit::{Event, HttpRequest};
use crate::listener::{CloseReason, ConnRecord};
use crate::policy::{Policy, ServiceId};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

const HSTS: &str = "max-age=31536000";

/// Headers that describe one hop and never pass a proxy (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Forwarding headers a client might send to pose as someone else: never trusted,
/// always replaced.
const CLIENT_FORWARDING: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    header::FORWARDED,
    X_REAL_IP,
];

/// Serves the requests of one connection. Cloned per request (one `Arc`).
#[derive(Clone)]
pub struct Handler {
    inner: Arc<Inner>,
}

struct Inner {
    record: Arc<ConnRecord>,
    /// The forwarding headers for this client, made once per connection.
    forwarding: Forwarding,
    /// Metric handles looked up once per connection, not per request.
    metrics: Arc<RequestMetrics>,
    /// The snapshot the connection was admitted under: it keeps its decision.
    policy: Arc<Policy>,
    service: ServiceId,
}

impl Handler {
    pub fn new(record: Arc<ConnRecord>, policy: Arc<Policy>, service: ServiceId) -> Self {
        let m = &record.shared().metrics;
        let metrics = Arc::new(RequestMetrics {
            duration: m.http_duration.with_label_values(&[&record.service]),
            ok: m.http_requests.with_label_values(&[&record.service, "200"]),
        });
        let forwarding = Forwarding::new(record.src, &policy.services[service].hosts);
        Handler { inner: Arc::new(Inner { record, policy, service, metrics, forwarding }) }
    }

    pub async fn handle(self, mut req: Request<Incoming>) -> Result<Response<RespBody>, Infallible> {
        let started = Instant::now();
        let inner = &self.inner;
        let svc = &inner.policy.services[inner.service];
        let host = request_host(&req);
        let mut log = RequestLog {
            record: inner.record.clone(),
            metrics: inner.metrics.clone(),
            method: req.method().as_str().to_owned(),
            host: host.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
            path: req.uri().path().to_owned(),
            status: 0,
            started,
            bytes: 0,
            done: false,
        };

        // Route: one unambiguous host, and it must be one of this connection's service
        // (chosen by SNI).
        let host = match host {
            Ok(h) => h,
            Err(msg) => return Ok(local(StatusCode::BAD_REQUEST, msg, log)),
        };
        let Some(host_index) = svc.hosts.iter().position(|s| *s == host.name) else {
            return Ok(local(
                StatusCode::MISDIRECTED_REQUEST,
                "421 Misdirected Request: this host is not served on this connection\n",
                log,
            ));
        };
        if req.method() == Method::CONNECT {
            return Ok(local(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed: CONNECT is not proxied\n", log));
        }
        // Framing: hyper has de-chunked the body; any other coding would reach the
        // upstream still applied but no longer declared.
        if !transfer_coding_is_chunked_only(req.headers()) {
            return Ok(local(
                StatusCode::NOT_IMPLEMENTED,
                "501 Not Implemented: only the chunked transfer coding is accepted\n",
                log,
            ));
        }

        let upgrade = wants_upgrade(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        // Rewrite.
        let (mut parts, body) = req.into_parts();
        let upstream = &svc.upstream;
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = match http::Uri::builder()
            .scheme(upstream.scheme.as_str())
            .authority(upstream.authority.clone())
            .path_and_query(pq)
            .build()
        {
            Ok(u) => u,
            Err(_) => return Ok(local(StatusCode::BAD_REQUEST, "400 Bad Request: unusable request target\n", log)),
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        for h in CLIENT_FORWARDING {
            parts.headers.remove(h);
        }
        strip_lookalikes(
            &mut parts.headers,
            &[&HOP_BY_HOP, &CLIENT_FORWARDING, &[header::HOST, header::CONTENT_LENGTH]],
        );
        let h = &mut parts.headers;
        let fwd = &inner.forwarding;
        h.insert(header::HOST, host.value);
        h.insert(X_FORWARDED_FOR, fwd.src.clone());
        h.insert(X_REAL_IP, fwd.src.clone());
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        if let Some((xfh, forwarded)) = fwd.per_host.get(host_index) {
            h.insert(X_FORWARDED_HOST, xfh.clone());
            h.insert(header::FORWARDED, forwarded.clone());
        }
        if let Some(proto) = &upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, proto.clone());
        }

        // Forward.
        let sent =
            tokio::time::timeout(svc.upstream_timeout, upstream.client.request(Request::from_parts(parts, body))).await;
        let mut resp = match sent {
            Err(_) => {
                tracing::info!(conn = inner.record.conn, service = %svc.name, "upstream timed out");
                return Ok(local(
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 Gateway Timeout: the upstream did not answer in time\n",
                    log,
                ));
            }
            Ok(Err(e)) if client_body_failed(&e) => {
                // The client's body broke off or was malformed (e.g. a bad chunk size):
                // the client's fault, not the upstream's, whatever the metric and the log
                // would otherwise say.
                tracing::info!(conn = inner.record.conn, service = %svc.name, error = %e, "client body failed");
                return Ok(local(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: the request body is malformed or cut off\n",
                    log,
                ));
            }
            Ok(Err(e)) => {
                tracing::info!(conn = inner.record.conn, service = %svc.name, error = %e, "upstream failed");
                let msg = if e.is_connect() {
                    "502 Bad Gateway: the upstream is unreachable\n"
                } else {
                    "502 Bad Gateway: the upstream failed\n"
                };
                return Ok(local(StatusCode::BAD_GATEWAY, msg, log));
            }
            Ok(Ok(resp)) => resp,
        };
        if let Some(info) = resp.extensions().get::<HttpInfo>() {
            let _ = inner.record.upstream.set(info.remote_addr());
        }

        // Respond.
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Tunnel only the WebSocket the client asked for; any other 101 is refused.
            let websocket =
                resp.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            match client_upgrade {
                Some(client_upgrade) if websocket => {
                    let upstream_upgrade = hyper::upgrade::on(&mut resp);
                    tunnel(inner.record.clone(), client_upgrade, upstream_upgrade);
                }
                _ => {
                    tracing::warn!(conn = inner.record.conn, service = %svc.name, "upstream switched protocols without a WebSocket request");
                    return Ok(local(
                        StatusCode::BAD_GATEWAY,
                        "502 Bad Gateway: the upstream switched protocols\n",
                        log,
                    ));
                }
            }
        } else {
            strip_hop_by_hop(resp.headers_mut());
        }
        resp.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY).or_insert(HeaderValue::from_static(HSTS));
        log.status = status.as_u16();
        Ok(resp.map(|b| RespBody { kind: Kind::Upstream(b), log }))
    }
}

/// `X-Forwarded-For` / `X-Real-IP`, and per service host `X-Forwarded-Host` and
/// `Forwarded`: the real client, never what it claimed.
struct Forwarding {
    src: HeaderValue,
    /// Indexed like the service's `hosts`.
    per_host: Vec<(HeaderValue, HeaderValue)>,
}

impl Forwarding {
    fn new(src: std::net::IpAddr, hosts: &[String]) -> Self {
        let per_host = hosts
            .iter()
            .map(|h| {
                let forwarded = match src {
                    std::net::IpAddr::V4(a) => format!("for={a};proto=https;host={h}"),
                    std::net::IpAddr::V6(a) => format!("for=\"[{a}]\";proto=https;host={h}"),
                };
                // Hosts are validated DNS names, so both are valid header values; the
                // fallback only keeps the indexes aligned with `hosts`.
                let unknown = || HeaderValue::from_static("unknown");
                (
                    HeaderValue::from_str(h).unwrap_or_else(|_| unknown()),
                    HeaderValue::from_str(&forwarded).unwrap_or_else(|_| unknown()),
                )
            })
            .collect();
        Forwarding { src: ip_header(src), per_host }
    }
}

fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    // An address's text form is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// `Some(protocol)` when an HTTP/1.1 request asks to switch protocols (WebSocket).
///
/// Only WebSocket (a GET with `Upgrade: websocket` and a `Sec-WebSocket-Key`): any
/// other protocol (h2c, …) would become an opaque tunnel past the per-request Host
/// check and the request log, so its Upgrade header is dropped instead.
fn wants_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || req.method() != Method::GET {
        return None;
    }
    let websocket = req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !websocket || !req.headers().contains_key(header::SEC_WEBSOCKET_KEY) {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Remove hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for h in named {
            headers.remove(h);
        }
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Join the client's and the upstream's upgraded streams until either side ends.
fn tunnel(record: Arc<ConnRecord>, client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let shared = record.shared().clone();
    shared.tasks.spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(conn = record.conn, error = %e, "upgrade failed");
                record.set_close_reason(CloseReason::Error);
                return;
            }
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if r.is_err() {
                    record.set_close_reason(CloseReason::Error);
                }
            }
            _ = record.must_close() => {}
            _ = record.idle_for(record.idle) => record.set_close_reason(CloseReason::Idle),
        }
    });
}

/// A response made by the gateway itself.
fn local(status: StatusCode, msg: &'static str, mut log: RequestLog) -> Response<RespBody> {
    log.status = status.as_u16();
    let mut resp = Response::new(RespBody { kind: Kind::Local(Some(Bytes::from_static(msg.as_bytes()))), log });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    resp
}

/// What `http.request` needs; written once, when the body ends or is dropped.
/// The service's request metrics; the common status (200) pre-resolved.
struct RequestMetrics {
    duration: prometheus::Histogram,
    ok: prometheus::IntCounter,
}

struct RequestLog {
    record: Arc<ConnRecord>,
    metrics: Arc<RequestMetrics>,
    method: String,
    host: String,
    path: String,
    status: u16,
    started: Instant,
    bytes: u64,
    done: bool,
}

impl RequestLog {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let r = &self.record;
        let shared = r.shared();
        let elapsed = self.started.elapsed();
        let m = &shared.metrics;
        if self.status == 200 {
            self.metrics.ok.inc();
        } else {
            m.http_requests.with_label_values(&[&r.service, &self.status.to_string()]).inc();
        }
        self.metrics.duration.observe(elapsed.as_secs_f64());
        if shared.log_http_requests {
            shared.log.record_detached(Event::HttpRequest(HttpRequest {
                conn: r.conn,
                service: r.service.clone(),
                src_ip: r.src,
                method: std::mem::take(&mut self.method),
                host: std::mem::take(&mut self.host),
                path: std::mem::take(&mut self.path),
                status: self.status,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                bytes_out: self.bytes,
            }));
        }
    }
}

/// The response body: the upstream's, streamed, or the gateway's own message.
pub struct RespBody {
    kind: Kind,
    log: RequestLog,
}

enum Kind {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
            Kind::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.log.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.log.record.set_close_reason(CloseReason::Upstream);
                this.log.finish();
            }
            Poll::Ready(None) => this.log.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Local(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // The client went away (or the body was never polled): still one record.
        self.log.finish();
    }
}
