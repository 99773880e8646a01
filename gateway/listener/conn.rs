//! One client connection: admit, sniff, read the ClientHello, decide, handshake, serve.

use super::io::{ByteCounts, Counted};
use super::Shared;
use crate::audit::{ConnClose, ConnOpen, Event};
use crate::policy::{self, Decision, ListenerId, Policy, Reason};
use crate::proxy;
use crate::proxy::guard::Guard;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;

/// Why an allowed connection ended; the names are the log's `close_reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    Client = 1,
    Upstream,
    Idle,
    WindowEnded,
    Blocked,
    Reload,
    Shutdown,
    Error,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Upstream => "upstream",
            CloseReason::Idle => "idle",
            CloseReason::WindowEnded => "window-ended",
            CloseReason::Blocked => "blocked",
            CloseReason::Reload => "reload",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            2 => CloseReason::Upstream,
            3 => CloseReason::Idle,
            4 => CloseReason::WindowEnded,
            5 => CloseReason::Blocked,
            6 => CloseReason::Reload,
            7 => CloseReason::Shutdown,
            8 => CloseReason::Error,
            _ => CloseReason::Client,
        }
    }
}

/// The client side of a connection, as the log names it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub conn: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: SocketAddr,
    /// The trusted proxy that sent a PROXY header naming `src`, if one did.
    pub via: Option<IpAddr>,
}

/// An allowed connection. Dropping the last reference writes `conn.close`, so the
/// record is written on every exit path, upgraded streams included.
pub struct ConnRecord {
    pub conn: u64,
    pub listener: String,
    pub service: String,
    pub src: IpAddr,
    pub src_port: u16,
    start: jiff::Timestamp,
    started: Instant,
    pub counts: Arc<ByteCounts>,
    /// The first reason set wins; unset means the client closed.
    close_reason: AtomicU8,
    /// The upstream's address, once a request has reached it.
    pub upstream: OnceLock<SocketAddr>,
    /// Cancelled when the window this connection rides closes; never for others.
    pub cut: CancellationToken,
    /// The windows whose end closes this connection: the one it came in by, and any a
    /// reload moved it onto.
    rides: std::sync::Mutex<Vec<Arc<str>>>,
    /// Cancelled (after the close reason is set) when a reload or a block takes this
    /// connection's access away; also when the record drops, to end any watcher.
    revoked: CancellationToken,
    /// The TLS server name the connection was decided on, to decide it again on reload.
    pub sni: Option<String>,
    /// The load balancer whose PROXY header named `src`: a reload that stops trusting
    /// it cuts the connection.
    via: Option<IpAddr>,
    /// The service's protocol guard when the connection was decided (tcp services): a
    /// reload that asks for a stricter one cuts a connection the new guard never read.
    guard: Option<Guard>,
    /// Its place under the connection caps, given back when the record drops.
    slot: OnceLock<super::limits::Slot>,
    /// The service's idle timeout.
    pub idle: Duration,
    shared: Arc<Shared>,
}

