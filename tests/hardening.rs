//! The runtime block list and the connection limits, end to end: blocks cut live
//! connections within a second and persist across a restart; caps and rates refuse
//! with `rate-limited` while the admin listener keeps answering.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(up: &TestUpstream, account: &str, limits: &[(&str, &str)]) -> String {
    let mut head = config_head("");
    for (k, v) in limits {
        let line = head.lines().find(|l| l.starts_with(&format!("{k} ="))).map(str::to_string);
        head = match line {
            Some(l) => head.replace(&l, &format!("{k} = {v}")),
            None => head.replace("[limits]\n", &format!("[limits]\n{k} = {v}\n")),
        };
    }
    format!(
        "{head}\n{topology}\n[[service]]\nname = \"nas\"\nlistener = \"https\"\nhosts = [\"nas.test\"]\n\
         upstream = \"http://{up}\"\nzone = \"lan\"\nallow = [\"127.0.0.0/8\"]\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1/32\"]\n\n{account}\n",
        topology = lan_behind_https("allow"),
        up = up.addr,
    )
}

fn admin() -> (String, String) {
    let (token, hash) = menshen::admin::auth::new_token(Some("chen")).unwrap();
    (token, format!("[[account]]\nname = \"chen\"\nrole = \"admin\"\ntoken_sha256 = \"{hash}\"\n"))
}

async fn keep_alive(gw: &TestGateway, src: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = gw.client().connect(gw.addr("https"), ip(src), "nas.test", false).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/").header("host", "nas.test").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    send
}

async fn status(gw: &TestGateway, src: &str) -> Option<u16> {
    gw.client().get(gw.addr("https"), src, "nas.test").send().await.ok().map(|r| r.status)
}

