//! What a legitimate admin sees while the gateway is attacked: p50/p99 latency and the
//! success rate of fresh-connection HTTPS GETs (TLS handshake included, one every
//! 20 ms from 127.0.0.2), first without an attack, then during each attack in turn, on
//! the release gateway with its default limits. Attackers come from 127.0.1.0/24.
//!
//! Attacks: slowloris (2,000 silent TCP connections plus 200 TLS connections trickling
//! a request head), header flood (8 loops sending 1 MiB request heads), HTTP/2 rapid
//! reset (4 loops opening and resetting streams), connection flood (16 loops of TCP
//! connect-and-close, most refused by the per-source rate before TLS).
//!
//! Run: `cargo bench --bench attacks` (loopback only; every phase bounded to PHASE,
//! about 40 s in all; needs `ulimit -Hn` of 5,000 or more).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PHASE: Duration = Duration::from_secs(6);
const EVERY: Duration = Duration::from_millis(20);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

/// The test config with the gateway's default limits (the test head lifts them).
fn config(up: SocketAddr) -> String {
    let head = config_head("").replace(
        "max_connections_per_source = 100000\nnew_connections_per_source = 100000\nnew_connections_burst = 100000\n",
        "",
    );
    format!(
        "{head}\n{topology}\n[[service]]\nname = \"admin\"\nlistener = \"https\"\nhosts = [\"admin.test\"]\n\
         upstream = \"http://{up}\"\nzone = \"lan\"\nallow = [\"127.0.0.0/8\"]\n",
        topology = lan_behind_https("allow"),
    )
}

/// An attacker's source address: 127.0.1.1 ..= 127.0.1.250.
fn attacker(i: usize) -> std::net::IpAddr {
    ip(&format!("127.0.1.{}", 1 + i % 250))
}

async fn run() {
    let nofile = menshen::listener::limits::raise_nofile().unwrap_or(u64::MAX);
    assert!(nofile >= 5_000, "needs 5,000 open files; the hard limit is {nofile}");
    let up = start_upstream().await;
    let gw = TestGateway::start(&config(up.addr));
    let addr = gw.addr("https");
    let mut rows = Vec::new();

    let base = legit(&gw).await;
    rows.push(("none", base, 0u64));

    for attack in ["slowloris", "header flood", "rapid reset", "connection flood"] {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = match attack {
            "slowloris" => slowloris(&gw, stop.clone(), done.clone()).await,
            "header flood" => loops(8, |i| header_flood(addr, gw.client(), i, stop.clone(), done.clone())),
            "rapid reset" => loops(4, |i| rapid_reset(addr, gw.client(), i, stop.clone(), done.clone())),
            _ => loops(16, |i| conn_flood(addr, i, stop.clone(), done.clone())),
        };
        let seen = legit(&gw).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        rows.push((attack, seen, done.load(Ordering::SeqCst)));
        // Let timeouts of the last attack pass before the next phase.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    println!("\nlegitimate fresh-connection HTTPS GETs, one every {EVERY:?}, {PHASE:?} per phase");
    println!("| attack | attack units | legit ok | failed | success | p50 | p99 | p99 / no attack |");
    println!("|---|---|---|---|---|---|---|---|");
    let base_p99 = rows[0].1.pct(0.99).as_secs_f64();
    for (name, s, units) in &rows {
        let total = (s.ok + s.failed).max(1);
        println!(
            "| {name} | {units} | {} | {} | {:.1} % | {:.1} ms | {:.1} ms | {:.2}x |",
            s.ok,
            s.failed,
            100.0 * s.ok as f64 / total as f64,
            s.pct(0.5).as_secs_f64() * 1e3,
            s.pct(0.99).as_secs_f64() * 1e3,
            s.pct(0.99).as_secs_f64() / base_p99.max(1e-9),
        );
    }
    println!("gateway RSS at the end: {} KiB", rss_kib(gw.pid()));
}

async fn legit(gw: &TestGateway) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let max = (PHASE.as_millis() / EVERY.as_millis()) as usize;
    let t = tokio::spawn(legit_h1(gw.client(), gw.addr("https"), "127.0.0.2", EVERY, max, stop.clone()));
    tokio::time::sleep(PHASE + Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    t.await.expect("legit client")
}

fn loops<F, Fut>(n: usize, f: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (0..n).map(|i| tokio::spawn(f(i))).collect()
}

/// 2,000 silent TCP connections (re-opened as the handshake timeout closes them) and
/// 200 TLS connections trickling a request head, one byte every 500 ms.
async fn slowloris(gw: &TestGateway, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    let addr = gw.addr("https");
    let mut tasks = loops(2_000, |i| {
        let (stop, done) = (stop.clone(), done.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = tcp_from(attacker(i), addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                done.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                // Held until the gateway closes it (or the phase ends).
                while !stop.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
            }
        }
    });
    tasks.extend(loops(200, |i| {
        let (stop, done, c) = (stop.clone(), done.clone(), gw.client());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut tls) = c.connect(addr, attacker(1_000 + i), "admin.test", false).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                done.fetch_add(1, Ordering::Relaxed);
                let head = b"GET /slow HTTP/1.1\r\nHost: admin.test\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for b in head.iter().cycle() {
                    if stop.load(Ordering::SeqCst) || tls.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }));
    tasks
}

/// Request heads of 1 MiB (the limit is 64 KiB: 431 and close), over and over.
async fn header_flood(addr: SocketAddr, c: TestClient, i: usize, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut head = b"GET /flood HTTP/1.1\r\nHost: admin.test\r\nX-Big: ".to_vec();
    head.resize(head.len() + (1 << 20), b'a');
    head.extend_from_slice(b"\r\n\r\n");
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut tls) = c.connect(addr, attacker(2_000 + i), "admin.test", false).await else { continue };
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.write_all(&head)).await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// HTTP/2 connections that open a stream and reset it at once, as fast as they can,
/// until the gateway sends GOAWAY; then a new connection.
async fn rapid_reset(addr: SocketAddr, c: TestClient, i: usize, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(tls) = c.connect(addr, attacker(3_000 + i), "admin.test", true).await else { continue };
        let Ok((client, conn)) = h2::client::handshake(tls).await else { continue };
        let conn = tokio::spawn(conn);
        let started = Instant::now();
        let mut client = Some(client);
        while let Some(c) = client.take() {
            if stop.load(Ordering::SeqCst) || started.elapsed() >= Duration::from_secs(5) {
                break;
            }
            let Ok(mut c) = c.ready().await else { break };
            let req = http::Request::get("https://admin.test/reset").body(()).expect("request");
            match c.send_request(req, false) {
                Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => break,
            }
            if done.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
                tokio::task::yield_now().await;
            }
            client = Some(c);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
    }
}

/// TCP connect and close, as fast as possible, each loop from its own address.
async fn conn_flood(addr: SocketAddr, i: usize, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(mut s) = tcp_from(attacker(4_000 + i), addr).await {
            let _ = s.write_all(b"\x16\x03\x01").await;
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
