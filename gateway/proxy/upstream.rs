//! An upstream a service forwards to: its address and a pooled HTTP client for it.

use super::ProxyBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub type HttpClient = Client<HttpsConnector<Budgeted>, ProxyBody>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    /// Layer 4 (tcp listeners): bytes relayed as they are.
    Tcp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        }
    }
}

/// Where a service's requests go, with the client that keeps its connections alive.
pub struct Upstream {
    pub scheme: Scheme,
    /// `host:port` as written (the host may be a name resolved at connect time).
    pub authority: http::uri::Authority,
    /// The host when it is an IP literal: used to check the service's zone.
    pub ip: Option<IpAddr>,
    pub client: HttpClient,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority)
    }
}

/// How long a connection attempt to an upstream may take before a 502/504.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Upstream {
    /// Parse `http://host:port`, `https://host:port` or `tcp://host:port` (no path).
    /// `tls` verifies https upstreams; `server_name` overrides the name checked in the
    /// upstream's certificate. (A tcp upstream's HTTP client is never used.)
    pub fn new(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some("tcp") => Scheme::Tcp,
            _ => return Err("must start with http://, https:// or tcp://".into()),
        };
        if scheme == Scheme::Tcp && uri.port_u16().is_none() {
            return Err("needs a port (tcp://HOST:PORT)".into());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must not have a path or query (requests keep their own)".into());
        }
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry user info".into());
        }
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        // getaddrinfo reads `3232235796`, `0xC0A80114` or `0300.0250.1.20` as addresses:
        // such a "name" would pass unchecked by the zone rules. Only real names or
        // canonical IP literals.
        let numeric = host.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
            && host.bytes().any(|b| b.is_ascii_digit());
        if ip.is_none() && numeric {
            return Err(format!("host {host:?} looks like a numeric address in a non-canonical form: write the IP address (e.g. 192.168.1.20)"));
        }
        let authority: http::uri::Authority = match ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{host}:{port}"),
        }
        .parse()
        .map_err(|e| format!("bad host ({e})"))?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls).clone()).https_or_http();
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(Budgeted(http));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // Enough idle connections for an HTTP/2 client's concurrent streams (100 per
            // connection, several connections) without reconnecting each time.
            .pool_max_idle_per_host(512)
            .set_host(false)
            .build(connector);
        Ok(Upstream { scheme, authority, ip, client })
    }
}

// === impl Budgeted ===

/// The upstream connector, with the descriptor budget: every socket it opens holds a
/// permit from [`crate::listener::limits::upstream_socket`] until it is closed, and
/// none is opened without one (the request then fails at once with a 502).
#[derive(Clone)]
pub struct Budgeted(HttpConnector);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Budgeted {
    type Response = BudgetedStream;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<BudgetedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let permit = crate::listener::limits::upstream_socket();
        let connect = self.0.call(uri);
        Box::pin(async move {
            let permit = permit?;
            let io = connect.await?;
            Ok(BudgetedStream { io, _permit: permit })
        })
    }
}

/// An upstream socket and its share of the descriptor budget.
pub struct BudgetedStream {
    io: hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl hyper_util::client::legacy::connect::Connection for BudgetedStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for BudgetedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for BudgetedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
