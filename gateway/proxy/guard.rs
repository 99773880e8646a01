//! The protocol guard of an L4 (TCP) service: judge the first bytes a client sends,
//! before a single byte reaches the upstream, and say whether they are the protocol
//! the service expects (`guard = "ssh" | "tls" | "rdp-tls" | "none"`).
//!
//! [`check`] is a pure function of everything read so far. The caller reads, calls it,
//! and reads more while it answers [`Verdict::NeedMore`], never past
//! [`MAX_GUARD_BYTES`] (every guard decides within that many bytes). A decided verdict
//! never changes when more bytes arrive, and no strict prefix of a valid opening is
//! decided, so the caller may call `check` after every read.
//!
//! - `ssh`: the client's identification line, RFC 4253 §4.2.
//! - `tls`: a ClientHello offering TLS 1.2 or newer (RFC 8446, RFC 5246), possibly
//!   spread over several records; its SNI is returned for the log.
//! - `rdp-tls`: an X.224 Connection Request whose RDP_NEG_REQ asks for TLS or CredSSP
//!   (MS-RDPBCGR 2.2.1.1), so that the session is not Standard RDP Security; the server's
//!   answer is judged by [`rdp_confirm_selects_standard_security`].
//! - `none`: nothing to check.

use std::borrow::Cow;

/// What a TCP service requires the client to speak first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Ssh,
    Tls,
    RdpTls,
    None,
}

impl Guard {
    /// The config spelling: `"ssh" | "tls" | "rdp-tls" | "none"`.
    pub fn parse(s: &str) -> Option<Guard> {
        match s {
            "ssh" => Some(Guard::Ssh),
            "tls" => Some(Guard::Tls),
            "rdp-tls" => Some(Guard::RdpTls),
            "none" => Some(Guard::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Ssh => "ssh",
            Guard::Tls => "tls",
            Guard::RdpTls => "rdp-tls",
            Guard::None => "none",
        }
    }
}

/// The judgement on the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still a valid beginning: read more (up to [`MAX_GUARD_BYTES`]).
    NeedMore,
    /// The opening is the expected protocol; `sni` is the TLS server name, if any.
    Pass { sni: Option<String> },
    /// Not the expected protocol; the reason is short, fixed text for the log.
    Fail(&'static str),
}

/// The longest SSH identification line, CR LF included (RFC 4253 §4.2).
const SSH_MAX_LINE: usize = 255;
/// The most bytes of TLS records the guard reads to find a whole ClientHello.
const TLS_MAX_BYTES: usize = 32 * 1024;
/// The largest TPKT the RDP guard accepts; a Connection Request is well under 100 bytes.
const RDP_MAX_TPKT: usize = 4096;

/// The most bytes a guard reads before it must decide.
pub const MAX_GUARD_BYTES: usize = max(max(SSH_MAX_LINE, TLS_MAX_BYTES), RDP_MAX_TPKT);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Judge the first bytes the client sent (everything read so far).
pub fn check(guard: Guard, buf: &[u8]) -> Verdict {
    let result = match guard {
        Guard::Ssh => ssh(buf).map(|()| None),
        Guard::Tls => tls(buf),
        Guard::RdpTls => rdp_request(buf).map(|()| None),
        Guard::None => Ok(None),
    };
    match result {
        Ok(sni) => Verdict::Pass { sni },
        Err(Stop::More) => Verdict::NeedMore,
        Err(Stop::Fail(reason)) => Verdict::Fail(reason),
    }
}

// === Parsing helpers ===

/// Why a parse stopped short of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The input ran out while still valid.
    More,
    Fail(&'static str),
}

type Res<T> = Result<T, Stop>;

/// A cursor over bytes; running out gives `short` (`More` if the bytes are only a prefix
/// of what was declared, a failure if they are all there is).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    short: Stop,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], short: Stop) -> Self {
        Reader { buf, pos: 0, short }
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(self.short)?;
        let s = self.buf.get(self.pos..end).ok_or(self.short)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16_be(&mut self) -> Res<u16> {
        let s = self.take(2)?;
        Ok(s.iter().fold(0, |acc, &b| acc << 8 | u16::from(b)))
    }

    fn u16_le(&mut self) -> Res<u16> {
        Ok(self.u16_be()?.swap_bytes())
    }

    fn u24_be(&mut self) -> Res<usize> {
        let s = self.take(3)?;
        Ok(s.iter().fold(0, |acc, &b| acc << 8 | usize::from(b)))
    }

    fn u32_le(&mut self) -> Res<u32> {
        let s = self.take(4)?;
        Ok(s.iter().rev().fold(0, |acc, &b| acc << 8 | u32::from(b)))
    }

