//! Accept loops and the life of one client connection, in named phases:
//!
//! ```text
//! admit (blocked?) ─▶ sniff (TLS record?) ─▶ hello (SNI) ─▶ decide ─▶ handshake ─▶ serve
//!   deny: blocked      deny: tls-required      no-route…      deny      tls-version     conn.close
//! ```
//! Every exit writes `conn.open` (denials included); an allowed connection writes
//! `conn.close` when its [`ConnRecord`] drops, whatever path it leaves by.

pub(crate) mod conn;
pub mod io;
pub mod limits;
pub mod proxy_protocol;
pub mod refusals;
pub(crate) mod tcp;

pub use conn::{CloseReason, ConnRecord};

use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::policy::Policy;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections the kernel may queue for `accept` on one listener (capped by
/// `net.core.somaxconn`, 4096 by default). Tokio's default of 1024 overflows under a
/// burst of a few thousand connections: the kernel then drops the client's ACK and the
/// connection is only queued seconds later, when a SYN-ACK retransmission gets through.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind a listening socket with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it, so a restart can bind again at once).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// State every connection task shares. Built once at start.
pub struct Shared {
    /// The decision state; swapped whole, never edited (the window manager and,
    /// later, reloads store new snapshots).
    pub policy: Arc<ArcSwap<Policy>>,
    pub tls: Arc<rustls::ServerConfig>,
    pub log: AuditLog,
    pub metrics: Arc<Metrics>,
    /// The HTTP server settings (limits, timer) shared by all connections.
    /// HTTP/1.1 (its header read timeout starts when the connection does).
    pub h1: hyper::server::conn::http1::Builder,
    /// HTTP/2, for clients that chose `h2` by ALPN.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    pub handshake_timeout: Duration,
    pub log_http_requests: bool,
    /// Cancelled at shutdown: stop accepting, finish in-flight requests.
    pub draining: CancellationToken,
    /// Cancelled when the drain deadline passes: cut what is left.
    pub stop_now: CancellationToken,
    /// Every connection task and upgraded stream, so shutdown knows when all are done.
    pub tasks: TaskTracker,
    /// Connection caps and rates.
    pub limits: Arc<limits::Limits>,
    /// Refusals before a byte is read, counted per source while it floods.
    pub refusals: refusals::Refusals,
    /// Next connection id: start time in ms times 10^6, so ids do not repeat across restarts.
    next_conn: AtomicU64,
    /// Every allowed connection still open, by id: a reload re-decides them.
    live: Mutex<HashMap<u64, Weak<ConnRecord>>>,
    /// Bumped by each reload after its new snapshot is in place.
    generation: AtomicU64,
}

impl Shared {
    pub fn new(
        policy: Policy,
        tls: Arc<rustls::ServerConfig>,
        log: AuditLog,
        metrics: Arc<Metrics>,
        handshake_timeout: Duration,
        log_http_requests: bool,
        l: crate::config::LimitSettings,
    ) -> Arc<Self> {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(l.header_read_timeout)
            .max_header_size(l.max_request_head)
            .max_headers(l.max_headers);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(l.h2_max_streams)
            .max_header_list_size(l.h2_max_header_list)
            // Rapid reset (CVE-2023-44487): a client that resets streams faster than
            // they are taken gets GOAWAY ENHANCE_YOUR_CALM.
            .max_pending_accept_reset_streams(l.h2_max_pending_resets)
            // No keep-alive pings: they would count as traffic and keep an idle
            // connection from ever reaching its idle timeout, which closes dead peers.
            .keep_alive_interval(None);
        let start_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
        Arc::new(Shared {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            tls,
            log,
            metrics,
            h1,
            h2,
            handshake_timeout,
            log_http_requests,
            limits: limits::Limits::new(l),
            refusals: refusals::Refusals::default(),
            draining: CancellationToken::new(),
            stop_now: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_conn: AtomicU64::new(start_ms.saturating_mul(1_000_000)),
            live: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Read before a connection's deciding snapshot is loaded; see
    /// [`ConnRecord::recheck_if_stale`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn register(&self, record: &Arc<ConnRecord>) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(record.conn, Arc::downgrade(record));
    }

    fn unregister(&self, conn: u64) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn);
    }

    /// The allowed connections open now (those already closing are skipped).
    pub fn live_connections(&self) -> Vec<Arc<ConnRecord>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().filter_map(Weak::upgrade).collect()
    }
}

/// Accept connections for the listener called `name` until shutdown or `stop` (a reload
/// that removes it); each connection gets its own task. Returns the socket, so a reload
/// can hand it to a listener renamed on the same address without closing it.
pub async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) -> TcpListener {
    loop {
        let accepted = tokio::select! {
            _ = shared.draining.cancelled() => break,
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared2 = shared.clone();
                shared.tasks.spawn(conn::handle(stream, peer, name.clone(), shared2));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    listener
}
