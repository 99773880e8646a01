//! The gateway end to end: real process, real TLS, real log file, distinct loopback
//! sources (127.0.0.2 allowed, 127.0.0.3 not, 127.0.0.4 blocked, ::1 allowed).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(bind: &str, upstream: std::net::SocketAddr, ws: std::net::SocketAddr, extra_tls: &str) -> String {
    let down = closed_port();
    format!(
        r#"{head}
[ip_sets]
maintenance = ["127.0.0.2/32", "127.0.0.5/32", "::1/128"]
blocked = ["127.0.0.4/32"]

[zones]
lan = ["127.0.0.0/8"]

[[zone_rule]]
from = "wan"
to = "lan"
access = "allow"

[[listener]]
name = "https"
bind = "{bind}"
zone = "wan"
kind = "https"

[[service]]
name = "admin"
listener = "https"
hosts = ["admin.test"]
upstream = "http://{upstream}"
zone = "lan"
allow = ["maintenance", "127.0.0.4/32"]

[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{upstream}"
zone = "lan"
allow = ["maintenance"]
idle_timeout = "1s"

[[service]]
name = "ws"
listener = "https"
hosts = ["ws.test"]
upstream = "http://{ws}"
zone = "lan"
allow = ["maintenance"]

[[service]]
name = "slow"
listener = "https"
hosts = ["slow.test"]
upstream = "http://{upstream}"
zone = "lan"
allow = ["maintenance"]
upstream_timeout = "1s"

[[service]]
name = "down"
listener = "https"
hosts = ["down.test"]
upstream = "http://127.0.0.1:{down}"
zone = "lan"
allow = ["maintenance"]
"#,
        head = config_head(extra_tls)
    )
}

