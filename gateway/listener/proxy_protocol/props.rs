//! Properties of the PROXY protocol parser on generated input: no bytes make it panic,
//! `encode_v2` round-trips, a valid header is undecided (and looks like a header) until
//! its last byte, and a decision never changes as more bytes arrive.

use super::tests::{assert_truncations_wait, v2_raw};
use super::*;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn addresses() -> impl Strategy<Value = Addresses> {
    (ip(), any::<u16>(), ip(), any::<u16>())
        .prop_map(|(s, sp, d, dp)| Addresses { src: SocketAddr::new(s, sp), dst: SocketAddr::new(d, dp) })
}

/// Same-family addresses as a v1 line, with what it parses to.
fn v1_line() -> impl Strategy<Value = (Vec<u8>, Parsed)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>(), any::<u16>()).prop_map(|(s, d, sp, dp)| (
            IpAddr::from(s),
            IpAddr::from(d),
            sp,
            dp,
            "TCP4"
        )),
        (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(|(s, d, sp, dp)| (
            IpAddr::from(s),
            IpAddr::from(d),
            sp,
            dp,
            "TCP6"
        )),
    ]
    .prop_map(|(s, d, sp, dp, proto)| {
        let line = format!("PROXY {proto} {s} {d} {sp} {dp}\r\n").into_bytes();
        let addrs = Addresses { src: SocketAddr::new(s, sp), dst: SocketAddr::new(d, dp) };
        let len = line.len();
        (line, Parsed::Header { len, addrs: Some(addrs) })
    })
}

/// A v2 header, maybe with TLVs, maybe LOCAL.
fn v2_header() -> impl Strategy<Value = (Vec<u8>, Parsed)> {
    (addresses(), prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)), 0..4), any::<bool>())
        .prop_map(|(a, tlvs, local)| {
            let encoded = encode_v2(a);
            let mut block = encoded.get(16..).unwrap_or_default().to_vec();
            for (kind, value) in tlvs {
                block.push(kind);
                block.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
                block.extend_from_slice(&value);
            }
            let family = encoded.get(13).copied().unwrap_or(0);
            let header = v2_raw(if local { 0x20 } else { 0x21 }, family, &block);
            let len = header.len();
            let addrs = if local { None } else { parse_addrs(&encoded) };
            (header, Parsed::Header { len, addrs })
        })
}

fn parse_addrs(header: &[u8]) -> Option<Addresses> {
    match parse(header) {
        Parsed::Header { addrs, .. } => addrs,
        _ => None,
    }
}

fn valid() -> impl Strategy<Value = (Vec<u8>, Parsed)> {
    prop_oneof![
        v1_line(),
        v2_header(),
        "[ -~]{0,80}".prop_map(|junk| {
            let line = format!("PROXY UNKNOWN {junk}\r\n").into_bytes();
            let len = line.len();
            (line, Parsed::Header { len, addrs: None })
        }),
    ]
}

/// The same family for both, as the header can carry it: IPv4 mapped when mixed.
fn carried(a: Addresses) -> Addresses {
    match (a.src, a.dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => a,
        (s, d) => Addresses {
            src: SocketAddr::new(IpAddr::V6(as_v6(s.ip())), s.port()),
            dst: SocketAddr::new(IpAddr::V6(as_v6(d.ip())), d.port()),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = parse(&buf);
        let _ = looks_like_header(&buf);
    }

    #[test]
    fn header_shaped_bytes_never_panic(
        v2 in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let start: &[u8] = if v2 { &V2_SIGNATURE } else { b"PROXY " };
        let buf = [start, &tail].concat();
        let _ = parse(&buf);
    }

    #[test]
    fn encode_v2_round_trips(a in addresses()) {
        let h = encode_v2(a);
        prop_assert_eq!(parse(&h), Parsed::Header { len: h.len(), addrs: Some(carried(a)) });
    }

    #[test]
    fn valid_headers_wait_for_their_last_byte((header, want) in valid()) {
        assert_truncations_wait(&header, &want);
    }

    #[test]
    fn a_header_ignores_what_follows((header, want) in valid(), tail in prop::collection::vec(any::<u8>(), 1..64)) {
        prop_assert_eq!(parse(&[header, tail].concat()), want);
    }

    #[test]
    fn decisions_are_final(
        (header, _) in valid(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 8),
        fill in prop::sample::select(vec![b'x', b' ', b'1', b'\r', 0]),
    ) {
        let mut buf = header;
        for (at, byte) in edits {
            let i = at.index(buf.len());
            if let Some(b) = buf.get_mut(i) {
                *b = byte;
            }
        }
        // The input, then filler up to the limit: never undecided there.
        let mut padded = buf.clone();
        padded.resize(buf.len().max(MAX_HEADER), fill);
        let last = parse(&padded);
        prop_assert_ne!(&last, &Parsed::NeedMore);
        for cut in cuts {
            let early = parse(buf.get(..cut.index(buf.len() + 1)).unwrap_or(&buf));
            if early != Parsed::NeedMore {
                prop_assert_eq!(&parse(&buf), &early);
                prop_assert_eq!(&last, &early);
            }
        }
    }

    #[test]
    fn tls_and_ssh_openings_do_not_look_like_headers(tail in prop::collection::vec(any::<u8>(), 0..32)) {
        prop_assert!(!looks_like_header(&[&[0x16, 0x03][..], &tail].concat()));
        prop_assert!(!looks_like_header(&[&b"SSH-2.0-"[..], &tail].concat()));
    }
}