impl ConnRecord {
    /// Start the record of an allowed connection (counted as active, and listed for
    /// reloads, until dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: &Arc<Shared>,
        conn: u64,
        listener: String,
        service: String,
        (src, src_port, via): (IpAddr, u16, Option<IpAddr>),
        sni: Option<String>,
        guard: Option<Guard>,
        counts: Arc<ByteCounts>,
        window: Option<&policy::OpenWindow>,
        idle: Duration,
    ) -> Arc<Self> {
        shared.metrics.connections_active.with_label_values(&[&listener, &service]).inc();
        let record = Arc::new(ConnRecord {
            conn,
            listener,
            service,
            src,
            src_port,
            start: jiff::Timestamp::now(),
            started: Instant::now(),
            counts,
            close_reason: AtomicU8::new(0),
            upstream: OnceLock::new(),
            cut: window.map(|w| w.cut.clone()).unwrap_or_default(),
            rides: std::sync::Mutex::new(window.map(|w| w.id.clone()).into_iter().collect()),
            revoked: CancellationToken::new(),
            sni,
            via,
            guard,
            slot: OnceLock::new(),
            idle,
            shared: shared.clone(),
        });
        shared.register(&record);
        record
    }

    /// Whether `policy` still lets this connection reach the same service; one that now
    /// rides a window is also cut when that window ends. (Reloads ask this.)
    pub fn allowed_by(self: &Arc<Self>, policy: &Policy, now: jiff::Timestamp) -> bool {
        let Some(lid) = policy.listener_id(&self.listener) else {
            return false;
        };
        // Came through a load balancer: it must still be trusted on this listener.
        if let Some(via) = self.via {
            if !policy.listeners[lid].proxy_protocol.as_ref().is_some_and(|t| t.set.contains(via)) {
                return false;
            }
        }
        let info = policy::ConnInfo { listener: lid, src: self.src, sni: self.sni.as_deref() };
        let d = policy::decide(policy, &info, now);
        let Some(service) = d.service.map(|s| &policy.services[s]) else {
            return false;
        };
        if !d.allowed() || service.name != self.service {
            return false;
        }
        // The same guard, or none needed any more (a tcp service stays a tcp service).
        let guard_ok = service.guard == self.guard || (self.guard.is_some() && service.guard == Some(Guard::None));
        if !guard_ok {
            return false;
        }
        if let Some(w) = d.window.and_then(|w| policy.windows.get(w)) {
            self.also_cut_by(w);
        }
        true
    }

    /// A connection decided on a snapshot of reload generation `decided_in` may have
    /// registered after that reload re-checked the live connections: check it here.
    pub fn recheck_if_stale(self: &Arc<Self>, decided_in: u64) {
        if self.shared.generation() != decided_in
            && !self.allowed_by(&self.shared.policy.load_full(), jiff::Timestamp::now())
        {
            self.revoke(CloseReason::Reload);
        }
    }

    /// Close this connection now for `reason` (a reload or a block took its access).
    pub fn revoke(&self, reason: CloseReason) {
        self.set_close_reason(reason);
        self.revoked.cancel();
    }

    /// From now on, also close when `window` ends (a reload moved this connection's
    /// access onto a window). The watcher holds no strong reference: it never keeps a
    /// closed connection's record, or its `conn.close`, waiting.
    pub fn also_cut_by(self: &Arc<Self>, window: &policy::OpenWindow) {
        {
            let mut rides = self.rides.lock().unwrap_or_else(|p| p.into_inner());
            if rides.contains(&window.id) {
                return;
            }
            rides.push(window.id.clone());
        }
        let window = window.cut.clone();
        let record = Arc::downgrade(self);
        let done = self.revoked.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = window.cancelled() => {
                    if let Some(r) = record.upgrade() {
                        r.shared.metrics.window_cuts.inc();
                        r.revoke(CloseReason::WindowEnded);
                    }
                }
                _ = done.cancelled() => {}
            }
        });
    }

    /// Keep `slot` (the connection caps) for as long as this connection lives, upgraded
    /// tunnels included.
    pub fn hold(&self, slot: super::limits::Slot) {
        let _ = self.slot.set(slot);
    }

    /// When the connection was accepted.
    pub fn start(&self) -> jiff::Timestamp {
        self.start
    }

    pub fn set_close_reason(&self, r: CloseReason) {
        let _ = self.close_reason.compare_exchange(0, r as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Resolves once no byte has moved either way for `idle` (checked a few times per
    /// period, from the byte counters: nothing is timed on the data path).
    pub async fn idle_for(&self, idle: Duration) {
        let check = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        let mut last = self.counts.total();
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(check).await;
            let total = self.counts.total();
            if total != last {
                last = total;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= idle {
                return;
            }
        }
    }

    /// Resolves when the connection must close now: shutdown's deadline, or the end
    /// of its window (then the close reason says so and the cut is counted).
    pub async fn must_close(&self) {
        tokio::select! {
            _ = self.shared.stop_now.cancelled() => self.set_close_reason(CloseReason::Shutdown),
            _ = self.cut.cancelled() => {
                self.set_close_reason(CloseReason::WindowEnded);
                self.shared.metrics.window_cuts.inc();
            }
            _ = self.revoked.cancelled() => {}
        }
    }
}

impl Drop for ConnRecord {
    fn drop(&mut self) {
        self.shared.unregister(self.conn);
        self.revoked.cancel();
        let end = jiff::Timestamp::now();
        let m = &self.shared.metrics;
        m.connections_active.with_label_values(&[&self.listener, &self.service]).dec();
        let bytes_in = self.counts.read.load(Ordering::Relaxed);
        let bytes_out = self.counts.written.load(Ordering::Relaxed);
        m.bytes.with_label_values(&[&self.service, "in"]).inc_by(bytes_in);
        m.bytes.with_label_values(&[&self.service, "out"]).inc_by(bytes_out);
        let upstream = self.upstream.get();
        self.shared.log.record_detached(Event::ConnClose(ConnClose {
            conn: self.conn,
            listener: self.listener.clone(),
            service: Some(self.service.clone()),
            src_ip: self.src,
            src_port: self.src_port,
            start: self.shared.log.format_ts(self.start),
            end: self.shared.log.format_ts(end),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_in,
            bytes_out,
            close_reason: CloseReason::from_u8(self.close_reason.load(Ordering::Relaxed)).as_str(),
            upstream_ip: upstream.map(|a| a.ip()),
            upstream_port: upstream.map(|a| a.port()),
        }));
    }
}

/// What the pre-serve phases learned, for the `conn.open` record.
#[derive(Default)]
pub(crate) struct Hello {
    /// The reload generation read before the deciding snapshot was loaded.
    pub generation: u64,
    pub proto: &'static str,
    pub sni: Option<String>,
    pub tls_version: Option<&'static str>,
}

pub(super) async fn handle(stream: TcpStream, peer: SocketAddr, name: Arc<str>, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut policy = shared.policy.load_full();
    let mut peer = Peer {
        conn: shared.next_conn_id(),
        src: policy::normalize(peer.ip()),
        src_port: peer.port(),
        dst: stream.local_addr().unwrap_or(peer),
        via: None,
    };
    // A reload may have removed the listener since this connection was accepted.
    let Some(mut lid) = policy.listener_id(&name) else {
        return removed_listener(&shared, &policy, &name, &peer).await;
    };
    let zone_from = policy.listeners[lid].zone;

    // Phase admit: no unlogged traffic. While the log cannot take records (full, or
    // failing, with on_full = refuse) new connections are refused, counted in metrics
    // only: there is nowhere to write their record.
    if shared.log.refuses_connections() {
        let name = &policy.listeners[lid].name;
        shared.metrics.connections.with_label_values(&[name, "", "deny", Reason::LogFull.as_str()]).inc();
        return;
    }
    // Behind a trusted load balancer the client's address comes from its PROXY header.
    if let Some(trusted) = &policy.listeners[lid].proxy_protocol {
        if trusted.set.contains(peer.src) {
            let read = tokio::time::timeout(shared.handshake_timeout, read_proxy_header(&stream)).await;
            match read.unwrap_or(Err("no PROXY header in time")) {
                Ok(Some(a)) => {
                    peer.via = Some(peer.src);
                    (peer.src, peer.src_port, peer.dst) = (policy::normalize(a.src.ip()), a.src.port(), a.dst);
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!(conn = peer.conn, why, "PROXY header refused");
                    let hello = Hello { proto: "tcp", ..Hello::default() };
                    let d = Decision::deny(zone_from, Reason::Guard);
                    return record_open(&shared, &policy, lid, &peer, &hello, &d).await;
                }
            }
        }
    }
    // A blocked source is refused before a byte is read.
    if policy.is_blocked(peer.src) {
        return refuse_early(&shared, &policy, lid, &peer, Decision::deny(zone_from, Reason::Blocked)).await;
    }
    // Caps and rates, before the handshake is paid for.
    let slot = match shared.limits.admit(peer.src, true) {
        Ok(slot) => slot,
        Err(over) => {
            tracing::debug!(conn = peer.conn, src = %peer.src, ?over, "over a connection limit");
            return refuse_early(&shared, &policy, lid, &peer, Decision::deny(zone_from, Reason::RateLimited)).await;
        }
    };
    if policy.listeners[lid].kind == policy::ListenerKind::Tcp {
        return super::tcp::handle(stream, peer, lid, policy, shared, slot).await;
    }

    let counts = Arc::new(ByteCounts::default());
    let mut hello = Hello { proto: "tls", ..Hello::default() };
    let outcome = tokio::time::timeout(
        shared.handshake_timeout,
        handshake(stream, counts.clone(), &shared, &mut policy, &mut lid, &peer, &mut hello),
    )
    .await;
    // On timeout, `policy` and `lid` may already be the decision's (newer) snapshot:
    // take the zone from there, never an index from the accept-time snapshot.
    let outcome = outcome.unwrap_or_else(|_| Err(Decision::deny(policy.listeners[lid].zone, Reason::TlsHandshake)));
    let (tls, decision) = match outcome {
        Ok(ok) => ok,
        Err(denied) => {
            if matches!(denied.reason, Reason::TlsHandshake | Reason::TlsVersion) {
                let name = &policy.listeners[lid].name;
                shared.metrics.tls_handshake_failures.with_label_values(&[name, denied.reason.as_str()]).inc();
            }
            return record_open(&shared, &policy, lid, &peer, &hello, &denied).await;
        }
    };
    record_open(&shared, &policy, lid, &peer, &hello, &decision).await;
    let Some(service_id) = decision.service else {
        return;
    };
    let Some(record) = start_record(&shared, &policy, lid, &peer, &hello, &decision, counts) else {
        return;
    };
    record.hold(slot);
    serve(tls, record, policy.clone(), service_id).await;
}

/// The record of a connection just allowed by `d`, or `None` if it must close before a
/// byte is relayed: its window ended, or a reload took its access, since the decision.
pub(crate) fn start_record(
    shared: &Arc<Shared>,
    policy: &Policy,
    lid: ListenerId,
    peer: &Peer,
    hello: &Hello,
    d: &Decision,
    counts: Arc<ByteCounts>,
) -> Option<Arc<ConnRecord>> {
    let service = &policy.services[d.service?];
    let window = d.window.and_then(|w| policy.windows.get(w));
    let record = ConnRecord::new(
        shared,
        peer.conn,
        policy.listeners[lid].name.clone(),
        service.name.clone(),
        (peer.src, peer.src_port, peer.via),
        hello.sni.clone(),
        service.guard,
        counts,
        window,
        service.idle_timeout,
    );
    if record.cut.is_cancelled() {
        record.set_close_reason(CloseReason::WindowEnded);
        return None;
    }
    record.recheck_if_stale(hello.generation);
    (!record.revoked.is_cancelled()).then_some(record)
}

/// Phases sniff, hello, decide and handshake. On refusal, the decision to log.
async fn handshake(
    stream: TcpStream,
    counts: Arc<ByteCounts>,
    shared: &Shared,
    policy: &mut Arc<Policy>,
    lid: &mut ListenerId,
    peer: &Peer,
    hello: &mut Hello,
) -> Result<(TlsStream<Counted<TcpStream>>, Decision), Decision> {
    let zone_from = policy.listeners[*lid].zone;
    let deny = |reason| Decision::deny(zone_from, reason);

    let old_version = sniff(&stream).await.map_err(|(reason, proto)| {
        hello.proto = proto;
        deny(reason)
    })?;
    let version_or = |e: &std::io::Error| tls_failure(old_version, e);

    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), Counted::new(stream, counts))
        .await
        .map_err(|e| {
            tracing::debug!(error = ?e, "client hello refused");
            deny(version_or(&e))
        })?;
    hello.sni = start.client_hello().server_name().map(str::to_owned);

    // Decide on the snapshot of now, not of accept time: a window revoked while the
    // client was slow to send its ClientHello must not let it in.
    // A reload may have renumbered the listeners or removed this one.
    hello.generation = shared.generation();
    let fresh = shared.policy.load_full();
    let Some(fresh_lid) = fresh.listener_id(&policy.listeners[*lid].name) else {
        return Err(deny(Reason::NoRoute));
    };
    // Still an https listener: a reload may have made it a tcp one.
    if fresh.listeners[fresh_lid].kind != policy::ListenerKind::Https {
        return Err(deny(Reason::NoRoute));
    }
    // From here on the connection uses the snapshot it was decided on.
    *policy = fresh;
    *lid = fresh_lid;
    let decision = policy::decide(
        policy,
        &policy::ConnInfo { listener: *lid, src: peer.src, sni: hello.sni.as_deref() },
        jiff::Timestamp::now(),
    );
    if !decision.allowed() {
        return Err(decision);
    }
    let tls = start.into_stream(shared.tls.clone()).await.map_err(|e| Decision {
        action: policy::Action::Deny,
        reason: version_or(&e),
        ..decision
    })?;
    hello.tls_version = tls_version(&tls);
    Ok((tls, decision))
}

