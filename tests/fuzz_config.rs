//! Property tests of the config file, through `config::load` on a real file.
//!
//! Whatever text lands in a config file (random text, random bytes, the example
//! configs with lines dropped, duplicated, swapped or rewritten), `load` answers with
//! a config or with a non-empty list of errors that each name the file and a reason;
//! it never panics. Edits that keep a config valid keep it loading, and a bad value
//! for a key is reported under that key. The duration and size parsers never panic
//! and read back what they are given. Zones that share addresses are refused, also
//! when one is written in IPv4-mapped IPv6 notation.
//!
//! Case counts are modest so the suite stays fast; for a deeper run:
//! `PROPTEST_CASES=5000 cargo test --test fuzz_config`. Failing seeds are saved in
//! `proptest-regressions/tests/fuzz_config.txt` (commit it) and replayed first by
//! every later run, so a failure found once stays a test.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use menshen::config::{self, parse_duration, parse_size, ConfigErrors, Mode};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::FileFailurePersistence;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

/// `default` cases, or `PROPTEST_CASES` when set; seeds kept under `proptest-regressions/`
/// (the default location, next to `tests/`, would be `tests/*.proptest-regressions`).
fn cfg(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/tests/fuzz_config.txt",
        ))),
        ..ProptestConfig::default()
    }
}

// === the files under test ===

const QUICKSTART: &str = include_str!("../config/quickstart.toml");
const SCHOOL: &str = include_str!("../config/school.toml");

/// The example configs, with school.toml's absolute paths made relative so that it
/// loads from a temporary directory. Both are known to load as they are.
fn bases() -> [String; 2] {
    let school = SCHOOL
        .replace("\"/etc/menshen/tls/", "\"tls/")
        .replace("\"/var/lib/menshen\"", "\"state\"")
        .replace("\"/var/log/menshen\"", "\"log\"");
    [QUICKSTART.to_string(), school]
}

/// One self-signed certificate for all cases (key generation is the slow part).
fn cert() -> &'static (String, String) {
    static CERT: OnceLock<(String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("test certificate");
        (ck.cert.pem(), ck.key_pair.serialize_pem())
    })
}

/// Write `text` as `menshen.toml` into a fresh directory that holds the certificate
/// both example configs name, and load it (read only: `Mode::Check`).
fn load_bytes(bytes: &[u8]) -> (tempfile::TempDir, String, Result<config::Config, ConfigErrors>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = cert();
    for sub in ["state/tls", "tls"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        std::fs::write(dir.path().join(sub).join("gateway.crt"), crt).expect("write cert");
        std::fs::write(dir.path().join(sub).join("gateway.key"), key).expect("write key");
    }
    let path = dir.path().join("menshen.toml");
    std::fs::write(&path, bytes).expect("write config");
    let result = config::load(&path, Mode::Check);
    (dir, path.display().to_string(), result)
}

fn load_text(text: &str) -> (tempfile::TempDir, String, Result<config::Config, ConfigErrors>) {
    load_bytes(text.as_bytes())
}

/// The error contract: at least one error, each naming the file, with a reason.
fn errors_are_well_formed(file: &str, errs: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errs.0.is_empty(), "an empty error list");
    for e in &errs.0 {
        prop_assert_eq!(&e.file, file, "error does not name the file: {}", e);
        prop_assert!(!e.reason.trim().is_empty(), "error without a reason: {:?}", e);
        prop_assert!(e.to_string().starts_with(file), "display does not start with the file: {}", e);
    }
    let all = errs.to_string();
    prop_assert!(all.lines().count() >= errs.0.len(), "one line per error at least: {}", all);
    Ok(())
}

fn check_outcome(file: &str, result: &Result<config::Config, ConfigErrors>) -> Result<(), TestCaseError> {
    match result {
        Ok(c) => {
            prop_assert_eq!(c.path.display().to_string(), file);
            prop_assert_eq!(c.digest.len(), 64);
            Ok(())
        }
        Err(errs) => errors_are_well_formed(file, errs),
    }
}

/// A TOML string literal for any text.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

// === strategies ===

const SECTIONS: &[&str] =
    &["gateway", "tls", "log", "admin", "ip_sets", "zones", "zone_rule", "listener", "service", "windows", "account"];

