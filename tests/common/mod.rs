//! Test harness: a real gateway process on ephemeral loopback ports, a real TLS client
//! that picks its source address, an upstream that records what it receives, and
//! deadline-bounded polling of the real log file.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// Every wait in the tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A CA and a leaf certificate it signed for the given names.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new(names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "menshen test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("leaf cert");
        TestPki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.ca_pem.as_bytes()).expect("ca pem");
        roots.add(CertificateDer::into_owned(der)).expect("add ca");
        roots
    }
}

/// A running gateway. Killed (by PID) when dropped.
pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub addrs: Vec<(String, SocketAddr)>,
    pub pki: Arc<TestPki>,
    pub stderr: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_menshen")
}

/// The config head every test gateway shares; `body` adds sets, zones, listeners, services.
pub fn config_head(extra_tls: &str) -> String {
    format!(
        r#"[gateway]
name = "test-gw"
timezone = "Asia/Taipei"
state_dir = "state"
drain_timeout = "10s"

[tls]
cert = "gateway.crt"
key = "gateway.key"
{extra_tls}

[log]
dir = "log"

# Tests open many connections from few addresses, fast: the limits tests lower these.
[limits]
max_connections_per_source = 100000
new_connections_per_source = 100000
new_connections_burst = 100000
"#
    )
}

/// The topology most tests share: zone `lan` = 127.0.0.0/8 (the test upstreams),
/// a `wan -> lan` rule with `access`, and one https listener `https` on 127.0.0.1:0.
pub fn lan_behind_https(access: &str) -> String {
    format!(
        "[zones]\nlan = [\"127.0.0.0/8\"]\n\n[[zone_rule]]\nfrom = \"wan\"\nto = \"lan\"\naccess = \"{access}\"\n\n\
         [[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\nzone = \"wan\"\nkind = \"https\"\n"
    )
}

impl TestGateway {
    /// Write `config` (a full TOML text) next to a fresh certificate and start the gateway.
    pub fn start(config: &str) -> TestGateway {
        let pki = Arc::new(TestPki::new(&["admin.test", "nas.test", "ws.test", "down.test", "slow.test", "localhost"]));
        Self::start_with(config, pki)
    }

    pub fn start_with(config: &str, pki: Arc<TestPki>) -> TestGateway {
        Self::start_with_files(config, pki, &[])
    }