/// The negotiated version, as the log names it.
pub(crate) fn tls_version<S>(tls: &TlsStream<S>) -> Option<&'static str> {
    tls.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    })
}

/// Sniff the first bytes without consuming them: a TLS connection starts with a
/// handshake record (0x16). The same peek usually holds the ClientHello's
/// `client_version` (bytes 9-10): below 0x0303 the client cannot speak TLS 1.2, whatever
/// rustls later complains about. Ok(true): an old-version ClientHello. Err: the reason
/// to refuse and the `proto` to log.
pub(crate) async fn sniff(stream: &TcpStream) -> Result<bool, (Reason, &'static str)> {
    let mut head = [0u8; 11];
    match stream.peek(&mut head).await {
        // A PROXY header from a peer the listener does not trust (or a second one).
        Ok(n) if n >= 1 && super::proxy_protocol::looks_like_header(&head[..n]) => Err((Reason::Guard, "tcp")),
        Ok(n) if n >= 1 && head[0] != 0x16 => Err((Reason::TlsRequired, "plain")),
        Ok(n) if n >= 1 => Ok(n == head.len() && head[5] == 0x01 && u16::from_be_bytes([head[9], head[10]]) < 0x0303),
        _ => Err((Reason::TlsHandshake, "tls")),
    }
}