/// Poll (bounded) until `src` is served again.
async fn served_again(gw: &TestGateway, src: &str, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while status(gw, src).await != Some(200) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn blocks_cut_at_once_persist_and_expire() {
    let up = start_upstream().await;
    let (token, account) = admin();
    let mut gw = TestGateway::start(&config(&up, &account, &[]));
    let _live = keep_alive(&gw, "127.0.0.3").await;
    let open = gw.conn_open_from("127.0.0.3").await;

    let body = json!({"cidr": "127.0.0.3", "reason": "port scan from this host"});
    let asked = Instant::now();
    let (code, b) = gw.api("127.0.0.1", "POST", "/api/v1/blocks", &token, Some(body)).await;
    assert_eq!(code, 201, "{b}");
    assert_eq!((b["cidr"].as_str(), b["cut_connections"].as_u64()), (Some("127.0.0.3/32"), Some(1)));
    let close = gw.conn_close(&open["conn"]).await;
    assert_eq!(close["close_reason"], "blocked");
    assert!(asked.elapsed() < Duration::from_secs(2), "cut within a second of the block");
    let added = gw.wait_record(|r| r["event"] == "block.added").await;
    assert_eq!((added["identity"].as_str(), added["cidr"].as_str()), (Some("chen"), Some("127.0.0.3/32")));
    assert_eq!(added["cut_connections"], 1);
    assert_eq!(status(&gw, "127.0.0.3").await, None, "refused before the handshake");
    let denied =
        gw.wait_record(|r| r["event"] == "conn.open" && r["src_ip"] == "127.0.0.3" && r["action"] == "deny").await;
    assert_eq!(denied["reason"], "blocked");
    assert_eq!(status(&gw, "127.0.0.2").await, Some(200), "others are untouched");

    // Bad requests name the field; an admin cannot block their own address.
    for (body, field) in [
        (json!({"cidr": "127.0.0.300", "reason": "x"}), "cidr"),
        (json!({"cidr": "0.0.0.0/0", "reason": "x"}), "cidr"),
        (json!({"cidr": "127.0.0.0/24", "reason": "x"}), "cidr"),
        (json!({"cidr": "127.0.0.9", "reason": ""}), "reason"),
        (json!({"cidr": "127.0.0.9", "reason": "x", "duration": "soon"}), "duration"),
    ] {
        let (code, e) = gw.api("127.0.0.1", "POST", "/api/v1/blocks", &token, Some(body)).await;
        assert_eq!(code, 400, "{e}");
        assert!(e["error"].as_str().unwrap().starts_with(&format!("{field}:")), "{e}");
    }

    // A block with an expiry ends by itself.
    let body = json!({"cidr": "127.0.0.4/32", "reason": "noisy for a moment", "duration": "1s"});
    let (code, b) = gw.api("127.0.0.1", "POST", "/api/v1/blocks", &token, Some(body)).await;
    assert_eq!(code, 201, "{b}");
    assert_eq!(status(&gw, "127.0.0.4").await, None);
    let expired = gw.wait_record(|r| r["event"] == "block.expired").await;
    assert_eq!((expired["cidr"].as_str(), expired["identity"].as_str()), (Some("127.0.0.4/32"), Some("system")));
    assert_eq!(status(&gw, "127.0.0.4").await, Some(200));

    // Blocks survive a restart.
    gw.restart();
    assert_eq!(status(&gw, "127.0.0.3").await, None, "still blocked after a restart");
    let (code, list) = gw.api("127.0.0.1", "GET", "/api/v1/blocks", &token, None).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["reason"], "port scan from this host");

    // The CLI lists and removes.
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, &gw.pki.ca_pem).unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(bin())
            .arg("block")
            .args(args)
            .env("MENSHEN_ADMIN_URL", format!("https://localhost:{}", gw.addr("admin").port()))
            .env("MENSHEN_TOKEN", &token)
            .env("MENSHEN_ADMIN_CA", &ca)
            .output()
            .unwrap()
    };
    let out = cli(&["list"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("127.0.0.3/32"));
    let out = cli(&["remove", "127.0.0.3/32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.wait_record(|r| r["event"] == "block.removed" && r["cidr"] == "127.0.0.3/32").await;
    assert_eq!(status(&gw, "127.0.0.3").await, Some(200));
    let out = cli(&["remove", "127.0.0.3/32"]);
    assert_eq!(out.status.code(), Some(1), "removing what is not there is refused");
}

#[tokio::test]
async fn caps_and_rates_refuse_while_the_admin_listener_answers() {
    let up = start_upstream().await;
    let (token, account) = admin();
    let gw =
        TestGateway::start(&config(&up, &account, &[("max_connections", "6"), ("max_connections_per_source", "3")]));
    // Three from one source; the fourth is refused before its handshake.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(keep_alive(&gw, "127.0.0.2").await);
    }
    assert_eq!(status(&gw, "127.0.0.2").await, None);
    let r = gw.wait_record(|r| r["event"] == "conn.open" && r["src_ip"] == "127.0.0.2" && r["action"] == "deny").await;
    assert_eq!(r["reason"], "rate-limited");
    // Up to the total from others; then everyone is refused, but admins still get in.
    for _ in 0..3 {
        held.push(keep_alive(&gw, "127.0.0.3").await);
    }
    assert_eq!(status(&gw, "127.0.0.4").await, None, "the total is reached");
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/blocks", &token, None).await;
    assert_eq!(code, 200, "the admin listener answers while the proxy listeners are full");
    // A closed connection gives its slot back.
    drop(held.pop());
    served_again(&gw, "127.0.0.4", "the slot never came back").await;
}

#[tokio::test]
async fn new_connection_rate_per_source() {
    let up = start_upstream().await;
    let (_, account) = admin();
    let gw = TestGateway::start(&config(
        &up,
        &account,
        &[("new_connections_per_source", "2"), ("new_connections_burst", "5")],
    ));
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(status(&gw, "127.0.0.5").await);
    }
    let ok = answers.iter().filter(|a| **a == Some(200)).count();
    assert!((5..=8).contains(&ok), "a burst of 5 then about 2/s: {answers:?}");
    // One refusal in full, the rest counted in the source's once-a-second summary.
    let (full, summaries) = gw.wait_refusals(12 - ok as u64, "rate-limited").await;
    assert!(full.iter().all(|r| r["src_ip"] == "127.0.0.5" && r["action"] == "deny"), "{full:?}");
    assert!(summaries.iter().all(|s| s["src_ip"] == "127.0.0.5" && s["action"] == "deny" && s["listener"] == "https"));
    assert_eq!(status(&gw, "127.0.0.6").await, Some(200), "another source has its own bucket");
}

