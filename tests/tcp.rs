//! TCP services end to end: a real OpenSSH server behind the gateway (key login inside
//! and outside a window, the session cut at the window's end), TLS passthrough to
//! `openssl s_server` routed by SNI, the RDP guard on real X.224 bytes, the PROXY
//! protocol in and out, and the relay's byte counts and half-close.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bytes each accepted connection sent, in accept order.
type Received = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// An upstream that keeps every byte each connection sent, and echoes it back.
struct Recorder {
    addr: SocketAddr,
    conns: Received,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Received = Arc::default();
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let got = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(got.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got.lock().unwrap().extend_from_slice(&buf[..n]);
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        Recorder { addr, conns }
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Wait until connection `i` has received at least `n` bytes; those bytes.
    async fn received(&self, i: usize, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(c) = self.conns.lock().unwrap().get(i) {
                let got = c.lock().unwrap().clone();
                if got.len() >= n {
                    return got;
                }
            }
            assert!(Instant::now() < deadline, "upstream connection {i} never got {n} bytes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A real OpenSSH server on a loopback port, with its own host key; `key` logs in.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    user: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd(dir: &Path) -> Sshd {
    let bin = Path::new("/usr/sbin/sshd");
    assert!(bin.exists(), "sshd is not installed (apt-get install openssh-server; .ci/run does)");
    let keygen = |path: &Path| {
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success(), "ssh-keygen");
    };
    let (host_key, key) = (dir.join("host_key"), dir.join("user_key"));
    keygen(&host_key);
    keygen(&key);
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    let user = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    if user == "root" {
        // sshd started as root insists on its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let port = closed_port();
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowUsers {user}\n",
            hk = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            ak = dir.join("authorized_keys").display(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(bin)
        .args(["-D", "-e", "-f"])
        .arg(&cfg)
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    // Ready when it accepts a connection and sends its identification.
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut b = [0u8; 8];
            if s.read_exact(&mut b).is_ok() && &b == b"SSH-2.0-" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Sshd { child, port, key, user }
}

/// Run `ssh` from `src` through the gateway's `addr`; bounded by `limit`.
async fn ssh(sshd: &Sshd, src: &str, addr: SocketAddr, command: &str, limit: Duration) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"])
        .args(["-o", "LogLevel=ERROR", "-b", src, "-p", &addr.port().to_string(), "-i"])
        .arg(&sshd.key)
        .arg(format!("{}@{}", sshd.user, addr.ip()))
        .arg(command)
        .kill_on_drop(true);
    tokio::time::timeout(limit, cmd.output()).await.expect("ssh finished in time").unwrap()
}

fn ssh_config(sshd_port: u16, account: &str) -> String {
    format!(
        r#"{head}
{topology}
[[listener]]
name = "ssh"
bind = "127.0.0.1:0"
zone = "wan"
kind = "tcp"

[[service]]
name = "sshd"
listener = "ssh"
upstream = "tcp://127.0.0.1:{sshd_port}"
zone = "lan"
guard = "ssh"
allow = ["127.0.0.2/32"]
window_max = "1h"

[admin]
bind = "127.0.0.1:0"
allow = ["127.0.0.1/32"]

[windows]
allow_self_approval = true

{account}
"#,
        head = config_head(""),
        topology = lan_behind_https("allow"),
    )
}

async fn open_window(gw: &TestGateway, token: &str, service: &str, source: &str, duration: &str) -> Value {
    let req = json!({"services": [service], "sources": [source], "duration": duration, "reason": "patch the server"});
    let (code, w) = gw.api("127.0.0.1", "POST", "/api/v1/windows", token, Some(req)).await;
    assert_eq!(code, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_string();
    let (code, w) = gw.api("127.0.0.1", "POST", &format!("/api/v1/windows/{id}/approve"), token, None).await;
    assert_eq!(code, 200, "{w}");
    w
}

fn admin_account() -> (String, String) {
    let (token, hash) = menshen::admin::auth::new_token(Some("chen")).unwrap();
    (token, format!("[[account]]\nname = \"chen\"\nrole = \"admin\"\ntoken_sha256 = \"{hash}\"\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_through_the_gateway_inside_and_outside_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = std::sync::Arc::new(sshd(dir.path()));
    let (token, account) = admin_account();
    let gw = TestGateway::start(&ssh_config(sshd.port, &account));
    let addr = gw.addr("ssh");

    // From the allowlist: a real key login and command.
    let out = ssh(&sshd, "127.0.0.2", addr, "echo menshen-ok", DEADLINE).await;
    assert!(out.status.success(), "ssh: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "menshen-ok");
    let open = gw.conn_open_from("127.0.0.2").await;
    assert_eq!((open["proto"].as_str(), open["service"].as_str()), (Some("tcp"), Some("sshd")));
    assert_eq!((open["action"].as_str(), open["reason"].as_str()), (Some("allow"), Some("allowlist")));
    assert_fields(&open, &CONN_OPEN_FIELDS);
    let close = gw.conn_close(&open["conn"]).await;
    assert_fields(&close, &CONN_CLOSE_FIELDS);
    assert!(close["bytes_in"].as_u64().unwrap() > 1000 && close["bytes_out"].as_u64().unwrap() > 1000, "{close}");
    assert_eq!(close["upstream_port"], sshd.port);
    assert!(["client", "upstream"].contains(&close["close_reason"].as_str().unwrap()), "{close}");

    // Outside the allowlist and without a window: refused before a byte is read.
    let out = ssh(&sshd, "127.0.0.5", addr, "echo no", DEADLINE).await;
    assert!(!out.status.success());
    let denied = gw.conn_open_from("127.0.0.5").await;
    assert_eq!((denied["action"].as_str(), denied["reason"].as_str()), (Some("deny"), Some("not-allowed")));

    // Inside a 4-second window: a login works, and a long session is cut at the end.
    let w = open_window(&gw, &token, "sshd", "127.0.0.5/32", "4s").await;
    let end: jiff::Timestamp = w["end"].as_str().unwrap().parse().unwrap();
    let out = ssh(&sshd, "127.0.0.5", addr, "sleep 60", Duration::from_secs(20)).await;
    let returned = jiff::Timestamp::now();
    assert!(!out.status.success(), "the session was cut");
    let late = returned.duration_since(end);
    assert!(late < jiff::SignedDuration::from_millis(1500), "ssh ended {late:?} after the window's end");
    let cut = gw
        .wait_record(|r| {
            r["event"] == "conn.close" && r["src_ip"] == "127.0.0.5" && r["close_reason"] == "window-ended"
        })
        .await;
    let cut_at: jiff::Timestamp = cut["end"].as_str().unwrap().parse().unwrap();
    assert!(
        cut_at.duration_since(end) < jiff::SignedDuration::from_secs(1),
        "cut {:?} after the end",
        cut_at.duration_since(end)
    );
    let opened = gw.wait_record(|r| r["event"] == "conn.open" && r["conn"] == cut["conn"]).await;
    assert_eq!((opened["reason"].as_str(), opened["identity"].as_str()), (Some("window"), Some("chen")));

    // Blocking the allowlisted source cuts its live session within a second.
    let session = {
        let (sshd, addr) = (sshd.clone(), addr);
        tokio::spawn(async move { ssh(&sshd, "127.0.0.2", addr, "sleep 60", Duration::from_secs(20)).await })
    };
    let live =
        gw.wait_count(2, |r| r["event"] == "conn.open" && r["src_ip"] == "127.0.0.2" && r["action"] == "allow").await;
    let body = json!({"cidr": "127.0.0.2", "reason": "compromised laptop"});
    let blocked_at = Instant::now();
    let (code, b) = gw.api("127.0.0.1", "POST", "/api/v1/blocks", &token, Some(body)).await;
    assert_eq!(code, 201, "{b}");
    let out = tokio::time::timeout(DEADLINE, session).await.expect("ssh ended").expect("ssh task");
    assert!(!out.status.success(), "the session was cut");
    assert!(blocked_at.elapsed() < Duration::from_millis(1500), "cut {:?} after the block", blocked_at.elapsed());
    let close = gw.conn_close(&live[1]["conn"]).await;
    assert_eq!(close["close_reason"], "blocked");
}

#[tokio::test]
async fn ssh_guard_refuses_other_protocols_and_silence() {
    let up = Recorder::start().await;
    let (_, account) = admin_account();
    let gw = TestGateway::start(&ssh_config(up.addr.port(), &account));
    let addr = gw.addr("ssh");

    let mut c = tcp_from(ip("127.0.0.2"), addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "closed");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!((r["action"].as_str(), r["reason"].as_str()), (Some("deny"), Some("guard")));
    assert_eq!(r["service"], "sshd");

    // A client that sends nothing is closed after the guard's 5 s.
    let started = Instant::now();
    let mut c = tcp_from(ip("127.0.0.2"), addr).await.unwrap();
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(8), "{waited:?}");
    gw.wait_count(2, |r| r["event"] == "conn.open" && r["reason"] == "guard").await;

    // A valid identification passes, and its bytes reach the upstream unchanged.
    let mut c = tcp_from(ip("127.0.0.2"), addr).await.unwrap();
    c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\nafter").await.unwrap();
    assert_eq!(up.received(0, 45).await, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\nafter");
    assert_eq!(up.connections(), 1, "refused connections never reached the upstream");
}

fn rdp_config(up: SocketAddr) -> String {
    format!(
        "{head}\n{topology}\n[[listener]]\nname = \"rdp\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"tcp\"\n\n\
         [[service]]\nname = \"desk\"\nlistener = \"rdp\"\nupstream = \"tcp://{up}\"\nzone = \"lan\"\nguard = \"rdp-tls\"\n\
         allow = [\"127.0.0.0/8\"]\n",
        head = config_head(""),
        topology = lan_behind_https("allow"),
    )
}

#[tokio::test]
async fn rdp_guard_passes_tls_and_credssp_requests_only() {
    // X.224 Connection Confirms with an RDP_NEG_RSP selecting TLS, and one selecting
    // Standard RDP Security (selectedProtocol 0), as an old server might answer.
    let confirm = |protocol: u8| -> Vec<u8> {
        vec![
            0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x00, 0x08, 0x00, protocol, 0, 0, 0,
        ]
    };
    let up = rdp_server(vec![confirm(1), confirm(0)]).await;
    let gw = TestGateway::start(&rdp_config(up.addr));
    let addr = gw.addr("rdp");
    // X.224 Connection Request with an RDP_NEG_REQ asking for TLS | CredSSP (mstsc).
    let tls_req: &[u8] = &[
        0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00,
        0x00,
    ];
    let mut c = tcp_from(ip("127.0.0.2"), addr).await.unwrap();
    c.write_all(tls_req).await.unwrap();
    let mut answer = vec![0u8; 19];
    tokio::time::timeout(DEADLINE, c.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, confirm(1), "the server's confirm reaches the client unchanged");
    c.write_all(b"then TLS").await.unwrap();
    let mut echoed = [0u8; 8];
    tokio::time::timeout(DEADLINE, c.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"then TLS");
    assert_eq!(up.requests.lock().unwrap()[0], tls_req, "the request reached the server unchanged");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!((r["action"].as_str(), r["service"].as_str()), (Some("allow"), Some("desk")));

    // A server that answers with Standard RDP Security is cut before its answer
    // reaches the client.
    let mut c = tcp_from(ip("127.0.0.5"), addr).await.unwrap();
    c.write_all(tls_req).await.unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "cut");
    let open = gw.conn_open_from("127.0.0.5").await;
    let close = gw.conn_close(&open["conn"]).await;
    assert_eq!((close["close_reason"].as_str(), close["bytes_out"].as_u64()), (Some("error"), Some(0)), "{close}");

    // Standard RDP Security (no negotiation request), then garbage: refused.
    let standard: &[u8] = &[0x03, 0x00, 0x00, 0x0b, 0x06, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00];
    for (src, bytes) in [("127.0.0.3", standard), ("127.0.0.4", &b"\x16\x03\x01hello garbage bytes"[..])] {
        let mut c = tcp_from(ip(src), addr).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "{src}");
        let r = gw.conn_open_from(src).await;
        assert_eq!((r["action"].as_str(), r["reason"].as_str()), (Some("deny"), Some("guard")), "{src}");
    }
    assert_eq!(up.requests.lock().unwrap().len(), 2, "refused clients never reached the server");
}

/// A stand-in RDP server: reads each connection's 19-byte Connection Request, answers
/// with the next of `confirms`, then echoes.
struct RdpServer {
    addr: SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

async fn rdp_server(confirms: Vec<Vec<u8>>) -> RdpServer {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        for answer in confirms {
            let Ok((mut s, _)) = l.accept().await else { return };
            let mut req = vec![0u8; 19];
            if s.read_exact(&mut req).await.is_err() {
                continue;
            }
            seen.lock().unwrap().push(req);
            let _ = s.write_all(&answer).await;
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    RdpServer { addr, requests }
}

/// A CA-signed certificate for `names` written to `dir`: (cert, key, CA pem).
fn upstream_cert(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, TestPki) {
    let pki = TestPki::new(names);
    let (cert, key) = (dir.join("up.crt"), dir.join("up.key"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    (cert, key, pki)
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni_to_openssl_s_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, up_pki) = upstream_cert(dir.path(), &["a.test"]);
    let port = closed_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server (apt-get install openssl)");
    let echo = Recorder::start().await;
    let config = format!(
        "{head}\n{topology}\n[[listener]]\nname = \"pass\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"tcp\"\n\n\
         [[service]]\nname = \"tls-a\"\nlistener = \"pass\"\nhosts = [\"a.test\"]\nupstream = \"tcp://127.0.0.1:{port}\"\n\
         zone = \"lan\"\nguard = \"tls\"\nallow = [\"127.0.0.0/8\"]\n\n\
         [[service]]\nname = \"tls-b\"\nlistener = \"pass\"\nhosts = [\"b.test\"]\nupstream = \"tcp://{echo}\"\n\
         zone = \"lan\"\nguard = \"tls\"\nallow = [\"127.0.0.0/8\"]\n",
        head = config_head(""),
        topology = lan_behind_https("allow"),
        echo = echo.addr,
    );
    let gw = TestGateway::start(&config);
    let addr = gw.addr("pass");
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The client trusts only the upstream's CA: the handshake is end to end with
    // s_server; the gateway never holds these keys.
    let client = TestClient { roots: Arc::new(up_pki.roots()) };
    let mut tls = client.connect(addr, ip("127.0.0.2"), "a.test", false).await.expect("passthrough handshake");
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut page = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut page)).await.unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.0 200 ok"), "{page}");
    let r = gw.conn_open_from("127.0.0.2").await;
    assert_eq!(
        (r["service"].as_str(), r["sni"].as_str(), r["proto"].as_str()),
        (Some("tls-a"), Some("a.test"), Some("tcp"))
    );
    assert_eq!(r["tls_version"], Value::Null, "not terminated here");

    // Another name on the same port goes to the other service.
    let _ = client.connect(addr, ip("127.0.0.3"), "b.test", false).await;
    let hello = echo.received(0, 100).await;
    assert_eq!(hello[0], 0x16, "the ClientHello reached b.test's upstream as sent");
    assert_eq!(gw.conn_open_from("127.0.0.3").await["service"], "tls-b");

    // An unknown name, a TLS 1.0-only ClientHello and plaintext are refused.
    assert!(client.connect(addr, ip("127.0.0.4"), "c.test", false).await.is_err());
    assert_eq!(gw.conn_open_from("127.0.0.4").await["reason"], "no-route");
    let mut c = tcp_from(ip("127.0.0.5"), addr).await.unwrap();
    c.write_all(&tls10_client_hello()).await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0);
    assert_eq!(gw.conn_open_from("127.0.0.5").await["reason"], "guard");
    let mut c = tcp_from(ip("127.0.0.6"), addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0);
    assert_eq!(gw.conn_open_from("127.0.0.6").await["reason"], "guard");
    let _ = server.kill();
    let _ = server.wait();
}

/// A ClientHello that offers TLS 1.0 only (legacy_version 0x0301, no supported_versions).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&[0x00, 0x00]); // no extensions
    let mut hs = vec![0x01, 0x00, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn proxy_protocol_from_trusted_peers_only_and_v2_towards_the_upstream() {
    use menshen::listener::proxy_protocol::{parse, Parsed};
    let up = Recorder::start().await;
    let web = start_upstream().await;
    let config = format!(
        "{head}\n{topology}\n[[listener]]\nname = \"lb\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"tcp\"\n\
         proxy_protocol = [\"127.0.0.1/32\"]\n\n\
         [[service]]\nname = \"sshd\"\nlistener = \"lb\"\nupstream = \"tcp://{up}\"\nzone = \"lan\"\nguard = \"ssh\"\n\
         send_proxy = \"v2\"\nallow = [\"10.9.8.7/32\", \"2001:db8::7/128\", \"127.0.0.2/32\"]\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"https\"\nproxy_protocol = [\"127.0.0.1/32\"]\n\n\
         [[service]]\nname = \"nas\"\nlistener = \"web\"\nhosts = [\"nas.test\"]\nupstream = \"http://{web}\"\nzone = \"lan\"\n\
         allow = [\"10.9.8.7/32\"]\n",
        head = config_head(""),
        topology = lan_behind_https("allow"),
        up = up.addr,
        web = web.addr,
    );
    let gw = TestGateway::start(&config);
    let lb = gw.addr("lb");
    let ident = b"SSH-2.0-test\r\n";

    // v1 from the trusted balancer: the client address comes from the header, and the
    // upstream gets a v2 header naming it, then the client's bytes unchanged.
    let mut c = tcp_from(ip("127.0.0.1"), lb).await.unwrap();
    c.write_all(b"PROXY TCP4 10.9.8.7 127.0.0.1 5555 22\r\n").await.unwrap();
    c.write_all(ident).await.unwrap();
    let got = up.received(0, 16 + 12 + ident.len()).await;
    let Parsed::Header { len, addrs: Some(a) } = parse(&got) else { panic!("no v2 header upstream: {got:?}") };
    assert_eq!(a.src, "10.9.8.7:5555".parse().unwrap());
    assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n", "a v2 signature");
    assert_eq!(&got[len..], ident);
    let r = gw.conn_open_from("10.9.8.7").await;
    assert_eq!(
        (r["action"].as_str(), r["proxied_by"].as_str(), r["src_port"].as_u64()),
        (Some("allow"), Some("127.0.0.1"), Some(5555))
    );

    // v2 with IPv6 addresses from the trusted balancer.
    let header = menshen::listener::proxy_protocol::encode_v2(menshen::listener::proxy_protocol::Addresses {
        src: "[2001:db8::7]:6000".parse().unwrap(),
        dst: "[2001:db8::1]:22".parse().unwrap(),
    });
    let mut c2 = tcp_from(ip("127.0.0.1"), lb).await.unwrap();
    c2.write_all(&header).await.unwrap();
    c2.write_all(ident).await.unwrap();
    up.received(1, 1).await;
    assert_eq!(gw.conn_open_from("2001:db8::7").await["action"], "allow");

    // Refused: a trusted peer without a header, a malformed header, a header from an
    // untrusted peer.
    for (src, bytes) in [
        ("127.0.0.1", &b"SSH-2.0-no-header\r\n"[..]),
        ("127.0.0.1", &b"PROXY TCP4 999.9.8.7 127.0.0.1 5555 22\r\nSSH-2.0-x\r\n"[..]),
        ("127.0.0.2", &b"PROXY TCP4 10.9.8.7 127.0.0.1 5555 22\r\nSSH-2.0-x\r\n"[..]),
    ] {
        let before = gw.records().iter().filter(|r| r["event"] == "conn.open" && r["reason"] == "guard").count();
        let mut c = tcp_from(ip(src), lb).await.unwrap();
        c.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "{src}");
        gw.wait_count(before + 1, |r| r["event"] == "conn.open" && r["reason"] == "guard").await;
    }
    assert_eq!(up.connections(), 2, "refused connections never reached the upstream");

    // The same on an https listener: the header, then TLS.
    let mut tcp = tcp_from(ip("127.0.0.1"), gw.addr("web")).await.unwrap();
    tcp.write_all(b"PROXY TCP4 10.9.8.7 127.0.0.1 7777 443\r\n").await.unwrap();
    let cfg = gw.client().config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let name = rustls::pki_types::ServerName::try_from("nas.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.expect("tls after PROXY");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req =
        http::Request::get("/").header("host", "nas.test").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(DEADLINE, send.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let r = gw.wait_record(|r| r["event"] == "conn.open" && r["src_port"] == 7777).await;
    assert_eq!((r["src_ip"].as_str(), r["listener"].as_str()), (Some("10.9.8.7"), Some("web")));
    // An untrusted peer's header on the https listener.
    let mut c = tcp_from(ip("127.0.0.3"), gw.addr("web")).await.unwrap();
    c.write_all(b"PROXY TCP4 10.9.8.7 127.0.0.1 7778 443\r\n").await.unwrap();
    let r = gw.conn_open_from("127.0.0.3").await;
    assert_eq!((r["action"].as_str(), r["reason"].as_str()), (Some("deny"), Some("guard")));

    // A reload that stops trusting the balancer on "lb" cuts the sessions it vouched
    // for there (the client address alone is still allowed), not those on "web".
    let path = gw.dir.path().join("menshen.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lb_trust = "proxy_protocol = [\"127.0.0.1/32\"]\n\n[[service]]\nname = \"sshd\"";
    assert!(text.contains(lb_trust));
    std::fs::write(
        &path,
        text.replace(lb_trust, "proxy_protocol = [\"127.0.0.9/32\"]\n\n[[service]]\nname = \"sshd\""),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_record(|r| r["event"] == "config.reload").await;
    let first = gw.conn_open_from("10.9.8.7").await;
    assert_eq!(gw.conn_close(&first["conn"]).await["close_reason"], "reload");
    let v6 = gw.conn_open_from("2001:db8::7").await;
    assert_eq!(gw.conn_close(&v6["conn"]).await["close_reason"], "reload");
    let mut buf = [0u8; 8];
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "cut");
    let web = gw.wait_record(|r| r["event"] == "conn.open" && r["src_port"] == 7777).await;
    assert!(!gw.records().iter().any(|r| r["event"] == "conn.close" && r["conn"] == web["conn"]), "web untouched");
    drop(send);
}

/// A tcp listener "raw" with one service, "echo", without a guard, for 127.0.0.2.
fn echo_config(up: SocketAddr) -> String {
    format!(
        "{head}\n{topology}\n[[listener]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"tcp\"\n\n\
         [[service]]\nname = \"echo\"\nlistener = \"raw\"\nupstream = \"tcp://{up}\"\nzone = \"lan\"\nguard = \"none\"\n\
         allow = [\"127.0.0.2/32\"]\n",
        head = config_head(""),
        topology = lan_behind_https("allow"),
    )
}

#[tokio::test]
async fn relay_counts_bytes_and_passes_half_close() {
    let up = Recorder::start().await;
    let config = echo_config(up.addr);
    let gw = TestGateway::start(&config);
    let c = tcp_from(ip("127.0.0.2"), gw.addr("raw")).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        // Half-close: the echo must still come back in full.
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, r.read_to_end(&mut back)).await.unwrap().unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echo came back unchanged");
    let open = gw.conn_open_from("127.0.0.2").await;
    let close = gw.conn_close(&open["conn"]).await;
    assert_eq!((close["bytes_in"].as_u64(), close["bytes_out"].as_u64()), (Some(1 << 20), Some(1 << 20)));
    assert_eq!(close["close_reason"], "client", "the client finished sending first");
}

#[tokio::test]
async fn a_reload_that_asks_for_a_stricter_guard_cuts_what_it_never_read() {
    let up = Recorder::start().await;
    let config = echo_config(up.addr);
    let gw = TestGateway::start(&config);
    let mut c = tcp_from(ip("127.0.0.2"), gw.addr("raw")).await.unwrap();
    c.write_all(b"plain bytes").await.unwrap();
    let mut echo = [0u8; 11];
    tokio::time::timeout(DEADLINE, c.read_exact(&mut echo)).await.unwrap().unwrap();
    let open = gw.conn_open_from("127.0.0.2").await;

    let path = gw.dir.path().join("menshen.toml");
    std::fs::write(&path, config.replace("guard = \"none\"", "guard = \"ssh\"")).unwrap();
    gw.signal("HUP");
    gw.wait_record(|r| r["event"] == "config.reload").await;
    assert_eq!(gw.conn_close(&open["conn"]).await["close_reason"], "reload");
    let mut buf = [0u8; 8];
    assert_eq!(tokio::time::timeout(DEADLINE, c.read(&mut buf)).await.unwrap().unwrap_or(0), 0, "cut");
}