/// Why a handshake failed, given what the sniff saw.
pub(crate) fn tls_failure(old_version: bool, e: &std::io::Error) -> Reason {
    if old_version {
        Reason::TlsVersion
    } else {
        classify_tls_error(e)
    }
}

/// A refused TLS version is `tls-version`; anything else failing in the handshake is
/// `tls-handshake`.
fn classify_tls_error(e: &std::io::Error) -> Reason {
    use rustls::{Error as E, PeerIncompatible as P};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(E::PeerIncompatible(
            P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::SupportedVersionsExtensionRequired
            | P::ServerDoesNotSupportTls12Or13,
        )) => Reason::TlsVersion,
        _ => Reason::TlsHandshake,
    }
}

/// A connection accepted on a socket whose listener a reload has just removed: refused
/// and logged under the old name (its zone is that of the source address).
async fn removed_listener(shared: &Shared, policy: &Policy, name: &str, peer: &Peer) {
    let names = OpenNames {
        listener: name,
        service: None,
        zone_from: &policy.zones[policy.zone_of(peer.src)].name,
        zone_to: None,
        window: None,
        identity: None,
    };
    let hello = Hello { proto: "tcp", ..Hello::default() };
    write_open(shared, &names, peer, &hello, policy::Action::Deny, Reason::NoRoute).await;
}

