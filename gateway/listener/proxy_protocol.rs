//! The PROXY protocol (haproxy's `proxy-protocol.txt`, versions 1 and 2): reading the
//! header a trusted load balancer puts before the client's bytes, to learn the real
//! client address, and writing a v2 header towards an upstream (`send_proxy = "v2"`).
//!
//! [`parse`] is a pure function of the bytes read so far: [`Parsed::NeedMore`] while
//! they are a valid beginning, then a decision that more bytes never change. Every header
//! is decided within [`MAX_HEADER`] bytes. Only peers listed in a listener's
//! `proxy_protocol` may send a header; [`looks_like_header`] spots one from anyone else.
//!
//! Decisions where the spec leaves room:
//! - v1 is read strictly: single spaces, `TCP4`/`TCP6`/`UNKNOWN` in capitals, addresses
//!   of the named family, decimal ports without sign or leading zero, CR LF within 107
//!   bytes. IPv6 may carry an embedded IPv4 tail (`::ffff:192.0.2.1`, as haproxy writes
//!   mapped addresses); no zone index. After `UNKNOWN` anything but CR or LF is ignored.
//! - v2 `LOCAL` (health checks) is a header without addresses whatever its family byte.
//!   `PROXY` with `AF_UNSPEC` (0x00) is one too. TCP over IPv4 (0x11) and IPv6 (0x21)
//!   give addresses. UDP (0x12, 0x22) and unix sockets (0x31, 0x32) are refused: this
//!   gateway proxies TCP, and a datagram or socket path cannot stand for a TCP client.
//!   Other family bytes are invalid, as the spec says.
//! - v2 addresses come back as written: an IPv4-mapped IPv6 address stays IPv6 (the
//!   policy's ip sets match it as IPv4).
//! - v2 TLVs are skipped, but their framing must fill the block exactly; a CRC32C TLV is
//!   not verified (the peer is trusted and TCP has checksummed the bytes).
//! - A v2 header declares at most 512 bytes after its fixed 16.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The client's and the proxy's (listening) addresses, as the proxy saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning: read more (up to [`MAX_HEADER`] bytes).
    NeedMore,
    /// `len` bytes are the header; `addrs` None for v2 LOCAL / v1 UNKNOWN / unsupported family (use the real peer)
    Header { len: usize, addrs: Option<Addresses> },
    /// Not a valid PROXY header; a short, fixed reason for the log.
    Invalid(&'static str),
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CR LF included (`PROXY UNKNOWN` with two full IPv6 addresses).
const V1_MAX: usize = 107;
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// The most bytes a v2 header may declare after its fixed part: addresses and TLVs.
const V2_MAX_BLOCK: usize = 512;

/// The longest header this parser accepts (v1: 107 bytes; v2: 16 + declared length, capped, e.g. 16 + 512 incl. TLVs).
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_BLOCK;
const _: () = assert!(MAX_HEADER >= V1_MAX, "a v1 line must fit in MAX_HEADER");

const NOT_PROXY: &str = "not a PROXY header";
const MISSING: Stop = Stop::Invalid("missing fields in PROXY v1 header");

/// Why a parse stopped short of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    More,
    Invalid(&'static str),
}

type Res<T> = Result<T, Stop>;

/// Read a PROXY v1 or v2 header from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let result = match buf.first() {
        None => Err(Stop::More),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(Stop::Invalid(NOT_PROXY)),
    };
    match result {
        Ok((len, addrs)) => Parsed::Header { len, addrs },
        Err(Stop::More) => Parsed::NeedMore,
        Err(Stop::Invalid(why)) => Parsed::Invalid(why),
    }
}

/// Whether these first bytes are (the start of) a PROXY header, v1 or v2: used to refuse a header from a peer that is not trusted.
///
/// True when `buf` agrees with `PROXY ` or the v2 signature as far as either goes, so a
/// lone `P` counts (an HTTP `POST` is told apart at its second byte). Empty: false.
pub fn looks_like_header(buf: &[u8]) -> bool {
    let agrees = |sig: &[u8]| buf.iter().zip(sig).all(|(a, b)| a == b);
    !buf.is_empty() && (agrees(V1_PREFIX) || agrees(&V2_SIGNATURE))
}