#[tokio::test]
async fn a_client_silent_after_the_handshake_is_closed_by_the_header_timeout() {
    let up = start_upstream().await;
    let (_, account) = admin();
    let gw = TestGateway::start(&config(&up, &account, &[("header_read_timeout", "\"1s\"")]));
    let started = Instant::now();
    let mut tls = gw.client().connect(gw.addr("https"), ip("127.0.0.7"), "nas.test", false).await.unwrap();
    let mut buf = [0u8; 16];
    let n =
        tokio::time::timeout(DEADLINE, tokio::io::AsyncReadExt::read(&mut tls, &mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed without a request");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    let open = gw.conn_open_from("127.0.0.7").await;
    assert_eq!(gw.conn_close(&open["conn"]).await["close_reason"], "idle", "the gateway closed it, not the client");
}

#[tokio::test]
async fn descriptor_exhaustion_meets_the_cap_and_the_admin_listener_answers() {
    // 256 open files: (256 - 64 reserved) / 2 = 96 proxy connections at once. Without the
    // cap, 600 silent connections would take every descriptor (EMFILE) and the admin
    // listener could not accept either.
    let up = start_upstream().await;
    let (token, account) = admin();
    let rates = [("new_connections_per_source", "100000"), ("new_connections_burst", "100000")];
    let gw = TestGateway::start_with_open_files(&config(&up, &account, &rates), 256);
    let limit = gw.wait_record(|r| r["event"] == "gateway.fd_limit").await;
    assert_eq!((limit["nofile"].as_u64(), limit["effective"].as_u64()), (Some(256), Some(96)), "{limit}");
    assert_eq!(limit["max_connections"], 4096);

    let addr = gw.addr("https");
    let mut held = Vec::new();
    for i in 0..600u32 {
        let src = ip(&format!("127.0.0.{}", 10 + i % 6));
        if let Ok(s) = tcp_from(src, addr).await {
            held.push(s);
        }
    }
    assert_eq!(held.len(), 600, "the kernel accepts them all");
    // A full record for each of the 6 sources' first refusal, the rest in summaries.
    let (full, _) = gw.wait_refusals(600 - 96, "rate-limited").await;
    assert!(full.len() < 60, "{} refusals written in full", full.len());
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/blocks", &token, None).await;
    assert_eq!(code, 200, "the admin listener answers while the proxy listeners are full");
    assert_eq!(status(&gw, "127.0.0.2").await, None, "the cap holds for everyone");

    // Once the flood is gone, service comes back by itself.
    drop(held);
    served_again(&gw, "127.0.0.2", "service never came back").await;
}

#[tokio::test]
async fn a_flood_from_one_source_is_counted_not_written_record_by_record() {
    // 2 new connections a second from one source; it opens 400 at once. Each refusal
    // is in the log, but as a count in a once-a-second `conn.refused` summary after the
    // first one written in full: a flood cannot fill the log.
    let up = start_upstream().await;
    let (_, account) = admin();
    let config = config(&up, &account, &[("new_connections_per_source", "2"), ("new_connections_burst", "5")])
        .replacen("[gateway]\n", "[gateway]\nmetrics_bind = \"127.0.0.1:0\"\n", 1);
    let gw = TestGateway::start(&config);
    let addr = gw.addr("https");
    let started = Instant::now();
    for _ in 0..400 {
        drop(tcp_from(ip("127.0.0.8"), addr).await.unwrap());
    }
    // Seconds the flood lasted, rounded up: bounds for what the rate let through and
    // for how many 1 s summary periods it spanned.
    let secs = started.elapsed().as_secs() as usize + 1;
    let deadline = Instant::now() + DEADLINE;
    let (opens, refused) = loop {
        let records = gw.records();
        let from = |event: &str| -> Vec<Value> {
            records.iter().filter(|r| r["event"] == event && r["src_ip"] == "127.0.0.8").cloned().collect()
        };
        let (opens, refused) = (from("conn.open"), from("conn.refused"));
        let counted: u64 = refused.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        if opens.len() as u64 + counted == 400 {
            break (opens, refused);
        }
        assert!(Instant::now() < deadline, "{} + {counted} of 400 connections in the log", opens.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let limited = opens.iter().filter(|r| r["reason"] == "rate-limited").count();
    assert!((1..=1 + secs).contains(&limited), "{limited} rate-limited refusals written in full in {secs} s");
    let admitted = opens.len() - limited;
    assert!(admitted <= 5 + 2 * secs + 1, "admitted {admitted} in {secs} s: the burst and the rate");
    for r in &refused {
        assert_eq!(
            (r["reason"].as_str(), r["action"].as_str(), r["listener"].as_str()),
            (Some("rate-limited"), Some("deny"), Some("https"))
        );
        assert!(r["first"].as_str() <= r["last"].as_str(), "{r}");
    }
    // Metrics count every refusal.
    let (_, metrics) = http_get(gw.addr("metrics"), "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("menshen_connections_total") && l.contains("reason=\"rate-limited\""))
        .expect("rate-limited counter");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n as usize, 400 - opens.len() + limited, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sockets_stay_within_the_descriptor_budget() {
    // 256 open files: 96 client connections and 96 upstream sockets. Three HTTP/2
    // clients ask for 300 slow requests at once; without the budget each would open an
    // upstream socket and the gateway would run out of descriptors.
    let up = start_upstream().await;
    let (token, account) = admin();
    let gw = TestGateway::start_with_open_files(&config(&up, &account, &[]), 256);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.2"), "nas.test", true).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        clients.push(send);
    }
    let mut requests = Vec::new();
    for send in &clients {
        for _ in 0..100 {
            let mut send = send.clone();
            requests.push(tokio::spawn(async move {
                let req = http::Request::get("https://nas.test/slow").body(Full::new(Bytes::new())).unwrap();
                let resp = tokio::time::timeout(DEADLINE, send.send_request(req)).await.expect("answered in time");
                resp.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
    }
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/blocks", &token, None).await;
    assert_eq!(code, 200, "the admin listener answers while every upstream socket is taken");
    let mut statuses = std::collections::BTreeMap::new();
    for r in requests {
        *statuses.entry(r.await.unwrap()).or_insert(0) += 1;
    }
    let opened = up.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened <= 96, "{opened} upstream sockets opened");
    assert_eq!(statuses.get(&200).copied().unwrap_or(0), opened, "{statuses:?}");
    assert_eq!(statuses.get(&502).copied().unwrap_or(0), 300 - opened, "the rest failed at once: {statuses:?}");
    // The budget comes back: once those finished, requests are served again.
    assert_eq!(status(&gw, "127.0.0.3").await, Some(200));
}