async fn gateway(bind: &str, extra_tls: &str) -> (TestGateway, TestUpstream) {
    let up = start_upstream().await;
    let ws = start_ws_upstream().await;
    (TestGateway::start(&config(bind, up.addr, ws, extra_tls)), up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_sources_leave_complete_records() {
    let (gw, up) = gateway("127.0.0.1:0", "").await;
    let addr = gw.addr("https");
    let c = gw.client();

    let ok = c.get(addr, "127.0.0.2", "admin.test").path("/panel?token=SECRET").send().await.expect("allowed");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["x-upstream"], "yes");
    assert_eq!(ok.headers["strict-transport-security"], "max-age=31536000");
    assert_eq!(ok.json()["path"], "/panel");

    // 127.0.0.3 is in no allow list: the connection is closed before any HTTP.
    let denied = c.get(addr, "127.0.0.3", "admin.test").send().await;
    assert!(denied.is_err(), "denied source got an answer");

    let open = gw.conn_open_from("127.0.0.2").await;
    assert_fields(&open, &CONN_OPEN_FIELDS);
    assert_eq!(open["event"], "conn.open");
    assert_eq!(open["gateway"], "test-gw");
    assert_eq!(open["listener"], "https");
    assert_eq!(open["proto"], "tls");
    assert_eq!(open["dst_ip"], "127.0.0.1");
    assert_eq!(open["dst_port"], addr.port());
    assert!(open["src_port"].as_u64().unwrap() > 0);
    assert_eq!(open["service"], "admin");
    assert_eq!(open["zone_from"], "wan");
    assert_eq!(open["zone_to"], "lan");
    assert_eq!(open["action"], "allow");
    assert_eq!(open["reason"], "allowlist");
    assert_eq!(open["sni"], "admin.test");
    assert!(open["tls_version"] == "TLSv1.3");

    let req = gw.wait_record(|r| r["event"] == "http.request" && r["conn"] == open["conn"]).await;
    assert_fields(&req, &HTTP_FIELDS);
    assert_eq!(req["method"], "GET");
    assert_eq!(req["host"], "admin.test");
    assert_eq!(req["path"], "/panel", "the query (with its token) must not be logged");
    assert_eq!(req["status"], 200);
    assert_eq!(req["bytes_out"], ok.body.len());

    let close = gw.conn_close(&open["conn"]).await;
    assert_fields(&close, &CONN_CLOSE_FIELDS);
    assert_eq!(close["close_reason"], "client");
    assert_eq!(close["upstream_ip"], "127.0.0.1");
    assert_eq!(close["upstream_port"], up.addr.port());
    assert!(close["bytes_in"].as_u64().unwrap() > 200);
    assert!(close["bytes_out"].as_u64().unwrap() > ok.body.len() as u64);
    assert!(close["start"].as_str().unwrap().ends_with("+08:00"));

    let deny = gw.conn_open_from("127.0.0.3").await;
    assert_fields(&deny, &CONN_OPEN_FIELDS);
    assert_eq!(deny["action"], "deny");
    assert_eq!(deny["reason"], "not-allowed");
    assert_eq!(deny["service"], "admin");
    assert_eq!(deny["tls_version"], Value::Null);

    // The chain: seq increases by one and each prev is the previous hash.
    let all = gw.records();
    // A file opens with its header; the gateway's first own record follows.
    assert_eq!(all[0]["event"], "log.header");
    assert_eq!(all[1]["event"], "gateway.start");
    for w in all.windows(2) {
        assert_eq!(w[1]["seq"].as_u64().unwrap(), w[0]["seq"].as_u64().unwrap() + 1);
        assert_eq!(w[1]["prev"], w[0]["hash"]);
    }
    assert!(!std::fs::read_to_string(gw.log_dir().read_dir().unwrap().next().unwrap().unwrap().path())
        .unwrap()
        .contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_ipv4_mapped_sources() {
    // A dual-stack listener: IPv4 clients arrive as ::ffff:a.b.c.d and must be matched
    // and logged as IPv4.
    let (gw, _up) = gateway("[::]:0", "").await;
    let port = gw.addr("https").port();
    let v6 = std::net::SocketAddr::new(ip("::1"), port);
    let v4 = std::net::SocketAddr::new(ip("127.0.0.1"), port);
    let c = gw.client();

    let r = c.get(v6, "::1", "admin.test").send().await.expect("::1 allowed");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "::1");
    assert_eq!(r.json()["headers"]["forwarded"], "for=\"[::1]\";proto=https;host=admin.test");
    let r = c.get(v4, "127.0.0.2", "admin.test").send().await.expect("mapped allowed");
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.2");
    assert!(c.get(v4, "127.0.0.3", "admin.test").send().await.is_err());

    let open = gw.conn_open_from("::1").await;
    assert_eq!(open["action"], "allow");
    let mapped = gw.conn_open_from("127.0.0.2").await;
    assert_eq!(mapped["action"], "allow");
    let denied = gw.conn_open_from("127.0.0.3").await;
    assert_eq!(denied["reason"], "not-allowed");
    assert!(gw.records().iter().all(|r| !r.to_string().contains("::ffff:")), "mapped form leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_source_is_refused_before_tls() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    // 127.0.0.4 is in admin's allow list, and in `blocked`: blocked wins.
    let mut tcp = tcp_from(ip("127.0.0.4"), gw.addr("https")).await.expect("tcp");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "a blocked source got bytes");
    let r = gw.conn_open_from("127.0.0.4").await;
    assert_fields(&r, &CONN_OPEN_FIELDS);
    assert_eq!(r["action"], "deny");
    assert_eq!(r["reason"], "blocked");
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["sni"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_never_reach_the_upstream() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let spoof = [
        ("x-forwarded-for", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9"),
        ("x-real-ip", "10.9.9.9"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil.test"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
    ];
    for h2 in [false, true] {
        let r = gw
            .client()
            .get(gw.addr("https"), "127.0.0.2", "admin.test")
            .headers(&spoof)
            .h2(h2)
            .send()
            .await
            .expect("allowed");
        let h = &r.json()["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        assert_eq!(h["x-real-ip"], "127.0.0.2");
        assert_eq!(h["forwarded"], "for=127.0.0.2;proto=https;host=admin.test");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "admin.test");
        assert_eq!(h["host"], "admin.test");
        assert!(h.get("x-secret-hop").is_none(), "a header named in Connection passed: {h}");
        assert!(!h.to_string().contains("10.9.9.9"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_match_the_sni_service() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let addr = gw.addr("https");
    let c = gw.client();
    // SNI admin.test, Host nas.test (another service on the same listener): 421.
    for h2 in [false, true] {
        let r = c.get(addr, "127.0.0.2", "admin.test").host("nas.test").h2(h2).send().await.expect("answer");
        assert_eq!(r.status, 421, "h2={h2}");
        assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    }
    let logged = gw.wait_record(|r| r["event"] == "http.request" && r["status"] == 421).await;
    assert_eq!(logged["host"], "nas.test");
    assert_eq!(logged["service"], "admin");

    // Absolute-form naming another host: 421, never forwarded.
    let tls = c.connect(addr, ip("127.0.0.2"), "admin.test", false).await.expect("tls");
    let (mut rd, mut wr) = tokio::io::split(tls);
    wr.write_all(b"GET http://nas.test/ HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut out)).await;
    assert!(out.starts_with(b"HTTP/1.1 421"), "{}", String::from_utf8_lossy(&out));

    // A name no service has: the handshake is refused, reason no-route.
    assert!(c.get(addr, "127.0.0.2", "unknown.test").send().await.is_err());
    let r = gw.wait_record(|r| r["event"] == "conn.open" && r["sni"] == "unknown.test").await;
    assert_eq!(r["action"], "deny");
    assert_eq!(r["reason"], "no-route");
    assert_eq!(r["service"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_the_tls_port_is_refused() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let mut tcp = tcp_from(ip("127.0.0.2"), gw.addr("https")).await.expect("tcp");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: admin.test\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await.expect("closed in time");
    assert!(out.is_empty(), "plaintext got an answer: {out:?}");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_fields(&r, &CONN_OPEN_FIELDS);
    assert_eq!(r["action"], "deny");
    assert_eq!(r["reason"], "tls-required");
    assert_eq!(r["proto"], "plain");
}

/// A TLS 1.1 ClientHello (legacy version 0x0302, no supported_versions) with SNI.
fn tls11_client_hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&[0x00, 0x00]); // server_name
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0, 0, 0];
    hs[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tls_versions_are_refused() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let mut tcp = tcp_from(ip("127.0.0.2"), gw.addr("https")).await.expect("tcp");
    tcp.write_all(&tls11_client_hello("admin.test")).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await.expect("closed in time");
    // At most an alert record (type 21), never a ServerHello (type 22).
    assert!(out.is_empty() || out[0] == 21, "TLS 1.1 got {out:?}");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!(r["action"], "deny");
    assert_eq!(r["reason"], "tls-version");
    assert_eq!(r["proto"], "tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_13_refuses_a_tls12_client() {
    let (gw, _up) = gateway("127.0.0.1:0", "min_version = \"1.3\"").await;
    let c = gw.client();
    let cfg12 = c.config(&[b"http/1.1"], &[&rustls::version::TLS12]);
    assert!(c.connect_with(gw.addr("https"), ip("127.0.0.2"), "admin.test", cfg12).await.is_err());
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!(r["reason"], "tls-version");
    assert_eq!(r["service"], "admin");
    let cfg13 = c.config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    assert!(c.connect_with(gw.addr("https"), ip("127.0.0.5"), "admin.test", cfg13).await.is_ok());
    let ok = gw.conn_open_from("127.0.0.5").await;
    assert_eq!(ok["tls_version"], "TLSv1.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clients() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let c = gw.client();
    let r1 = c.get(gw.addr("https"), "127.0.0.2", "nas.test").path("/one").send().await.expect("h1");
    assert_eq!(r1.version, http::Version::HTTP_11);
    assert_eq!(r1.json()["path"], "/one");
    let r2 = c.get(gw.addr("https"), "127.0.0.2", "nas.test").path("/two").h2(true).send().await.expect("h2");
    assert_eq!(r2.version, http::Version::HTTP_2);
    assert_eq!(r2.status, 200);
    assert_eq!(r2.json()["path"], "/two");
    assert_eq!(r2.json()["headers"]["host"], "nas.test");
    assert_eq!(r2.headers["strict-transport-security"], "max-age=31536000");
    gw.wait_record(|r| r["event"] == "http.request" && r["path"] == "/two" && r["status"] == 200).await;
    let tls12 = c.config(&[b"h2"], &[&rustls::version::TLS12]);
    let s = c.connect_with(gw.addr("https"), ip("127.0.0.5"), "nas.test", tls12).await.expect("TLS 1.2 is accepted");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.2"), "ws.test", false).await.expect("tls");
    let (mut ws, resp) = tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async("wss://ws.test/socket", tls))
        .await
        .expect("in time")
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let back =
            tokio::time::timeout(DEADLINE, ws.next()).await.expect("echo in time").expect("message").expect("ok");
        assert_eq!(back.into_text().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
    drop(ws);
    let open = gw.conn_open_from("127.0.0.2").await;
    let req = gw.wait_record(|r| r["event"] == "http.request" && r["conn"] == open["conn"]).await;
    assert_eq!(req["status"], 101);
    let close = gw.conn_close(&open["conn"]).await;
    assert!(close["bytes_in"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_quick_502() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let r = gw.client().get(gw.addr("https"), "127.0.0.2", "down.test").send().await.expect("answer");
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("unreachable"));
    let logged = gw.wait_record(|r| r["event"] == "http.request" && r["service"] == "down").await;
    assert_eq!(logged["status"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request() {
    let (mut gw, up) = gateway("127.0.0.1:0", "").await;
    let c = gw.client();
    let addr = gw.addr("https");
    let inflight = tokio::spawn(async move { c.get(addr, "127.0.0.2", "admin.test").path("/slow").send().await });
    tokio::time::timeout(DEADLINE, up.slow_started.notified()).await.expect("request reached the upstream");
    gw.signal("TERM");
    let resp = match inflight.await.unwrap() {
        Ok(r) => r,
        Err(e) => panic!(
            "in-flight request failed: {e}\ngateway stderr:\n{}\nlog: {:#?}",
            std::fs::read_to_string(&gw.stderr).unwrap_or_default(),
            gw.records()
        ),
    };
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"slow done");
    assert_eq!(gw.wait_exit(), 0);
    // New connections are refused once stopped.
    assert!(tcp_from(ip("127.0.0.2"), addr).await.is_err());
    let all = gw.records();
    let req = all.iter().find(|r| r["event"] == "http.request" && r["path"] == "/slow").expect("request logged");
    assert_eq!(req["status"], 200);
    assert!(all.iter().any(|r| r["event"] == "conn.close"));
    // The stop is the last event; a signed checkpoint closes the file after it.
    assert_eq!(all.last().unwrap()["event"], "log.checkpoint");
    let stop = &all[all.len() - 2];
    assert_eq!(stop["event"], "gateway.stop");
    assert_eq!(stop["cut_connections"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let c = gw.client();
    // nas has idle_timeout = 1s. Keep each connection open after one request.
    let h1 = c.connect(gw.addr("https"), ip("127.0.0.2"), "nas.test", false).await.expect("h1");
    let (mut s1, conn1) = hyper::client::conn::http1::handshake(TokioIo::new(h1)).await.unwrap();
    tokio::spawn(conn1);
    let req = http::Request::get("/").header("host", "nas.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(s1.send_request(req).await.unwrap().status(), 200);
    let h2 = c.connect(gw.addr("https"), ip("127.0.0.5"), "nas.test", true).await.expect("h2");
    let (mut s2, conn2) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2)).await.unwrap();
    tokio::spawn(conn2);
    let req = http::Request::get("https://nas.test/").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(s2.send_request(req).await.unwrap().status(), 200);
    for src in ["127.0.0.2", "127.0.0.5"] {
        let open = gw.conn_open_from(src).await;
        let close = gw.conn_close(&open["conn"]).await;
        assert_eq!(close["close_reason"], "idle", "{src}");
        let ms = close["duration_ms"].as_u64().unwrap();
        assert!((1000..5000).contains(&ms), "closed after {ms} ms");
    }
    drop((s1, s2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_too_slow_is_a_504() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    // /slow answers after 1.5 s; the service waits 1 s.
    let r = gw.client().get(gw.addr("https"), "127.0.0.2", "slow.test").path("/slow").send().await.expect("answer");
    assert_eq!(r.status, 504);
    assert!(String::from_utf8_lossy(&r.body).contains("did not answer in time"));
    let logged = gw.wait_record(|r| r["event"] == "http.request" && r["service"] == "slow").await;
    assert_eq!(logged["status"], 504);
}

/// An HTTPS upstream with a certificate from the test CA, answering "tls upstream".
async fn start_tls_upstream(pki: &TestPki) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(menshen::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("tls upstream"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified() {
    let pki = std::sync::Arc::new(TestPki::new(&["admin.test", "localhost"]));
    let up = start_tls_upstream(&pki).await;
    let topology_allow = lan_behind_https("allow");
    let body = format!(
        r#"{head}
[ip_sets]
maintenance = ["127.0.0.2/32"]

{topology_allow}

[[service]]
name = "verified"
listener = "https"
hosts = ["admin.test"]
upstream = "https://{up}"
upstream_ca = "ca.pem"
upstream_server_name = "localhost"
zone = "lan"
allow = ["maintenance"]

[[service]]
name = "unverifiable"
listener = "https"
hosts = ["localhost"]
upstream = "https://{up}"
upstream_server_name = "localhost"
zone = "lan"
allow = ["maintenance"]
"#,
        head = config_head("")
    );
    let gw = start_with_ca(&body, pki.clone());
    let c = gw.client();
    let ok = c.get(gw.addr("https"), "127.0.0.2", "admin.test").send().await.expect("answer");
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..], b"tls upstream");
    // The same upstream checked against the system roots: not trusted, so 502.
    let bad = c.get(gw.addr("https"), "127.0.0.2", "localhost").send().await.expect("answer");
    assert_eq!(bad.status, 502);
}

/// Start a gateway whose directory also holds the test CA as `ca.pem`.
fn start_with_ca(config: &str, pki: std::sync::Arc<TestPki>) -> TestGateway {
    TestGateway::start_with_files(config, pki.clone(), &[("ca.pem", pki.ca_pem.as_str())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_times_out() {
    let (gw, _up) = gateway("127.0.0.1:0", "handshake_timeout = \"1s\"").await;
    // Half a ClientHello, then silence.
    let mut tcp = tcp_from(ip("127.0.0.2"), gw.addr("https")).await.expect("tcp");
    tcp.write_all(&tls11_client_hello("admin.test")[..20]).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut buf)).await.expect("closed by the gateway");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!(r["action"], "deny");
    assert_eq!(r["reason"], "tls-handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_are_enforced() {
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let c = gw.client();
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("x-h{i}"), "v".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = c.get(gw.addr("https"), "127.0.0.2", "admin.test").headers(&many).send().await;
    assert!(matches!(&r, Ok(r) if r.status == 431) || r.is_err(), "120 headers accepted");
    let big = "a".repeat(70 * 1024);
    let r = c.get(gw.addr("https"), "127.0.0.2", "admin.test").headers(&[("x-big", &big)]).send().await;
    assert!(matches!(&r, Ok(r) if r.status == 431) || r.is_err(), "a 70 KiB header accepted");
    let r = c.get(gw.addr("https"), "127.0.0.2", "admin.test").headers(&[("x-big", &big)]).h2(true).send().await;
    assert!(matches!(&r, Ok(r) if r.status == 431) || r.is_err(), "a 70 KiB h2 header list accepted");
    // Within the limits: fine.
    let ok = c.get(gw.addr("https"), "127.0.0.2", "admin.test").headers(&many[..50]).send().await.expect("50 headers");
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (gw, up) = gateway("127.0.0.1:0", "").await;
    let c = gw.client();
    for i in 0..5 {
        let r = c
            .get(gw.addr("https"), "127.0.0.2", "nas.test")
            .path(&format!("/{i}"))
            .h2(i % 2 == 0)
            .send()
            .await
            .expect("ok");
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        up.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "five client connections, one pooled upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_still_stops_cleanly() {
    // The handlers are installed before anything listens: an early SIGTERM drains
    // and exits 0 with gateway.stop written, instead of killing the process.
    for _ in 0..3 {
        let (mut gw, _up) = gateway("127.0.0.1:0", "").await;
        gw.signal("TERM");
        assert_eq!(gw.wait_exit(), 0);
        let all = gw.records();
        let events: Vec<&str> = all.iter().rev().take(2).map(|r| r["event"].as_str().unwrap_or("")).collect();
        assert_eq!(events, ["log.checkpoint", "gateway.stop"], "{all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_pass() {
    // An h2c upgrade would become a raw tunnel past the Host check and the request log:
    // its Upgrade header is dropped and the request is proxied as plain HTTP/1.1.
    let (gw, _up) = gateway("127.0.0.1:0", "").await;
    let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.2"), "admin.test", false).await.expect("tls");
    let (mut rd, mut wr) = tokio::io::split(tls);
    wr.write_all(b"GET /h2c HTTP/1.1\r\nHost: admin.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let echo: Value = serde_json::from_str(body.trim()).expect("echo");
    assert!(echo["headers"].get("upgrade").is_none() && echo["headers"].get("http2-settings").is_none(), "{echo}");
}