    /// Start with extra files written into the gateway's directory first.
    /// Start in a directory the test prepared (e.g. with a mount at `log`).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> TestGateway {
        let pki = Arc::new(TestPki::new(&["admin.test", "nas.test", "localhost"]));
        Self::start_files_in(dir, config, pki, &[], None)
    }

    /// Start under an open-files limit of `nofile` (soft and hard, set by `prlimit`,
    /// which then becomes the gateway: same PID).
    pub fn start_with_open_files(config: &str, nofile: u64) -> TestGateway {
        let pki = Arc::new(TestPki::new(&["admin.test", "nas.test", "localhost"]));
        Self::start_files_in(tempfile::tempdir().expect("tempdir"), config, pki, &[], Some(nofile))
    }

    pub fn start_with_files(config: &str, pki: Arc<TestPki>, files: &[(&str, &str)]) -> TestGateway {
        Self::start_files_in(tempfile::tempdir().expect("tempdir"), config, pki, files, None)
    }

    fn start_files_in(
        dir: tempfile::TempDir,
        config: &str,
        pki: Arc<TestPki>,
        files: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> TestGateway {
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write file");
        }
        std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).expect("write cert");
        std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).expect("write key");
        let cfg = dir.path().join("menshen.toml");
        std::fs::write(&cfg, config).expect("write config");
        let stderr = dir.path().join("stderr.txt");
        let (child, addrs) = spawn_limited(&cfg, config, &stderr, nofile);
        TestGateway { dir, child: Some(child), addrs, pki, stderr }
    }

    /// Stop (SIGTERM, wait) and start again on the same directory: same config, state
    /// and log; new ports.
    pub fn restart(&mut self) {
        self.signal("TERM");
        assert_eq!(self.wait_exit(), 0);
        let cfg = self.dir.path().join("menshen.toml");
        let config = std::fs::read_to_string(&cfg).expect("config");
        let (child, addrs) = spawn(&cfg, &config, &self.stderr);
        self.child = Some(child);
        self.addrs = addrs;
    }

    /// Start again after the process died (SIGKILL): same directory, new ports.
    pub fn restart_after_crash(&mut self) {
        assert!(self.child.is_none(), "still running");
        let cfg = self.dir.path().join("menshen.toml");
        let config = std::fs::read_to_string(&cfg).expect("config");
        let (child, addrs) = spawn(&cfg, &config, &self.stderr);
        self.child = Some(child);
        self.addrs = addrs;
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs.iter().find(|(n, _)| n == listener).map(|(_, a)| *a).expect("listener")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Send a signal by PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    }

    /// Wait (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// All records in the log directory, in file and line order.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.log_dir())
    }

    /// Poll the log until a record satisfies `pred`; panic at the deadline.
    pub async fn wait_record(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "no matching record; log:\n{}",
                    serde_json::to_string_pretty(&self.records()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Poll the log until `n` records satisfy `pred`; panic at the deadline.
    pub async fn wait_count(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let found: Vec<Value> = self.records().into_iter().filter(|r| pred(r)).collect();
            if found.len() >= n {
                return found;
            }
            assert!(Instant::now() < deadline, "{} of {n} matching records; log:\n{:#?}", found.len(), self.records());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the log accounts for `n` connections refused for `reason`: each
    /// either a `conn.open` deny record of its own or counted in a source's
    /// `conn.refused` summary. Returns (full records, summaries), once the total is `n`
    /// exactly (more is a failure).
    pub async fn wait_refusals(&self, n: u64, reason: &str) -> (Vec<Value>, Vec<Value>) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let records = self.records();
            let full: Vec<Value> = records
                .iter()
                .filter(|r| r["event"] == "conn.open" && r["action"] == "deny" && r["reason"] == reason)
                .cloned()
                .collect();
            let summaries: Vec<Value> =
                records.iter().filter(|r| r["event"] == "conn.refused" && r["reason"] == reason).cloned().collect();
            let total = full.len() as u64 + summaries.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum::<u64>();
            assert!(total <= n, "{total} refusals logged, {n} expected: {full:#?} {summaries:#?}");
            if total == n {
                return (full, summaries);
            }
            assert!(Instant::now() < deadline, "{total} of {n} refusals ({reason}) logged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `conn.open` record of the connection from `src` (IPv4 text form).
    pub async fn conn_open_from(&self, src: &str) -> Value {
        self.wait_record(|r| r["event"] == "conn.open" && r["src_ip"] == src).await
    }

    pub async fn conn_close(&self, conn: &Value) -> Value {
        self.wait_record(|r| r["event"] == "conn.close" && r["conn"] == *conn).await
    }

    /// One admin API call from `src` with `token`; the status and the JSON body.
    pub async fn api(&self, src: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let tls = self.client().connect(self.addr("admin"), ip(src), "localhost", false).await.expect("admin tls");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("admin http");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .expect("request");
        let fut = async move {
            let resp = send.send_request(req).await.expect("admin response");
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("admin body").to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        };
        tokio::time::timeout(DEADLINE, fut).await.expect("admin API answered in time")
    }

    pub fn client(&self) -> TestClient {
        TestClient { roots: Arc::new(self.pki.roots()) }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start the binary on `cfg`; read the bound addresses from its stdout (bounded wait).
fn spawn(cfg: &Path, config: &str, stderr: &Path) -> (Child, Vec<(String, SocketAddr)>) {
    spawn_limited(cfg, config, stderr, None)
}

fn spawn_limited(cfg: &Path, config: &str, stderr: &Path, nofile: Option<u64>) -> (Child, Vec<(String, SocketAddr)>) {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let mut child = cmd
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("start gateway");
    // The gateway prints one line per listener once bound; read them with a deadline.
    let stdout = child.stdout.take().expect("stdout");
    let expected = config.matches("[[listener]]").count()
        + config.matches("\n[admin]").count()
        + config.matches("\nmetrics_bind").count();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addrs = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while addrs.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("menshen: listener ") {
                    let (name, addr) = rest.split_once(" on ").expect("listener line");
                    addrs.push((name.to_string(), addr.parse().expect("listener addr")));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway did not start: {}", std::fs::read_to_string(stderr).unwrap_or_default());
            }
        }
    }
    (child, addrs)
}

pub fn read_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return vec![],
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            // A line being written may be incomplete; the next poll sees it whole.
            if let Ok(v) = serde_json::from_str(line) {
                out.push(v);
            }
        }
    }
    out
}