/// Read a PROXY v1 or v2 header, consuming exactly its bytes (what follows is the
/// client's and stays in the socket). `Ok(None)`: a LOCAL/UNKNOWN header (the peer
/// speaks for itself).
async fn read_proxy_header(stream: &TcpStream) -> Result<Option<super::proxy_protocol::Addresses>, &'static str> {
    use super::proxy_protocol::{parse, Parsed, MAX_HEADER};
    let mut buf = [0u8; MAX_HEADER];
    let mut have = 0;
    loop {
        // Peek what is there, then consume exactly the header: nothing past it is read.
        stream.readable().await.map_err(|_| "connection failed")?;
        let n = match stream.peek(&mut buf).await {
            Ok(0) => return Err("closed before a PROXY header"),
            Ok(n) => n,
            Err(_) => return Err("connection failed"),
        };
        match parse(&buf[..n]) {
            Parsed::Header { len, addrs } => {
                let mut sink = [0u8; MAX_HEADER];
                let mut taken = 0;
                while taken < len {
                    stream.readable().await.map_err(|_| "connection failed")?;
                    match stream.try_read(&mut sink[taken..len]) {
                        Ok(0) => return Err("closed inside a PROXY header"),
                        Ok(k) => taken += k,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return Err("connection failed"),
                    }
                }
                return Ok(addrs);
            }
            Parsed::Invalid(why) => return Err(why),
            Parsed::NeedMore if n >= MAX_HEADER => return Err("PROXY header too long"),
            Parsed::NeedMore if n == have => {
                // Nothing new since the last peek: wait a moment for more bytes
                // (peek does not wait while some bytes are already there).
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Parsed::NeedMore => have = n,
        }
    }
}

/// A refusal before a byte was read: written in full, or, while its source floods,
/// counted into the source's `conn.refused` summary (see [`super::refusals`]).
async fn refuse_early(shared: &Shared, policy: &Policy, lid: ListenerId, peer: &Peer, d: Decision) {
    let listener = &policy.listeners[lid].name;
    if shared.refusals.full_record(peer.src, d.reason, listener, jiff::Timestamp::now()) {
        let hello = Hello { proto: "tcp", ..Hello::default() };
        return record_open(shared, policy, lid, peer, &hello, &d).await;
    }
    shared.metrics.connections.with_label_values(&[listener, "", d.action.as_str(), d.reason.as_str()]).inc();
}

