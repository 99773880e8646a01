//! Live reload end to end: SIGHUP and `POST /api/v1/reload` on the real gateway, a bad
//! file that changes nothing, restart-only keys, live connections cut only when the new
//! policy refuses them, listeners opened and closed, open windows kept, and 20 reloads
//! under load without a failed request.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Setup {
    gw: TestGateway,
    up: TestUpstream,
    token: String,
    account: String,
}

/// A config: service `nas` on listener `https` allowing `allow`; `extra` is appended.
fn config(up: &TestUpstream, account: &str, allow: &[&str], extra: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{head}
{topology}
[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{up}"
zone = "lan"
allow = [{allow}]
window_max = "1h"

[admin]
bind = "127.0.0.1:0"
allow = ["ADMIN_ALLOW"]

[windows]
allow_self_approval = true

{account}
{extra}
"#,
        head = config_head(""),
        topology = lan_behind_https("allow"),
        up = up.addr,
        allow = allow.join(", "),
    )
    .replace("ADMIN_ALLOW", "127.0.0.0/29")
}

async fn setup(allow: &[&str]) -> Setup {
    let up = start_upstream().await;
    let (token, hash) = menshen::admin::auth::new_token(Some("chen")).unwrap();
    let account = format!("[[account]]\nname = \"chen\"\nrole = \"admin\"\ntoken_sha256 = \"{hash}\"\n");
    let gw = TestGateway::start(&config(&up, &account, allow, ""));
    Setup { gw, up, token, account }
}

impl Setup {
    fn write(&self, text: &str) {
        std::fs::write(self.gw.dir.path().join("menshen.toml"), text).unwrap();
    }

    fn config(&self, allow: &[&str], extra: &str) -> String {
        config(&self.up, &self.account, allow, extra)
    }

    async fn reload(&self) -> (u16, Value) {
        self.gw.api("127.0.0.1", "POST", "/api/v1/reload", &self.token, None).await
    }

    async fn status(&self, src: &str) -> Option<u16> {
        self.gw.client().get(self.gw.addr("https"), src, "nas.test").send().await.ok().map(|r| r.status)
    }

    async fn metric(&self, line: &str) -> Option<f64> {
        let tls = self.gw.client().connect(self.gw.addr("admin"), ip("127.0.0.1"), "localhost", false).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/metrics").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
        let body = send.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.lines().find_map(|l| l.strip_prefix(line)).and_then(|v| v.trim().parse().ok())
    }
}

