//! How soon after a window's end its live connections are cut (DESIGN: within 1 s).
//!
//! Starts the real gateway, opens 100 windows whose ends are spread over three seconds,
//! rides each with a live download from its own source (127.0.1.N), and reports the
//! delay from each window's `end` to the moment its client saw the connection cut:
//! p50, p99 and max. Run: `cargo bench --bench window_cut`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;

const WINDOWS: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let up = start_upstream().await;
    let (token, hash) = menshen::admin::auth::new_token(Some("chen")).unwrap();
    let (vtoken, vhash) = menshen::admin::auth::new_token(Some("wu")).unwrap();
    let topology_window = lan_behind_https("window");
    let config = format!(
        r#"{head}
{topology_window}
[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{up}"
zone = "lan"
window_max = "1h"
[admin]
bind = "127.0.0.1:0"
allow = ["127.0.0.0/8"]
[[account]]
name = "chen"
role = "admin"
token_sha256 = "{hash}"
[[account]]
name = "wu"
role = "vendor"
vendor = "acme"
services = ["nas"]
token_sha256 = "{vhash}"
"#,
        head = config_head(""),
        up = up.addr
    );
    let gw = TestGateway::start(&config);
    let first_end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    let mut ends = Vec::new();
    for i in 0..WINDOWS {
        let end = first_end + jiff::SignedDuration::from_millis(30 * i as i64);
        let body = json!({"services": ["nas"], "sources": [format!("127.0.1.{}/32", i + 1)], "end": end.to_string(), "reason": "cut latency bench"});
        let (code, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", &vtoken, Some(body)).await;
        assert_eq!(code, 201, "{w}");
        let id = w["id"].as_str().unwrap().to_string();
        let (code, _) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), &token, None).await;
        assert_eq!(code, 200);
        ends.push(w["end"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap());
    }
    let mut tasks = Vec::new();
    for (i, end) in ends.into_iter().enumerate() {
        let c = gw.client();
        let addr = gw.addr("https");
        tasks.push(tokio::spawn(async move {
            let tls = c.connect(addr, ip(&format!("127.0.1.{}", i + 1)), "nas.test", false).await.expect("tls");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("http");
            tokio::spawn(conn);
            let req = http::Request::get("/stream")
                .header("host", "nas.test")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let mut body = send.send_request(req).await.expect("download starts").into_body();
            assert!(jiff::Timestamp::now() < end, "window {i} ended before its download started");
            loop {
                match tokio::time::timeout(DEADLINE, body.frame()).await.expect("cut in time") {
                    Some(Ok(_)) => continue,
                    _ => return jiff::Timestamp::now().duration_since(end).as_secs_f64() * 1000.0,
                }
            }
        }));
    }
    let mut ms: Vec<f64> = Vec::new();
    for t in tasks {
        ms.push(t.await.expect("task"));
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "window cut latency over {} windows with a live download each: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, min {:.1} ms",
        ms.len(),
        pick(0.5),
        pick(0.99),
        ms[ms.len() - 1],
        ms[0]
    );
    let cut = gw.wait_count(WINDOWS, |r| r["close_reason"] == "window-ended").await.len();
    println!("conn.close records with close_reason window-ended: {cut}");
}