const KEYS: &[&str] = &[
    "name",
    "timezone",
    "state_dir",
    "drain_timeout",
    "metrics_bind",
    "cert",
    "key",
    "min_version",
    "handshake_timeout",
    "self_signed_if_missing",
    "dir",
    "retention_days",
    "max_disk",
    "max_file",
    "sync",
    "on_full",
    "http_requests",
    "syslog",
    "bind",
    "allow",
    "lockout_failures",
    "maintenance",
    "blocked",
    "lan",
    "from",
    "to",
    "access",
    "zone",
    "kind",
    "listener",
    "hosts",
    "upstream",
    "upstream_ca",
    "upstream_server_name",
    "window_max",
    "idle_timeout",
    "upstream_timeout",
    "role",
    "token_sha256",
    "vendor",
    "services",
    "webhook",
    "max_source_prefix_v4",
    "max_source_prefix_v6",
    "allow_self_approval",
];

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).expect("prefix"))),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), p).expect("prefix"))),
        (any::<u32>(), 96u8..=128)
            .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(Ipv4Addr::from(a).to_ipv6_mapped(), p).expect("prefix"))),
    ]
}

/// CIDR-ish text: valid CIDRs (with and without host bits), bare addresses, junk.
fn arb_cidr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_net().prop_map(|n| n.trunc().to_string()),
        arb_net().prop_map(|n| n.to_string()),
        arb_net().prop_map(|n| n.addr().to_string()),
        "[0-9a-f:./]{0,20}",
        ".{0,12}",
    ]
}

fn toml_array(items: Vec<String>) -> String {
    format!("[{}]", items.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "))
}

/// A TOML value: every type, plausible and implausible strings, and raw junk.
fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml_str(&s)),
        "[a-z0-9./:_-]{0,16}".prop_map(|s| toml_str(&s)),
        "(-?[0-9]{1,20}(ns|us|ms|s|m|h|d|y|w)?){1,3}".prop_map(|s| toml_str(&s)),
        "[0-9]{1,22} ?(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB|XB)?".prop_map(|s| toml_str(&s)),
        "(https?|tcp|tls|ftp)://[a-z0-9.:\\[\\]]{0,20}(/[a-z]{0,5})?".prop_map(|s| toml_str(&s)),
        prop::collection::vec(arb_cidr_text(), 0..4).prop_map(toml_array),
        prop::collection::vec("[a-z_.-]{0,10}", 0..4).prop_map(toml_array),
        "\\{ ?([a-z]{1,5} = [0-9]{1,3})? ?\\}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2})?",
        ".{0,20}",
    ]
}