/// Exactly these fields, no more, no fewer.
pub fn assert_fields(r: &Value, fields: &[&str]) {
    let common = ["seq", "ts", "event", "gateway", "prev", "hash"];
    let obj = r.as_object().expect("record is an object");
    for f in common.iter().chain(fields) {
        assert!(obj.contains_key(*f), "field {f} missing in {r}");
    }
    assert_eq!(obj.len(), common.len() + fields.len(), "unexpected fields in {r}");
    let ts = r["ts"].as_str().expect("ts");
    assert!(ts.ends_with("+08:00"), "ts {ts} not in Asia/Taipei");
}

pub const CONN_OPEN_FIELDS: [&str; 16] = [
    "conn",
    "listener",
    "proto",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "service",
    "zone_from",
    "zone_to",
    "action",
    "reason",
    "window",
    "identity",
    "tls_version",
    "sni",
];
pub const CONN_CLOSE_FIELDS: [&str; 13] = [
    "conn",
    "listener",
    "service",
    "src_ip",
    "src_port",
    "start",
    "end",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "close_reason",
    "upstream_ip",
    "upstream_port",
];
pub const HTTP_FIELDS: [&str; 9] =
    ["conn", "service", "src_ip", "method", "host", "path", "status", "duration_ms", "bytes_out"];

/// A TLS client that trusts the test CA and binds the source address it is given.
#[derive(Clone)]
pub struct TestClient {
    pub roots: Arc<rustls::RootCertStore>,
}

