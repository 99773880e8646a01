//! The admin listener: refuse sources outside `[admin].allow` (and blocked ones) before
//! a byte is read, TLS only, then the API. Its connections are logged like any other
//! (`listener` = `admin`); sessions idle 15 minutes are closed (KL-玖.三.(七)1, MOE-20).

use super::api::{self, AdminState};
use crate::listener::conn::{self, Hello, OpenNames, Peer};
use crate::listener::io::{ByteCounts, Counted};
use crate::listener::{ConnRecord, Shared};
use crate::policy::{self, Action, Reason};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The name admin connections carry in the log and in metrics.
pub const LISTENER: &str = "admin";
/// An admin session with no traffic for this long is closed.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// Whether the admin listener admits `src` under `policy` and `dynamic` (not blocked,
/// in `[admin].allow`).
pub fn admits(policy: &crate::policy::Policy, dynamic: &super::api::AdminDynamic, src: std::net::IpAddr) -> bool {
    !policy.is_blocked(src) && dynamic.allow.contains(src)
}

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, state: Arc<AdminState>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.draining.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let task = handle(stream, peer, shared.clone(), state.clone());
                shared.tasks.spawn(task);
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, state: Arc<AdminState>) {
    let _ = stream.set_nodelay(true);
    let peer = Peer {
        conn: shared.next_conn_id(),
        src: policy::normalize(peer.ip()),
        src_port: peer.port(),
        dst: stream.local_addr().unwrap_or(peer),
        via: None,
    };
    let generation = shared.generation();
    let policy = shared.policy.load_full();
    let zone_from = policy.zones[policy.zone_of(peer.src)].name.clone();
    let mut names = OpenNames {
        listener: LISTENER,
        service: None,
        zone_from: &zone_from,
        zone_to: None,
        window: None,
        identity: None,
    };
    let mut hello = Hello { proto: "tcp", generation, ..Hello::default() };

    let refusal = if policy.is_blocked(peer.src) {
        Some(Reason::Blocked)
    } else if !state.dynamic.load().allow.contains(peer.src) {
        Some(Reason::NotAllowed)
    } else {
        None
    };
    if let Some(reason) = refusal {
        return refuse(&shared, &names, &peer, &hello, reason).await;
    }
    // Per-source cap and rate (admins are outside the proxy listeners' total).
    let Ok(slot) = shared.limits.admit(peer.src, false) else {
        return refuse(&shared, &names, &peer, &hello, Reason::RateLimited).await;
    };
    hello.proto = "tls";
    // The same bound as the proxy listeners: a client that sends nothing is closed.
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    let old_version = match tokio::time::timeout_at(deadline, conn::sniff(&stream)).await {
        Ok(Ok(v)) => v,
        Ok(Err((reason, proto))) => {
            hello.proto = proto;
            return conn::write_open(&shared, &names, &peer, &hello, Action::Deny, reason).await;
        }
        Err(_) => return conn::write_open(&shared, &names, &peer, &hello, Action::Deny, Reason::TlsHandshake).await,
    };
    let counts = Arc::new(ByteCounts::default());
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.clone());
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(Counted::new(stream, counts.clone()))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = conn::tls_failure(old_version, &e);
            shared.metrics.tls_handshake_failures.with_label_values(&[LISTENER, reason.as_str()]).inc();
            return conn::write_open(&shared, &names, &peer, &hello, Action::Deny, reason).await;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.with_label_values(&[LISTENER, "tls-handshake"]).inc();
            return conn::write_open(&shared, &names, &peer, &hello, Action::Deny, Reason::TlsHandshake).await;
        }
    };
    hello.tls_version = conn::tls_version(&tls);
    hello.sni = tls.get_ref().1.server_name().map(str::to_string);
    names.service = Some(LISTENER);
    conn::write_open(&shared, &names, &peer, &hello, Action::Allow, Reason::Allowlist).await;

    let record = ConnRecord::new(
        &shared,
        peer.conn,
        LISTENER.to_string(),
        LISTENER.to_string(),
        (peer.src, peer.src_port, None),
        hello.sni.clone(),
        None,
        counts,
        None,
        IDLE,
    );
    record.hold(slot);
    // A reload that ran since this connection was admitted may have narrowed the allow list.
    if shared.generation() != generation && !admits(&shared.policy.load(), &state.dynamic.load(), peer.src) {
        record.revoke(crate::listener::CloseReason::Reload);
    }
    let src = peer.src;
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(api::handle(state, req, src).await) }
    });
    conn::drive(tls, record, svc).await;
}

/// A refusal before a byte was read: written in full, or counted into the flooding
/// source's `conn.refused` summary (see [`crate::listener::refusals`]).
async fn refuse(shared: &Shared, names: &OpenNames<'_>, peer: &Peer, hello: &Hello, reason: Reason) {
    if shared.refusals.full_record(peer.src, reason, LISTENER, jiff::Timestamp::now()) {
        return conn::write_open(shared, names, peer, hello, Action::Deny, reason).await;
    }
    shared.metrics.connections.with_label_values(&[LISTENER, "", Action::Deny.as_str(), reason.as_str()]).inc();
}