    /// A vector with a one-byte length; its contents are complete once taken.
    fn vec8(&mut self, malformed: &'static str) -> Res<Reader<'a>> {
        let n = self.u8()?;
        Ok(Reader::new(self.take(usize::from(n))?, Stop::Fail(malformed)))
    }

    /// A vector with a two-byte big-endian length.
    fn vec16(&mut self, malformed: &'static str) -> Res<Reader<'a>> {
        let n = self.u16_be()?;
        Ok(Reader::new(self.take(usize::from(n))?, Stop::Fail(malformed)))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }

    /// Whether every byte was read; with bytes still to come, that is not known yet.
    fn at_end(&self) -> Res<bool> {
        if self.pos < self.buf.len() {
            Ok(false)
        } else if self.short == Stop::More {
            Err(Stop::More)
        } else {
            Ok(true)
        }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

// === impl Ssh ===

const SSH_PREFIX: &[u8] = b"SSH-2.0-";
const NOT_SSH: &str = "not an SSH-2.0 identification";

/// RFC 4253 §4.2: `SSH-2.0-softwareversion SP comments CR LF`, at most 255 bytes with
/// the CR LF, printable US-ASCII. A bare LF ends the line too (the RFC's own note on
/// compatibility). The RFC forbids `-` in softwareversion, but JSch sends
/// `SSH-2.0-JSCH-0.1.54` and OpenSSH accepts it, so only a space ends softwareversion.
fn ssh(buf: &[u8]) -> Res<()> {
    for (i, &b) in buf.iter().enumerate().take(SSH_MAX_LINE) {
        if let Some(&want) = SSH_PREFIX.get(i) {
            if b != want {
                if i == 4 && b == b'1' {
                    return Err(Stop::Fail("SSH protocol 1 refused"));
                }
                return Err(Stop::Fail(NOT_SSH));
            }
            continue;
        }
        let first = i == SSH_PREFIX.len();
        match b {
            b'\n' if first => return Err(Stop::Fail("empty SSH software version")),
            b'\n' => return Ok(()),
            b'\r' => match buf.get(i + 1) {
                _ if first => return Err(Stop::Fail("empty SSH software version")),
                Some(b'\n') | None => {}
                Some(_) => return Err(Stop::Fail("stray CR in SSH identification")),
            },
            b' ' if first => return Err(Stop::Fail("empty SSH software version")),
            0x20..=0x7e => {}
            _ => return Err(Stop::Fail("non-printable byte in SSH identification")),
        }
    }
    if buf.len() >= SSH_MAX_LINE {
        Err(Stop::Fail("identification line too long"))
    } else {
        Err(Stop::More)
    }
}

// === impl Tls ===

const NOT_HELLO: &str = "not a TLS ClientHello";
const MALFORMED: &str = "malformed ClientHello";
const TOO_OLD: &str = "TLS version below 1.2";
const TOO_LARGE: &str = "ClientHello too large";
const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.2's bound on a record (2^14 plus expansion); plaintext ones are smaller.
const MAX_RECORD: usize = 16384 + 256;
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// A ClientHello offering TLS 1.2+; its server name, if it has one.
fn tls(buf: &[u8]) -> Res<Option<String>> {
    let (msg, record_error) = gather_handshake(buf);
    // A fault in the handshake bytes already gathered is reported before a fault in a
    // later record, so that the answer does not depend on how much had arrived.
    match client_hello(&msg) {
        Err(Stop::More) => Err(record_error.map_or(Stop::More, Stop::Fail)),
        other => other,
    }
}

/// Walk the handshake records, joining their fragments (borrowed when there is only
/// one) until the first handshake message is whole. Returns the handshake bytes seen
/// and, if the walk stopped on a bad record rather than on missing bytes, why.
fn gather_handshake(buf: &[u8]) -> (Cow<'_, [u8]>, Option<&'static str>) {
    let mut msg: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut pos = 0;
    loop {
        // The whole message, once its header says how long it is.
        let want = msg.get(1..4).map(|l| 4 + l.iter().fold(0, |acc, &b| acc << 8 | usize::from(b)));
        if want.is_some_and(|w| msg.len() >= w) {
            return (msg, None);
        }
        if pos + RECORD_HEADER >= TLS_MAX_BYTES {
            return (msg, Some(TOO_LARGE));
        }
        let mut r = Reader::new(buf.get(pos..).unwrap_or_default(), Stop::More);
        let len = match record_header(&mut r, pos == 0) {
            Ok(len) => len,
            Err(Stop::More) => return (msg, None),
            Err(Stop::Fail(why)) => return (msg, Some(why)),
        };
        let end = pos + RECORD_HEADER + len;
        if end > TLS_MAX_BYTES {
            return (msg, Some(TOO_LARGE));
        }
        let fragment = buf.get(pos + RECORD_HEADER..end.min(buf.len())).unwrap_or_default();
        if msg.is_empty() {
            msg = Cow::Borrowed(fragment);
        } else {
            msg.to_mut().extend_from_slice(fragment);
        }
        if end > buf.len() {
            return (msg, None);
        }
        pos = end;
    }
}

/// A handshake record's header; its length.
fn record_header(r: &mut Reader<'_>, first: bool) -> Res<usize> {
    let not = Stop::Fail(if first { NOT_HELLO } else { MALFORMED });
    if r.u8()? != 0x16 {
        return Err(not);
    }
    if r.u8()? != 0x03 {
        return Err(not);
    }
    match r.u8()? {
        0x01..=0x03 => {}
        0x00 => return Err(Stop::Fail(TOO_OLD)),
        _ => return Err(not),
    }
    match usize::from(r.u16_be()?) {
        0 => Err(Stop::Fail(MALFORMED)),
        n if n > MAX_RECORD => Err(Stop::Fail("TLS record too long")),
        n => Ok(n),
    }
}

/// The handshake message in `msg` (its start, if it has not all arrived).
fn client_hello(msg: &[u8]) -> Res<Option<String>> {
    let mut r = Reader::new(msg, Stop::More);
    if r.u8()? != 1 {
        return Err(Stop::Fail(NOT_HELLO));
    }
    let len = r.u24_be()?;
    if 4 + len + RECORD_HEADER > TLS_MAX_BYTES {
        return Err(Stop::Fail(TOO_LARGE));
    }
    let body = r.rest();
    let short = if body.len() < len { Stop::More } else { Stop::Fail(MALFORMED) };
    let mut r = Reader::new(body.get(..len).unwrap_or(body), short);

    let legacy_version = r.u16_be()?;
    if legacy_version >> 8 != 3 {
        return Err(Stop::Fail(if legacy_version < 0x0300 { TOO_OLD } else { MALFORMED }));
    }
    r.take(32)?; // random
    if r.vec8(MALFORMED)?.buf.len() > 32 {
        return Err(Stop::Fail(MALFORMED)); // session_id
    }
    let suites = r.vec16(MALFORMED)?.buf.len();
    if suites < 2 || suites % 2 != 0 {
        return Err(Stop::Fail(MALFORMED));
    }
    if r.vec8(MALFORMED)?.is_empty() {
        return Err(Stop::Fail(MALFORMED)); // compression_methods
    }
    let (sni, versions) = if r.at_end()? { (None, None) } else { extensions(r.vec16(MALFORMED)?)? };
    if !r.at_end()? {
        return Err(Stop::Fail(MALFORMED));
    }
    // With supported_versions, legacy_version must be 0x0303 (RFC 8446 §4.1.2): an
    // upstream that ignores the extension negotiates from legacy_version, and would
    // answer 0x0301 with TLS 1.0.
    let modern = match versions {
        Some(offers_modern) => legacy_version == 0x0303 && offers_modern,
        None => legacy_version >= 0x0303,
    };
    if modern {
        Ok(sni)
    } else {
        Err(Stop::Fail(TOO_OLD))
    }
}

/// The extensions this guard reads: the server name, and whether supported_versions
/// (if present) offers TLS 1.2 or 1.3. A repeated extension is malformed (RFC 8446 §4.2).
fn extensions(mut r: Reader<'_>) -> Res<(Option<String>, Option<bool>)> {
    let mut seen = [0u64; 1024];
    let (mut sni, mut versions) = (None, None);
    while !r.is_empty() {
        let kind = r.u16_be()?;
        let data = r.vec16(MALFORMED)?;
        let (word, bit) = (usize::from(kind / 64), kind % 64);
        let slot = seen.get_mut(word).ok_or(Stop::Fail(MALFORMED))?;
        if *slot & (1 << bit) != 0 {
            return Err(Stop::Fail("repeated ClientHello extension"));
        }
        *slot |= 1 << bit;
        match kind {
            EXT_SERVER_NAME => sni = Some(server_name(data)?),
            EXT_SUPPORTED_VERSIONS => versions = Some(supported_versions(data)?),
            _ => {}
        }
    }
    Ok((sni, versions))
}

/// RFC 6066 §3: the one `host_name` entry (OpenSSL, too, accepts no other list),
/// lowercased.
fn server_name(mut data: Reader<'_>) -> Res<String> {
    const BAD: &str = "malformed server_name";
    let mut list = data.vec16(BAD)?;
    if !data.at_end()? || list.u8()? != 0 {
        return Err(Stop::Fail(BAD));
    }
    let host = list.vec16(BAD)?.buf;
    if !list.at_end()? {
        return Err(Stop::Fail(BAD)); // a second name
    }
    if !valid_host(host) {
        return Err(Stop::Fail("invalid server name"));
    }
    Ok(host.iter().map(|&b| char::from(b.to_ascii_lowercase())).collect())
}

/// A DNS name in ASCII: letters, digits, `-` and `_`, labels of 1 to 63 bytes, at most
/// 253 bytes, no trailing dot (RFC 6066 §3). No NUL or other control bytes can pass.
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split(|&b| b == b'.').all(|label| {
            (1..=63).contains(&label.len())
                && label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// RFC 8446 §4.2.1, the ClientHello form: whether 0x0303 or 0x0304 is offered.
fn supported_versions(mut data: Reader<'_>) -> Res<bool> {
    let mut list = data.vec8(MALFORMED)?;
    if !data.at_end()? || list.buf.len() < 2 || list.buf.len() % 2 != 0 {
        return Err(Stop::Fail(MALFORMED));
    }
    let mut modern = false;
    while !list.is_empty() {
        modern |= matches!(list.u16_be()?, 0x0303 | 0x0304);
    }
    Ok(modern)
}

// === impl RdpTls ===

const NOT_RDP: &str = "not an RDP connection request";
const MALFORMED_RDP: &str = "malformed RDP connection request";
const STANDARD_SECURITY: &str = "standard RDP security requested";
const PROTOCOL_SSL: u32 = 0x1;
const PROTOCOL_HYBRID: u32 = 0x2;
const PROTOCOL_HYBRID_EX: u32 = 0x8;
const TYPE_RDP_NEG_REQ: u8 = 0x01;
const TYPE_RDP_NEG_RSP: u8 = 0x02;
const TYPE_RDP_NEG_FAILURE: u8 = 0x03;
const TYPE_RDP_CORRELATION_INFO: u8 = 0x06;
/// TPKT (4) plus the fixed part of an X.224 CR or CC TPDU (7).
const X224_MIN: usize = 11;

/// A TPKT header and the fixed X.224 TPDU header whose code's upper nibble is `code`:
/// returns the TPDU's variable part, checking each byte as it arrives and waiting for
/// the whole TPKT before returning it.
fn x224<'a>(buf: &'a [u8], code: u8, not: &'static str, malformed: &'static str) -> Res<&'a [u8]> {
    let mut r = Reader::new(buf, Stop::More);
    if r.u8()? != 3 || r.u8()? != 0 {
        return Err(Stop::Fail(not));
    }
    let len = usize::from(r.u16_be()?);
    if !(X224_MIN..=RDP_MAX_TPKT).contains(&len) {
        return Err(Stop::Fail(malformed));
    }
    // The length indicator counts the TPDU after itself: all of the TPKT but 5 bytes.
    if usize::from(r.u8()?) != len - 5 {
        return Err(Stop::Fail(malformed));
    }
    if r.u8()? & 0xf0 != code {
        return Err(Stop::Fail(not));
    }
    r.take(5)?; // dst-ref, src-ref, class option
    let tpdu = buf.get(..len).ok_or(Stop::More)?;
    Ok(tpdu.get(X224_MIN..).unwrap_or_default())
}

/// MS-RDPBCGR 2.2.1.1: an X.224 Connection Request whose RDP_NEG_REQ asks for TLS,
/// CredSSP or CredSSP with early auth. Without a NEG_REQ, or asking for nothing (0), the
/// client wants Standard RDP Security: its own weak RC4 encryption, not TLS.
fn rdp_request(buf: &[u8]) -> Res<()> {
    let mut rest = x224(buf, 0xe0, NOT_RDP, MALFORMED_RDP)?;
    // An optional cookie (`Cookie: mstshash=user`) or routing token (`Cookie: msts=…`),
    // ended by CR LF. Nothing else may start with `C`: a NEG_REQ starts with 0x01.
    if rest.starts_with(b"Cookie: ") {
        let end = rest.windows(2).position(|w| w == b"\r\n").ok_or(Stop::Fail(MALFORMED_RDP))?;
        let (line, after) = rest.split_at_checked(end + 2).ok_or(Stop::Fail(MALFORMED_RDP))?;
        if line.iter().take(end).any(|&b| !(0x20..=0x7e).contains(&b)) {
            return Err(Stop::Fail(MALFORMED_RDP));
        }
        rest = after;
    }
    if rest.is_empty() {
        return Err(Stop::Fail(STANDARD_SECURITY));
    }
    let mut r = Reader::new(rest, Stop::Fail(MALFORMED_RDP));
    if r.u8()? != TYPE_RDP_NEG_REQ {
        return Err(Stop::Fail(MALFORMED_RDP));
    }
    let flags = r.u8()?;
    if r.u16_le()? != 8 {
        return Err(Stop::Fail(MALFORMED_RDP));
    }
    let requested = r.u32_le()?;
    // RDP_NEG_CORRELATION_INFO follows when flags say CORRELATION_INFO_PRESENT.
    if flags & 0x08 != 0 && !r.is_empty() {
        if r.u8()? != TYPE_RDP_CORRELATION_INFO || r.u8()? != 0 || r.u16_le()? != 36 {
            return Err(Stop::Fail(MALFORMED_RDP));
        }
        r.take(32)?;
    }
    if !r.at_end()? {
        return Err(Stop::Fail(MALFORMED_RDP));
    }
    if requested == 0 {
        Err(Stop::Fail(STANDARD_SECURITY))
    } else if requested & (PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX) == 0 {
        Err(Stop::Fail("no TLS-based RDP security requested"))
    } else {
        Ok(())
    }
}

/// Judge the server's X.224 Connection Confirm (MS-RDPBCGR 2.2.1.2): whether the server
/// chose Standard RDP Security even though the client asked for TLS.
///
/// - `Some(true)`: standard security: the TPDU has no RDP_NEG_RSP, or its
///   selectedProtocol is 0 (PROTOCOL_RDP). Cut the connection.
/// - `Some(false)`: the server selected TLS, CredSSP or another protocol, or answered
///   with RDP_NEG_FAILURE (it will close the connection itself).
/// - `None`: undecided: either fewer bytes than the TPKT header declares have arrived
///   (read more), or the bytes are not a valid Connection Confirm (they stay `None`
///   whatever follows). A caller reads at most [`MAX_GUARD_BYTES`] bytes, under a
///   timeout, and treats a `None` at the end as a refusal.
pub fn rdp_confirm_selects_standard_security(buf: &[u8]) -> Option<bool> {
    const BAD: &str = "malformed RDP connection confirm";
    let rest = x224(buf, 0xd0, BAD, BAD).ok()?;
    if rest.is_empty() {
        return Some(true);
    }
    let mut r = Reader::new(rest, Stop::Fail(BAD));
    let kind = r.u8().ok()?;
    let _flags = r.u8().ok()?;
    if r.u16_le().ok()? != 8 {
        return None;
    }
    let value = r.u32_le().ok()?;
    if !r.at_end().ok()? {
        return None;
    }
    match kind {
        TYPE_RDP_NEG_RSP => Some(value == 0),
        TYPE_RDP_NEG_FAILURE => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
    use std::sync::Arc;

    fn pass(sni: Option<&str>) -> Verdict {
        Verdict::Pass { sni: sni.map(str::to_owned) }
    }

    /// Every strict prefix is NeedMore; the whole input gets `verdict`.
    #[track_caller]
    pub(super) fn assert_prefixes_need_more(guard: Guard, input: &[u8], verdict: &Verdict) {
        for n in 0..input.len() {
            assert_eq!(check(guard, &input[..n]), Verdict::NeedMore, "prefix of {n} bytes");
        }
        assert_eq!(&check(guard, input), verdict);
    }

    // --- builders of real and hand-made openings ---

    /// A ClientHello as rustls (aws-lc-rs, the gateway's provider) writes it.
    fn rustls_hello(versions: &[&'static SupportedProtocolVersion], sni: Option<&str>) -> Vec<u8> {
        let mut cfg = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        cfg.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("unused.example").to_owned()).unwrap();
        let mut conn = ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn u16s(v: usize) -> [u8; 2] {
        u16::try_from(v).unwrap().to_be_bytes()
    }

    /// A ClientHello handshake message (no record header).
    pub(super) fn hello_msg(legacy: u16, exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = legacy.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x5a; 32]); // random
        body.push(32);
        body.extend_from_slice(&[0x11; 32]); // session_id
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f]); // cipher_suites
        body.extend_from_slice(&[1, 0]); // compression_methods: null
        if let Some(exts) = exts {
            let mut block = Vec::new();
            for (kind, data) in exts {
                block.extend_from_slice(&kind.to_be_bytes());
                block.extend_from_slice(&u16s(data.len()));
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&u16s(block.len()));
            body.extend_from_slice(&block);
        }
        let mut msg = vec![1, 0];
        msg.extend_from_slice(&u16s(body.len()));
        msg.extend_from_slice(&body);
        msg
    }

    /// `msg` cut into handshake records of at most `size` bytes.
    pub(super) fn records(msg: &[u8], size: usize, version: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(size) {
            out.push(0x16);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&u16s(chunk.len()));
            out.extend_from_slice(chunk);
        }
        out
    }

    pub(super) fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut list = vec![0];
        list.extend_from_slice(&u16s(name.len()));
        list.extend_from_slice(name);
        let mut data = u16s(list.len()).to_vec();
        data.extend_from_slice(&list);
        (EXT_SERVER_NAME, data)
    }