pub struct Resp {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

pub async fn tcp_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.bind(SocketAddr::new(src, 0))?;
    tokio::time::timeout(DEADLINE, sock.connect(addr)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

impl TestClient {
    pub fn config(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut cfg = rustls::ClientConfig::builder_with_provider(menshen::tls::provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        cfg
    }

    pub async fn connect_with(
        &self,
        addr: SocketAddr,
        src: IpAddr,
        sni: &str,
        cfg: rustls::ClientConfig,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = tcp_from(src, addr).await?;
        let name = ServerName::try_from(sni.to_string()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        tokio::time::timeout(DEADLINE, connector.connect(name, tcp)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
    }

    pub async fn connect(
        &self,
        addr: SocketAddr,
        src: IpAddr,
        sni: &str,
        h2: bool,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let cfg = self.config(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12]);
        self.connect_with(addr, src, sni, cfg).await
    }

    /// A GET on a fresh connection from `src`, with TLS server name `sni` (and, unless
    /// changed, the same Host).
    pub fn get(&self, addr: SocketAddr, src: &str, sni: &str) -> Get {
        Get {
            client: self.clone(),
            addr,
            src: ip(src),
            sni: sni.to_string(),
            host: sni.to_string(),
            path: "/".to_string(),
            headers: Vec::new(),
            h2: false,
        }
    }
}

/// A request being built; `send` makes it on a fresh connection.
pub struct Get {
    client: TestClient,
    addr: SocketAddr,
    src: IpAddr,
    sni: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    h2: bool,
}

impl Get {
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.headers.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn h2(mut self, h2: bool) -> Self {
        self.h2 = h2;
        self
    }

    pub async fn send(self) -> std::io::Result<Resp> {
        let h2 = self.h2;
        let tls = self.client.connect(self.addr, self.src, &self.sni, h2).await?;
        let mut builder = http::Request::builder().method("GET");
        builder = if h2 {
            builder.uri(format!("https://{}{}", self.host, self.path))
        } else {
            builder.uri(&self.path).header("host", &self.host)
        };
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        let req = builder.body(Full::new(Bytes::new())).map_err(std::io::Error::other)?;
        let fut = async move {
            let io = TokioIo::new(tls);
            let resp = if h2 {
                let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                send.send_request(req).await
            } else {
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(io).await.map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                send.send_request(req).await
            }
            .map_err(std::io::Error::other)?;
            let status = resp.status().as_u16();
            let version = resp.version();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
            Ok(Resp { status, version, headers, body })
        };
        tokio::time::timeout(DEADLINE, fut).await.map_err(|_| std::io::ErrorKind::TimedOut)?
    }
}

/// A plain-HTTP upstream that answers with a JSON echo of what it received.
/// `/slow?ms=N` tells `slow_started` and answers after N ms.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub slow_started: Arc<tokio::sync::Notify>,
    /// TCP connections the upstream has accepted.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn start_upstream() -> TestUpstream {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    let slow_started = Arc::new(tokio::sync::Notify::new());
    let notify = slow_started.clone();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let notify = notify.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let notify = notify.clone();
                    async move {
                        if req.uri().path() == "/stream" {
                            // 1 KiB every 20 ms, for at most 60 s: a long download.
                            let chunks = futures_util::stream::unfold(0u32, |i| async move {
                                if i >= 3000 {
                                    return None;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Some((
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                                        b'x';
                                        1024
                                    ]))),
                                    i + 1,
                                ))
                            });
                            let body = http_body_util::StreamBody::new(chunks);
                            return Ok(http::Response::new(http_body_util::Either::Right(body)));
                        }
                        if req.uri().path() == "/slow" {
                            notify.notify_one();
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            let body = http_body_util::Either::Left(Full::new(Bytes::from("slow done")));
                            return Ok::<_, std::convert::Infallible>(http::Response::new(body));
                        }
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
                            .collect();
                        let echo = serde_json::json!({"method": req.method().as_str(), "path": req.uri().path(), "version": format!("{:?}", req.version()), "headers": headers});
                        let mut resp =
                            http::Response::new(http_body_util::Either::Left(Full::new(Bytes::from(echo.to_string()))));
                        resp.headers_mut().insert("x-upstream", http::HeaderValue::from_static("yes"));
                        Ok(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    TestUpstream { addr, slow_started, accepted }
}

/// A WebSocket echo upstream.
pub async fn start_ws_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A loopback port that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// === legitimate clients under attack (tests/adversarial.rs, benches/attacks.rs) ===

/// What a legitimate client saw: answers and latencies.
#[derive(Default)]
pub struct Stats {
    pub ok: usize,
    pub failed: usize,
    pub latencies: Vec<Duration>,
}

impl Stats {
    pub fn record(&mut self, latency: Duration, ok: bool) {
        self.latencies.push(latency);
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }

    pub fn pct(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} failed, p50 {:?}, p99 {:?}, max {:?}",
            self.ok,
            self.failed,
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0)
        )
    }
}

/// Fresh-connection HTTP/1.1 GETs from `src`, one every `every`, until `stop` is set or
/// `max` requests are done.
pub async fn legit_h1(
    c: TestClient,
    addr: SocketAddr,
    src: &'static str,
    every: Duration,
    max: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Stats {
    let mut stats = Stats::default();
    let mut tick = tokio::time::interval(every);
    while stats.latencies.len() < max && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tick.tick().await;
        let t = Instant::now();
        let ok = matches!(c.get(addr, src, "admin.test").path("/legit").send().await, Ok(r) if r.status == 200);
        stats.record(t.elapsed(), ok);
    }
    stats
}

/// A process's resident memory, from /proc (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A plain HTTP GET; the status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.expect("http");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let fut = async {
        let resp = send.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(DEADLINE, fut).await.expect("answered in time")
}
