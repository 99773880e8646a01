//! Access windows end to end: the lifecycle over the real API, the rules, enforcement
//! and cuts measured against the window's end, restart, and lockout.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

struct Tokens {
    chen: String,
    wang: String,
    li: String,
    mei: String,
}

fn account(name: &str, role: &str, extra: &str) -> (String, String) {
    let (token, hash) = menshen::admin::auth::new_token(Some(name)).unwrap();
    (token, format!("[[account]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{hash}\"\n{extra}\n"))
}

async fn setup(extra_admin: &str, extra_windows: &str) -> (TestGateway, TestUpstream, Tokens) {
    let up = start_upstream().await;
    let ws = start_ws_upstream().await;
    let (chen, a1) = account("chen", "admin", "");
    let (wang, a2) = account("wang", "admin", "");
    let (li, a3) = account("li", "vendor", "vendor = \"acme\"\nservices = [\"admin-svc\", \"ws\"]");
    let (mei, a4) = account("mei", "viewer", "");
    let topology_window = lan_behind_https("window");
    let config = format!(
        r#"{head}
[ip_sets]
it = ["127.0.0.9/32"]

{topology_window}

[[service]]
name = "admin-svc"
listener = "https"
hosts = ["admin.test"]
upstream = "http://{up}"
zone = "lan"
allow = ["it"]
window_max = "1h"

[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{up}"
zone = "lan"
window_max = "2h"

[[service]]
name = "ws"
listener = "https"
hosts = ["ws.test"]
upstream = "http://{ws}"
zone = "lan"
window_max = "1h"

[admin]
bind = "127.0.0.1:0"
allow = ["127.0.0.0/8"]
{extra_admin}

[windows]
{extra_windows}

{a1}
{a2}
{a3}
{a4}
"#,
        head = config_head(""),
        up = up.addr,
    );
    let gw = TestGateway::start(&config);
    (gw, up, Tokens { chen, wang, li, mei })
}

fn window_request(services: &[&str], sources: &[&str], duration: &str) -> Value {
    json!({ "services": services, "sources": sources, "duration": duration, "reason": "replace the RAID controller" })
}

/// A window requested by the vendor (li) and approved by an admin (chen).
async fn open_window(gw: &TestGateway, t: &Tokens, request: Value) -> (String, Value) {
    let (code, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", &t.li, Some(request)).await;
    assert_eq!(code, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_string();
    let (code, a) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), &t.chen, None).await;
    assert_eq!(code, 200, "{a}");
    (id, w)
}

/// Poll the API until the window is in `state`.
async fn wait_state(gw: &TestGateway, token: &str, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (code, w) = gw.api("127.0.0.1", "GET", &format!("/api/v1/windows/{id}"), token, None).await;
        assert_eq!(code, 200, "{w}");
        if w["state"] == state {
            return w;
        }
        assert!(std::time::Instant::now() < deadline, "window never became {state}: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().expect("time string").parse().expect("RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_over_the_api() {
    let (gw, _up, t) = setup("", "").await;
    let addr = gw.addr("https");
    let c = gw.client();
    // wan -> lan is window-only: even the allow list does not open it.
    assert!(c.get(addr, "127.0.0.2", "admin.test").send().await.is_err());
    assert_eq!(gw.conn_open_from("127.0.0.2").await["reason"], "not-allowed");

    let (code, w) = gw
        .api(
            "127.0.0.1",
            "POST",
            "/api/v1/windows",
            &t.li,
            Some(window_request(&["admin-svc"], &["127.0.0.2/32"], "3s")),
        )
        .await;
    assert_eq!(code, 201, "{w}");
    assert_eq!(w["state"], "requested");
    assert_eq!(w["requester"], "li");
    assert!(w["start"].as_str().unwrap().ends_with("+08:00"));
    let id = w["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/windows/{id}");
    // Requested is not approved.
    assert!(c.get(addr, "127.0.0.2", "admin.test").send().await.is_err());

    let (code, _) = gw.api("127.0.0.1", "POST", &format!("{path}/approve"), &t.li, None).await;
    assert_eq!(code, 403, "a vendor cannot approve");
    let (code, _) = gw.api("127.0.0.1", "POST", &format!("{path}/approve"), &t.mei, None).await;
    assert_eq!(code, 403, "a viewer cannot approve");
    let (code, w) = gw.api("127.0.0.1", "POST", &format!("{path}/approve"), &t.chen, None).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["approver"], "chen");
    wait_state(&gw, &t.chen, &id, "active").await;

    let ok = c.get(addr, "127.0.0.2", "admin.test").path("/during").send().await.expect("open window");
    assert_eq!(ok.status, 200);
    let open =
        gw.wait_record(|r| r["event"] == "conn.open" && r["src_ip"] == "127.0.0.2" && r["action"] == "allow").await;
    assert_eq!(open["reason"], "window");
    assert_eq!(open["window"], id.as_str());
    assert_eq!(open["identity"], "li");
    // Another source is not in the window.
    assert!(c.get(addr, "127.0.0.3", "admin.test").send().await.is_err());
    // Nor another service.
    assert!(c.get(addr, "127.0.0.2", "nas.test").send().await.is_err());

    let w = wait_state(&gw, &t.chen, &id, "expired").await;
    assert!(c.get(addr, "127.0.0.2", "admin.test").send().await.is_err(), "expired window still open");
    assert_eq!(w["pending_review"], true);
    assert_eq!(w["activity"]["connections"], 1);
    assert_eq!(w["activity"]["sources"], json!(["127.0.0.2"]));
    assert!(w["activity"]["bytes_out"].as_u64().unwrap() > 0);

    let (code, e) = gw.api("127.0.0.1", "POST", &format!("{path}/review"), &t.chen, None).await;
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().starts_with("note"), "{e}");
    let (code, w) =
        gw.api("127.0.0.1", "POST", &format!("{path}/review"), &t.chen, Some(json!({"note": "logs checked"}))).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["pending_review"], false);
    assert_eq!(w["reviewed_by"], "chen");
    let (code, _) =
        gw.api("127.0.0.1", "POST", &format!("{path}/review"), &t.wang, Some(json!({"note": "again"}))).await;
    assert_eq!(code, 409);

    let (_, list) = gw.api("127.0.0.1", "GET", "/api/v1/windows?state=expired", &t.mei, None).await;
    assert!(list.as_array().unwrap().iter().any(|w| w["id"] == id.as_str()));

    for (event, identity) in [
        ("window.requested", "li"),
        ("window.approved", "chen"),
        ("window.active", "system"),
        ("window.expired", "system"),
        ("window.reviewed", "chen"),
    ] {
        let r = gw.wait_record(|r| r["event"] == event && r["window"] == id.as_str()).await;
        assert_eq!(r["identity"], identity, "{event}");
        if identity != "system" {
            assert_eq!(r["src_ip"], "127.0.0.1", "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_are_enforced() {
    let (gw, _up, t) = setup("", "").await;
    let post = |token: &str, body: Value| {
        let (gw, token) = (&gw, token.to_string());
        async move { gw.api("127.0.0.1", "POST", "/api/v1/windows", &token, Some(body)).await }
    };
    let msg = |v: &Value| v["error"].as_str().unwrap_or_default().to_string();

    let (code, e) = post(&t.mei, window_request(&["admin-svc"], &["127.0.0.2/32"], "1h")).await;
    assert_eq!(code, 403, "viewer: {e}");
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/windows", &t.mei, None).await;
    assert_eq!(code, 200, "viewers read");
    let (code, e) = post(&t.li, window_request(&["nas"], &["127.0.0.2/32"], "1h")).await;
    assert_eq!(code, 403);
    assert!(msg(&e).starts_with("services[0]"), "{e}");
    let (code, e) = post(&t.li, window_request(&["admin-svc"], &["127.0.0.2/32"], "2h")).await;
    assert_eq!(code, 400);
    assert!(msg(&e).contains("window_max"), "{e}");
    let (code, e) = post(&t.li, window_request(&["admin-svc"], &["127.0.0.0/16"], "1h")).await;
    assert_eq!(code, 400);
    assert!(msg(&e).starts_with("sources[0]") && msg(&e).contains("/24"), "{e}");
    let (code, e) = post(&t.chen, window_request(&["nas"], &["127.0.0.2/32", "2001:db8::/48"], "1h")).await;
    assert_eq!(code, 400);
    assert!(msg(&e).starts_with("sources[1]") && msg(&e).contains("/56"), "{e}");
    let mut past = window_request(&["admin-svc"], &["127.0.0.2/32"], "1h");
    past["start"] = json!("2020-01-01T00:00:00+08:00");
    let (code, e) = post(&t.li, past).await;
    assert_eq!((code, msg(&e).starts_with("start")), (400, true), "{e}");
    let (code, e) = post(&t.li, json!({"services": ["admin-svc"], "sources": ["127.0.0.2"], "duration": "1h"})).await;
    assert_eq!(code, 400);
    assert!(msg(&e).contains("reason"), "{e}");
    let (code, e) = post(
        &t.li,
        json!({"services": ["admin-svc"], "sources": ["127.0.0.2"], "duration": "1h", "reason": "x", "colour": 1}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(msg(&e).contains("colour"), "{e}");
    let (code, e) =
        post(&t.li, json!({"services": ["admin-svc"], "sources": ["not-an-ip"], "duration": "1h", "reason": "x"}))
            .await;
    assert_eq!((code, msg(&e).starts_with("sources[0]")), (400, true), "{e}");

    // Self-approval is refused unless configured.
    let (code, w) = post(&t.chen, window_request(&["nas"], &["127.0.0.2/32"], "1h")).await;
    assert_eq!(code, 201);
    let approve = format!("/api/v1/windows/{}/approve", w["id"].as_str().unwrap());
    let (code, e) = gw.api("127.0.0.1", "POST", &approve, &t.chen, None).await;
    assert_eq!(code, 403, "{e}");
    assert_eq!(e["code"], "self_approval");
    let (code, _) = gw.api("127.0.0.1", "POST", &approve, &t.wang, None).await;
    assert_eq!(code, 200);
    let (code, e) = gw.api("127.0.0.1", "POST", &approve, &t.wang, None).await;
    assert_eq!(code, 409, "{e}");

    // Vendors see their own windows only.
    let (_, mine) = gw.api("127.0.0.1", "GET", "/api/v1/windows", &t.li, None).await;
    assert!(mine.as_array().unwrap().iter().all(|w| w["requester"] == "li"));
    let (code, _) =
        gw.api("127.0.0.1", "GET", &format!("/api/v1/windows/{}", w["id"].as_str().unwrap()), &t.li, None).await;
    assert_eq!(code, 404);
    let (code, e) = gw.api("127.0.0.1", "GET", "/api/v1/windows/w-nope", &t.chen, None).await;
    assert_eq!((code, e["code"].as_str()), (404, Some("not_found")));
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/windows", "chen.wrong", None).await;
    assert_eq!(code, 401);
    let (code, _) = gw.api("127.0.0.1", "GET", "/api/v1/windows", "", None).await;
    assert_eq!(code, 401);
    let (code, e) = gw.api("127.0.0.1", "GET", "/api/v1/windows?state=open", &t.chen, None).await;
    assert_eq!(code, 400, "{e}");
    // No token needed for health; the admin listener refuses sources outside its allow list.
    let (code, _) = gw.api("127.0.0.1", "GET", "/healthz", "", None).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_when_configured_is_flagged() {
    let (gw, _up, t) = setup("", "allow_self_approval = true").await;
    let (_, w) = gw
        .api("127.0.0.1", "POST", "/api/v1/windows", &t.chen, Some(window_request(&["nas"], &["127.0.0.2/32"], "1h")))
        .await;
    let (code, w) = gw
        .api("127.0.0.1", "POST", &format!("/api/v1/windows/{}/approve", w["id"].as_str().unwrap()), &t.chen, None)
        .await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["self_approved"], true);
    let r = gw.wait_record(|r| r["event"] == "window.approved").await;
    assert_eq!(r["self_approved"], true);
    // Flagged for review by someone else: the self-approver cannot close the loop.
    let id = w["id"].as_str().unwrap();
    gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/revoke"), &t.chen, None).await;
    let note = Some(json!({"note": "fine"}));
    let (code, e) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/review"), &t.chen, note.clone()).await;
    assert_eq!(code, 403, "{e}");
    let (code, _) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/review"), &t.wang, note).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_less_times_are_in_the_gateway_zone() {
    let (gw, _up, t) = setup("", "").await;
    let tz = jiff::tz::TimeZone::get("Asia/Taipei").unwrap();
    let start = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 600).unwrap();
    let end = start + jiff::SignedDuration::from_mins(30);
    let local = |t: jiff::Timestamp| t.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let body = json!({"services": ["nas"], "sources": ["127.0.0.2"], "start": local(start), "end": local(end), "reason": "upgrade"});
    let (code, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", &t.chen, Some(body)).await;
    assert_eq!(code, 201, "{w}");
    assert_eq!(ts(&w["start"]), start);
    assert_eq!(ts(&w["end"]), end);
    assert!(w["start"].as_str().unwrap().ends_with("+08:00"));
}

/// Read until the connection breaks; the moment it did.
async fn until_cut_ws<
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
>(
    mut ws: S,
) -> jiff::Timestamp {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("cut in time") {
            Some(Ok(_)) => continue,
            _ => return jiff::Timestamp::now(),
        }
    }
}

async fn until_cut_body(mut body: hyper::body::Incoming) -> (jiff::Timestamp, usize) {
    use http_body_util::BodyExt;
    let mut got = 0;
    loop {
        match tokio::time::timeout(DEADLINE, body.frame()).await.expect("cut in time") {
            Some(Ok(f)) => got += f.data_ref().map(|d| d.len()).unwrap_or(0),
            _ => return (jiff::Timestamp::now(), got),
        }
    }
}

/// A WebSocket to ws.test and an HTTP/2 download from admin.test, both open.
async fn open_streams(
    gw: &TestGateway,
) -> (
    impl futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
    hyper::body::Incoming,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let c = gw.client();
    let tls = c.connect(gw.addr("https"), ip("127.0.0.2"), "ws.test", false).await.expect("ws tls");
    let (ws, _) = tokio_tungstenite::client_async("wss://ws.test/", tls).await.expect("websocket");
    let tls = c.connect(gw.addr("https"), ip("127.0.0.5"), "admin.test", true).await.expect("h2 tls");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req =
        http::Request::get("https://admin.test/stream").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.expect("download starts");
    assert_eq!(resp.status(), 200);
    (ws, resp.into_body())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_cut_within_a_second_of_the_end() {
    let (gw, _up, t) = setup("", "").await;
    let req = window_request(&["admin-svc", "ws"], &["127.0.0.2/32", "127.0.0.5/32"], "3s");
    let (_, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", &t.li, Some(req)).await;
    let id = w["id"].as_str().unwrap().to_string();
    let (code, _) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), &t.chen, None).await;
    assert_eq!(code, 200);
    let end = ts(&w["end"]);
    let (ws, body) = open_streams(&gw).await;
    let (ws_cut, (h2_cut, bytes)) = tokio::join!(until_cut_ws(ws), until_cut_body(body));
    assert!(bytes > 10 * 1024, "the download ran before the cut ({bytes} bytes)");
    for (what, cut) in [("websocket", ws_cut), ("h2 download", h2_cut)] {
        let after = cut.duration_since(end);
        assert!(after >= jiff::SignedDuration::from_millis(-50), "{what} cut {after:?} before the end");
        assert!(after < jiff::SignedDuration::from_secs(1), "{what} cut {after:?} after the end");
    }
    for src in ["127.0.0.2", "127.0.0.5"] {
        let open = gw.wait_record(|r| r["event"] == "conn.open" && r["src_ip"] == src && r["reason"] == "window").await;
        let close = gw.conn_close(&open["conn"]).await;
        assert_eq!(close["close_reason"], "window-ended", "{src}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cuts_at_once() {
    let (gw, _up, t) = setup("", "").await;
    let req = window_request(&["admin-svc", "ws"], &["127.0.0.2/32", "127.0.0.5/32"], "1h");
    let (_, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", &t.li, Some(req)).await;
    let id = w["id"].as_str().unwrap().to_string();
    gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), &t.chen, None).await;
    let (ws, body) = open_streams(&gw).await;
    let cuts = tokio::spawn(async move { tokio::join!(until_cut_ws(ws), until_cut_body(body)) });
    let (code, w) = gw
        .api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/revoke"), &t.wang, Some(json!({"note": "done early"})))
        .await;
    assert_eq!(code, 200, "{w}");
    let revoked = jiff::Timestamp::now();
    let (ws_cut, (h2_cut, _)) = cuts.await.unwrap();
    for (what, cut) in [("websocket", ws_cut), ("h2 download", h2_cut)] {
        assert!(cut.duration_since(revoked) < jiff::SignedDuration::from_secs(1), "{what} cut late");
    }
    let r = gw.wait_record(|r| r["event"] == "window.revoked").await;
    assert_eq!((r["identity"].as_str(), r["note"].as_str()), (Some("wang"), Some("done early")));
    gw.wait_record(|r| r["event"] == "conn.close" && r["close_reason"] == "window-ended").await;
    assert!(gw.client().get(gw.addr("https"), "127.0.0.2", "admin.test").send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_window_survives_a_restart() {
    let (mut gw, _up, t) = setup("", "").await;
    let (id, _) = open_window(&gw, &t, window_request(&["admin-svc"], &["127.0.0.2/32"], "1h")).await;
    assert_eq!(gw.client().get(gw.addr("https"), "127.0.0.2", "admin.test").send().await.expect("open").status, 200);
    gw.restart();
    let r =
        gw.client().get(gw.addr("https"), "127.0.0.2", "admin.test").send().await.expect("still open after restart");
    assert_eq!(r.status, 200);
    gw.wait_count(2, |r| r["event"] == "conn.open" && r["window"] == id.as_str()).await;
    let w = wait_state(&gw, &t.chen, &id, "active").await;
    assert_eq!(w["approver"], "chen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_bad_tokens_lock_out_account_and_source() {
    let (gw, _up, t) = setup("lockout_duration = \"2s\"", "").await;
    for _ in 0..5 {
        let (code, _) = gw.api("127.0.0.2", "GET", "/api/v1/windows", "chen.0000", None).await;
        assert_eq!(code, 401);
    }
    let locked_at = std::time::Instant::now();
    let (code, e) = gw.api("127.0.0.2", "GET", "/api/v1/windows", &t.chen, None).await;
    assert_eq!(code, 429, "{e}");
    assert_eq!(e["code"], "locked_out");
    let (code, _) = gw.api("127.0.0.3", "GET", "/api/v1/windows", &t.chen, None).await;
    assert_eq!(code, 429, "the account is locked from every source");
    let (code, _) = gw.api("127.0.0.3", "GET", "/api/v1/windows", &t.wang, None).await;
    assert_eq!(code, 200, "other accounts from other sources are not");
    let (code, _) = gw.api("127.0.0.2", "GET", "/api/v1/windows", &t.wang, None).await;
    assert_eq!(code, 429, "the source is locked for every account");

    // The lockout ends by itself.
    loop {
        let (code, _) = gw.api("127.0.0.2", "GET", "/api/v1/windows", &t.chen, None).await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 429);
        assert!(locked_at.elapsed() < DEADLINE, "lockout never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(locked_at.elapsed() >= Duration::from_millis(1500), "lockout ended after {:?}", locked_at.elapsed());

    let all = gw.records();
    let failed: Vec<_> = all.iter().filter(|r| r["event"] == "admin.auth_failed").collect();
    assert_eq!(failed.len(), 5);
    assert!(failed.iter().all(|r| r["identity"] == "chen" && r["src_ip"] == "127.0.0.2" && r["reason"] == "bad-token"));
    let locks: Vec<_> = all.iter().filter(|r| r["event"] == "admin.lockout").collect();
    assert_eq!(locks.len(), 2, "{locks:?}");
    assert!(locks.iter().any(|r| r["locked"] == "account"));
    assert!(locks.iter().any(|r| r["locked"] == "source"));
    assert!(!all.iter().any(|r| r.to_string().contains(&t.chen)), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_other_sources() {
    let up = start_upstream().await;
    let (token, line) = account("chen", "admin", "");
    let config = format!(
        "{head}\n[ip_sets]\nit = [\"127.0.0.2/32\"]\n[zones]\nlan = [\"127.0.0.0/8\"]\n[[zone_rule]]\nfrom = \"wan\"\nto = \"lan\"\naccess = \"allow\"\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"https\"\n[[service]]\nname = \"a\"\nlistener = \"https\"\nhosts = [\"admin.test\"]\nupstream = \"http://{}\"\nzone = \"lan\"\nallow = [\"it\"]\n\n[admin]\nbind = \"127.0.0.1:0\"\nallow = [\"it\"]\n\n{line}",
        up.addr,
        head = config_head("")
    );
    let gw = TestGateway::start(&config);
    let (code, _) = gw.api("127.0.0.2", "GET", "/api/v1/windows", &token, None).await;
    assert_eq!(code, 200);
    assert!(gw.client().connect(gw.addr("admin"), ip("127.0.0.3"), "localhost", false).await.is_err());
    let r =
        gw.wait_record(|r| r["event"] == "conn.open" && r["listener"] == "admin" && r["src_ip"] == "127.0.0.3").await;
    assert_eq!((r["action"].as_str(), r["reason"].as_str()), (Some("deny"), Some("not-allowed")));
}

/// Run the CLI with the admin URL, CA and `token` in its environment.
fn cli(gw: &TestGateway, token: &str, args: &[&str]) -> (i32, String, String) {
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, &gw.pki.ca_pem).unwrap();
    let out = std::process::Command::new(bin())
        .args(args)
        .env("MENSHEN_ADMIN_URL", format!("https://localhost:{}", gw.addr("admin").port()))
        .env("MENSHEN_TOKEN", token)
        .env("MENSHEN_ADMIN_CA", &ca)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_cli() {
    let (gw, _up, t) = setup("", "").await;
    let request = [
        "window",
        "request",
        "--service",
        "admin-svc",
        "--source",
        "127.0.0.2/32",
        "--duration",
        "1h",
        "--reason",
        "swap the disk",
        "--json",
    ];
    let (code, out, err) = cli(&gw, &t.li, &request);
    assert_eq!(code, 0, "{err}");
    let w: Value = serde_json::from_str(&out).expect("--json prints JSON");
    let id = w["id"].as_str().unwrap().to_string();
    assert_eq!(w["state"], "requested");

    let (code, _, err) = cli(&gw, &t.li, &["window", "approve", &id]);
    assert_eq!(code, 1, "refused: exit 1");
    assert!(err.contains("403") && err.contains("only admins"), "{err}");
    let (code, out, err) = cli(&gw, &t.chen, &["window", "approve", &id, "--note", "ok for today"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approver      chen"), "{out}");

    let (code, out, _) = cli(&gw, &t.mei, &["window", "list"]);
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{out}");
    assert!(out.contains(&id) && out.contains("li") && out.contains("admin-svc"), "{out}");
    let (code, out, _) = cli(&gw, &t.chen, &["window", "show", &id, "--json"]);
    assert_eq!(code, 0);
    let w: Value = serde_json::from_str(&out).unwrap();
    assert!(w["state"] == "approved" || w["state"] == "active", "{w}");

    let (code, _, err) = cli(
        &gw,
        &t.chen,
        &["window", "request", "--service", "nope", "--source", "127.0.0.2", "--duration", "1h", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("services[0]"), "{err}");
    let (code, _, err) = cli(&gw, "chen.wrong", &["window", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    // Could not ask: no token, or nothing listening.
    let out = std::process::Command::new(bin())
        .args(["window", "list"])
        .env_remove("MENSHEN_TOKEN")
        .env_remove("MENSHEN_ADMIN_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin())
        .args(["window", "list", "--url", &format!("https://127.0.0.1:{}", closed_port()), "--token", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn menshen_token_prints_a_token_and_its_hash() {
    let out = std::process::Command::new(bin()).args(["token", "--account", "chen"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text.lines().find_map(|l| l.strip_prefix("token        ")).expect("token line").trim();
    let hash = text.lines().find_map(|l| l.strip_prefix("token_sha256 = \"")).expect("hash line").trim_end_matches('"');
    assert!(token.starts_with("chen.") && token.len() == 69, "{token}");
    assert_eq!(hash, menshen::admin::auth::hex(&menshen::admin::auth::token_hash(token)));
    let again = std::process::Command::new(bin()).args(["token"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&again.stdout).contains(token));
}

/// A webhook receiver: answers 500 to the first POST, 200 after; keeps every body.
async fn start_hook() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let mut seen = seen.lock().unwrap();
                        seen.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let status = if seen.len() == 1 { 500 } else { 200 };
                        let mut resp = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_posted_to_the_webhook_with_retries() {
    let (hook, got) = start_hook().await;
    let (gw, _up, t) = setup("", &format!("webhook = \"http://{hook}/hook\"")).await;
    let (id, _) = open_window(&gw, &t, window_request(&["admin-svc"], &["127.0.0.2/32"], "1h")).await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let events: Vec<String> =
            got.lock().unwrap().iter().map(|v| v["event"].as_str().unwrap_or("").to_string()).collect();
        let requested = events.iter().filter(|e| *e == "window.requested").count();
        if requested >= 2
            && events.iter().any(|e| e == "window.approved")
            && events.iter().any(|e| e == "window.active")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "webhook got {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["window"], id.as_str());
    assert_eq!(first["identity"], "li");
    assert_eq!(first["requester"], "li");
}

/// Start the gateway binary on a minimal config in `dir`; its exit code and stderr
/// (it is expected to refuse to start).
fn start_expecting_failure(dir: &std::path::Path) -> (i32, String) {
    let pki = TestPki::new(&["admin.test"]);
    std::fs::write(dir.join("gateway.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("gateway.key"), &pki.key_pem).unwrap();
    let cfg = dir.join("menshen.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"https\"\n",
            config_head("")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started on a bad window store");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn a_damaged_window_store_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/windows.sqlite"), vec![0x5a; 8192]).unwrap();
    let (code, err) = start_expecting_failure(dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("windows.sqlite") && err.contains("not a database"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_locked_window_store_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    // Another process (here: this test) holds the database exclusively.
    let db = rusqlite::Connection::open(dir.path().join("state/windows.sqlite")).unwrap();
    db.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE; CREATE TABLE held (x); BEGIN EXCLUSIVE; INSERT INTO held VALUES (1);",
    )
    .unwrap();
    let (code, err) = start_expecting_failure(dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("windows.sqlite") && err.contains("locked"), "{err}");
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_does_not_keep_a_window_open() {
    let (gw, _up, t) = setup("", "").await;
    let (id, w) =
        open_window(&gw, &t, window_request(&["admin-svc", "ws"], &["127.0.0.2/32", "127.0.0.5/32"], "3s")).await;
    let end = ts(&w["end"]);
    let (ws, body) = open_streams(&gw).await;
    // Another process holds the store at the end: the cut must not wait for it.
    let db = rusqlite::Connection::open(gw.dir.path().join("state/windows.sqlite")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let (ws_cut, (h2_cut, _)) = tokio::join!(until_cut_ws(ws), until_cut_body(body));
    for cut in [ws_cut, h2_cut] {
        assert!(
            cut.duration_since(end) < jiff::SignedDuration::from_secs(1),
            "cut {:?} after the end",
            cut.duration_since(end)
        );
    }
    db.execute_batch("ROLLBACK;").unwrap();
    drop(db);
    // Once the store is free, the end is stored and recorded.
    wait_state(&gw, &t.chen, &id, "expired").await;
    gw.wait_record(|r| r["event"] == "window.expired" && r["window"] == id.as_str()).await;
}