    pub(super) fn versions_ext(versions: &[u16]) -> (u16, Vec<u8>) {
        let mut data = vec![u8::try_from(versions.len() * 2).unwrap()];
        for v in versions {
            data.extend_from_slice(&v.to_be_bytes());
        }
        (EXT_SUPPORTED_VERSIONS, data)
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    /// An X.224 Connection Request or Confirm: TPKT, the fixed TPDU part, `variable`.
    pub(super) fn x224_pdu(code: u8, variable: &[u8]) -> Vec<u8> {
        let len = 11 + variable.len();
        let mut out = vec![3, 0];
        out.extend_from_slice(&u16s(len));
        out.extend_from_slice(&[u8::try_from(len - 5).unwrap(), code, 0, 0, 0x12, 0x34, 0]);
        out.extend_from_slice(variable);
        out
    }

    pub(super) fn neg(kind: u8, flags: u8, value: u32) -> Vec<u8> {
        let mut out = vec![kind, flags, 8, 0];
        out.extend_from_slice(&value.to_le_bytes());
        out
    }

    // --- Guard names ---

    #[test]
    fn guard_names_round_trip() {
        for g in [Guard::Ssh, Guard::Tls, Guard::RdpTls, Guard::None] {
            assert_eq!(Guard::parse(g.as_str()), Some(g));
        }
        assert_eq!(Guard::parse("rdp"), None);
        assert_eq!(Guard::parse("TLS"), None);
        assert_eq!(Guard::parse(""), None);
    }

    #[test]
    fn none_passes_at_once() {
        assert_eq!(check(Guard::None, b""), pass(None));
        assert_eq!(check(Guard::None, b"anything"), pass(None));
    }

    #[test]
    fn max_guard_bytes_covers_every_guard() {
        const {
            assert!(MAX_GUARD_BYTES >= TLS_MAX_BYTES);
            assert!(MAX_GUARD_BYTES >= SSH_MAX_LINE);
            assert!(MAX_GUARD_BYTES >= RDP_MAX_TPKT);
        }
    }

    // --- SSH ---

    const OPENSSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

    #[test]
    fn ssh_openssh_line_passes_and_its_prefixes_wait() {
        assert_prefixes_need_more(Guard::Ssh, OPENSSH, &pass(None));
    }

    #[test]
    fn ssh_other_real_clients_pass() {
        for line in [
            &b"SSH-2.0-PuTTY_Release_0.81\r\n"[..],
            b"SSH-2.0-JSCH-0.1.54\r\n", // `-` in softwareversion: tolerated
            b"SSH-2.0-Go\r\n",
            b"SSH-2.0-paramiko_3.4.0\n", // bare LF
            b"SSH-2.0-x\r\n",
        ] {
            assert_eq!(check(Guard::Ssh, line), pass(None), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn ssh_passes_with_the_key_exchange_already_following() {
        let mut buf = OPENSSH.to_vec();
        buf.extend_from_slice(&[0, 0, 5, 0xdc, 0x06, 0x14, 0xff, 0]);
        assert_eq!(check(Guard::Ssh, &buf), pass(None));
    }

    #[test]
    fn ssh_line_length_limit_is_255_with_crlf() {
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(253, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), 255);
        assert_eq!(check(Guard::Ssh, &line), pass(None));

        let mut long = b"SSH-2.0-".to_vec();
        long.resize(254, b'a');
        long.extend_from_slice(b"\r\n");
        assert_eq!(check(Guard::Ssh, &long), Verdict::Fail("identification line too long"));
        // Decided as soon as 255 bytes hold no line end.
        assert_eq!(check(Guard::Ssh, &long[..255]), Verdict::Fail("identification line too long"));
        assert_eq!(check(Guard::Ssh, &long[..254]), Verdict::NeedMore);
    }

    #[test]
    fn ssh_refuses_old_versions_and_other_protocols() {
        let cases: &[(&[u8], &str)] = &[
            (b"SSH-1.99-OpenSSH_3.0\r\n", "SSH protocol 1 refused"),
            (b"SSH-1.5-Client\r\n", "SSH protocol 1 refused"),
            (b"SSH-2.1-x\r\n", NOT_SSH),
            (b"ssh-2.0-x\r\n", NOT_SSH),
            (b"GET / HTTP/1.1\r\n\r\n", NOT_SSH),
            (&[0x16, 0x03, 0x01, 0x00, 0x10], NOT_SSH),
            (b"\r\nSSH-2.0-x\r\n", NOT_SSH),
            (b"SSH-2.0-\r\n", "empty SSH software version"),
            (b"SSH-2.0-\n", "empty SSH software version"),
            (b"SSH-2.0- comment\r\n", "empty SSH software version"),
            (b"SSH-2.0-a\0b\r\n", "non-printable byte in SSH identification"),
            (b"SSH-2.0-a\tb\r\n", "non-printable byte in SSH identification"),
            (b"SSH-2.0-caf\xc3\xa9\r\n", "non-printable byte in SSH identification"),
            (b"SSH-2.0-a\rb\n", "stray CR in SSH identification"),
        ];
        for (input, reason) in cases {
            assert_eq!(check(Guard::Ssh, input), Verdict::Fail(reason), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn ssh_decides_early_on_a_wrong_start() {
        assert_eq!(check(Guard::Ssh, b""), Verdict::NeedMore);
        assert_eq!(check(Guard::Ssh, b"SSH-2."), Verdict::NeedMore);
        assert_eq!(check(Guard::Ssh, b"G"), Verdict::Fail(NOT_SSH));
        assert_eq!(check(Guard::Ssh, b"SSH-2.0-abc\r"), Verdict::NeedMore);
    }

    // --- TLS ---

    #[test]
    fn tls_rustls_hellos_pass_with_their_sni() {
        use rustls::version::{TLS12, TLS13};
        let cases: [(&[&'static SupportedProtocolVersion], Option<&str>); 4] = [
            (&[&TLS13, &TLS12], Some("admin.school.example")),
            (&[&TLS13], None),
            (&[&TLS12], Some("nas.school.example")),
            (&[&TLS12], None),
        ];
        for (versions, sni) in cases {
            let hello = rustls_hello(versions, sni);
            assert_eq!(check(Guard::Tls, &hello), pass(sni), "{versions:?} {sni:?}");
        }
    }

    #[test]
    fn tls_rustls_hello_split_at_every_byte_waits_then_passes() {
        use rustls::version::{TLS12, TLS13};
        for versions in [&[&TLS13, &TLS12][..], &[&TLS12]] {
            let hello = rustls_hello(versions, Some("router.school.example"));
            assert_prefixes_need_more(Guard::Tls, &hello, &pass(Some("router.school.example")));
        }
    }

    #[test]
    fn tls_hello_over_several_records_is_reassembled() {
        let hello = rustls_hello(&[&rustls::version::TLS13], Some("a.example"));
        let msg = hello.get(5..).unwrap();
        for size in [1, 2, 7, 100, 512] {
            let split = records(msg, size, 0x0303);
            assert_eq!(check(Guard::Tls, &split), pass(Some("a.example")), "records of {size}");
        }
        assert_prefixes_need_more(Guard::Tls, &records(msg, 100, 0x0301), &pass(Some("a.example")));
    }

    #[test]
    fn tls_decided_verdict_ignores_what_follows() {
        let mut buf = rustls_hello(&[&rustls::version::TLS13], Some("a.example"));
        buf.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff, 0x00]);
        assert_eq!(check(Guard::Tls, &buf), pass(Some("a.example")));
    }

    #[test]
    fn tls_versions_below_1_2_fail() {
        // TLS 1.0 only: legacy_version 0x0301 and no supported_versions.
        let tls10 = records(&hello_msg(0x0301, Some(&[sni_ext(b"old.example")])), 1000, 0x0301);
        assert_prefixes_need_more(Guard::Tls, &tls10, &Verdict::Fail(TOO_OLD));
        // TLS 1.1, no extensions at all.
        assert_eq!(check(Guard::Tls, &records(&hello_msg(0x0302, None), 1000, 0x0301)), Verdict::Fail(TOO_OLD));
        // supported_versions overrides legacy_version: only 1.1 and 1.0 offered.
        let msg = hello_msg(0x0303, Some(&[versions_ext(&[0x0302, 0x0301])]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(TOO_OLD));
        // SSL 3.0.
        assert_eq!(check(Guard::Tls, &records(&hello_msg(0x0300, None), 1000, 0x0300)), Verdict::Fail(TOO_OLD));
    }

    #[test]
    fn tls_modern_versions_pass() {
        let plain12 = hello_msg(0x0303, None);
        assert_eq!(check(Guard::Tls, &records(&plain12, 1000, 0x0301)), pass(None));
        let grease13 = hello_msg(0x0303, Some(&[versions_ext(&[0x0a0a, 0x0304]), sni_ext(b"Admin.School.EXAMPLE")]));
        assert_eq!(check(Guard::Tls, &records(&grease13, 1000, 0x0301)), pass(Some("admin.school.example")));
        let only12 = hello_msg(0x0303, Some(&[versions_ext(&[0x0303])]));
        assert_eq!(check(Guard::Tls, &records(&only12, 1000, 0x0301)), pass(None));
    }

    #[test]
    fn supported_versions_with_an_old_legacy_version_fails() {
        // An upstream without TLS 1.3 ignores supported_versions and would negotiate
        // TLS 1.0 from legacy_version.
        for legacy in [0x0300, 0x0301, 0x0302] {
            let msg = hello_msg(legacy, Some(&[versions_ext(&[0x0303])]));
            assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(TOO_OLD), "{legacy:#06x}");
        }
    }

    #[test]
    fn tls_bad_server_names_fail() {
        let cases: &[(&[u8], &str)] = &[
            (b"a\0.example", "invalid server name"),
            (b"evil.example\0good.example", "invalid server name"),
            (b"trailing.dot.", "invalid server name"),
            (b"a..b", "invalid server name"),
            (b"sp ace.example", "invalid server name"),
            (b"\xc3\xa9.example", "invalid server name"),
            (b"", "invalid server name"),
        ];
        for (name, reason) in cases {
            let msg = hello_msg(0x0303, Some(&[sni_ext(name)]));
            assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(reason), "{name:?}");
        }
        let long_label = [b'a'; 64];
        let msg = hello_msg(0x0303, Some(&[sni_ext(&long_label)]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail("invalid server name"));
    }

    #[test]
    fn tls_ambiguous_server_names_fail() {
        // Two server_name extensions.
        let msg = hello_msg(0x0303, Some(&[sni_ext(b"a.example"), sni_ext(b"b.example")]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail("repeated ClientHello extension"));
        // Two names in one list.
        let (_, one) = sni_ext(b"a.example");
        let mut list = one.get(2..).unwrap().to_vec();
        list.extend_from_slice(one.get(2..).unwrap());
        let mut data = u16s(list.len()).to_vec();
        data.extend_from_slice(&list);
        let msg = hello_msg(0x0303, Some(&[(EXT_SERVER_NAME, data)]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail("malformed server_name"));
        // A name of another type.
        let (_, mut data) = sni_ext(b"a.example");
        data[2] = 1;
        let msg = hello_msg(0x0303, Some(&[(EXT_SERVER_NAME, data)]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail("malformed server_name"));
    }

    #[test]
    fn tls_not_a_client_hello_fails() {
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", NOT_HELLO),
            (b"SSH-2.0-OpenSSH_9.2p1\r\n", NOT_HELLO),
            (&[0x17, 0x03, 0x03, 0x00, 0x05], NOT_HELLO), // application data
            (&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], NOT_HELLO), // alert
            (&[0x80, 0x2e, 0x01, 0x00, 0x02], NOT_HELLO), // SSLv2 compatible hello
            (&[0x16, 0x02, 0x00], NOT_HELLO),
            (&[0x16, 0x03, 0x04], NOT_HELLO),
            (&[0x16, 0x03, 0x00], TOO_OLD),
            (&[0x16, 0x03, 0x01, 0x00, 0x00], MALFORMED), // empty record
            (&[0x16, 0x03, 0x01, 0x41, 0x01], "TLS record too long"),
            (&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00], NOT_HELLO), // ServerHello
            (&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00], TOO_LARGE), // 64 KiB hello
        ];
        for (input, reason) in cases {
            assert_eq!(check(Guard::Tls, input), Verdict::Fail(reason), "{input:02x?}");
        }
        assert_eq!(check(Guard::Tls, b""), Verdict::NeedMore);
        assert_eq!(check(Guard::Tls, &[0x16, 0x03]), Verdict::NeedMore);
    }

    #[test]
    fn tls_malformed_bodies_fail() {
        let good = hello_msg(0x0303, Some(&[sni_ext(b"a.example")]));
        // (offset in the message, new byte)
        let edits: &[(usize, u8)] = &[
            (4, 0x04), // legacy_version major 4
            (38, 33),  // session_id longer than 32
            (72, 3),   // odd cipher_suites length
            (77, 0),   // empty compression_methods
            (3, 0xff), // handshake length past the record
        ];
        for &(at, byte) in edits {
            let mut msg = good.clone();
            msg[at] = byte;
            let verdict = check(Guard::Tls, &records(&msg, 1000, 0x0301));
            assert!(matches!(verdict, Verdict::Fail(_) | Verdict::NeedMore), "edit {at}: {verdict:?}");
            assert_ne!(verdict, pass(Some("a.example")), "edit {at}");
        }
        // Bytes after the extensions, inside the message.
        let mut msg = good.clone();
        msg.push(0);
        msg[3] += 1;
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(MALFORMED));
        // An extension overrunning its block.
        let mut msg = hello_msg(0x0303, Some(&[(0xff01, vec![0])]));
        let len = msg.len();
        msg[len - 2] = 9;
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(MALFORMED));
        // A bad supported_versions list.
        let msg = hello_msg(0x0303, Some(&[(EXT_SUPPORTED_VERSIONS, vec![3, 3, 4, 3])]));
        assert_eq!(check(Guard::Tls, &records(&msg, 1000, 0x0301)), Verdict::Fail(MALFORMED));
    }

    #[test]
    fn tls_malformed_start_fails_before_the_rest_arrives() {
        let mut msg = hello_msg(0x0303, Some(&[sni_ext(b"a.example")]));
        msg[38] = 33; // session_id length
        let buf = records(&msg, 1000, 0x0301);
        assert_eq!(check(Guard::Tls, &buf[..5 + 40]), Verdict::NeedMore);
        assert_eq!(check(Guard::Tls, &buf[..5 + 39 + 33]), Verdict::Fail(MALFORMED));
    }

    #[test]
    fn tls_a_different_record_in_the_middle_fails() {
        let msg = hello_msg(0x0303, Some(&[sni_ext(b"a.example")]));
        let mut buf = records(msg.get(..50).unwrap(), 1000, 0x0301);
        buf.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert_eq!(check(Guard::Tls, &buf), Verdict::Fail(MALFORMED));
    }

    #[test]
    fn tls_tiny_records_hit_the_limit_and_never_wait_past_it() {
        // A legal 8 KiB message in 1-byte records: 6 bytes per message byte.
        let big = hello_msg(0x0303, Some(&[(0xff02, vec![0; 8000])]));
        let buf = records(&big, 1, 0x0303);
        assert!(buf.len() > MAX_GUARD_BYTES);
        assert_eq!(check(Guard::Tls, &buf), Verdict::Fail(TOO_LARGE));
        assert_eq!(check(Guard::Tls, &buf[..MAX_GUARD_BYTES]), Verdict::Fail(TOO_LARGE));
        // The same message in one record passes.
        assert_eq!(check(Guard::Tls, &records(&big, 16384, 0x0303)), pass(None));
    }

    // --- RDP ---

    const MSTSC: &str = "03 00 00 13 0e e0 00 00 00 00 00 01 00 08 00 03 00 00 00";

    #[test]
    fn rdp_mstsc_request_passes_and_its_prefixes_wait() {
        assert_prefixes_need_more(Guard::RdpTls, &hex(MSTSC), &pass(None));
    }

    #[test]
    fn rdp_request_with_cookie_passes() {
        let mut variable = b"Cookie: mstshash=admin\r\n".to_vec();
        variable.extend_from_slice(&neg(TYPE_RDP_NEG_REQ, 0, PROTOCOL_SSL | PROTOCOL_HYBRID));
        assert_prefixes_need_more(Guard::RdpTls, &x224_pdu(0xe0, &variable), &pass(None));
        // A load balancer's routing token.
        let mut variable = b"Cookie: msts=3640205228.15629.0000\r\n".to_vec();
        variable.extend_from_slice(&neg(TYPE_RDP_NEG_REQ, 0, PROTOCOL_HYBRID_EX));
        assert_eq!(check(Guard::RdpTls, &x224_pdu(0xe0, &variable)), pass(None));
    }

    #[test]
    fn rdp_request_with_correlation_info_passes() {
        let mut variable = neg(TYPE_RDP_NEG_REQ, 0x08, PROTOCOL_SSL);
        variable.extend_from_slice(&[TYPE_RDP_CORRELATION_INFO, 0, 36, 0]);
        variable.extend_from_slice(&[0x42; 16]);
        variable.extend_from_slice(&[0; 16]);
        assert_eq!(check(Guard::RdpTls, &x224_pdu(0xe0, &variable)), pass(None));
    }

    #[test]
    fn rdp_standard_security_fails() {
        let no_neg = hex("03 00 00 0b 06 e0 00 00 00 00 00");
        assert_prefixes_need_more(Guard::RdpTls, &no_neg, &Verdict::Fail(STANDARD_SECURITY));
        let zero = x224_pdu(0xe0, &neg(TYPE_RDP_NEG_REQ, 0, 0));
        assert_eq!(check(Guard::RdpTls, &zero), Verdict::Fail(STANDARD_SECURITY));
        let cookie_only = x224_pdu(0xe0, b"Cookie: mstshash=admin\r\n");
        assert_eq!(check(Guard::RdpTls, &cookie_only), Verdict::Fail(STANDARD_SECURITY));
        let rdstls_only = x224_pdu(0xe0, &neg(TYPE_RDP_NEG_REQ, 0, 0x4));
        assert_eq!(check(Guard::RdpTls, &rdstls_only), Verdict::Fail("no TLS-based RDP security requested"));
    }

    #[test]
    fn rdp_malformed_requests_fail() {
        let mut trailing = neg(TYPE_RDP_NEG_REQ, 0, 3);
        trailing.push(0);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), NOT_RDP),
            (hex("16 03 01 00 10"), NOT_RDP),
            (hex("03 01 00 13"), NOT_RDP),                              // reserved byte set
            (hex("03 00 00 0a"), MALFORMED_RDP),                        // TPKT shorter than 11
            (hex("03 00 10 01"), MALFORMED_RDP),                        // TPKT over 4096
            (hex("03 00 00 13 0d e0"), MALFORMED_RDP),                  // length indicator off by one
            (hex("03 00 00 13 0e d0"), NOT_RDP),                        // a Connection Confirm
            (hex("03 00 00 13 0e f0"), NOT_RDP),                        // a data TPDU
            (x224_pdu(0xe0, b"Cookie: mstshash=admin"), MALFORMED_RDP), // no CRLF
            (x224_pdu(0xe0, b"Cookie: mstshash=a\0b\r\n"), MALFORMED_RDP),
            (x224_pdu(0xe0, &trailing), MALFORMED_RDP),
            (x224_pdu(0xe0, &neg(0x02, 0, 3)), MALFORMED_RDP), // a NEG_RSP in a request
            (x224_pdu(0xe0, &[1, 0, 9, 0, 3, 0, 0, 0]), MALFORMED_RDP), // NEG_REQ length 9
            (x224_pdu(0xe0, &[1, 0, 8, 0]), MALFORMED_RDP),    // NEG_REQ cut short
        ];
        for (input, reason) in cases {
            assert_eq!(check(Guard::RdpTls, &input), Verdict::Fail(reason), "{input:02x?}");
        }
        assert_eq!(check(Guard::RdpTls, b""), Verdict::NeedMore);
    }

