//! A connection on a `tcp` listener (SSH, RDP, TLS passthrough):
//!
//! ```text
//! decide (no name needed: before a byte is read) ─▶ guard (what the client speaks, 5 s)
//!   ─▶ decide again on the snapshot of now (with the SNI a tls guard found)
//!   ─▶ connect upstream ─▶ [PROXY v2] + the guard's bytes unchanged ─▶ relay
//! ```
//! The relay copies both ways through fixed 16 KiB buffers, passes half-closes on, and
//! ends on idle timeout, window end, revocation or shutdown like an HTTP connection.

use super::conn::{record_open, start_record, CloseReason, ConnRecord, Hello, Peer};
use super::io::{ByteCounts, Counted};
use super::Shared;
use crate::policy::{self, Decision, ListenerId, ListenerKind, Policy, Reason};
use crate::proxy::guard::{self, Guard, Verdict};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a client has to send what its service's guard needs.
pub const GUARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Relay buffer per direction.
const BUF: usize = 16 * 1024;

pub(super) async fn handle(
    stream: TcpStream,
    peer: Peer,
    lid: ListenerId,
    policy: Arc<Policy>,
    shared: Arc<Shared>,
    slot: super::limits::Slot,
) {
    let counts = Arc::new(ByteCounts::default());
    let (read, write) = stream.into_split();
    let mut client_r = Counted::new(read, counts.clone());
    let mut client_w = Counted::new(write, counts.clone());
    let mut hello = Hello { proto: "tcp", ..Hello::default() };
    let zone_from = policy.listeners[lid].zone;
    let info = |sni| policy::ConnInfo { listener: lid, src: peer.src, sni };

    // A listener with one nameless service is decided before a byte is read: a source
    // that may not connect learns nothing, and its bytes are never parsed.
    let (guard, early) = match policy.default_service(lid) {
        Some(_) => {
            let d = policy::decide(&policy, &info(None), jiff::Timestamp::now());
            if !d.allowed() {
                return record_open(&shared, &policy, lid, &peer, &hello, &d).await;
            }
            (d.service.and_then(|s| policy.services[s].guard).unwrap_or(Guard::Tls), Some(d))
        }
        // Several services on one listener are told apart by the ClientHello's SNI.
        None => (Guard::Tls, None),
    };
    let mut first = Vec::new();
    let read = tokio::time::timeout(GUARD_TIMEOUT, read_guard(&mut client_r, guard, &mut first)).await;
    match read.unwrap_or(Err("nothing decisive within 5 s")) {
        Ok(sni) => hello.sni = sni,
        Err(why) => {
            tracing::debug!(conn = peer.conn, guard = guard.as_str(), why, "guard refused the connection");
            let d = early.unwrap_or_else(|| Decision::deny(zone_from, Reason::Guard));
            let d = Decision { action: policy::Action::Deny, reason: Reason::Guard, window: None, ..d };
            return record_open(&shared, &policy, lid, &peer, &hello, &d).await;
        }
    }
    // Decide on the snapshot of now: the guard may have taken seconds.
    hello.generation = shared.generation();
    let fresh = shared.policy.load_full();
    // A reload may have removed the listener, or made it an https one.
    let Some(lid) =
        fresh.listener_id(&policy.listeners[lid].name).filter(|l| fresh.listeners[*l].kind == ListenerKind::Tcp)
    else {
        let d = Decision::deny(zone_from, Reason::NoRoute);
        return record_open(&shared, &policy, lid, &peer, &hello, &d).await;
    };
    let policy = fresh;
    let d = policy::decide(
        &policy,
        &policy::ConnInfo { listener: lid, src: peer.src, sni: hello.sni.as_deref() },
        jiff::Timestamp::now(),
    );
    let service = d.service.map(|s| &policy.services[s]);
    if let Some(svc) = service {
        // A guard other than the one read (an SNI-routed listener is all tls).
        // (None: an https service, reached after a reload: its bytes were never checked.)
        if d.allowed() && !svc.guard.is_some_and(|g| g == guard || g == Guard::None) {
            let d = Decision { action: policy::Action::Deny, reason: Reason::Guard, ..d };
            return record_open(&shared, &policy, lid, &peer, &hello, &d).await;
        }
    }
    record_open(&shared, &policy, lid, &peer, &hello, &d).await;
    let (Some(service), true) = (service, d.allowed()) else {
        return;
    };
    let Some(record) = start_record(&shared, &policy, lid, &peer, &hello, &d, counts) else {
        return;
    };
    record.hold(slot);
    let target = service.upstream.authority.as_str();
    // The upstream socket's share of the descriptor budget, held until the relay ends.
    let _descriptor = match super::limits::upstream_socket() {
        Ok(permit) => permit,
        Err(e) => {
            tracing::warn!(conn = peer.conn, service = %service.name, error = %e, "upstream connect refused");
            record.set_close_reason(CloseReason::Error);
            return;
        }
    };
    let upstream = match tokio::time::timeout(service.upstream_timeout, TcpStream::connect(target)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::warn!(conn = peer.conn, service = %service.name, upstream = target, error = %e, "upstream connect failed");
            record.set_close_reason(CloseReason::Error);
            return;
        }
        Err(_) => {
            tracing::warn!(conn = peer.conn, service = %service.name, upstream = target, "upstream connect timed out");
            record.set_close_reason(CloseReason::Error);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Ok(addr) = upstream.peer_addr() {
        let _ = record.upstream.set(addr);
    }
    let (mut up_r, mut up_w) = upstream.into_split();
    let mut preface = Vec::new();
    if service.send_proxy {
        preface = super::proxy_protocol::encode_v2(super::proxy_protocol::Addresses {
            src: std::net::SocketAddr::new(peer.src, peer.src_port),
            dst: peer.dst,
        });
    }
    preface.extend_from_slice(&first);
    if up_w.write_all(&preface).await.is_err() {
        record.set_close_reason(CloseReason::Upstream);
        return;
    }
    drop((preface, first));
    // rdp-tls: the server must not pick Standard RDP Security either (an old server may
    // ignore the client's request for TLS). Its Connection Confirm is checked before a
    // byte of it reaches the client.
    if service.guard == Some(Guard::RdpTls) {
        let mut confirm = Vec::new();
        let read = tokio::select! {
            _ = record.must_close() => return,
            r = tokio::time::timeout(GUARD_TIMEOUT, read_rdp_confirm(&mut up_r, &mut confirm)) => {
                r.unwrap_or(Err("no Connection Confirm from the server within 5 s"))
            }
        };
        if let Err(why) = read {
            tracing::warn!(conn = peer.conn, service = %service.name, why, "rdp-tls: the server's answer is refused");
            record.set_close_reason(CloseReason::Error);
            return;
        }
        if client_w.write_all(&confirm).await.is_err() {
            record.set_close_reason(CloseReason::Client);
            return;
        }
    }
    // Boxed: the connection task's own future stays small (it is moved on spawn).
    Box::pin(relay(client_r, client_w, up_r, up_w, &record)).await;
}

/// Read until the guard decides. Ok: the SNI (tls guard); Err: why it failed. Reads go
/// straight into `buf` (grown as needed, never past the guard's limit).
async fn read_guard<R: AsyncRead + Unpin>(
    r: &mut R,
    guard: Guard,
    buf: &mut Vec<u8>,
) -> Result<Option<String>, &'static str> {
    loop {
        match guard::check(guard, buf) {
            Verdict::Pass { sni } => return Ok(sni),
            Verdict::Fail(why) => return Err(why),
            Verdict::NeedMore if buf.len() >= guard::MAX_GUARD_BYTES => return Err("too many bytes without a verdict"),
            Verdict::NeedMore => {}
        }
        let room = (guard::MAX_GUARD_BYTES - buf.len()).min(2048);
        let mut limited = r.take(room as u64);
        let n = limited.read_buf(buf).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed before the guard could decide");
        }
    }
}