#[tokio::test]
async fn good_reload_applies_bad_reload_changes_nothing() {
    let s = setup(&["127.0.0.2/32"]).await;
    assert_eq!(s.status("127.0.0.2").await, Some(200));
    assert_eq!(s.status("127.0.0.3").await, None, "not in the allowlist yet");

    // SIGHUP with a file that also allows 127.0.0.3.
    s.write(&s.config(&["127.0.0.2/32", "127.0.0.3/32"], ""));
    s.gw.signal("HUP");
    let r = s.gw.wait_record(|r| r["event"] == "config.reload").await;
    assert_eq!(r["trigger"], "SIGHUP");
    assert_eq!(r["identity"], "system");
    assert_eq!(r["changes"], json!(["service nas: allow changed"]));
    assert_eq!(r["cut_connections"], 0);
    assert_ne!(r["config_digest"], r["previous_digest"]);
    assert_eq!(s.status("127.0.0.3").await, Some(200), "the new allowlist is in force");
    assert_eq!(s.metric("menshen_config_reloads_total{result=\"ok\"}").await, Some(2.0), "start + reload");

    // A bad file: every problem named, nothing applied.
    let bad = s.config(&["127.0.0.300/32"], "").replace("[windows]", "[windows]\ncolour = \"red\"");
    s.write(&bad);
    let (code, body) = s.reload().await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["code"], "config_invalid");
    let errors: Vec<String> = body["errors"].as_array().unwrap().iter().map(|e| e.to_string()).collect();
    assert!(errors.iter().any(|e| e.contains("menshen.toml") && e.contains("colour")), "{errors:?}");
    let failed = s.gw.wait_record(|r| r["event"] == "config.reload_failed").await;
    assert_eq!(failed["identity"], "chen");
    assert_eq!(failed["src_ip"], "127.0.0.1");
    assert_eq!(failed["trigger"], "api");
    assert!(!failed["errors"].as_array().unwrap().is_empty());
    assert_eq!(s.status("127.0.0.3").await, Some(200), "a bad file leaves the running policy serving");
    assert_eq!(s.metric("menshen_config_reloads_total{result=\"error\"}").await, Some(1.0));

    // A second bad value in an otherwise valid file: a CIDR with host bits.
    s.write(&s.config(&["127.0.0.3/24"], ""));
    let (code, body) = s.reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("service[0].allow"), "{body}");
    assert_eq!(s.status("127.0.0.2").await, Some(200));

    // Restart-only settings are refused by name, and nothing else in the file applies.
    let text = s.config(&["127.0.0.2/32"], "").replace("dir = \"log\"", "dir = \"log\"\nretention_days = 365");
    s.write(&text);
    let (code, body) = s.reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("log.retention_days: changed from 180 to 365"), "{body}");
    assert_eq!(s.status("127.0.0.3").await, Some(200), "the allowlist change in the same file was not applied");

    // A restart-only secret (a webhook URL) is named, never shown.
    let text = s
        .config(&["127.0.0.2/32"], "")
        .replace("[windows]", "[windows]\nwebhook = \"https://chat.example/hook/s3cr3t\"");
    s.write(&text);
    let (code, body) = s.reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("windows.webhook"), "{body}");
    assert!(!body.to_string().contains("s3cr3t"), "{body}");
    let failed = s.gw.wait_count(4, |r| r["event"] == "config.reload_failed").await;
    assert!(!failed.iter().any(|r| r.to_string().contains("s3cr3t")));

    // `menshen reload` (the CLI) with a good file.
    s.write(&s.config(&["127.0.0.2/32"], ""));
    let ca = s.gw.dir.path().join("ca.pem");
    std::fs::write(&ca, &s.gw.pki.ca_pem).unwrap();
    let out = std::process::Command::new(bin())
        .arg("reload")
        .env("MENSHEN_ADMIN_URL", format!("https://localhost:{}", s.gw.addr("admin").port()))
        .env("MENSHEN_TOKEN", &s.token)
        .env("MENSHEN_ADMIN_CA", &ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("service nas: allow changed"), "{stdout}");
    assert_eq!(s.status("127.0.0.3").await, None, "127.0.0.3 is out again");

    // The good configs are kept in state_dir/configs (start, SIGHUP, CLI).
    let kept = std::fs::read_dir(s.gw.dir.path().join("state/configs")).unwrap().count();
    assert_eq!(kept, 3);
}

/// A keep-alive admin connection from `src`, after one answered /healthz.
async fn admin_keep_alive(gw: &TestGateway, src: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = gw.client().connect(gw.addr("admin"), ip(src), "localhost", false).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/healthz").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    send
}

/// A keep-alive HTTP/1.1 connection to nas.test from `src`, after one answered request.
async fn keep_alive(gw: &TestGateway, src: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = gw.client().connect(gw.addr("https"), ip(src), "nas.test", false).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/first").header("host", "nas.test").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    send
}