    #[test]
    fn rdp_confirm_is_judged() {
        let select = |p: u32| x224_pdu(0xd0, &neg(TYPE_RDP_NEG_RSP, 0x1f, p));
        assert_eq!(rdp_confirm_selects_standard_security(&select(PROTOCOL_SSL)), Some(false));
        assert_eq!(rdp_confirm_selects_standard_security(&select(PROTOCOL_HYBRID)), Some(false));
        assert_eq!(rdp_confirm_selects_standard_security(&select(0)), Some(true));
        assert_eq!(rdp_confirm_selects_standard_security(&x224_pdu(0xd0, &[])), Some(true));
        let failure = x224_pdu(0xd0, &neg(TYPE_RDP_NEG_FAILURE, 0, 0x5)); // HYBRID_REQUIRED_BY_SERVER
        assert_eq!(rdp_confirm_selects_standard_security(&failure), Some(false));
        // Real bytes: a Windows server selecting CredSSP.
        let real = hex("03 00 00 13 0e d0 00 00 12 34 00 02 1f 08 00 02 00 00 00");
        assert_eq!(rdp_confirm_selects_standard_security(&real), Some(false));
        for n in 0..real.len() {
            assert_eq!(rdp_confirm_selects_standard_security(&real[..n]), None, "prefix {n}");
        }
        // Malformed: undecided.
        assert_eq!(rdp_confirm_selects_standard_security(&hex(MSTSC)), None); // a request
        assert_eq!(rdp_confirm_selects_standard_security(&x224_pdu(0xd0, &[2, 0, 8, 0])), None);
        assert_eq!(rdp_confirm_selects_standard_security(&x224_pdu(0xd0, &neg(0x07, 0, 1))), None);
        assert_eq!(rdp_confirm_selects_standard_security(b"HTTP/1.1 400 Bad Request\r\n"), None);
    }
}
