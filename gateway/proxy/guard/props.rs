//! Properties of the guards on generated input: no bytes make `check` panic, a decided
//! verdict never changes as more bytes arrive, and a valid opening stays undecided
//! until its last byte. Case counts are small so that the suite stays fast.

use super::tests::{assert_prefixes_need_more, hello_msg, neg, records, sni_ext, versions_ext, x224_pdu};
use super::*;
use proptest::prelude::*;

const GUARDS: [Guard; 4] = [Guard::Ssh, Guard::Tls, Guard::RdpTls, Guard::None];

/// A valid SSH identification line.
fn ssh_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(0x21u8..=0x7e, 1..40),
        prop::option::of(prop::collection::vec(0x20u8..=0x7e, 0..60)),
        any::<bool>(),
    )
        .prop_map(|(software, comments, crlf)| {
            let mut line = b"SSH-2.0-".to_vec();
            line.extend_from_slice(&software);
            if let Some(c) = comments {
                line.push(b' ');
                line.extend_from_slice(&c);
            }
            line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            line
        })
}

/// A DNS name of 1 to 4 labels, in mixed case.
fn host() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9_-]{0,9}", 1..5).prop_map(|labels| labels.join("."))
}

/// A valid ClientHello offering TLS 1.2 or 1.3, in records of a random size, and the
/// server name it carries.
fn tls_hello() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    (
        prop::option::of(host()),
        prop::sample::select(vec![None, Some(vec![0x0304]), Some(vec![0x0a0a, 0x0304, 0x0303]), Some(vec![0x0303])]),
        prop::collection::vec((1000u16..1100, prop::collection::vec(any::<u8>(), 0..64)), 0..4),
        16usize..2000,
        1u16..=3,
    )
        .prop_map(|(sni, versions, extra, size, record_minor)| {
            let mut exts = Vec::new();
            if let Some(name) = &sni {
                exts.push(sni_ext(name.as_bytes()));
            }
            if let Some(v) = &versions {
                exts.push(versions_ext(v));
            }
            for (i, (kind, data)) in extra.into_iter().enumerate() {
                // Distinct types: a repeated extension is malformed.
                exts.push((kind + 100 * u16::try_from(i).unwrap_or(0), data));
            }
            let msg = hello_msg(0x0303, Some(&exts));
            (records(&msg, size, 0x0300 | record_minor), sni.map(|s| s.to_ascii_lowercase()))
        })
}

/// A valid X.224 Connection Request asking for TLS or CredSSP.
fn rdp_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of("[a-zA-Z0-9.@]{1,20}"),
        any::<u32>(),
        prop::sample::select(vec![PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX]),
        0u8..=3,
    )
        .prop_map(|(user, protocols, tls, flags)| {
            let mut variable = Vec::new();
            if let Some(u) = user {
                variable.extend_from_slice(format!("Cookie: mstshash={u}\r\n").as_bytes());
            }
            variable.extend_from_slice(&neg(TYPE_RDP_NEG_REQ, flags, protocols | tls));
            x224_pdu(0xe0, &variable)
        })
}

/// Any valid opening, with its guard and verdict.
fn valid() -> impl Strategy<Value = (Guard, Vec<u8>, Verdict)> {
    prop_oneof![
        ssh_line().prop_map(|l| (Guard::Ssh, l, Verdict::Pass { sni: None })),
        tls_hello().prop_map(|(h, sni)| (Guard::Tls, h, Verdict::Pass { sni })),
        rdp_request().prop_map(|r| (Guard::RdpTls, r, Verdict::Pass { sni: None })),
    ]
}

/// A valid opening with a few bytes changed: reaches deep into the parsers.
fn mutated() -> impl Strategy<Value = (Guard, Vec<u8>)> {
    (valid(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(
        |((guard, mut buf, _), edits)| {
            for (at, byte) in edits {
                let i = at.index(buf.len());
                if let Some(b) = buf.get_mut(i) {
                    *b = byte;
                }
            }
            (guard, buf)
        },
    )
}

/// If the first `cut` bytes are decided, the whole input and the input padded with
/// `fill` to [`MAX_GUARD_BYTES`] get the same verdict; the padded input is decided.
fn assert_final(guard: Guard, buf: &[u8], cuts: &[prop::sample::Index], fill: u8) -> Result<(), TestCaseError> {
    let mut padded = buf.to_vec();
    padded.resize(buf.len().max(MAX_GUARD_BYTES), fill);
    let last = check(guard, &padded);
    prop_assert_ne!(&last, &Verdict::NeedMore);
    for cut in cuts {
        let cut = cut.index(buf.len() + 1);
        let early = check(guard, buf.get(..cut).unwrap_or(buf));
        if early != Verdict::NeedMore {
            prop_assert_eq!(&check(guard, buf), &early, "decided at {} bytes", cut);
            prop_assert_eq!(&last, &early, "decided at {} bytes", cut);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..1024)) {
        for guard in GUARDS {
            let _ = check(guard, &buf);
        }
        let _ = rdp_confirm_selects_standard_security(&buf);
    }

    #[test]
    fn record_shaped_bytes_never_panic(
        prefix in prop::sample::select(vec![
            vec![0x16, 0x03, 0x01], vec![0x16, 0x03, 0x03, 0x00, 0x40, 0x01, 0x00],
            vec![0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0], vec![0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0],
            b"SSH-2.0-".to_vec(),
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let buf = [prefix, tail].concat();
        for guard in GUARDS {
            let _ = check(guard, &buf);
        }
        let _ = rdp_confirm_selects_standard_security(&buf);
    }

    #[test]
    fn valid_openings_wait_for_their_last_byte((guard, buf, verdict) in valid()) {
        assert_prefixes_need_more(guard, &buf, &verdict);
    }

    #[test]
    fn a_pass_survives_what_follows(
        (guard, buf, verdict) in valid(),
        tail in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        prop_assert_eq!(check(guard, &[buf, tail].concat()), verdict);
    }

    #[test]
    fn decided_verdicts_are_final(
        (guard, buf) in mutated(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 8),
        fill in prop::sample::select(vec![b'a', b' ', 0x16, 0x00, 0xff]),
    ) {
        assert_final(guard, &buf, &cuts, fill)?;
    }

    #[test]
    fn decided_verdicts_on_noise_are_final(
        guard in prop::sample::select(GUARDS.to_vec()),
        buf in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 4),
        fill in any::<u8>(),
    ) {
        assert_final(guard, &buf, &cuts, fill)?;
    }
}