#[tokio::test]
async fn reload_cuts_only_the_connections_it_refuses() {
    let s = setup(&["127.0.0.2/32", "127.0.0.3/32", "127.0.0.4/32"]).await;
    let mut keep = keep_alive(&s.gw, "127.0.0.2").await;
    let _cut = keep_alive(&s.gw, "127.0.0.3").await;
    let _blocked = keep_alive(&s.gw, "127.0.0.4").await;
    let admin_session = admin_keep_alive(&s.gw, "127.0.0.6").await;
    let open3 = s.gw.conn_open_from("127.0.0.3").await;
    let open4 = s.gw.conn_open_from("127.0.0.4").await;
    let open6 = s.gw.conn_open_from("127.0.0.6").await;

    // 127.0.0.3 leaves the allowlist, 127.0.0.4 is blocked, and the admin listener
    // no longer admits 127.0.0.6.
    let text = s
        .config(&["127.0.0.2/32", "127.0.0.4/32"], "")
        .replace("[zones]", "[ip_sets]\nblocked = [\"127.0.0.4/32\"]\n\n[zones]")
        .replace("127.0.0.0/29", "127.0.0.1/32");
    s.write(&text);
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cut_connections"], 3, "{body}");
    for open in [&open3, &open4, &open6] {
        assert_eq!(s.gw.conn_close(&open["conn"]).await["close_reason"], "reload", "{open}");
    }
    drop(admin_session);
    let reload = s.gw.wait_record(|r| r["event"] == "config.reload").await;
    assert_eq!(reload["cut_connections"], 3);

    // The other connection was not touched: same connection, next request.
    let req = http::Request::get("/second").header("host", "nas.test").body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(DEADLINE, keep.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let open2 = s.gw.conn_open_from("127.0.0.2").await;
    assert!(
        !s.gw.records().iter().any(|r| r["event"] == "conn.close" && r["conn"] == open2["conn"]),
        "the allowed connection stays open"
    );
}

#[tokio::test]
async fn reload_opens_and_closes_listeners() {
    let s = setup(&["127.0.0.2/32"]).await;
    let https = s.gw.addr("https");
    let extra = r#"
[[listener]]
name = "inside"
bind = "127.0.0.1:0"
zone = "wan"
kind = "https"

[[service]]
name = "nas-inside"
listener = "inside"
hosts = ["nas.test"]
upstream = "http://UP"
zone = "lan"
allow = ["127.0.0.4/32"]
"#
    .replace("UP", &s.up.addr.to_string());
    s.write(&s.config(&["127.0.0.2/32"], &extra));
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    let listeners = body["listeners"].as_array().unwrap();
    let addr_of = |name: &str| -> std::net::SocketAddr {
        listeners.iter().find(|l| l["name"] == name).unwrap()["addr"].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(addr_of("https"), https, "an unchanged listener keeps its socket");
    let inside = addr_of("inside");
    let changes = body["changes"].as_array().unwrap();
    assert!(changes.contains(&json!("listener inside: added")), "{changes:?}");
    let r = s.gw.client().get(inside, "127.0.0.4", "nas.test").send().await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.status("127.0.0.2").await, Some(200));

    // Remove it again: the port closes.
    s.write(&s.config(&["127.0.0.2/32"], ""));
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    assert!(body["changes"].as_array().unwrap().contains(&json!("listener inside: removed")));
    assert!(tokio::net::TcpStream::connect(inside).await.is_err(), "the removed listener's port is closed");
    assert_eq!(s.status("127.0.0.2").await, Some(200));

    // A listener that cannot bind fails the whole reload.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let bad = s.config(&["127.0.0.2/32", "127.0.0.3/32"], &extra.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
    s.write(&bad);
    let (code, body) = s.reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("listener[1].bind"), "{body}");
    assert_eq!(s.status("127.0.0.3").await, None, "nothing of the failed reload applied");
}

#[tokio::test]
async fn reload_keeps_open_windows() {
    let s = setup(&["127.0.0.2/32"]).await;
    let req = json!({"services": ["nas"], "sources": ["127.0.0.5/32"], "duration": "1h", "reason": "disk swap"});
    let (code, w) = s.gw.api("127.0.0.1", "POST", "/api/v1/windows", &s.token, Some(req)).await;
    assert_eq!(code, 201, "{w}");
    let id = w["id"].as_str().unwrap();
    let (code, a) = s.gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), &s.token, None).await;
    assert_eq!(code, 200, "{a}");
    let mut rides = keep_alive(&s.gw, "127.0.0.5").await;

    // A reload that adds a service before `nas` renumbers the services; the window
    // still opens `nas` (matched by name) and its live connection is not cut.
    let first = format!(
        "[[service]]\nname = \"aaa\"\nlistener = \"https\"\nhosts = [\"admin.test\"]\nupstream = \"http://{}\"\nzone = \"lan\"\nallow = [\"127.0.0.2/32\"]\n",
        s.up.addr
    );
    let text = s.config(&["127.0.0.2/32"], "").replacen("[[service]]", &format!("{first}\n[[service]]"), 1);
    s.write(&text);
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cut_connections"], 0);
    assert_eq!(s.status("127.0.0.5").await, Some(200), "the window still opens nas");
    let req = http::Request::get("/again").header("host", "nas.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(tokio::time::timeout(DEADLINE, rides.send_request(req)).await.unwrap().unwrap().status(), 200);

    // A reload that takes away the service's window_max closes what its windows opened.
    s.write(&text.replace("window_max = \"1h\"\n", ""));
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cut_connections"], 1, "{body}");
    let open = s.gw.conn_open_from("127.0.0.5").await;
    assert_eq!(s.gw.conn_close(&open["conn"]).await["close_reason"], "reload");
    assert_eq!(s.status("127.0.0.5").await, None, "no window opens nas any more");
    let _ = id;
}

