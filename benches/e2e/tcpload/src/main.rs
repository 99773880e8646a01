//! tcpload: connection-rate load for benches/e2e/tcp.sh, single-threaded (tokio
//! current-thread: the load core is shared with the upstream, so no thread hand-offs).
//!
//! ```text
//! tcpload serve --listen 127.0.0.1:PORT [--req 64] [--rep 64]
//!     per connection: read exactly --req bytes, write --rep bytes, wait for the
//!     client's close (EOF), close.
//! tcpload crr --connect 127.0.0.1:PORT [--conns 32] [--duration 10] [--req 64] [--rep 64]
//!     --conns loops, each: connect, send --req bytes, read --rep bytes, close; until
//!     --duration seconds have passed. Prints one JSON line.
//! ```
//! The request starts with an SSH identification line (`SSH-2.0-tcpload_0.1\r\n`, RFC
//! 4253 §4.2) padded to --req bytes, so the same bytes pass a `guard = "ssh"` service
//! and every other target alike.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IDENT: &[u8] = b"SSH-2.0-tcpload_0.1\r\n";

struct Args {
    mode: String,
    addr: Option<SocketAddr>,
    conns: usize,
    duration: f64,
    req: usize,
    rep: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: tcpload serve --listen ADDR [--req N] [--rep N]\n       \
         tcpload crr --connect ADDR [--conns N] [--duration SECS] [--req N] [--rep N]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut a = Args { mode, addr: None, conns: 32, duration: 10.0, req: 64, rep: 64 };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--listen" | "--connect" => a.addr = Some(num(&k, &v)),
            "--conns" => a.conns = num(&k, &v),
            "--duration" => a.duration = num(&k, &v),
            "--req" => a.req = num(&k, &v),
            "--rep" => a.rep = num(&k, &v),
            _ => usage(),
        }
    }
    if a.addr.is_none() || a.req < IDENT.len() + 1 || a.rep == 0 || a.conns == 0 {
        usage();
    }
    a
}

fn num<T: std::str::FromStr>(k: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| {
        eprintln!("tcpload: bad value for {k}: {v}");
        std::process::exit(2)
    })
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match a.mode.as_str() {
        "serve" => rt.block_on(serve(a)),
        "crr" => rt.block_on(crr(a)),
        _ => usage(),
    }
}

async fn serve(a: Args) {
    let l = TcpListener::bind(a.addr.unwrap()).await.unwrap_or_else(|e| {
        eprintln!("tcpload: cannot listen on {}: {e}", a.addr.unwrap());
        std::process::exit(1)
    });
    println!("tcpload: serving on {}", l.local_addr().unwrap());
    let reply: &'static [u8] = Vec::leak(vec![b'r'; a.rep]);
    let req = a.req;
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await; // EMFILE and the like
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; req.max(4096)];
            if s.read_exact(&mut buf[..req]).await.is_err() || s.write_all(reply).await.is_err() {
                return;
            }
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

async fn crr(a: Args) {
    let mut req = IDENT.to_vec();
    req.resize(a.req - 1, b'x');
    req.push(b'\n');
    let req: &'static [u8] = Vec::leak(req);
    let (addr, rep) = (a.addr.unwrap(), a.rep);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    let tasks: Vec<_> = (0..a.conns)
        .map(|_| {
            tokio::spawn(async move {
                let (mut lat, mut errors, mut first_error) = (Vec::new(), 0u64, None::<String>);
                let mut buf = vec![0u8; rep];
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(5), async {
                        let mut s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        s.write_all(req).await?;
                        s.read_exact(&mut buf).await?;
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Ok(Err(e)) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(_) => {
                            errors += 1;
                            first_error.get_or_insert("timeout (5 s)".into());
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let (mut lat, mut errors, mut first_error) = (Vec::new(), 0, None);
    for t in tasks {
        let (l, e, f) = t.await.expect("task");
        lat.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_s = self_cpu_seconds();
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{{\"mode\":\"crr\",\"conns\":{},\"req\":{},\"rep\":{},\"secs\":{:.3},\"ok\":{},\"errors\":{},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"cpu_s\":{:.3},\"first_error\":{}}}",
        a.conns,
        a.req,
        a.rep,
        secs,
        lat.len(),
        errors,
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        cpu_s,
        first_error.map_or("null".to_string(), |e| format!("{:?}", e)),
    );
}

/// This process's user + system CPU time, from /proc/self/stat (fields 14 and 15, in
/// clock ticks of 1/100 s on Linux); 0 where there is no procfs.
fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // rest starts at field 3 (state): field 14 is index 11, field 15 index 12.
    (ticks(11) + ticks(12)) / 100.0
}