/// One line of TOML-ish text.
fn arb_line() -> impl Strategy<Value = String> {
    prop_oneof![
        select(SECTIONS).prop_map(|s| format!("[{s}]")),
        select(SECTIONS).prop_map(|s| format!("[[{s}]]")),
        (select(KEYS), arb_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        ("[a-z_]{1,10}", arb_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        ".{0,30}",
        Just(String::new()),
        "# .{0,20}",
    ]
}

// === edits of the example configs ===

#[derive(Debug, Clone)]
enum Edit {
    Drop(Index),
    Duplicate(Index, Index),
    Swap(Index, Index),
    /// Replace the value of a `key = value` line (the whole line if it has none).
    SetValue(Index, String),
    /// Insert text at a character position of a line.
    Insert(Index, Index, String),
    NewLine(Index, String),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        3 => (any::<Index>(), arb_value()).prop_map(|(i, v)| Edit::SetValue(i, v)),
        1 => (any::<Index>(), any::<Index>(), prop_oneof![any::<String>(), "[\"'\\[\\]={}#\\\\\n]{1,3}"])
            .prop_map(|(i, p, s)| Edit::Insert(i, p, s)),
        1 => (any::<Index>(), arb_line()).prop_map(|(i, l)| Edit::NewLine(i, l)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match e {
            Edit::Drop(i) => {
                lines.remove(i.index(n));
            }
            Edit::Duplicate(i, at) => {
                let l = lines[i.index(n)].clone();
                lines.insert(at.index(n + 1), l);
            }
            Edit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
            Edit::SetValue(i, v) => {
                let l = &mut lines[i.index(n)];
                *l = match l.split_once('=') {
                    Some((k, _)) => format!("{k}= {v}"),
                    None => v.clone(),
                };
            }
            Edit::Insert(i, p, s) => {
                let l = &mut lines[i.index(n)];
                let at = l.char_indices().map(|(b, _)| b).chain([l.len()]).nth(p.index(l.chars().count() + 1));
                l.insert_str(at.unwrap_or(l.len()), s);
            }
            Edit::NewLine(i, l) => lines.insert(i.index(n + 1), l.clone()),
        }
    }
    lines.join("\n") + "\n"
}

/// Set `key` in the first `[section]` / `[[section]]` of `text` to `value`: the first
/// such line in that section, or a new line right after its header. A missing plain
/// table is appended when `create` is set; otherwise None.
fn set_key(text: &str, section: &str, key: &str, value: &str, create: bool) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = |l: &str| {
        let t = l.trim();
        t == format!("[{section}]") || t == format!("[[{section}]]")
    };
    match lines.iter().position(|l| header(l)) {
        Some(h) => {
            let end =
                lines[h + 1..].iter().position(|l| l.trim_start().starts_with('[')).map_or(lines.len(), |e| h + 1 + e);
            let own = lines[h + 1..end].iter().position(|l| {
                l.split_once('=').is_some_and(|(k, _)| k.trim() == key) && !l.trim_start().starts_with('#')
            });
            match own {
                Some(o) => lines[h + 1 + o] = format!("{key} = {value}"),
                None => lines.insert(h + 1, format!("{key} = {value}")),
            }
        }
        None if create => {
            lines.push(format!("[{section}]"));
            lines.push(format!("{key} = {value}"));
        }
        None => return None,
    }
    Some(lines.join("\n") + "\n")
}

// === values that are valid, and values that are not ===

fn valid_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..=100_000, select(vec!["s", "m", "h"])).prop_map(|(n, u)| format!("{n}{u}")),
        (0u64..100, 0u64..60, 1u64..60).prop_map(|(h, m, s)| format!("{h}h{m}m{s}s")),
        (1u64..=100_000).prop_map(|n| format!("PT{n}S")),
        (1u64..=10_000).prop_map(|n| format!("{n}ms")),
    ]
}

fn valid_size() -> impl Strategy<Value = String> {
    // At most 20 GiB: both files' log.max_disk (given or default) is 20 GiB.
    prop_oneof![
        (1u64..=20, select(vec!["GiB", "GB"])).prop_map(|(n, u)| format!("{n}{u}")),
        (1u64..=20_000, select(vec!["MiB", "MB", " MiB"])).prop_map(|(n, u)| format!("{n}{u}")),
        (1u64..=(20u64 << 30)).prop_map(|n| n.to_string()),
    ]
}

fn timezones() -> &'static [String] {
    static TZ: OnceLock<Vec<String>> = OnceLock::new();
    TZ.get_or_init(|| {
        let names: Vec<String> = jiff::tz::db().available().map(|n| n.as_str().to_string()).collect();
        assert!(names.len() > 100, "no time zone database");
        names
    })
}

/// A (section, key, value) that keeps either example config valid.
fn valid_setting() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    let name = "[A-Za-z0-9._-]{1,64}".prop_map(|s| toml_str(&s));
    let tz = (0..timezones().len()).prop_map(|i| toml_str(&timezones()[i]));
    let dur = || valid_duration().prop_map(|s| toml_str(&s));
    let nets = prop::collection::vec(arb_net().prop_map(|n| n.trunc().to_string()), 0..6).prop_map(toml_array);
    prop_oneof![
        name.prop_map(|v| ("gateway", "name", v)),
        tz.prop_map(|v| ("gateway", "timezone", v)),
        dur().prop_map(|v| ("gateway", "drain_timeout", v)),
        dur().prop_map(|v| ("tls", "handshake_timeout", v)),
        select(vec!["\"1.2\"", "\"1.3\""]).prop_map(|v| ("tls", "min_version", v.to_string())),
        (180i64..=1_000_000).prop_map(|v| ("log", "retention_days", v.to_string())),
        valid_size().prop_map(|v| ("log", "max_file", toml_str(&v))),
        select(vec!["\"interval\"", "\"always\""]).prop_map(|v| ("log", "sync", v.to_string())),
        select(vec!["\"refuse\"", "\"overwrite-oldest\""]).prop_map(|v| ("log", "on_full", v.to_string())),
        any::<bool>().prop_map(|v| ("log", "http_requests", v.to_string())),
        nets.prop_map(|v| ("ip_sets", "maintenance", v)),
        dur().prop_map(|v| ("service", "idle_timeout", v)),
        dur().prop_map(|v| ("service", "upstream_timeout", v)),
        (0u8..=32).prop_map(|v| ("windows", "max_source_prefix_v4", v.to_string())),
        (0u8..=128).prop_map(|v| ("windows", "max_source_prefix_v6", v.to_string())),
        any::<bool>().prop_map(|v| ("windows", "allow_self_approval", v.to_string())),
    ]
}