/// A v2 PROXY header (command PROXY, TCP over IPv4 or IPv6; mixed families: map the IPv4 one to IPv6).
///
/// IPv6 flow info and scope id are not part of the format and are not sent.
pub fn encode_v2(a: Addresses) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (a.src.ip(), a.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&as_v6(src).octets());
            out.extend_from_slice(&as_v6(dst).octets());
        }
    }
    out.extend_from_slice(&a.src.port().to_be_bytes());
    out.extend_from_slice(&a.dst.port().to_be_bytes());
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

// === impl v1 ===

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN[ anything]\r\n`.
///
/// The line's fields are checked left to right, the last one only as far as it has
/// arrived; the line end is checked after them. So a decision depends only on bytes
/// already seen, and more bytes never change it.
fn v1(buf: &[u8]) -> Res<(usize, Option<Addresses>)> {
    let window = buf.get(..V1_MAX).unwrap_or(buf);
    let lf = window.iter().position(|&b| b == b'\n');
    let text = window.get(..lf.unwrap_or(window.len())).unwrap_or_default();
    let (line, has_cr) = match text.strip_suffix(b"\r") {
        Some(line) => (line, true),
        None => (text, false),
    };
    let complete = lf.is_some() && has_cr;
    let addrs = v1_line(line, complete)?;
    match lf {
        Some(at) if has_cr => Ok((at + 1, addrs)),
        Some(_) => Err(Stop::Invalid("LF without CR in PROXY v1 header")),
        None if buf.len() >= V1_MAX => Err(Stop::Invalid("no CRLF within 107 bytes")),
        None => Err(Stop::More),
    }
}

/// The line without its CR LF; `complete` says whether it has all arrived. An
/// incomplete line that is a valid beginning gives `Ok` (the caller waits for CR LF).
fn v1_line(line: &[u8], complete: bool) -> Res<Option<Addresses>> {
    let Some(rest) = line.strip_prefix(V1_PREFIX) else {
        return if !complete && V1_PREFIX.starts_with(line) { Ok(None) } else { Err(Stop::Invalid(NOT_PROXY)) };
    };
    if let Some(after) = rest.strip_prefix(b"UNKNOWN") {
        if after.is_empty() || after.first() == Some(&b' ') {
            // The spec: the receiver ignores what comes before the CR LF.
            if after.contains(&b'\r') {
                return Err(Stop::Invalid("CR inside PROXY v1 header"));
            }
            return Ok(None);
        }
    }

    let mut fields: [&[u8]; 5] = [&[]; 5];
    let mut count = 0;
    for field in rest.split(|&b| b == b' ') {
        if let Some(slot) = fields.get_mut(count) {
            *slot = field;
        }
        count += 1;
    }
    // Only the last field of an incomplete line may be cut short.
    let partial = |i: usize| !complete && i + 1 == count;
    // After field `i`: stop there if it is the last one present.
    let ends_after = |i: usize| (count == i + 1).then_some(if complete { Err(MISSING) } else { Ok(None) });
    let [proto, src, dst, sport, dport] = fields;

    let v6 = field(proto, partial(0), "bad protocol in PROXY v1 header", |p, partial| match p {
        b"TCP4" => Some(false),
        b"TCP6" => Some(true),
        _ if partial && [&b"TCP4"[..], b"TCP6", b"UNKNOWN"].iter().any(|t| t.starts_with(p)) => Some(false),
        _ => None,
    })?;
    if let Some(end) = ends_after(0) {
        return end;
    }
    let addr = |p: &[u8], partial: bool| address(p, partial, v6);
    let src = field(src, partial(1), "bad source address in PROXY v1 header", addr)?;
    if let Some(end) = ends_after(1) {
        return end;
    }
    let dst = field(dst, partial(2), "bad destination address in PROXY v1 header", addr)?;
    if let Some(end) = ends_after(2) {
        return end;
    }
    let sport = field(sport, partial(3), "bad source port in PROXY v1 header", port)?;
    if let Some(end) = ends_after(3) {
        return end;
    }
    let dport = field(dport, partial(4), "bad destination port in PROXY v1 header", port)?;
    if count > 5 {
        return Err(Stop::Invalid("trailing data in PROXY v1 header"));
    }
    match (src, dst) {
        (Some(s), Some(d)) if complete => {
            Ok(Some(Addresses { src: SocketAddr::new(s, sport), dst: SocketAddr::new(d, dport) }))
        }
        _ => Ok(None), // waiting for the rest of the last field or the CR LF
    }
}

/// Check one field with `check(bytes, partial)`. A complete field must not be empty
/// (two spaces in a row); a partial one may be (it has not started yet).
fn field<T>(bytes: &[u8], partial: bool, why: &'static str, check: impl Fn(&[u8], bool) -> Option<T>) -> Res<T> {
    if bytes.is_empty() && !partial {
        return Err(Stop::Invalid("extra space in PROXY v1 header"));
    }
    check(bytes, partial).ok_or(Stop::Invalid(why))
}

/// A complete address of the family, or a partial one that may still become one.
fn address(bytes: &[u8], partial: bool, v6: bool) -> Option<Option<IpAddr>> {
    if partial {
        let (max, ok): (usize, fn(&u8) -> bool) = if v6 {
            (45, |b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        } else {
            (15, |b| b.is_ascii_digit() || *b == b'.')
        };
        return (bytes.len() <= max && bytes.iter().all(ok)).then_some(None);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let ip = if v6 { IpAddr::V6(text.parse().ok()?) } else { IpAddr::V4(text.parse::<Ipv4Addr>().ok()?) };
    Some(Some(ip))
}

/// A decimal port, 0 to 65535, without sign or leading zero; partial: a prefix of one.
fn port(bytes: &[u8], partial: bool) -> Option<u16> {
    let leading_zero = bytes.len() > 1 && bytes.first() == Some(&b'0');
    if bytes.len() > 5 || leading_zero || !bytes.iter().all(u8::is_ascii_digit) || (bytes.is_empty() && !partial) {
        return None;
    }
    let value = bytes.iter().fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')));
    u16::try_from(value).ok()
}

// === impl v2 ===

const V2_MALFORMED: &str = "malformed PROXY v2 address block";

/// The 16-byte fixed part, then the declared block: addresses, then TLVs.
fn v2(buf: &[u8]) -> Res<(usize, Option<Addresses>)> {
    if !buf.iter().zip(&V2_SIGNATURE).all(|(a, b)| a == b) {
        return Err(Stop::Invalid("bad PROXY v2 signature"));
    }
    let mut r = Cursor { buf: buf.get(V2_SIGNATURE.len()..).ok_or(Stop::More)?, short: Stop::More };
    let version_command = r.u8()?;
    if version_command >> 4 != 2 {
        return Err(Stop::Invalid("unsupported PROXY v2 version"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Stop::Invalid("unknown PROXY v2 command")),
    };
    let family = r.u8()?;
    // LOCAL: the spec says the family is ignored, with the whole block.
    let address_len = match family {
        _ if local => 0,
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x12 | 0x22 | 0x31 | 0x32 => return Err(Stop::Invalid("PROXY v2 UDP or unix socket: only TCP is proxied")),
        _ => return Err(Stop::Invalid("unknown PROXY v2 address family")),
    };
    let len = usize::from(r.u16_be()?);
    if len > V2_MAX_BLOCK {
        return Err(Stop::Invalid("PROXY v2 header too long"));
    }
    if len < address_len {
        return Err(Stop::Invalid("PROXY v2 length too short for its address family"));
    }
    let block = r.take(len)?;
    let total = V2_FIXED + len;
    if address_len == 0 {
        return Ok((total, None));
    }

    let mut b = Cursor { buf: block, short: Stop::Invalid(V2_MALFORMED) };
    let (src, dst): (IpAddr, IpAddr) = if family == 0x11 {
        (Ipv4Addr::from(b.array::<4>()?).into(), Ipv4Addr::from(b.array::<4>()?).into())
    } else {
        (Ipv6Addr::from(b.array::<16>()?).into(), Ipv6Addr::from(b.array::<16>()?).into())
    };
    let (sport, dport) = (b.u16_be()?, b.u16_be()?);
    // TLVs: type, 16-bit length, value; skipped, but they must fill the block exactly.
    let mut tlvs = Cursor { buf: b.buf, short: Stop::Invalid("malformed PROXY v2 TLV") };
    while !tlvs.buf.is_empty() {
        tlvs.u8()?;
        let n = usize::from(tlvs.u16_be()?);
        tlvs.take(n)?;
    }
    Ok((total, Some(Addresses { src: SocketAddr::new(src, sport), dst: SocketAddr::new(dst, dport) })))
}

/// Bytes still to read; running out gives `short`.
struct Cursor<'a> {
    buf: &'a [u8],
    short: Stop,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(self.short)?;
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| self.short)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16_be(&mut self) -> Res<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(len: usize, src: &str, dst: &str) -> Parsed {
        Parsed::Header { len, addrs: Some(Addresses { src: sa(src), dst: sa(dst) }) }
    }

    /// Every strict prefix is NeedMore, and looks like a header; the whole gets `want`.
    #[track_caller]
    pub(super) fn assert_truncations_wait(input: &[u8], want: &Parsed) {
        for n in 0..input.len() {
            assert_eq!(parse(&input[..n]), Parsed::NeedMore, "prefix of {n} bytes");
            assert_eq!(looks_like_header(&input[..n]), n > 0, "prefix of {n} bytes");
        }
        assert_eq!(&parse(input), want);
    }

    /// A v2 header: version/command byte, family byte, block.
    pub(super) fn v2_raw(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    const V4_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb];

    // --- v1 ---

    #[test]
    fn v1_spec_examples() {
        // Section 2.1's example, with the request that follows it.
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        let want = header(line.len(), "192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(parse(&buf), want);
        assert_truncations_wait(line, &want);

        // The longest lines of each kind.
        let v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(v4.len(), 56);
        assert_truncations_wait(v4, &header(56, "255.255.255.255:65535", "255.255.255.255:65535"));
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let v6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(v6.len(), 104);
        let full = format!("[{ffff}]:65535");
        assert_truncations_wait(v6.as_bytes(), &header(104, &full, &full));
        assert_truncations_wait(b"PROXY UNKNOWN\r\n", &Parsed::Header { len: 15, addrs: None });
        let worst = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(worst.len(), 107);
        assert_truncations_wait(worst.as_bytes(), &Parsed::Header { len: 107, addrs: None });
    }

    #[test]
    fn v1_other_valid_lines() {
        let cases: &[(&str, &str, &str)] = &[
            ("PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n", "0.0.0.0:0", "10.0.0.1:1"),
            ("PROXY TCP6 2001:db8::1 ::1 40000 22\r\n", "[2001:db8::1]:40000", "[::1]:22"),
            ("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:10.0.0.1 1 2\r\n", "[::ffff:192.0.2.1]:1", "[::ffff:10.0.0.1]:2"),
            ("PROXY TCP6 2001:DB8::A ::1 3389 3389\r\n", "[2001:db8::a]:3389", "[::1]:3389"),
        ];
        for (line, src, dst) in cases {
            assert_truncations_wait(line.as_bytes(), &header(line.len(), src, dst));
        }
        // UNKNOWN ignores what follows it on the line.
        let unknown = b"PROXY UNKNOWN whatever \x01 is here\r\n";
        assert_eq!(parse(unknown), Parsed::Header { len: unknown.len(), addrs: None });
    }

    #[test]
    fn v1_malformed_lines_are_invalid() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "extra space in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "extra space in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "trailing data in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "trailing data in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "missing fields in PROXY v1 header"),
            (b"PROXY TCP4\r\n", "missing fields in PROXY v1 header"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol in PROXY v1 header"),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol in PROXY v1 header"),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad protocol in PROXY v1 header"),
            (b"PROXY UNKNOWNX\r\n", "bad protocol in PROXY v1 header"),
            (b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "bad destination address in PROXY v1 header"),
            (b"PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad source port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 0443 2\r\n", "bad source port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", "bad source port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -1\r\n", "bad destination port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "bad destination port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad destination port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "bad destination port in PROXY v1 header"),
            (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "bad source address in PROXY v1 header"),
            (b"PROXY UNKNOWN a\rb\r\n", "CR inside PROXY v1 header"),
            (b"PROXY\r\n", NOT_PROXY),
            (b"PROXX TCP4", NOT_PROXY),
            (b"POST / HTTP/1.1\r\n", NOT_PROXY),
        ];
        for (input, reason) in cases {
            assert_eq!(parse(input), Parsed::Invalid(reason), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_invalid() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        assert_eq!(parse(&long), Parsed::NeedMore);
        long.push(b'x');
        assert_eq!(parse(&long), Parsed::Invalid("no CRLF within 107 bytes"));
        // 106 bytes and CR: the LF would be the 108th byte.
        long.truncate(106);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Parsed::Invalid("no CRLF within 107 bytes"));
        long.truncate(105);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Parsed::Header { len: 107, addrs: None });
    }

    #[test]
    fn v1_fails_early_on_a_bad_beginning() {
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 7"), Parsed::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 77777"), Parsed::Invalid("bad source port in PROXY v1 header"));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 0"), Parsed::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 00"), Parsed::Invalid("bad source port in PROXY v1 header"));
        assert_eq!(parse(b"PROXY TCP4 ::"), Parsed::Invalid("bad source address in PROXY v1 header"));
        assert_eq!(parse(b"PROXY TCP7"), Parsed::Invalid("bad protocol in PROXY v1 header"));
        assert_eq!(parse(b"PROXY UNK"), Parsed::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Parsed::NeedMore);
    }

    // --- v2 ---

    #[test]
    fn v2_tcp_headers_give_addresses() {
        let v4 = v2_raw(0x21, 0x11, &V4_BLOCK);
        assert_truncations_wait(&v4, &header(28, "192.0.2.1:56324", "198.51.100.7:443"));

        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0x9c, 0x40, 0x00, 0x16]);
        let v6 = v2_raw(0x21, 0x21, &block);
        assert_truncations_wait(&v6, &header(52, "[2001:db8::1]:40000", "[::1]:22"));

        // What follows the header is the client's.
        let mut buf = v4.clone();
        buf.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&buf), header(28, "192.0.2.1:56324", "198.51.100.7:443"));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0x05, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]); // PP2_TYPE_UNIQUE_ID
        block.extend_from_slice(&[0x04, 0x00, 0x00]); // PP2_TYPE_NOOP, empty
        let h = v2_raw(0x21, 0x11, &block);
        assert_truncations_wait(&h, &header(h.len(), "192.0.2.1:56324", "198.51.100.7:443"));

        for bad_tail in [&[0x05][..], &[0x05, 0x00], &[0x05, 0x00, 0x02, 0xff]] {
            let mut block = V4_BLOCK.to_vec();
            block.extend_from_slice(bad_tail);
            assert_eq!(parse(&v2_raw(0x21, 0x11, &block)), Parsed::Invalid("malformed PROXY v2 TLV"), "{bad_tail:?}");
        }
    }

    #[test]
    fn v2_local_and_unspec_have_no_addresses() {
        assert_truncations_wait(&v2_raw(0x20, 0x00, &[]), &Parsed::Header { len: 16, addrs: None });
        // LOCAL ignores the family and the block, whatever they hold.
        let local = v2_raw(0x20, 0x11, &V4_BLOCK);
        assert_eq!(parse(&local), Parsed::Header { len: 28, addrs: None });
        assert_eq!(parse(&v2_raw(0x20, 0x31, &[])), Parsed::Header { len: 16, addrs: None });
        assert_eq!(parse(&v2_raw(0x21, 0x00, &[1, 2, 3])), Parsed::Header { len: 19, addrs: None });
    }

    #[test]
    fn v2_malformed_headers_are_invalid() {
        for at in 0..V2_SIGNATURE.len() {
            let mut h = v2_raw(0x21, 0x11, &V4_BLOCK);
            h[at] ^= 0x40;
            let want = if at == 0 { NOT_PROXY } else { "bad PROXY v2 signature" };
            assert_eq!(parse(&h), Parsed::Invalid(want), "byte {at}");
            // Decided as soon as the bad byte is there.
            assert_eq!(parse(&h[..=at]), Parsed::Invalid(want), "byte {at}");
        }
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (v2_raw(0x11, 0x11, &V4_BLOCK), "unsupported PROXY v2 version"),
            (v2_raw(0x31, 0x11, &V4_BLOCK), "unsupported PROXY v2 version"),
            (v2_raw(0x22, 0x11, &V4_BLOCK), "unknown PROXY v2 command"),
            (v2_raw(0x21, 0x12, &V4_BLOCK), "PROXY v2 UDP or unix socket: only TCP is proxied"),
            (v2_raw(0x21, 0x22, &[0; 36]), "PROXY v2 UDP or unix socket: only TCP is proxied"),
            (v2_raw(0x21, 0x31, &[0; 216]), "PROXY v2 UDP or unix socket: only TCP is proxied"),
            (v2_raw(0x21, 0x10, &V4_BLOCK), "unknown PROXY v2 address family"),
            (v2_raw(0x21, 0x41, &V4_BLOCK), "unknown PROXY v2 address family"),
            (v2_raw(0x21, 0x11, &V4_BLOCK[..11]), "PROXY v2 length too short for its address family"),
            (v2_raw(0x21, 0x21, &V4_BLOCK), "PROXY v2 length too short for its address family"),
            (v2_raw(0x21, 0x11, &[0; V2_MAX_BLOCK + 1]), "PROXY v2 header too long"),
            (v2_raw(0x20, 0x00, &[0; V2_MAX_BLOCK + 1]), "PROXY v2 header too long"),
        ];
        for (input, reason) in cases {
            assert_eq!(parse(&input), Parsed::Invalid(reason), "{:02x?}", &input[12..16]);
            // Decided from the fixed 16 bytes alone.
            assert_eq!(parse(&input[..16]), Parsed::Invalid(reason));
        }
        // The largest block is fine.
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0xee, 0x01, 0xf1]);
        block.resize(V2_MAX_BLOCK, 0);
        let h = v2_raw(0x21, 0x11, &block);
        assert_eq!(h.len(), MAX_HEADER);
        assert_eq!(parse(&h), header(MAX_HEADER, "192.0.2.1:56324", "198.51.100.7:443"));
    }

    #[test]
    fn empty_and_foreign_bytes() {
        assert_eq!(parse(b""), Parsed::NeedMore);
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Parsed::Invalid(NOT_PROXY));
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.2p1\r\n"), Parsed::Invalid(NOT_PROXY));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(NOT_PROXY));
        assert_eq!(parse(b"\r\n\r\n"), Parsed::NeedMore);
        assert_eq!(parse(b"\r\nGET"), Parsed::Invalid("bad PROXY v2 signature"));
    }

    // --- looks_like_header ---

    #[test]
    fn looks_like_header_spots_both_versions() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_header(b"PROXY"));
        assert!(looks_like_header(b"P"));
        assert!(looks_like_header(&V2_SIGNATURE));
        assert!(looks_like_header(&v2_raw(0x21, 0x11, &V4_BLOCK)));
        assert!(looks_like_header(b"\r\n"));
        assert!(!looks_like_header(b""));
        assert!(!looks_like_header(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_header(&[0x16]));
        assert!(!looks_like_header(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
        assert!(!looks_like_header(b"POST / HTTP/1.1\r\n"));
        assert!(!looks_like_header(b"PROXYTCP4"));
        assert!(!looks_like_header(b"\r\n\r\n\r\n"));
        assert!(!looks_like_header(&[0x03, 0x00, 0x00, 0x13]));
    }

    // --- encode_v2 ---

    #[test]
    fn encode_v2_writes_the_spec_layout() {
        let a = Addresses { src: sa("192.0.2.1:56324"), dst: sa("198.51.100.7:443") };
        assert_eq!(encode_v2(a), v2_raw(0x21, 0x11, &V4_BLOCK));
        assert_eq!(parse(&encode_v2(a)), Parsed::Header { len: 28, addrs: Some(a) });

        let a6 = Addresses { src: sa("[2001:db8::1]:40000"), dst: sa("[::1]:22") };
        let h = encode_v2(a6);
        assert_eq!(h.len(), 52);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(parse(&h), Parsed::Header { len: 52, addrs: Some(a6) });
    }

    #[test]
    fn encode_v2_maps_mixed_families_to_ipv6() {
        let a = Addresses { src: sa("192.0.2.1:5000"), dst: sa("[2001:db8::2]:22") };
        let want = Addresses { src: sa("[::ffff:192.0.2.1]:5000"), dst: a.dst };
        assert_eq!(parse(&encode_v2(a)), Parsed::Header { len: 52, addrs: Some(want) });
        let b = Addresses { src: sa("[2001:db8::1]:5000"), dst: sa("10.0.0.1:22") };
        let want = Addresses { src: b.src, dst: sa("[::ffff:10.0.0.1]:22") };
        assert_eq!(parse(&encode_v2(b)), Parsed::Header { len: 52, addrs: Some(want) });
    }
}