pub(crate) async fn record_open(
    shared: &Shared,
    policy: &Policy,
    lid: ListenerId,
    peer: &Peer,
    hello: &Hello,
    d: &Decision,
) {
    let window = d.window.and_then(|w| policy.windows.get(w));
    let names = OpenNames {
        listener: &policy.listeners[lid].name,
        service: d.service.map(|s| policy.services[s].name.as_str()),
        zone_from: &policy.zones[d.zone_from].name,
        zone_to: d.zone_to.map(|z| policy.zones[z].name.as_str()),
        window: window.map(|w| w.id.as_ref()),
        identity: window.map(|w| w.requester.as_ref()),
    };
    write_open(shared, &names, peer, hello, d.action, d.reason).await;
}

/// The names in a `conn.open` record.
pub(crate) struct OpenNames<'a> {
    pub listener: &'a str,
    pub service: Option<&'a str>,
    pub zone_from: &'a str,
    pub zone_to: Option<&'a str>,
    pub window: Option<&'a str>,
    pub identity: Option<&'a str>,
}

/// Count and log one decided connection.
pub(crate) async fn write_open(
    shared: &Shared,
    n: &OpenNames<'_>,
    peer: &Peer,
    hello: &Hello,
    action: policy::Action,
    reason: Reason,
) {
    shared
        .metrics
        .connections
        .with_label_values(&[n.listener, n.service.unwrap_or(""), action.as_str(), reason.as_str()])
        .inc();
    let owned = |s: Option<&str>| s.map(str::to_string);
    shared
        .log
        .record(Event::ConnOpen(ConnOpen {
            conn: peer.conn,
            listener: n.listener.to_string(),
            proto: hello.proto,
            src_ip: peer.src,
            src_port: peer.src_port,
            dst_ip: policy::normalize(peer.dst.ip()),
            dst_port: peer.dst.port(),
            service: owned(n.service),
            zone_from: n.zone_from.to_string(),
            zone_to: owned(n.zone_to),
            action: action.as_str(),
            reason: reason.as_str(),
            window: owned(n.window),
            identity: owned(n.identity),
            tls_version: hello.tls_version,
            sni: hello.sni.clone(),
            proxied_by: peer.via,
        }))
        .await;
}

/// Phase serve: the HTTP proxy for the connection's service.
async fn serve(
    tls: TlsStream<Counted<TcpStream>>,
    record: Arc<ConnRecord>,
    policy: Arc<Policy>,
    service_id: policy::ServiceId,
) {
    let handler = proxy::http::Handler::new(record.clone(), policy, service_id);
    let svc = hyper::service::service_fn(move |req| handler.clone().handle(req));
    drive(tls, record, svc).await;
}

/// Serve HTTP on a TLS stream until the client leaves, the connection idles out, its
/// window closes, or shutdown asks it to finish (gracefully first, then cut).
pub(crate) async fn drive<S, B>(tls: TlsStream<Counted<TcpStream>>, record: Arc<ConnRecord>, svc: S)
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shared = record.shared().clone();
    // The protocol is the one ALPN chose (no sniffing: hyper's HTTP/1.1 header timer
    // then starts with the connection, so a client that sends nothing is closed).
    let io = TokioIo::new(tls);
    if io.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
        let conn = shared.h2.serve_connection(io, svc);
        run_conn(conn, &record, &shared, |c| c.graceful_shutdown()).await;
    } else {
        let conn = shared.h1.serve_connection(io, svc).with_upgrades();
        run_conn(conn, &record, &shared, |c| c.graceful_shutdown()).await;
    }
}

/// Drive one HTTP connection; `shutdown` asks it to finish gracefully.
async fn run_conn<C>(conn: C, record: &ConnRecord, shared: &Shared, shutdown: impl Fn(std::pin::Pin<&mut C>))
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let idle = record.idle_for(record.idle);
    tokio::pin!(idle);
    let mut draining = false;
    loop {
        tokio::select! {
            // A cut (window end, shutdown deadline) wins over serving one more request.
            biased;
            _ = record.must_close() => break,
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(conn = record.conn, error = %e, "connection ended with an error");
                    // The gateway closed it (a timeout, a malformed or oversized
                    // request): not the client's doing.
                    if e.is_timeout() {
                        record.set_close_reason(CloseReason::Idle);
                    } else if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
                        record.set_close_reason(CloseReason::Error);
                    }
                }
                if draining {
                    record.set_close_reason(CloseReason::Shutdown);
                }
                break;
            }
            _ = shared.draining.cancelled(), if !draining => {
                draining = true;
                shutdown(conn.as_mut());
            }
            _ = &mut idle => {
                record.set_close_reason(CloseReason::Idle);
                break;
            }
        }
    }
}