/// Edits that change nothing that matters: comments and blank lines.
#[derive(Debug, Clone)]
enum Harmless {
    DropCommentOrBlank(Index),
    DuplicateCommentOrBlank(Index),
    /// Any text after a `#`, on its own line or after a value.
    Comment(Index, String),
    TrailingSpace(Index, String),
}

fn arb_harmless() -> impl Strategy<Value = Harmless> {
    let comment = "[^\n\r]{0,30}"; // a TOML comment runs to the end of the line
    prop_oneof![
        any::<Index>().prop_map(Harmless::DropCommentOrBlank),
        any::<Index>().prop_map(Harmless::DuplicateCommentOrBlank),
        (any::<Index>(), comment).prop_map(|(i, s)| Harmless::Comment(i, s)),
        (any::<Index>(), "[ \t]{1,4}").prop_map(|(i, s)| Harmless::TrailingSpace(i, s)),
    ]
}

fn apply_harmless(text: &str, edits: &[Harmless]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let is_comment_or_blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    for e in edits {
        let idle: Vec<usize> = (0..lines.len()).filter(|&i| is_comment_or_blank(&lines[i])).collect();
        match e {
            Harmless::DropCommentOrBlank(i) if !idle.is_empty() => {
                lines.remove(idle[i.index(idle.len())]);
            }
            Harmless::DuplicateCommentOrBlank(i) if !idle.is_empty() => {
                let at = idle[i.index(idle.len())];
                lines.insert(at, lines[at].clone());
            }
            Harmless::Comment(i, s) => {
                // Control characters other than tab are not allowed in TOML comments.
                let s: String = s.chars().filter(|c| !c.is_control() || *c == '\t').collect();
                let at = i.index(lines.len() + 1);
                lines.insert(at, format!("# {s}"));
            }
            Harmless::TrailingSpace(i, s) => {
                let at = i.index(lines.len());
                lines[at].push_str(s);
            }
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

/// A (section, key, bad value, the key path the error must name).
fn invalid_setting() -> impl Strategy<Value = (&'static str, &'static str, String, &'static str)> {
    let bad_duration = prop_oneof![any::<String>(), "(-?[0-9]{1,25}(ns|ms|s|m|h|d|y)?){1,2}", Just("0s".to_string())]
        .prop_filter("an invalid duration", |s| parse_duration(s).is_err())
        .prop_map(|s| toml_str(&s))
        .boxed();
    let bad_size = prop_oneof![any::<String>(), "[0-9]{1,25} ?(B|KiB|MiB|GiB|TiB|kB|MB|XB|kib)?"]
        .prop_filter("an invalid size", |s| parse_size(s).is_err())
        .prop_map(|s| toml_str(&s))
        .boxed();
    let bad_name = prop_oneof![Just(String::new()), "[a-z]{65,80}", "[a-z]{0,5}[^A-Za-z0-9._-][a-z]{0,5}"]
        .prop_map(|s| toml_str(&s));
    let bad_tz = any::<String>()
        .prop_filter("not a time zone", |s| jiff::tz::TimeZone::get(s).is_err())
        .prop_map(|s| toml_str(&s));
    let not = |ok: &'static [&'static str]| {
        any::<String>()
            .prop_filter("not an allowed word", move |s| !ok.contains(&s.as_str()))
            .prop_map(|s| toml_str(&s))
    };
    let bad_bind = prop_oneof![any::<String>(), "[0-9.]{0,16}:?[0-9]{0,7}"]
        .prop_filter("not an address", |s| s.parse::<std::net::SocketAddr>().is_err())
        .prop_map(|s| toml_str(&s));
    // A value of the wrong TOML type is a serde error, which names the key path too.
    let not_a_string = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
    .boxed();
    prop_oneof![
        bad_name.prop_map(|v| ("gateway", "name", v, "gateway.name")),
        bad_tz.prop_map(|v| ("gateway", "timezone", v, "gateway.timezone")),
        bad_duration.clone().prop_map(|v| ("gateway", "drain_timeout", v, "gateway.drain_timeout")),
        bad_duration.clone().prop_map(|v| ("tls", "handshake_timeout", v, "tls.handshake_timeout")),
        bad_duration.clone().prop_map(|v| ("service", "idle_timeout", v, "service[0].idle_timeout")),
        bad_duration.prop_map(|v| ("service", "upstream_timeout", v, "service[0].upstream_timeout")),
        not(&["1.2", "1.3"]).prop_map(|v| ("tls", "min_version", v, "tls.min_version")),
        (i64::MIN..180).prop_map(|v| ("log", "retention_days", v.to_string(), "log.retention_days")),
        bad_size.clone().prop_map(|v| ("log", "max_disk", v, "log.max_disk")),
        bad_size.prop_map(|v| ("log", "max_file", v, "log.max_file")),
        not(&["interval", "always"]).prop_map(|v| ("log", "sync", v, "log.sync")),
        not(&["refuse", "overwrite-oldest"]).prop_map(|v| ("log", "on_full", v, "log.on_full")),
        bad_bind.prop_map(|v| ("listener", "bind", v, "listener[0].bind")),
        not_a_string.clone().prop_map(|v| ("gateway", "timezone", v, "gateway.timezone")),
        not_a_string.clone().prop_map(|v| ("listener", "zone", v, "listener[0].zone")),
        not_a_string.prop_map(|v| ("service", "upstream", v, "service[0].upstream")),
        "\"[0-9]{1,4}\"".prop_map(|v| ("log", "retention_days", v, "log.retention_days")),
    ]
}

// === the properties ===

proptest! {
    #![proptest_config(cfg(128))]

    /// Random text, TOML-ish lines and raw bytes: never a panic, errors name the file.
    #[test]
    fn arbitrary_text_never_panics(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(arb_line(), 0..40).prop_map(|l| l.join("\n")),
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let (_dir, file, result) = load_text(&text);
        check_outcome(&file, &result)?;
        let (_dir, file, result) = load_bytes(&bytes);
        check_outcome(&file, &result)?;
    }

    /// The example configs with random lines dropped, duplicated, swapped, rewritten or
    /// inserted: never a panic, every error names the file and has a reason.
    #[test]
    fn mutated_examples_never_panic(base in 0usize..2, edits in prop::collection::vec(arb_edit(), 1..5)) {
        let text = apply(&bases()[base], &edits);
        let (_dir, file, result) = load_text(&text);
        check_outcome(&file, &result)?;
    }

}

// Fewer cases below: a config with services reads the system's CA roots on every
// load (~50 ms in a debug build).
proptest! {
    #![proptest_config(cfg(48))]

    /// Comments, blank lines, trailing blanks, and any valid value for a key: still loads.
    #[test]
    fn valid_edits_still_load(
        base in 0usize..2,
        harmless in prop::collection::vec(arb_harmless(), 0..4),
        settings in prop::collection::vec(valid_setting(), 0..4),
    ) {
        let mut text = apply_harmless(&bases()[base], &harmless);
        for (section, key, value) in &settings {
            let create = matches!(*section, "windows" | "log");
            if let Some(t) = set_key(&text, section, key, value, create) {
                text = t;
            }
        }
        let (_dir, file, result) = load_text(&text);
        match result {
            Ok(c) => prop_assert_eq!(c.path.display().to_string(), file),
            Err(e) => prop_assert!(false, "a valid edit was refused:\n{}\n--- config:\n{}", e, text),
        }
    }

}

proptest! {
    #![proptest_config(cfg(64))]

    /// A bad value (or a value of the wrong type) for a key: an error under that key.
    #[test]
    fn a_bad_value_is_reported_under_its_key(base in 0usize..2, (section, key, value, path) in invalid_setting()) {
        let text = set_key(&bases()[base], section, key, &value, true).expect("section exists");
        let (_dir, file, result) = load_text(&text);
        match result {
            Ok(_) => prop_assert!(false, "{section}.{key} = {value} was accepted"),
            Err(errs) => {
                errors_are_well_formed(&file, &errs)?;
                prop_assert!(
                    errs.0.iter().any(|e| e.key == path),
                    "{section}.{key} = {value}: no error names {path}:\n{errs}"
                );
            }
        }
    }
}

// === durations and sizes ===

/// The longest duration the config accepts (longer ones are refused, see units.rs).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn parse_duration_and_size_never_panic(
        s in prop_oneof![
            any::<String>(),
            "[ +-]?[0-9]{0,25}(\\.[0-9]{0,12})?[ ]?(ns|us|µs|ms|s|m|h|d|w|y|sec|min|hours?|B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?[ ]?",
            "(P|PT|-PT)?([0-9]{1,20}[HMSDW]){0,3}",
            "([0-9]{1,12} ?(h|m|s|ms) ?){1,4}",
        ]
    ) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d > Duration::ZERO, "{s:?} -> {d:?}");
            prop_assert!(d <= MAX_DURATION, "{s:?} -> {d:?}: beyond the limit");
            // Every timer and deadline built from it must be representable.
            prop_assert!(std::time::Instant::now().checked_add(d).is_some());
        }
        if let Ok(n) = parse_size(&s) {
            prop_assert!(n > 0, "{s:?} -> {n}");
        }
    }

    /// A duration written by jiff (ISO 8601 and the friendly form) or as h/m/s reads back.
    #[test]
    fn durations_round_trip(secs in 0u64..=MAX_DURATION.as_secs(), nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        prop_assume!(!d.is_zero());
        let sd = jiff::SignedDuration::try_from(d).expect("in range");
        prop_assert_eq!(parse_duration(&sd.to_string()), Ok(d), "ISO {}", sd);
        prop_assert_eq!(parse_duration(&format!("{sd:#}")), Ok(d), "friendly {:#}", sd);
        if secs > 0 {
            let hms = format!("{}h{}m{}s", secs / 3600, secs / 60 % 60, secs % 60);
            prop_assert_eq!(parse_duration(&hms), Ok(Duration::from_secs(secs)), "{}", hms);
            prop_assert_eq!(parse_duration(&format!(" {secs}s ")), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn too_long_durations_are_refused(secs in (MAX_DURATION.as_secs() + 1)..=(i64::MAX as u64)) {
        let e = parse_duration(&format!("{secs}s"));
        prop_assert!(e.is_err(), "{secs}s accepted");
        let hours = secs / 3600;
        if hours > MAX_DURATION.as_secs() / 3600 {
            prop_assert!(parse_duration(&format!("{hours}h")).is_err(), "{hours}h accepted");
        }
    }

    /// n and a unit: exactly n times the unit, or an error for zero and for overflow.
    #[test]
    fn sizes_read_back(
        n in prop_oneof![any::<u64>(), 0u64..100_000],
        unit in select(vec![
            ("", 1u64), ("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
            ("kB", 1_000), ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
        ]),
        pad in select(vec![("", "", ""), (" ", "", ""), ("", " ", " "), ("\t", " ", "\n")]),
    ) {
        let (lead, mid, trail) = pad;
        let s = format!("{lead}{n}{mid}{}{trail}", unit.0);
        match n.checked_mul(unit.1) {
            Some(0) => prop_assert!(parse_size(&s).is_err(), "{s:?}"),
            Some(v) => prop_assert_eq!(parse_size(&s), Ok(v), "{:?}", s),
            None => prop_assert!(parse_size(&s).is_err_and(|e| e.contains("too large")), "{s:?}"),
        }
    }
}

// === zones: a host lives in one zone ===

/// The network as the gateway matches it: IPv4-mapped IPv6 (`::ffff:a.b.c.d/96` and
/// longer) is the IPv4 network it maps (README: "IPv4-mapped addresses count as IPv4").
fn as_matched(n: &IpNet) -> IpNet {
    match n.trunc() {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(a) => IpNet::V4(Ipv4Net::new(a, v6.prefix_len() - 96).expect("prefix")),
            None => IpNet::V6(v6),
        },
        other => other,
    }
}

/// Networks near each other so that overlaps are common, in all three notations.
fn arb_zone_net() -> impl Strategy<Value = IpNet> {
    let v4 = (0u32..4, any::<u8>(), 8u8..=32)
        .prop_map(|(hi, lo, p)| Ipv4Net::new(Ipv4Addr::new(10, hi as u8, lo, 0), p).expect("prefix").trunc());
    prop_oneof![
        v4.clone().prop_map(IpNet::V4),
        v4.prop_map(|n| IpNet::V6(Ipv6Net::new(n.network().to_ipv6_mapped(), n.prefix_len() + 96).expect("prefix"))),
        (0u16..4, 32u8..=128).prop_map(|(s, p)| IpNet::V6(
            Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, s, 0, 0, 0, 0, 1), p).expect("prefix").trunc()
        )),
    ]
}

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn overlapping_zones_are_refused(
        a in prop::collection::vec(arb_zone_net(), 1..4),
        b in prop::collection::vec(arb_zone_net(), 1..4),
    ) {
        let list = |nets: &[IpNet]| toml_array(nets.iter().map(|n| n.to_string()).collect());
        let text = format!(
            "[gateway]\nname = \"z\"\n\n[tls]\ncert = \"tls/gateway.crt\"\nkey = \"tls/gateway.key\"\n\n\
             [zones]\nalpha = {}\nbeta = {}\n",
            list(&a),
            list(&b)
        );
        let overlap = a.iter().any(|x| b.iter().any(|y| {
            let (x, y) = (as_matched(x), as_matched(y));
            x.contains(&y) || y.contains(&x)
        }));
        let (_dir, file, result) = load_text(&text);
        match result {
            Ok(_) => prop_assert!(!overlap, "zones share addresses but were accepted:\n{text}"),
            Err(errs) => {
                errors_are_well_formed(&file, &errs)?;
                prop_assert!(overlap, "refused without an overlap:\n{errs}\n{text}");
                prop_assert!(errs.0.iter().all(|e| e.key == "zones.beta"), "{errs}");
            }
        }
    }
}