/// Read the RDP server's X.224 Connection Confirm into `buf`. Err when it selects
/// Standard RDP Security, is malformed, or the server closes first.
async fn read_rdp_confirm<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), &'static str> {
    loop {
        match guard::rdp_confirm_selects_standard_security(buf) {
            Some(true) => return Err("the server selected Standard RDP Security"),
            Some(false) => return Ok(()),
            None if buf.len() >= guard::MAX_GUARD_BYTES => return Err("not an RDP Connection Confirm"),
            None => {}
        }
        let room = guard::MAX_GUARD_BYTES - buf.len();
        let n = r.take(room as u64).read_buf(buf).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("the server closed before its Connection Confirm");
        }
    }
}

/// Copy both ways until both directions end (half-closes passed on), or the connection
/// must close. The close reason is the side that finished first.
async fn relay<CR, CW, UR, UW>(mut cr: CR, mut cw: CW, mut ur: UR, mut uw: UW, record: &ConnRecord)
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let up = pump(&mut cr, &mut uw);
    let down = pump(&mut ur, &mut cw);
    tokio::pin!(up, down);
    let idle = record.idle_for(record.idle);
    tokio::pin!(idle);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            biased;
            _ = record.must_close() => return,
            r = &mut up, if !up_done => {
                up_done = true;
                record.set_close_reason(if r.is_ok() { CloseReason::Client } else { CloseReason::Error });
            }
            r = &mut down, if !down_done => {
                down_done = true;
                record.set_close_reason(if r.is_ok() { CloseReason::Upstream } else { CloseReason::Error });
            }
            _ = &mut idle => {
                record.set_close_reason(CloseReason::Idle);
                return;
            }
        }
    }
}

/// One direction: read into a fixed buffer (allocated at the first byte, never
/// zeroed), write it all, and pass EOF on as a half-close.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if buf.capacity() == 0 {
            buf.reserve_exact(BUF);
        }
        buf.clear();
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf).await?;
    }
}