/// A connection decided on the old snapshot whose TLS handshake finishes after the
/// reload's re-check is still cut (it checks itself when it registers).
#[tokio::test]
async fn a_handshake_in_flight_during_a_reload_does_not_escape_the_cut() {
    use std::io::{Read, Write};
    let s = setup(&["127.0.0.2/32", "127.0.0.3/32"]).await;
    let tcp = tcp_from(ip("127.0.0.3"), s.gw.addr("https")).await.unwrap();
    let mut sock = tcp.into_std().unwrap();
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let cfg = Arc::new(s.gw.client().config(&[b"http/1.1"], &[&rustls::version::TLS13]));
    let mut conn = rustls::ClientConnection::new(cfg, "nas.test".try_into().unwrap()).unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    // The server's first flight arrives only after it decided, on the old snapshot.
    let sock = tokio::task::spawn_blocking(move || {
        let mut b = [0u8; 1];
        sock.peek(&mut b).unwrap();
        sock
    })
    .await
    .unwrap();

    s.write(&s.config(&["127.0.0.2/32"], ""));
    let (code, body) = s.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(s.status("127.0.0.3").await, None, "127.0.0.3 is refused now");

    let first_line = tokio::task::spawn_blocking(move || {
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let _ = tls.write_all(b"GET /escaped HTTP/1.1\r\nhost: nas.test\r\nconnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_string()
    })
    .await
    .unwrap();
    assert!(!first_line.contains(" 200 "), "escaped the reload's cut: {first_line}");
    let cut =
        s.gw.wait_record(|r| r["event"] == "conn.close" && r["src_ip"] == "127.0.0.3" && r["close_reason"] == "reload")
            .await;
    assert!(!s.gw.records().iter().any(|r| r["event"] == "http.request" && r["path"] == "/escaped"), "{cut}");
}

#[tokio::test]
async fn twenty_reloads_under_load_fail_no_request() {
    let s = Arc::new(setup(&["127.0.0.2/32", "127.0.0.3/32"]).await);
    let addr = s.gw.addr("https");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    // Four clients: two open a connection per request, two keep one connection alive.
    for i in 0..4 {
        let (s, stop, ok, failed, errors) = (s.clone(), stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let src = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" };
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut sender = None;
            for n in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let result = if i < 2 {
                    s.gw.client().get(addr, src, "nas.test").path(&format!("/r{n}")).send().await.map(|r| r.status)
                } else {
                    if sender.is_none() {
                        sender = Some(keep_alive(&s.gw, src).await);
                    }
                    let send = sender.as_mut().unwrap();
                    let req = http::Request::get(format!("/k{n}"))
                        .header("host", "nas.test")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match tokio::time::timeout(DEADLINE, send.send_request(req)).await {
                        Ok(Ok(resp)) => {
                            let status = resp.status().as_u16();
                            resp.into_body().collect().await.map(|_| status).map_err(std::io::Error::other)
                        }
                        Ok(Err(e)) => Err(std::io::Error::other(e)),
                        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                    }
                };
                match result {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.lock().unwrap().push(format!("{src} #{n}: {other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // 20 reloads, alternating between two files that both allow the load's sources.
    let a = s.config(&["127.0.0.2/32", "127.0.0.3/32"], "");
    let b = s.config(&["127.0.0.2/32", "127.0.0.3/32", "127.0.0.9/32"], "");
    for i in 0..20 {
        s.write(if i % 2 == 0 { &b } else { &a });
        let (code, body) = s.reload().await;
        assert_eq!(code, 200, "reload {i}: {body}");
        assert_eq!(body["cut_connections"], 0, "reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        tokio::time::timeout(Duration::from_secs(70), l).await.unwrap().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "failed requests during reloads: {:?}", errors.lock().unwrap());
    assert!(ok >= 40, "the load ran alongside the reloads ({ok} requests)");
    let reloads = s.gw.wait_count(20, |r| r["event"] == "config.reload").await;
    assert_eq!(reloads.len(), 20);
}