#[test]
fn the_examples_load_as_they_are() {
    for text in bases() {
        let (_dir, file, result) = load_text(&text);
        if let Err(e) = &result {
            panic!("{file}: {e}");
        }
    }
}

/// Found by `overlapping_zones_are_refused`: the overlap check compared the networks
/// as written, so `::ffff:10.0.0.0/104` (which the policy matches as 10.0.0.0/8) could
/// sit in a second zone next to `10.0.0.0/8`, putting those hosts in two zones.
#[test]
fn a_zone_in_mapped_notation_overlaps_its_ipv4_twin() {
    let text = "[gateway]\nname = \"z\"\n\n[tls]\ncert = \"tls/gateway.crt\"\nkey = \"tls/gateway.key\"\n\n\
                [zones]\nalpha = [\"10.0.0.0/8\"]\nbeta = [\"::ffff:10.1.0.0/112\"]\n";
    let (_dir, _file, result) = load_text(text);
    let errs = result.err().expect("overlapping zones accepted");
    assert!(errs.0.iter().any(|e| e.key == "zones.beta" && e.reason.contains("overlaps")), "{errs}");
}

/// Found by `parse_duration_and_size_never_panic`: a duration near jiff's maximum
/// passed validation, and the admin listener's `Instant::now() + handshake_timeout`
/// then panicked on every connection.
#[test]
fn an_absurd_timeout_is_refused_under_its_key() {
    let text = set_key(&bases()[0], "tls", "handshake_timeout", "\"2562047788015215h\"", true).expect("[tls]");
    let (_dir, _file, result) = load_text(&text);
    let errs = result.err().expect("absurd timeout accepted");
    assert!(errs.0.iter().any(|e| e.key == "tls.handshake_timeout" && e.reason.contains("too long")), "{errs}");
}
