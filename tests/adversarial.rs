//! Adversarial tests of the HTTPS proxy: what a hostile client sends, byte for byte,
//! over real TLS to the real gateway, and what reaches the upstream and the log.
//!
//! Behind the gateway runs a raw-byte recorder (plain TCP on 127.0.0.1:0) that keeps
//! every byte it receives and parses it strictly: one Content-Length or
//! `Transfer-Encoding: chunked`, never both, no trailers, CRLF only. A request smuggled
//! past the gateway shows up there as a request the gateway never checked or logged.
//!
//! Each attack connection comes from its own source address (127.0.0.10 and up), so
//! its `conn.open`, `conn.close` and `http.request` records can be told apart; the
//! legitimate clients use 127.0.0.2 and 127.0.0.3.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// === the gateway under test ===

/// Two services on one https listener, both forwarding to `upstream`; every loopback
/// source is allowed. `extra_tls` and `idle` let a test shorten the timeouts.
fn config(upstream: SocketAddr, extra_tls: &str, idle: &str) -> String {
    let services: String = [("admin", "admin.test"), ("nas", "nas.test")]
        .iter()
        .map(|(name, host)| {
            format!(
                "\n[[service]]\nname = \"{name}\"\nlistener = \"https\"\nhosts = [\"{host}\"]\n\
                 upstream = \"http://{upstream}\"\nzone = \"lan\"\nallow = [\"127.0.0.0/8\"]\nidle_timeout = \"{idle}\"\n"
            )
        })
        .collect();
    format!("{}\n{}{services}", config_head(extra_tls), lan_behind_https("allow"))
}

async fn start(extra_tls: &str, idle: &str) -> (TestGateway, Recorder) {
    let rec = Recorder::start().await;
    let gw = TestGateway::start(&config(rec.addr, extra_tls, idle));
    (gw, rec)
}

/// The `http.request` records of one connection: (method, path, status).
fn requests_of(gw: &TestGateway, conn: &Value) -> Vec<(String, String, u64)> {
    gw.records()
        .iter()
        .filter(|r| r["event"] == "http.request" && r["conn"] == *conn)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("method"), s("path"), r["status"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// The allowed connection from `src`: its `conn.open` (checked) and, once it ended,
/// its `conn.close`.
async fn allowed_conn(gw: &TestGateway, src: &str) -> (Value, Value) {
    let open = gw.conn_open_from(src).await;
    assert_eq!(open["action"], "allow", "{open}");
    assert_eq!(open["reason"], "allowlist");
    assert_eq!(open["service"], "admin");
    assert_eq!(open["sni"], "admin.test");
    let close = gw.conn_close(&open["conn"]).await;
    assert_fields(&close, &CONN_CLOSE_FIELDS);
    (open, close)
}

// === the raw-byte upstream recorder ===

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Recorded {
    /// The request line, exactly as received.
    line: String,
    /// The header lines, exactly as received (CRLF-separated; a bare LF would stay in).
    fields: Vec<String>,
    /// The body after de-chunking.
    body: Vec<u8>,
    /// Every byte of the request.
    raw: Vec<u8>,
}

impl Recorded {
    fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }

    fn field(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter_map(|f| f.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

#[derive(Default)]
struct RecConn {
    raw: Vec<u8>,
    /// Bytes that belong to complete requests.
    parsed: usize,
    error: Option<String>,
    closed: bool,
}

#[derive(Default)]
struct RecState {
    conns: Vec<RecConn>,
    requests: Vec<Recorded>,
}

/// A plain-TCP upstream that records every byte and answers each request it can parse
/// strictly with a fixed `200 recorded`; anything ambiguous gets a 400 and a close.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    state: Arc<Mutex<RecState>>,
}

const RECORDED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-recorder: yes\r\n\r\nrecorded\n";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse one request off the front of `buf`: Ok(None) while incomplete, Err when its
/// framing is anything but unambiguous.
fn parse_request(buf: &[u8]) -> Result<Option<(Recorded, usize)>, String> {
    let mut hs = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut hs);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("head: {e}")),
    };
    let values = |name: &str| -> Vec<String> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect()
    };
    let (te, cl) = (values("transfer-encoding"), values("content-length"));
    let (body, used) = match (te.as_slice(), cl.as_slice()) {
        ([], []) => (Vec::new(), head),
        ([], [n]) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = n.parse().map_err(|_| "content-length")?;
            if buf.len() < head + n {
                return Ok(None);
            }
            (buf[head..head + n].to_vec(), head + n)
        }
        ([te], []) if te == "chunked" => match dechunk(&buf[head..])? {
            Some((body, n)) => (body, head + n),
            None => return Ok(None),
        },
        _ => return Err(format!("ambiguous framing: transfer-encoding {te:?}, content-length {cl:?}")),
    };
    // CRLF only: every LF of the head preceded by a CR, every CR followed by an LF.
    let head_bytes = &buf[..head];
    let bare = head_bytes.iter().enumerate().any(|(i, b)| match b {
        b'\n' => i == 0 || head_bytes[i - 1] != b'\r',
        b'\r' => head_bytes.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    if bare || !head_bytes.ends_with(b"\r\n\r\n") {
        return Err("bare CR or LF in the head".into());
    }
    let head_text = String::from_utf8_lossy(&buf[..head - 4]).into_owned();
    let mut lines = head_text.split("\r\n").map(str::to_string);
    let line = lines.next().unwrap_or_default();
    Ok(Some((Recorded { line, fields: lines.collect(), body, raw: buf[..used].to_vec() }, used)))
}

/// Strict chunked decoding: hex sizes only, CRLF everywhere, no extensions, no trailers.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else { return Ok(None) };
        let size = &buf[pos..pos + eol];
        if size.is_empty() || size.len() > 8 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size line {:?}", String::from_utf8_lossy(size)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).map_err(|e| e.to_string())?, 16)
            .map_err(|e| e.to_string())?;
        pos += eol + 2;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF (trailers?)".into());
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
        if size == 0 {
            return Ok(Some((body, pos)));
        }
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind recorder");
        let addr = l.local_addr().expect("addr");
        let state: Arc<Mutex<RecState>> = Arc::default();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let id = {
                    let mut g = st.lock().unwrap();
                    g.conns.push(RecConn::default());
                    g.conns.len() - 1
                };
                tokio::spawn(Self::serve(s, id, st.clone()));
            }
        });
        Recorder { addr, state }
    }

    async fn serve(mut s: tokio::net::TcpStream, id: usize, st: Arc<Mutex<RecState>>) {
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match parse_request(&buf[pos..]) {
                Ok(Some((r, used))) => {
                    pos += used;
                    let head_only = r.line.starts_with("HEAD ");
                    {
                        let mut g = st.lock().unwrap();
                        g.conns[id].parsed = pos;
                        g.requests.push(r);
                    }
                    let resp = if head_only { &RECORDED[..RECORDED.len() - 9] } else { RECORDED };
                    if s.write_all(resp).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    st.lock().unwrap().conns[id].error = Some(e);
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    break;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    st.lock().unwrap().conns[id].raw.extend_from_slice(&chunk[..n]);
                }
            }
        }
        st.lock().unwrap().conns[id].closed = true;
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    fn raw_len(&self) -> usize {
        self.state.lock().unwrap().conns.iter().map(|c| c.raw.len()).sum()
    }

    fn errors(&self) -> Vec<String> {
        self.state.lock().unwrap().conns.iter().filter_map(|c| c.error.clone()).collect()
    }

    /// Poll until every upstream connection holding bytes of an incomplete request has
    /// been closed by the gateway; panic at the deadline.
    async fn wait_partial_requests_closed(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let open: Vec<usize> = {
                let g = self.state.lock().unwrap();
                g.conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.raw.len() > c.parsed && !c.closed)
                    .map(|(i, _)| i)
                    .collect()
            };
            if open.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "upstream connections {open:?} keep half a request open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The header lines the gateway itself puts on a request from `src` for admin.test.
