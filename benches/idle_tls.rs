//! Memory held by idle TLS connections: the gateway's resident memory before and after
//! 10,000 clients have finished their TLS handshake and sit idle (no request yet), and
//! the cost per connection. Run: `cargo bench --bench idle_tls` (loopback only;
//! bounded to 120 s). The gateway admits at most (open files - 64) / 2 connections, so
//! all 10,000 need `ulimit -Hn` of 20,200 or more; with less, fewer are held and the
//! per-connection figure still holds.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};

const CONNS: usize = 10_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let up = start_upstream().await;
    // Room for 10,000 connections from one source, held past the header timeout.
    let head =
        config_head("").replace("[limits]\n", "[limits]\nmax_connections = 20000\nheader_read_timeout = \"10m\"\n");
    let config = format!(
        "{head}\n{topology}\n[[service]]\nname = \"nas\"\nlistener = \"https\"\nhosts = [\"nas.test\"]\n\
         upstream = \"http://{up}\"\nzone = \"lan\"\nallow = [\"127.0.0.0/8\"]\n",
        topology = lan_behind_https("allow"),
        up = up.addr,
    );
    let gw = TestGateway::start(&config);
    let pid = gw.pid();
    // One connection first: the runtime, the TLS config and the log are warm.
    let client = gw.client();
    let _warm = client.connect(gw.addr("https"), ip("127.0.0.2"), "nas.test", false).await.expect("warm-up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (client, addr) = (client.clone(), gw.addr("https"));
        // Spread over 40 source addresses.
        let src = ip(&format!("127.0.2.{}", 1 + i % 40));
        tasks.push(tokio::spawn(async move {
            let r = client.connect(addr, src, "nas.test", false).await;
            drop(permit);
            r.ok()
        }));
        if Instant::now() > deadline {
            break;
        }
    }
    let mut held = Vec::with_capacity(CONNS);
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            held.push(c);
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let n = held.len();
    println!("idle TLS connections: {n} of {CONNS} open after {:.1} s", took.as_secs_f64());
    println!("gateway RSS: {before} KiB before, {after} KiB after");
    if n > 0 {
        println!("per connection: {:.1} KiB", (after.saturating_sub(before)) as f64 / n as f64);
    }
    drop(held);
    drop(gw);
}