fn gateway_fields(src: &str) -> Vec<String> {
    vec![
        "host: admin.test".to_string(),
        format!("x-forwarded-for: {src}"),
        format!("x-real-ip: {src}"),
        "x-forwarded-proto: https".to_string(),
        "x-forwarded-host: admin.test".to_string(),
        format!("forwarded: for={src};proto=https;host=admin.test"),
    ]
}

// === raw HTTP/1.1 over TLS ===

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn closes(&self) -> bool {
        self.headers.iter().any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
    }
}

/// Complete responses at the front of `buf` (Content-Length framed, as the gateway's are).
fn parse_responses(buf: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(head)) = resp.parse(&buf[pos..]) else { break };
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        if buf.len() < pos + head + len {
            break;
        }
        out.push(Answer { status: resp.code.unwrap_or(0), headers, body: buf[pos + head..pos + head + len].to_vec() });
        pos += head + len;
    }
    out
}

/// A request any vector may be followed by: if the gateway kept the connection open
/// and in sync, it answers this one too (and then closes).
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n";

/// Send `bytes` on a fresh TLS connection from `src` (SNI admin.test, ALPN http/1.1),
/// read `expect` responses (or to the close), then send [`PROBE`] if still open and read
/// to the end. Every answer the client got, in order.
async fn exchange(gw: &TestGateway, src: &str, bytes: &[u8], expect: usize) -> Vec<Answer> {
    let tls = gw.client().connect(gw.addr("https"), ip(src), "admin.test", false).await.expect("tls");
    let (mut rd, mut wr) = tokio::io::split(tls);
    // The gateway may close before it has read everything (a head over its limit):
    // then the write fails and what it answered is still read.
    let _ = wr.write_all(bytes).await;
    let _ = wr.flush().await;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while parse_responses(&buf).len() < expect {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await.expect("answered in time") {
            Ok(0) | Err(_) => return parse_responses(&buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if wr.write_all(PROBE).await.is_ok() && wr.flush().await.is_ok() {
        let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut buf)).await.expect("closed after the probe");
    }
    parse_responses(&buf)
}

// === 1. request smuggling ===

/// What the gateway must make of one smuggling vector.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Refused by hyper's parser: this status, the connection closed, nothing upstream.
    Refused(u16),
    /// Refused by the proxy with this status; the connection stays usable.
    Answered(u16),
    /// Exactly one request upstream: `line`, the gateway's headers plus `framing`, this
    /// decoded body. `close`: the gateway must close the connection after answering
    /// (Transfer-Encoding with Content-Length, RFC 9112 6.1).
    Forwarded { line: &'static str, framing: Option<&'static str>, body: &'static [u8], close: bool },
    /// A good head with a broken chunked body: a 400 from the proxy, no complete request
    /// upstream, and the upstream connection that got the head is closed.
    BrokenBody,
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: admin.test\r\n\r\n";

fn smuggling_vectors() -> Vec<(&'static str, String, Want)> {
    use Want::*;
    let post = |fields: &str, body: &str| format!("POST /a HTTP/1.1\r\nHost: admin.test\r\n{fields}\r\n{body}");
    let chunked = Some("transfer-encoding: chunked");
    let hello_chunked = "5\r\nhello\r\n0\r\n\r\n";
    let fwd_hello = Forwarded { line: "POST /a HTTP/1.1", framing: chunked, body: b"hello", close: false };
    let fwd_cl5 =
        Forwarded { line: "POST /a HTTP/1.1", framing: Some("content-length: 5"), body: b"hello", close: false };
    vec![
        // CL.TE: a CL-honouring hop would see the chunked terminator and the smuggled
        // request as one 49-byte body; Transfer-Encoding wins, the rest is never parsed.
        (
            "CL.TE",
            post(
                &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", 5 + SMUGGLED.len()),
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            Forwarded { line: "POST /a HTTP/1.1", framing: chunked, body: b"", close: true },
        ),
        // TE.CL: the smuggled request is chunk data; a CL-honouring hop would read 4
        // bytes and then the smuggled request.
        (
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            Forwarded { line: "POST /a HTTP/1.1", framing: chunked, body: SMUGGLED.as_bytes(), close: true },
        ),
        ("duplicate equal Content-Length", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), fwd_cl5),
        (
            "conflicting Content-Length",
            post("Content-Length: 5\r\nContent-Length: 44\r\n", &format!("hello{SMUGGLED}")),
            Refused(400),
        ),
        ("Content-Length list", post("Content-Length: 5, 44\r\n", &format!("hello{SMUGGLED}")), Refused(400)),
        ("Content-Length repeated in a list", post("Content-Length: 5, 5\r\n", "hello"), Refused(400)),
        ("Content-Length +5", post("Content-Length: +5\r\n", "hello"), Refused(400)),
        ("Content-Length 0x5", post("Content-Length: 0x5\r\n", "hello"), Refused(400)),
        ("Content-Length -1", post("Content-Length: -1\r\n", "hello"), Refused(400)),
        ("Content-Length 5 5", post("Content-Length: 5 5\r\n", "hello"), Refused(400)),
        ("Content-Length empty", post("Content-Length: \r\n", "hello"), Refused(400)),
        ("Content-Length overflow", post("Content-Length: 18446744073709551621\r\n", "hello"), Refused(400)),
        ("Transfer-Encoding: xchunked", post("Transfer-Encoding: xchunked\r\n", hello_chunked), Refused(400)),
        (
            "Transfer-Encoding: chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", hello_chunked),
            Refused(400),
        ),
        (
            "Transfer-Encoding twice",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", hello_chunked),
            Refused(400),
        ),
        ("space before the colon", post("Transfer-Encoding : chunked\r\n", hello_chunked), Refused(400)),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /a HTTP/1.0\r\nHost: admin.test\r\nTransfer-Encoding: chunked\r\n\r\n{hello_chunked}"),
            Refused(400),
        ),
        // Optional whitespace and case are legal: the same one request.
        (
            "Transfer-Encoding:  chunked (extra space)",
            post("Transfer-Encoding:  chunked\r\n", hello_chunked),
            fwd_hello,
        ),
        ("Transfer-Encoding:<tab>chunked", post("Transfer-Encoding:\tchunked\r\n", hello_chunked), fwd_hello),
        ("Transfer-Encoding: CHUNKED", post("Transfer-Encoding: CHUNKED\r\n", hello_chunked), fwd_hello),
        // A coding hyper does not undo would reach the upstream undeclared.
        (
            "Transfer-Encoding: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", hello_chunked),
            Answered(501),
        ),
        (
            "Transfer-Encoding: identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", hello_chunked),
            Answered(501),
        ),
        ("obs-fold", post("X-Folded: a\r\n b\r\nContent-Length: 5\r\n", "hello"), Refused(400)),
        (
            "obs-fold Transfer-Encoding",
            post("Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", "hello"),
            Refused(400),
        ),
        ("bare CR", "POST /a HTTP/1.1\rHost: admin.test\r\nContent-Length: 5\r\n\r\nhello".into(), Refused(400)),
        ("NUL in a value", post("X-Nul: a\0b\r\nContent-Length: 5\r\n", "hello"), Refused(400)),
        // Bare LF ends lines for hyper (RFC 9112 2.2 allows it); what goes upstream is
        // rewritten with CRLF, so both hops agree on the framing.
        ("bare LF", "POST /a HTTP/1.1\nHost: admin.test\nContent-Length: 5\n\nhello".into(), fwd_cl5),
        // A look-alike of Transfer-Encoding that CGI-style upstreams fold into the real
        // one: dropped, the request keeps its one framing.
        ("Transfer_Encoding look-alike", post("Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", "hello"), fwd_cl5),
        // Trailers (here claiming a client address and a length) are not forwarded.
        (
            "trailer fields",
            post(
                "Transfer-Encoding: chunked\r\nTrailer: X-Forwarded-For\r\n",
                "5\r\nhello\r\n0\r\nX-Forwarded-For: 10.9.9.9\r\nContent-Length: 50\r\n\r\n",
            ),
            fwd_hello,
        ),
        ("chunk size with bare LF", post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"), BrokenBody),
        ("chunk size 0x5", post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"), BrokenBody),
        (
            "chunk size overflow",
            post("Transfer-Encoding: chunked\r\n", "10000000000000005\r\nhello\r\n0\r\n\r\n"),
            BrokenBody,
        ),
        // A GET body stays a body, framed by its Content-Length on the way up too.
        (
            "GET with a Content-Length body",
            format!("GET /a HTTP/1.1\r\nHost: admin.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            Forwarded {
                line: "GET /a HTTP/1.1",
                framing: Some("content-length: 44"),
                body: SMUGGLED.as_bytes(),
                close: false,
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_reach_the_upstream_as_one_unambiguous_request_or_not_at_all() {
    let (gw, rec) = start("", "15m").await;
    assert_eq!(SMUGGLED.len(), 44, "the vectors below spell this length out");
    for (i, (name, bytes, want)) in smuggling_vectors().into_iter().enumerate() {
        let src = format!("127.0.0.{}", 10 + i);
        let (before, raw_before) = (rec.requests().len(), rec.raw_len());
        let answers = exchange(&gw, &src, bytes.as_bytes(), 1).await;
        let (open, close) = allowed_conn(&gw, &src).await;
        assert!(close["bytes_in"].as_u64().unwrap() > bytes.len() as u64, "{name}: {close}");
        let logged = requests_of(&gw, &open["conn"]);
        let upstream: Vec<Recorded> = rec.requests()[before..].to_vec();
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        let probe = ("GET".to_string(), "/probe".to_string(), 200);
        match want {
            Want::Refused(status) => {
                assert_eq!(statuses, [status], "{name}: {answers:?}");
                assert!(answers[0].closes(), "{name}: not closed after {status}");
                assert_eq!(rec.raw_len(), raw_before, "{name}: bytes reached the upstream");
                assert!(logged.is_empty(), "{name}: hyper refused it before the proxy saw it: {logged:?}");
            }
            Want::Answered(status) => {
                assert_eq!(statuses, [status, 200], "{name}: {answers:?}");
                assert_eq!(upstream.len(), 1, "{name}: {upstream:?}");
                assert_eq!(upstream[0].line, "GET /probe HTTP/1.1", "{name}");
                assert_eq!(logged, [("POST".into(), "/a".into(), u64::from(status)), probe], "{name}");
            }
            Want::Forwarded { line, framing, body, close } => {
                let expect: &[u16] = if close { &[200] } else { &[200, 200] };
                assert_eq!(statuses, expect, "{name}: {answers:?}");
                assert_eq!(answers[0].closes(), close, "{name}: {answers:?}");
                assert_eq!(upstream.len(), expect.len(), "{name}: {upstream:#?}");
                let r = &upstream[0];
                assert_eq!(r.line, line, "{name}");
                let mut want_fields = gateway_fields(&src);
                want_fields.extend(framing.map(str::to_string));
                let mut got_fields = r.fields.clone();
                want_fields.sort();
                got_fields.sort();
                assert_eq!(got_fields, want_fields, "{name}: {}", String::from_utf8_lossy(&r.raw));
                assert_eq!(r.body, body, "{name}");
                let method = line.split(' ').next().unwrap_or_default();
                let mut want_logged = vec![(method.to_string(), "/a".to_string(), 200)];
                if !close {
                    assert_eq!(upstream[1].line, "GET /probe HTTP/1.1", "{name}: the next request is the probe");
                    want_logged.push(probe);
                }
                assert_eq!(logged, want_logged, "{name}");
            }
            Want::BrokenBody => {
                assert_eq!(statuses, [400], "{name}: {answers:?}");
                assert!(String::from_utf8_lossy(&answers[0].body).contains("request body"), "{name}");
                assert!(upstream.is_empty(), "{name}: {upstream:?}");
                rec.wait_partial_requests_closed().await;
                assert_eq!(logged, [("POST".into(), "/a".into(), 400)], "{name}");
            }
        }
        assert_eq!(rec.errors(), Vec::<String>::new(), "{name}: the upstream saw ambiguous framing");
    }
    assert!(rec.requests().iter().all(|r| r.path() != "/smuggled"));
    assert!(gw.records().iter().all(|r| r["path"] != "/smuggled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_checked_and_logged() {
    let (gw, rec) = start("", "15m").await;
    let src = "127.0.0.10";
    let bytes = "GET /one HTTP/1.1\r\nHost: admin.test\r\n\r\n\
                 GET /two HTTP/1.1\r\nHost: nas.test\r\n\r\n\
                 POST /three HTTP/1.1\r\nHost: admin.test\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: admin.test\r\n\r\n\
                 GET /four HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let answers = exchange(&gw, src, bytes.as_bytes(), 4).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 421, 200, 421, 200]);
    let paths: Vec<String> = rec.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/one", "/three", "/probe"]);
    assert_eq!(rec.requests()[1].body, SMUGGLED.as_bytes());
    let (open, _) = allowed_conn(&gw, src).await;
    let logged: Vec<(String, u64)> = requests_of(&gw, &open["conn"]).into_iter().map(|(_, p, s)| (p, s)).collect();
    let want = [("/one", 200), ("/two", 421), ("/three", 200), ("/four", 421), ("/probe", 200)];
    assert_eq!(logged, want.map(|(p, s)| (p.to_string(), s)));
    let hosts: Vec<Value> = gw
        .records()
        .into_iter()
        .filter(|r| r["event"] == "http.request" && r["status"] == 421)
        .map(|r| r["host"].clone())
        .collect();
    assert_eq!(hosts, ["nas.test", "evil.example"]);
}

// === 2. spoofed forwarding headers ===

/// Checks what the upstream got from a client at `src` that claimed to be 10.9.9.x.
fn assert_only_gateway_forwarding(r: &Recorded, src: &str) {
    for (name, value) in [
        ("x-forwarded-for", src.to_string()),
        ("x-real-ip", src.to_string()),
        ("x-forwarded-proto", "https".to_string()),
        ("x-forwarded-host", "admin.test".to_string()),
        ("forwarded", format!("for={src};proto=https;host=admin.test")),
        ("host", "admin.test".to_string()),
    ] {
        assert_eq!(r.field(name), [value.as_str()], "{name} in {:#?}", r.fields);
    }
    assert!(r.field("x-forwarded-port").is_empty(), "{:#?}", r.fields);
    let raw = String::from_utf8_lossy(&r.raw).to_ascii_lowercase();
    assert!(!raw.contains("10.9.9."), "a claimed address reached the upstream:\n{raw}");
    assert!(!raw.contains("evil.example") && !raw.contains("proto=http;"), "{raw}");
    assert!(r.fields.iter().all(|f| !f.split(':').next().unwrap_or_default().contains('_')), "{:#?}", r.fields);
}

const SPOOFS: [(&str, &str); 18] = [
    ("X-Forwarded-For", "10.9.9.1"),
    ("x-forwarded-for", "10.9.9.2, 10.9.9.3"),
    ("X-FORWARDED-FOR", "10.9.9.4"),
    ("X-Real-IP", "10.9.9.5"),
    ("x-REAL-ip", "10.9.9.6"),
    ("Forwarded", "for=10.9.9.7;proto=http;host=evil.example"),
    ("FORWARDED", "for=\"[2001:db8::1]\", for=10.9.9.8"),
    ("X-Forwarded-Host", "evil.example"),
    ("x-forwarded-HOST", "evil.example:8443"),
    ("X-Forwarded-Proto", "http"),
    ("X-FORWARDED-PROTO", "http"),
    ("X-Forwarded-Port", "80"),
    // Look-alikes that CGI, WSGI and PHP read as the real thing.
    ("X_Forwarded_For", "10.9.9.9"),
    ("X-Forwarded_For", "10.9.9.10"),
    ("x_real_ip", "10.9.9.11"),
    ("X_Forwarded_Host", "evil.example"),
    ("X_FORWARDED_PROTO", "http"),
    ("x_forwarded_port", "80"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_never_reach_the_upstream() {
    let (gw, rec) = start("", "15m").await;
    // HTTP/1.1, odd casing, repeated, and a Connection header naming the gateway's own
    // headers (as if they were hop-by-hop and could be made to vanish).
    let mut h1 = String::from("GET /h1 HTTP/1.1\r\nHost: admin.test\r\n");
    for (k, v) in SPOOFS {
        h1.push_str(&format!("{k}: {v}\r\n"));
    }
    h1.push_str("Connection: keep-alive, X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto\r\n\r\n");
    let answers = exchange(&gw, "127.0.0.3", h1.as_bytes(), 1).await;
    assert_eq!(answers.iter().map(|a| a.status).collect::<Vec<_>>(), [200, 200]);

    // HTTP/2: lowercase names only, repeated values.
    let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.4"), "admin.test", true).await.expect("tls");
    let (mut h2c, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get("https://admin.test/h2").body(()).unwrap();
    for (k, v) in SPOOFS {
        req.headers_mut()
            .append(http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(), v.parse().unwrap());
    }
    let (resp, _) = h2c.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(DEADLINE, resp).await.expect("in time").expect("response");
    assert_eq!(resp.status(), 200);

    let got = rec.requests();
    let r1 = got.iter().find(|r| r.path() == "/h1").expect("h1 request upstream");
    assert_only_gateway_forwarding(r1, "127.0.0.3");
    let r2 = got.iter().find(|r| r.path() == "/h2").expect("h2 request upstream");
    assert_only_gateway_forwarding(r2, "127.0.0.4");

    for src in ["127.0.0.3", "127.0.0.4"] {
        let open = gw.conn_open_from(src).await;
        assert_eq!(open["action"], "allow");
        let req = gw.wait_record(|r| r["event"] == "http.request" && r["conn"] == open["conn"]).await;
        assert_eq!(req["src_ip"], src);
        assert_eq!(req["host"], "admin.test");
        assert_eq!(req["status"], 200);
    }
    assert!(!gw.records().iter().any(|r| r.to_string().contains("10.9.9.")), "a claimed address reached the log");
}

// === 3. absolute-form, CONNECT, misdirected hosts ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_connect_and_foreign_hosts_never_reach_an_upstream() {
    let (gw, rec) = start("", "15m").await;
    let h1: [(&str, u16, &str); 12] = [
        ("GET http://evil.example/ HTTP/1.1\r\nHost: admin.test\r\n\r\n", 421, "evil.example"),
        ("GET http://evil.example:443/x HTTP/1.1\r\nHost: admin.test\r\n\r\n", 421, "evil.example"),
        ("GET https://nas.test/ HTTP/1.1\r\nHost: admin.test\r\n\r\n", 421, "nas.test"),
        ("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 421, "evil.example"),
        ("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 421, "127.0.0.1"),
        ("CONNECT admin.test:443 HTTP/1.1\r\nHost: admin.test:443\r\n\r\n", 405, "admin.test"),
        ("GET / HTTP/1.1\r\nHost: nas.test\r\n\r\n", 421, "nas.test"),
        ("GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421, "evil.example"),
        ("GET https://admin.test@evil.example/ HTTP/1.1\r\nHost: admin.test\r\n\r\n", 400, ""),
        ("GET / HTTP/1.1\r\nHost: admin.test@evil.example\r\n\r\n", 400, ""),
        ("GET / HTTP/1.1\r\nHost: admin.test\r\nHost: evil.example\r\n\r\n", 400, ""),
        ("GET / HTTP/1.1\r\n\r\n", 400, ""),
    ];
    for (i, (bytes, status, host)) in h1.iter().enumerate() {
        let src = format!("127.0.0.{}", 10 + i);
        let answers = exchange(&gw, &src, bytes.as_bytes(), 1).await;
        assert_eq!(answers.iter().map(|a| a.status).collect::<Vec<_>>(), [*status, 200], "{bytes:?}");
        let (open, _) = allowed_conn(&gw, &src).await;
        let logged: Vec<Value> =
            gw.records().into_iter().filter(|r| r["event"] == "http.request" && r["conn"] == open["conn"]).collect();
        assert_eq!(logged.len(), 2, "{bytes:?}");
        assert_fields(&logged[0], &HTTP_FIELDS);
        assert_eq!(logged[0]["status"], *status, "{bytes:?}");
        assert_eq!(logged[0]["host"], *host, "{bytes:?}");
        assert_eq!(logged[0]["service"], "admin");
    }

    // HTTP/2: a foreign :authority, CONNECT, and a Host that contradicts :authority.
    let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.30"), "admin.test", true).await.expect("tls");
    let (mut h2c, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(conn);
    let connect = |authority: &str| http::Request::builder().method("CONNECT").uri(authority).body(()).unwrap();
    let mut conflicting = http::Request::get("https://admin.test/").body(()).unwrap();
    conflicting.headers_mut().insert("host", "evil.example".parse().unwrap());
    let h2_cases = [
        (http::Request::get("https://evil.example/").body(()).unwrap(), 421),
        (http::Request::get("https://nas.test/").body(()).unwrap(), 421),
        (connect("evil.example:443"), 421),
        (connect("admin.test:443"), 405),
        (conflicting, 400),
    ];
    for (req, status) in h2_cases {
        let what = format!("{} {}", req.method(), req.uri());
        h2c = h2c.ready().await.expect("ready");
        let (resp, _) = h2c.send_request(req, true).expect("send");
        let resp = tokio::time::timeout(DEADLINE, resp).await.expect("in time").expect("response");
        assert_eq!(resp.status(), status, "{what}");
    }
    let open = gw.conn_open_from("127.0.0.30").await;
    let logged = gw.wait_count(5, |r| r["event"] == "http.request" && r["conn"] == open["conn"]).await;
    let statuses: Vec<&Value> = logged.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [421, 421, 421, 405, 400]);
    let hosts: Vec<&Value> = logged.iter().map(|r| &r["host"]).collect();
    assert_eq!(hosts, ["evil.example", "nas.test", "evil.example", "admin.test", ""]);

    // Only the probes reached the upstream.
    let paths: Vec<String> = rec.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, vec!["/probe".to_string(); h1.len()]);

    // No SNI at all (an IP-literal server name): refused in the handshake, no-route.
    let c = gw.client();
    let cfg = c.config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    assert!(c.connect_with(gw.addr("https"), ip("127.0.0.31"), "127.0.0.1", cfg).await.is_err());
    let deny = gw.conn_open_from("127.0.0.31").await;
    assert_fields(&deny, &CONN_OPEN_FIELDS);
    assert_eq!(deny["action"], "deny");
    assert_eq!(deny["reason"], "no-route");
    assert_eq!(deny["sni"], Value::Null);
    assert_eq!(deny["service"], Value::Null);
    assert_eq!(rec.requests().len(), h1.len());
}

// === raw HTTP/2 frames ===

const DATA_FRAME: u8 = 0;
const HEADERS_FRAME: u8 = 1;
const RST_STREAM_FRAME: u8 = 3;
const GOAWAY_FRAME: u8 = 7;
const CONTINUATION_FRAME: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&u32::try_from(payload.len()).expect("frame size").to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an N-bit prefix (RFC 7541 5.1); `first` holds the pattern bits.
fn hpack_int(first: u8, prefix_bits: u32, value: usize) -> Vec<u8> {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut out = vec![first | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

fn hpack_string(s: &[u8]) -> Vec<u8> {
    let mut out = hpack_int(0, 7, s.len());
    out.extend_from_slice(s);
    out
}

/// A literal field with a new name (not Huffman-coded); `index`: add it to the
/// dynamic table.
fn hpack_literal(name: &[u8], value: &[u8], index: bool) -> Vec<u8> {
    let mut out = vec![if index { 0x40 } else { 0x00 }];
    out.extend(hpack_string(name));
    out.extend(hpack_string(value));
    out
}

/// A request block: static :method (GET or POST) and :scheme https, literal :path
/// (name index 4) and :authority (name index 1), then `extra` as literal fields. Bytes,
/// not strings: an attack may put anything in them.
fn hpack_request(method: &str, path: &[u8], authority: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x87];
    out.extend(hpack_int(0, 4, 4));
    out.extend(hpack_string(path));
    out.extend(hpack_int(0, 4, 1));
    out.extend(hpack_string(authority.as_bytes()));
    for (name, value) in extra {
        out.extend(hpack_literal(name, value, false));
    }
    out
}

fn hpack_get(authority: &str, path: &str) -> Vec<u8> {
    hpack_request("GET", path.as_bytes(), authority, &[])
}

struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// GOAWAY: (error code, debug data).
    fn goaway(&self) -> Option<(u32, String)> {
        (self.kind == GOAWAY_FRAME && self.payload.len() >= 8).then(|| {
            let code = u32::from_be_bytes(self.payload[4..8].try_into().expect("4 bytes"));
            (code, String::from_utf8_lossy(&self.payload[8..]).into_owned())
        })
    }
}

async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    rd.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame { kind: head[3], stream, payload })
}

/// A TLS connection that negotiated h2, with the client preface and an empty SETTINGS
/// already sent.
async fn raw_h2(
    gw: &TestGateway,
    src: &str,
) -> (
    tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    let tls = gw.client().connect(gw.addr("https"), ip(src), "admin.test", true).await.expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (rd, mut wr) = tokio::io::split(tls);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    wr.write_all(&hello).await.expect("preface");
    (rd, wr)
}

/// Read frames until a GOAWAY, a RST_STREAM or response HEADERS for `stream`, or the
/// end of the connection; what ended it.
async fn h2_verdict<R: AsyncRead + Unpin>(rd: &mut R, stream: u32) -> String {
    let wait = async {
        while let Some(f) = read_frame(rd).await {
            if let Some((code, debug)) = f.goaway() {
                return format!("goaway {code:#x} {debug}");
            }
            if f.stream == stream && f.kind == RST_STREAM_FRAME {
                return format!("reset {:#x}", u32::from_be_bytes(f.payload[..4].try_into().expect("4 bytes")));
            }
            if f.stream == stream && f.kind == HEADERS_FRAME {
                return "response".to_string();
            }
        }
        "closed".to_string()
    };
    tokio::time::timeout(DEADLINE, wait).await.expect("the gateway reacted in time")
}

// === 1b. HTTP/2 to HTTP/1.1 downgrade ===

/// (name, header block, body, how the stream may end)
type H2Vector<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>, &'a [&'a str]);

/// What an HTTP/2 client can smuggle into the HTTP/1.1 request the gateway writes
/// upstream: CR/LF and connection-specific fields, a forged :path, lying lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downgrade_vectors_never_reach_the_upstream() {
    let (gw, rec) = start("", "15m").await;
    let smuggled: &[u8] = SMUGGLED.as_bytes();
    // A refusal: the stream reset, or the whole connection, with PROTOCOL_ERROR.
    const REFUSED: &[&str] = &["reset 0x1", "goaway 0x1"];
    const REFUSED_OR_ANSWERED: &[&str] = &["reset 0x1", "goaway 0x1", "response"];
    // Each on its own connection: (name, header block, body, how the stream may end).
    let vectors: Vec<H2Vector> = vec![
        (
            "CRLF in a value",
            hpack_request("GET", b"/crlf", "admin.test", &[(b"x-inject", b"a\r\nTransfer-Encoding: chunked")]),
            None,
            REFUSED,
        ),
        (
            "LF in a value",
            hpack_request("GET", b"/lf", "admin.test", &[(b"x-inject", b"a\nx-forwarded-for: 10.9.9.9")]),
            None,
            REFUSED,
        ),
        ("NUL in a value", hpack_request("GET", b"/nul", "admin.test", &[(b"x-inject", b"a\0b")]), None, REFUSED),
        (
            "transfer-encoding",
            hpack_request("POST", b"/te", "admin.test", &[(b"transfer-encoding", b"chunked")]),
            Some(b"0\r\n\r\n"),
            REFUSED,
        ),
        (
            "connection",
            hpack_request("GET", b"/connection", "admin.test", &[(b"connection", b"keep-alive")]),
            None,
            REFUSED,
        ),
        ("upper-case name", hpack_request("GET", b"/upper", "admin.test", &[(b"X-Upper", b"1")]), None, REFUSED),
        ("colon in a name", hpack_request("GET", b"/colon", "admin.test", &[(b"x-a:b", b"1")]), None, REFUSED),
        (
            "CRLF in :path",
            hpack_request("GET", b"/a HTTP/1.1\r\nHost: evil.example\r\n\r\nGET /smuggled", "admin.test", &[]),
            None,
            REFUSED,
        ),
        ("space in :path", hpack_request("GET", b"/a /smuggled", "admin.test", &[]), None, REFUSED),
        // content-length says 0 (or 5); DATA carries a whole request.
        (
            "content-length 0 with a body",
            hpack_request("POST", b"/cl0", "admin.test", &[(b"content-length", b"0")]),
            Some(smuggled),
            REFUSED_OR_ANSWERED,
        ),
        (
            "content-length 5 with a longer body",
            hpack_request("POST", b"/cl5", "admin.test", &[(b"content-length", b"5")]),
            Some(smuggled),
            REFUSED_OR_ANSWERED,
        ),
    ];
    for (i, (name, block, body, want)) in vectors.iter().enumerate() {
        let (mut rd, mut wr) = raw_h2(&gw, &format!("127.0.0.{}", 40 + i)).await;
        let flags = if body.is_some() { END_HEADERS } else { END_HEADERS | END_STREAM };
        let mut frames = h2_frame(HEADERS_FRAME, flags, 1, block);
        if let Some(body) = body {
            frames.extend(h2_frame(DATA_FRAME, END_STREAM, 1, body));
        }
        wr.write_all(&frames).await.unwrap();
        let verdict = h2_verdict(&mut rd, 1).await;
        assert!(want.iter().any(|w| verdict.starts_with(w)), "{name}: {verdict}");
        println!("HTTP/2 downgrade, {name}: {verdict}");
    }
    // A clean request on a fresh connection works.
    let (mut rd, mut wr) = raw_h2(&gw, "127.0.0.39").await;
    wr.write_all(&h2_frame(HEADERS_FRAME, END_HEADERS | END_STREAM, 1, &hpack_get("admin.test", "/clean")))
        .await
        .unwrap();
    assert_eq!(h2_verdict(&mut rd, 1).await, "response");
    drop((rd, wr));

    // Upstream: the clean request, and at most the two lying-length POSTs cut down to
    // what their content-length allowed -- never a second request.
    rec.wait_partial_requests_closed().await;
    let got = rec.requests();
    for r in &got {
        match r.path() {
            "/clean" => {}
            "/cl0" => assert_eq!((r.field("content-length"), r.body.as_slice()), (vec!["0"], &b""[..])),
            "/cl5" => assert_eq!(r.field("content-length"), ["5"]),
            other => panic!("{other} reached the upstream: {r:?}"),
        }
        assert!(r.field("transfer-encoding").is_empty() || r.field("content-length").is_empty(), "{r:?}");
    }
    assert!(got.iter().any(|r| r.path() == "/clean"));
    assert_eq!(rec.errors(), Vec::<String>::new());
    gw.wait_record(|r| r["event"] == "http.request" && r["path"] == "/clean").await;
    let logged: Vec<Value> = gw.records().into_iter().filter(|r| r["event"] == "http.request").collect();
    assert!(
        logged.iter().all(|r| ["/clean", "/cl0", "/cl5"].contains(&r["path"].as_str().unwrap_or_default())),
        "{logged:?}"
    );
    let lines: Vec<&str> = got.iter().map(|r| r.line.as_str()).collect();
    let statuses: Vec<String> = logged.iter().map(|r| format!("{} {}", r["path"], r["status"])).collect();
    println!("HTTP/2 downgrade: upstream got {lines:?}; logged {statuses:?}");
}

// === 4. header floods ===

/// A GET with `count` small extra headers and, if `pad` > 0, one header of `pad` bytes.
fn flood_head(path: &str, count: usize, pad: usize) -> String {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: admin.test\r\n");
    for i in 0..count {
        s.push_str(&format!("X-Flood-{i}: v\r\n"));
    }
    if pad > 0 {
        s.push_str(&format!("X-Big: {}\r\n", "a".repeat(pad)));
    }
    s.push_str("\r\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_refused_and_the_gateway_keeps_serving() {
    let (gw, rec) = start("", "15m").await;
    // HTTP/1.1: at the limits (100 fields, a 60 KiB head) it passes; over them, 431.
    let cases = [
        ("127.0.0.10", flood_head("/fields-100", 99, 0), 200),
        ("127.0.0.11", flood_head("/fields-101", 100, 0), 431),
        ("127.0.0.12", flood_head("/head-60k", 0, 60 * 1024), 200),
        ("127.0.0.13", flood_head("/head-70k", 0, 70 * 1024), 431),
        ("127.0.0.14", flood_head("/head-1m", 0, 1024 * 1024), 431),
    ];
    for (src, head, status) in &cases {
        let raw_before = rec.raw_len();
        let answers = exchange(&gw, src, head.as_bytes(), 1).await;
        let (open, close) = allowed_conn(&gw, src).await;
        let logged = requests_of(&gw, &open["conn"]);
        if *status == 431 {
            let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
            // 1 MiB does not fit the socket buffers: the gateway closes with unread
            // bytes, and the reset may overtake its 431.
            let reset_ok = head.len() > 512 * 1024 && statuses.is_empty();
            assert!(statuses == [431] || reset_ok, "{src}: {statuses:?}");
            assert!(answers.iter().all(Answer::closes));
            assert_eq!(rec.raw_len(), raw_before, "{src}: bytes reached the upstream");
            assert!(logged.is_empty(), "{logged:?}");
            assert!(close["bytes_in"].as_u64().unwrap() > 1000, "{close}");
        } else {
            assert_eq!(answers.iter().map(|a| a.status).collect::<Vec<_>>(), [200, 200], "{src}");
            assert_eq!(logged.len(), 2);
        }
    }
    let got = rec.requests();
    let fields = got.iter().find(|r| r.path() == "/fields-100").expect("100 fields forwarded");
    assert_eq!(fields.fields.iter().filter(|f| f.starts_with("x-flood-")).count(), 99);
    let big = got.iter().find(|r| r.path() == "/head-60k").expect("60 KiB head forwarded");
    assert_eq!(big.field("x-big")[0].len(), 60 * 1024);

    // HTTP/2: 2,000 small fields, ~88 KiB decoded (limit 64 KiB), ~32 KiB on the wire.
    let tls = gw.client().connect(gw.addr("https"), ip("127.0.0.15"), "admin.test", true).await.expect("tls");
    let (h2c, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get("https://admin.test/h2-flood").body(()).unwrap();
    for i in 0..2000 {
        req.headers_mut()
            .insert(http::HeaderName::from_bytes(format!("x-flood-{i:04}").as_bytes()).unwrap(), "v".parse().unwrap());
    }
    let mut h2c = h2c.ready().await.expect("ready");
    let (resp, _) = h2c.send_request(req, true).expect("send");
    match tokio::time::timeout(DEADLINE, resp).await.expect("refused in time") {
        Ok(resp) => {
            println!("HTTP/2 header flood: {}", resp.status());
            assert_eq!(resp.status(), 431);
        }
        Err(e) => {
            println!("HTTP/2 header flood: {e:?}");
            assert!(e.is_reset() || e.is_go_away(), "{e:?}");
        }
    }
    // The same connection still serves a normal request.
    let mut h2c = h2c.ready().await.expect("connection survives a refused stream");
    let (resp, _) =
        h2c.send_request(http::Request::get("https://admin.test/h2-after-flood").body(()).unwrap(), true).unwrap();
    let resp = tokio::time::timeout(DEADLINE, resp).await.expect("in time").expect("response");
    assert_eq!(resp.status(), 200);
    // Close it (dropping the connection task drops the socket).
    drop((h2c, resp));
    conn.abort();

    // HPACK bomb: one 4,000-byte field in the dynamic table, then 100 one-byte
    // references to it: ~4 KiB on the wire, ~400 KiB decoded.
    let (mut rd, mut wr) = raw_h2(&gw, "127.0.0.16").await;
    let mut block = hpack_get("admin.test", "/bomb");
    block.extend(hpack_literal(b"x-bomb", &[b'a'; 4000], true));
    block.extend(std::iter::repeat_n(0x80 | 62, 100));
    let wire = block.len();
    wr.write_all(&h2_frame(HEADERS_FRAME, END_HEADERS | END_STREAM, 1, &block)).await.unwrap();
    let verdict = h2_verdict(&mut rd, 1).await;
    println!("HPACK bomb: {wire} bytes on the wire: {verdict}");
    assert!(
        verdict.starts_with("goaway 0xb") || verdict == "reset 0x7" || verdict == "response",
        "{wire} bytes decoding to ~400 KiB: {verdict}"
    );
    drop((rd, wr));

    // CONTINUATION flood (CVE-2024-27316 class): a header block that never ends, one
    // small frame at a time, up to 10,000 frames.
    let (mut rd, mut wr) = raw_h2(&gw, "127.0.0.17").await;
    let goaway = Arc::new(Mutex::new(None::<(u32, String)>));
    let seen = goaway.clone();
    let reader = tokio::spawn(async move {
        while let Some(f) = read_frame(&mut rd).await {
            if let Some(g) = f.goaway() {
                *seen.lock().unwrap() = Some(g);
                break;
            }
        }
    });
    let mut sent = 0;
    let mut frame = h2_frame(HEADERS_FRAME, END_STREAM, 1, &hpack_get("admin.test", "/continuation"));
    let started = Instant::now();
    while sent < 10_000 && started.elapsed() < Duration::from_secs(10) && goaway.lock().unwrap().is_none() {
        if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
            break;
        }
        frame = h2_frame(CONTINUATION_FRAME, 0, 1, &hpack_literal(b"x-c", b"v", false));
        sent += 1;
    }
    tokio::time::timeout(DEADLINE, reader).await.expect("connection ended in time").unwrap();
    let (code, debug) = goaway.lock().unwrap().clone().expect("GOAWAY for the flood");
    assert_eq!((code, debug.as_str()), (ENHANCE_YOUR_CALM, "too_many_continuations"));
    assert!(sent < 5_000, "{sent} CONTINUATION frames went in before the GOAWAY");
    println!("CONTINUATION flood: GOAWAY after {sent} frames, {:?}", started.elapsed());

    // Nothing of the HTTP/2 floods reached the upstream; the gateway still serves.
    let c = gw.client();
    for h2 in [false, true] {
        let r = c.get(gw.addr("https"), "127.0.0.2", "admin.test").path("/after").h2(h2).send().await.expect("served");
        assert_eq!(r.status, 200);
    }
    let paths: Vec<String> = rec.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/fields-100", "/probe", "/head-60k", "/probe", "/h2-after-flood", "/after", "/after"]);
    for src in ["127.0.0.15", "127.0.0.16", "127.0.0.17"] {
        let (open, _) = allowed_conn(&gw, src).await;
        let logged = requests_of(&gw, &open["conn"]);
        assert!(logged.iter().all(|(_, p, _)| p == "/h2-after-flood"), "{src}: {logged:?}");
    }
}

// === 5. HTTP/2 rapid reset ===

/// Latency figures of a legitimate client's run.
/// Send GETs every `every` on one persistent HTTP/2 connection from `src` until `stop`
/// is set (or `max` requests); each one's latency.
async fn legit_h2(gw: &TestGateway, src: &str, every: Duration, max: usize, stop: Arc<AtomicBool>) -> Stats {
    legit_h2_on(gw.client(), gw.addr("https"), ip(src), every, max, stop).await
}

async fn legit_h2_on(
    c: TestClient,
    addr: SocketAddr,
    src: IpAddr,
    every: Duration,
    max: usize,
    stop: Arc<AtomicBool>,
) -> Stats {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tls = c.connect(addr, src, "admin.test", true).await.expect("legit tls");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("legit h2");
    tokio::spawn(conn);
    let mut stats = Stats::default();
    let mut tick = tokio::time::interval(every);
    while stats.latencies.len() < max && !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let req = http::Request::get("https://admin.test/legit").body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let t = Instant::now();
        let ok = match tokio::time::timeout(DEADLINE, send.send_request(req)).await {
            Ok(Ok(resp)) => resp.status() == 200,
            _ => false,
        };
        stats.record(t.elapsed(), ok);
    }
    stats
}

/// One rapid-reset connection: open a stream, reset it at once, again, up to
/// `max_streams` or `max_time`. How many streams went out, how long until it ended,
/// and the error that ended it.
async fn rapid_reset(
    gw: &TestGateway,
    src: &str,
    max_streams: u32,
    max_time: Duration,
) -> (u32, Duration, Option<h2::Error>) {
    let tls = gw.client().connect(gw.addr("https"), ip(src), "admin.test", true).await.expect("tls");
    let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let mut client = Some(client);
    let mut streams = 0;
    let mut error = None;
    while let Some(c) = client.take() {
        if streams >= max_streams || started.elapsed() >= max_time {
            break;
        }
        let mut c = match c.ready().await {
            Ok(c) => c,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        let req = http::Request::get("https://admin.test/reset").body(()).unwrap();
        match c.send_request(req, false) {
            Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        streams += 1;
        if streams % 64 == 0 {
            tokio::task::yield_now().await;
        }
        client = Some(c);
    }
    let elapsed = started.elapsed();
    drop(client);
    let _ = tokio::time::timeout(DEADLINE, conn).await.expect("attack connection ended");
    (streams, elapsed, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_and_other_clients_keep_being_served() {
    let (gw, rec) = start("", "15m").await;
    let every = Duration::from_millis(10);
    let baseline = legit_h2(&gw, "127.0.0.2", every, 100, Arc::new(AtomicBool::new(false))).await;

    let stop = Arc::new(AtomicBool::new(false));
    // On its own task: the attack loop must not be what slows it down.
    let legit = tokio::spawn(legit_h2_on(gw.client(), gw.addr("https"), ip("127.0.0.3"), every, 10_000, stop.clone()));
    let attack = async {
        let mut rounds = Vec::new();
        let started = Instant::now();
        // Reconnect and attack again, for about three seconds.
        for i in 0..100 {
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
            let src = format!("127.0.0.{}", 20 + i);
            rounds.push((src.clone(), rapid_reset(&gw, &src, 20_000, Duration::from_secs(10)).await));
        }
        stop.store(true, Ordering::SeqCst);
        rounds
    };
    let rounds = attack.await;
    let during = tokio::time::timeout(DEADLINE, legit).await.expect("legit client stopped").expect("legit task");

    let total: u32 = rounds.iter().map(|(_, (n, _, _))| n).sum();
    let mut goaways = 0;
    for (src, (streams, elapsed, error)) in &rounds {
        let e = error.as_ref().unwrap_or_else(|| panic!("{src}: {streams} streams in {elapsed:?} and no GOAWAY"));
        // The GOAWAY, or the close right behind it when a write got there first.
        if e.is_go_away() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
            goaways += 1;
        } else {
            assert!(e.is_io(), "{src}: {e:?}");
        }
        assert!(*streams < 5_000, "{src}: {streams} streams before the GOAWAY");
        assert!(*elapsed < Duration::from_secs(2), "{src}: survived {elapsed:?}");
        let (open, close) = allowed_conn(&gw, src).await;
        assert!(close["bytes_in"].as_u64().unwrap() > 0, "{open}");
    }
    let reached = rec.requests().iter().filter(|r| r.path() == "/reset").count();
    let max_streams = rounds.iter().map(|(_, (n, _, _))| *n).max().unwrap_or(0);
    let max_alive = rounds.iter().map(|(_, (_, t, _))| *t).max().unwrap_or_default();
    println!(
        "rapid reset: {} connections ({goaways} saw the GOAWAY, the rest the close), {total} streams, at most {max_streams} streams / {max_alive:?} per connection before GOAWAY; {reached} reached the upstream",
        rounds.len()
    );
    println!("legit h2 baseline: {}", baseline.summary());
    println!("legit h2 during the attack: {}", during.summary());
    assert!(rounds.len() >= 3, "only {} attack rounds", rounds.len());
    assert!(goaways > 0, "no round ended with GOAWAY ENHANCE_YOUR_CALM");
    assert!(reached * 20 < total as usize, "{reached} of {total} reset streams reached the upstream");
    assert_eq!(baseline.failed, 0);
    assert_eq!(during.failed, 0, "{}", during.summary());
    assert!(during.ok >= 50, "{}", during.summary());
    assert!(during.pct(0.99) < Duration::from_secs(2), "{}", during.summary());
    // Streams reset before the proxy saw them leave no http.request; the few it
    // handled are logged like any request.
    let logged: Vec<Value> =
        gw.records().into_iter().filter(|r| r["event"] == "http.request" && r["path"] == "/reset").collect();
    let statuses: std::collections::BTreeSet<String> = logged.iter().map(|r| r["status"].to_string()).collect();
    println!("rapid reset: {} http.request records for /reset, statuses {statuses:?}", logged.len());
    assert!(logged.len() * 20 < total as usize, "{} of {total} reset streams were handled", logged.len());
}

// === 6. slowloris ===

/// The ClientHello a real client would send for `sni`, as bytes on the wire.
fn client_hello(gw: &TestGateway, sni: &str) -> Vec<u8> {
    let cfg = gw.client().config(&[b"http/1.1"], &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// Send `bytes` one at a time, one every `every`, and watch for the peer closing.
/// Time from `started` (taken before connecting, so that it is never later than the
/// gateway's own timers start) until the gateway closed the connection; None if it was
/// still open at `give_up`.
async fn trickle<S>(s: S, started: Instant, bytes: Vec<u8>, every: Duration, give_up: Duration) -> Option<Duration>
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let mut next = 0;
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                return Some(started.elapsed());
            },
            _ = tick.tick() => {
                if started.elapsed() > give_up {
                    return None;
                }
                if next < bytes.len() {
                    if wr.write_all(&bytes[next..=next]).await.is_err() || wr.flush().await.is_err() {
                        return Some(started.elapsed());
                    }
                    next += 1;
                }
            }
        }
    }
}

/// Wait for a group of trickling connections; their close times.
async fn closed_after(group: Vec<tokio::task::JoinHandle<Option<Duration>>>, what: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    for h in group {
        let t = tokio::time::timeout(Duration::from_secs(60), h).await.expect("trickler ended").expect("trickler task");
        out.push(t.unwrap_or_else(|| panic!("{what}: a connection was still open when the trickler gave up")));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_other_clients_keep_being_served() {
    // 2,150 trickling connections in all. The test process and the gateway each hold a
    // descriptor per connection; both raise their soft open-files limit to the hard one.
    const SILENT: usize = 1_500;
    const SLOW_HELLO: usize = 500;
    const SLOW_HEAD: usize = 100;
    const IDLE_AFTER_TLS: usize = 50;
    let need = 2 * (SILENT + SLOW_HELLO + SLOW_HEAD + IDLE_AFTER_TLS) as u64;
    let nofile = menshen::listener::limits::raise_nofile().unwrap_or(u64::MAX);
    assert!(nofile >= need, "this test needs {need} open files, the hard limit (ulimit -Hn) is {nofile}");
    let (gw, rec) = start("handshake_timeout = \"1s\"", "3s").await;
    let addr = gw.addr("https");
    let every = Duration::from_millis(50);
    let baseline = legit_h1(gw.client(), addr, "127.0.0.2", every, 40, Arc::new(AtomicBool::new(false))).await;

    let stop = Arc::new(AtomicBool::new(false));
    let legit = tokio::spawn(legit_h1(gw.client(), addr, "127.0.0.3", every, 10_000, stop.clone()));
    let started = Instant::now();
    let tcp = move |src: &'static str| async move {
        let t = Instant::now();
        (tcp_from(ip(src), addr).await.expect("tcp"), t)
    };
    // TCP open, then nothing at all.
    let silent: Vec<_> = (0..SILENT)
        .map(|_| {
            tokio::spawn(async move {
                let (s, t) = tcp("127.0.0.50").await;
                trickle(s, t, vec![], Duration::from_millis(250), Duration::from_secs(10)).await
            })
        })
        .collect();
    // A real ClientHello, one byte every 250 ms.
    let hello = client_hello(&gw, "admin.test");
    let slow_hello: Vec<_> = (0..SLOW_HELLO)
        .map(|_| {
            let hello = hello.clone();
            tokio::spawn(async move {
                let (s, t) = tcp("127.0.0.51").await;
                trickle(s, t, hello, Duration::from_millis(250), Duration::from_secs(10)).await
            })
        })
        .collect();
    // TLS done, then a request head one byte every 500 ms (never finished).
    let head = format!("GET /slowloris HTTP/1.1\r\nHost: admin.test\r\nX-Pad: {}", "a".repeat(200)).into_bytes();
    let slow_head: Vec<_> = (0..SLOW_HEAD)
        .map(|_| {
            let (c, head) = (gw.client(), head.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let tls = c.connect(addr, ip("127.0.0.52"), "admin.test", false).await.expect("tls");
                trickle(tls, t, head, Duration::from_millis(500), Duration::from_secs(45)).await
            })
        })
        .collect();
    // TLS done, then nothing.
    let idle: Vec<_> = (0..IDLE_AFTER_TLS)
        .map(|_| {
            let c = gw.client();
            tokio::spawn(async move {
                let t = Instant::now();
                let tls = c.connect(addr, ip("127.0.0.53"), "admin.test", false).await.expect("tls");
                trickle(tls, t, vec![], Duration::from_millis(500), Duration::from_secs(15)).await
            })
        })
        .collect();

    let silent = closed_after(silent, "silent").await;
    let slow_hello = closed_after(slow_hello, "slow ClientHello").await;
    let idle = closed_after(idle, "idle after TLS").await;
    let slow_head = closed_after(slow_head, "slow request head").await;
    let attack_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let during = tokio::time::timeout(DEADLINE, legit).await.expect("legit client stopped").expect("legit task");

    let range = |v: &[Duration]| format!("{:?}..{:?}", v[0], v[v.len() - 1]);
    println!(
        "slowloris ({attack_time:?}): silent closed after {}, slow ClientHello {}, idle after TLS {}, slow head {}",
        range(&silent),
        range(&slow_hello),
        range(&idle),
        range(&slow_head)
    );
    println!("legit h1 baseline: {}", baseline.summary());
    println!("legit h1 during slowloris: {}", during.summary());
    let within = |v: &[Duration], lo: u64, hi: u64| {
        v[0] >= Duration::from_millis(lo) && v[v.len() - 1] <= Duration::from_millis(hi)
    };
    assert!(within(&silent, 1_000, 5_000), "handshake timeout 1 s: {}", range(&silent));
    assert!(within(&slow_hello, 1_000, 5_000), "handshake timeout 1 s: {}", range(&slow_hello));
    assert!(within(&idle, 3_000, 10_000), "idle timeout 3 s: {}", range(&idle));
    assert!(within(&slow_head, 30_000, 40_000), "header read timeout 30 s: {}", range(&slow_head));
    assert_eq!(baseline.failed, 0, "{}", baseline.summary());
    assert_eq!(during.failed, 0, "{}", during.summary());
    assert!(during.ok >= 100, "{}", during.summary());
    assert!(during.pct(0.99) < Duration::from_secs(2), "{}", during.summary());

    // The log: a deny record for each connection that never finished its handshake, an
    // allow and a close for each that did.
    let deny_from = |src: &'static str| {
        move |r: &Value| {
            r["event"] == "conn.open" && r["src_ip"] == src && r["action"] == "deny" && r["reason"] == "tls-handshake"
        }
    };
    assert_eq!(gw.wait_count(SILENT, deny_from("127.0.0.50")).await.len(), SILENT);
    assert_eq!(gw.wait_count(SLOW_HELLO, deny_from("127.0.0.51")).await.len(), SLOW_HELLO);
    let denied = gw.wait_count(1, deny_from("127.0.0.51")).await;
    assert_fields(&denied[0], &CONN_OPEN_FIELDS);
    assert_eq!(denied[0]["proto"], "tls");
    assert_eq!(denied[0]["service"], Value::Null);
    for (src, n) in [("127.0.0.52", SLOW_HEAD), ("127.0.0.53", IDLE_AFTER_TLS)] {
        let opens = gw.wait_count(n, |r| r["event"] == "conn.open" && r["src_ip"] == src).await;
        assert!(opens.iter().all(|r| r["action"] == "allow"), "{src}");
        let closes = gw.wait_count(n, |r| r["event"] == "conn.close" && r["src_ip"] == src).await;
        assert_eq!((opens.len(), closes.len()), (n, n), "{src}");
        let reasons: std::collections::BTreeSet<String> =
            closes.iter().map(|r| r["close_reason"].as_str().unwrap_or_default().to_string()).collect();
        println!("{src}: close_reason {reasons:?}");
        if src == "127.0.0.53" {
            assert_eq!(reasons.into_iter().collect::<Vec<_>>(), ["idle"]);
        } else {
            assert!(closes.iter().all(|r| r["duration_ms"].as_u64().unwrap() >= 29_000), "{closes:?}");
        }
    }
    assert!(rec.requests().iter().all(|r| r.path() == "/legit"), "a trickled request reached the upstream");
}
