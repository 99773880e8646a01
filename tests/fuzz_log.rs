//! Property tests of `menshen log verify` against random tampering.
//!
//! One real log is written with the real writer (`AuditLog`, small `max_file` so it
//! spans many files, a torn tail and a restart so it holds a `log.recovery` record),
//! then each case copies it, applies random mutations (flip a byte, delete, swap or
//! duplicate lines, truncate, edit a field and re-serialize it with a stale hash, a
//! recomputed hash, or the whole rest of the chain re-hashed) and verifies the copy.
//!
//! What must hold:
//! - the unmutated log verifies; verify never panics;
//! - a changed log is reported as tampered (exit 1), naming a log file and a line no
//!   earlier than the first changed line; for one plain edit exactly that line;
//! - the one change it cannot see, by design, is in the unsigned tail: records cut
//!   off the end of the newest file (what a crash leaves, too) and a re-hashed edit
//!   of the newest file's last record (a checkpoint signs the records before it,
//!   not itself). Then it must count exactly the records that are there.
//!
//! `PROPTEST_CASES=2000 cargo test --test fuzz_log` for a deeper run; failing seeds
//! go to `proptest-regressions/tests/fuzz_log.txt` and are replayed first.

use menshen::audit::verify::{self, Failure, Report};
use menshen::audit::{chain::SigningKey, AuditLog, ConnClose, ConnOpen, Event, HttpRequest, WriterSettings};
use menshen::config::{OnFull, SyncMode};
use menshen::metrics::Metrics;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn cfg(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/tests/fuzz_log.txt"))),
        ..ProptestConfig::default()
    }
}

// === the sample log ===

/// A log directory as files (name, bytes), in chain order.
type Files = Vec<(String, Vec<u8>)>;

struct Sample {
    _dir: tempfile::TempDir,
    key: String,
    files: Files,
    report: Report,
}

fn settings(root: &Path) -> WriterSettings {
    WriterSettings {
        dir: root.join("log"),
        gateway: "fuzz-gw".into(),
        tz: jiff::tz::TimeZone::get("Asia/Taipei").expect("tz"),
        sync: SyncMode::Interval,
        max_file: 2048,
        max_disk: 1 << 30,
        on_full: OnFull::Refuse,
        retention_days: 180,
        key: SigningKey::load_or_create(&root.join("state")).expect("key"),
        syslog: None,
    }
}

/// Records with text that needs JSON escaping: quotes, backslashes, CJK, emoji.
fn event(i: u64) -> Event {
    let path = ["/成績/班級 3", "/a\"b\\c", "/emoji/🙂", "/tab\there", "/plain"][i as usize % 5];
    match i % 3 {
        0 => Event::HttpRequest(HttpRequest {
            conn: 1000 + i,
            service: "school-admin".into(),
            src_ip: "192.168.10.23".parse().expect("ip"),
            method: "GET".into(),
            host: "admin.longsheng.example".into(),
            path: format!("{path}/{i}"),
            status: 200,
            duration_ms: i * 7,
            bytes_out: i * 1000,
        }),
        1 => Event::ConnOpen(ConnOpen {
            conn: 1000 + i,
            listener: "https".into(),
            proto: "tls",
            src_ip: "2001:db8:10::7".parse().expect("ip"),
            src_port: 50_000,
            dst_ip: "127.0.0.1".parse().expect("ip"),
            dst_port: 8443,
            service: Some("nas".into()),
            zone_from: "wan".into(),
            zone_to: Some("lan".into()),
            action: "deny",
            reason: "not-allowed",
            window: None,
            identity: Some(format!("廠商-{i}")),
            tls_version: Some("TLSv1.3"),
            sni: Some("nas.longsheng.example".into()),
            proxied_by: None,
        }),
        _ => Event::ConnClose(ConnClose {
            conn: 1000 + i,
            listener: "https".into(),
            service: None,
            src_ip: "127.0.0.2".parse().expect("ip"),
            src_port: 40_000,
            start: "2026-11-21T18:34:05.120+08:00".into(),
            end: "2026-11-21T18:34:06.120+08:00".into(),
            duration_ms: 1000,
            bytes_in: i,
            bytes_out: i * 3,
            close_reason: "client",
            upstream_ip: None,
            upstream_port: None,
        }),
    }
}

/// Write records through the real writer and stop it (a closing checkpoint).
fn write_phase(root: &Path, records: std::ops::Range<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let (log, writer) = AuditLog::start(settings(root), metrics).expect("log");
        for i in records {
            log.record(event(i)).await;
        }
        drop(log);
        writer.await.expect("writer");
    });
}

fn read_dir(dir: &Path) -> Files {
    menshen::audit::files::list(dir)
        .expect("list")
        .into_iter()
        .map(|f| (f.id.name(), std::fs::read(&f.path).expect("read")))
        .collect()
}

fn sample() -> Sample {
    let dir = tempfile::tempdir().expect("tempdir");
    write_phase(dir.path(), 0..24);
    // A crash mid-write: a torn last line, sealed by the next start (log.recovery).
    let newest = menshen::audit::files::list(&dir.path().join("log")).expect("list").pop().expect("a file");
    let mut bytes = std::fs::read(&newest.path).expect("read");
    bytes.extend_from_slice(b"{\"seq\":999,\"ts\":\"2026-11-");
    std::fs::write(&newest.path, bytes).expect("tear");
    write_phase(dir.path(), 24..40);

    let key = menshen::audit::chain::existing_public_key(&dir.path().join("state")).expect("key");
    let log = dir.path().join("log");
    let report = verify::verify(&log, Some(&key)).expect("the sample log verifies");
    assert_eq!(report.recoveries, 1, "{report:?}");
    assert_eq!(report.unsigned_tail, 0, "a graceful stop signs everything: {report:?}");
    let files = read_dir(&log);
    assert!(files.len() >= 5, "max_file should have rotated: {} files", files.len());
    // The canonical form is the bytes: parsing and re-serializing any record in field
    // order gives the line back, so an edit below changes nothing but the edited value.
    for (_, b) in &files {
        for l in lines(b) {
            let fields = parse(&l).expect("a record");
            assert_eq!(serialize(&fields).into_bytes(), l, "{}", String::from_utf8_lossy(&l));
        }
    }
    Sample { _dir: dir, key, files, report }
}

// === records as ordered fields ===

/// A JSON object's fields in the order written.
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Lines with their `\n` (a last line without one is kept as it is).
fn lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split_inclusive(|c| *c == b'\n').map(<[u8]>::to_vec).collect()
}

fn parse(line: &[u8]) -> Option<Vec<(String, Value)>> {
    let body = line.strip_suffix(b"\n")?;
    serde_json::from_slice::<Fields>(body).ok().map(|f| f.0)
}

/// A record line (with `\n`) the way the writer writes it.
fn serialize(fields: &[(String, Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            format!("{}:{}", serde_json::to_string(k).expect("key"), serde_json::to_string(v).expect("value"))
        })
        .collect();
    format!("{{{}}}\n", body.join(","))
}

/// Set `hash` to BLAKE3 over the record without it (what the writer computes).
fn rehash(fields: &mut Vec<(String, Value)>) -> String {
    fields.retain(|(k, _)| k != "hash");
    let covered = serialize(fields);
    let hash = blake3::hash(covered.trim_end().as_bytes()).to_hex().to_string();
    fields.push(("hash".into(), Value::String(hash.clone())));
    hash
}

fn set(fields: &mut [(String, Value)], key: &str, v: &str) {
    if let Some(f) = fields.iter_mut().find(|(k, _)| k == key) {
        f.1 = Value::String(v.to_string());
    }
}

// === mutations ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rehash {
    /// The edited record keeps its old hash.
    No,
    /// Its own hash is recomputed.
    This,
    /// It and every record after it are re-hashed and re-linked, checkpoints pointed
    /// at the new hashes (their signatures cannot be redone without the key).
    Chain,
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte { file: Index, at: Index, xor: u8 },
    DeleteLine { file: Index, line: Index },
    SwapLines { file: Index, a: Index, b: Index },
    Truncate { file: Index, at: Index },
    DuplicateLine { file: Index, line: Index, into: Index, at: Index },
    EditField { file: Index, line: Index, field: Index, value: Value, rehash: Rehash },
}

impl Mutation {
    /// One of these alone is found exactly at the first changed line.
    fn is_plain(&self) -> bool {
        !matches!(self, Mutation::EditField { rehash: Rehash::This | Rehash::Chain, .. })
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
        "[a-z.]{1,12}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        (0u64..100_000).prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
    ]
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<Index>;
    prop_oneof![
        2 => (i(), i(), 1u8..=255).prop_map(|(file, at, xor)| Mutation::FlipByte { file, at, xor }),
        1 => (i(), i()).prop_map(|(file, line)| Mutation::DeleteLine { file, line }),
        1 => (i(), i(), i()).prop_map(|(file, a, b)| Mutation::SwapLines { file, a, b }),
        1 => (i(), i()).prop_map(|(file, at)| Mutation::Truncate { file, at }),
        1 => (i(), i(), i(), i()).prop_map(|(file, line, into, at)| Mutation::DuplicateLine { file, line, into, at }),
        3 => (i(), i(), i(), arb_value(), prop_oneof![Just(Rehash::No), Just(Rehash::This), Just(Rehash::Chain)])
            .prop_map(|(file, line, field, value, rehash)| Mutation::EditField { file, line, field, value, rehash }),
    ]
}

fn apply(files: &mut Files, m: &Mutation) {
    let n = files.len();
    match m {
        Mutation::FlipByte { file, at, xor } => {
            let b = &mut files[file.index(n)].1;
            if !b.is_empty() {
                let i = at.index(b.len());
                b[i] ^= xor;
            }
        }
        Mutation::DeleteLine { file, line } => edit_lines(&mut files[file.index(n)].1, |ls| {
            if !ls.is_empty() {
                ls.remove(line.index(ls.len()));
            }
        }),
        Mutation::SwapLines { file, a, b } => edit_lines(&mut files[file.index(n)].1, |ls| {
            if !ls.is_empty() {
                let (a, b) = (a.index(ls.len()), b.index(ls.len()));
                ls.swap(a, b);
            }
        }),
        Mutation::Truncate { file, at } => {
            let b = &mut files[file.index(n)].1;
            if !b.is_empty() {
                let len = at.index(b.len());
                b.truncate(len);
            }
        }
        Mutation::DuplicateLine { file, line, into, at } => {
            let src = lines(&files[file.index(n)].1);
            if src.is_empty() {
                return;
            }
            let copy = src[line.index(src.len())].clone();
            edit_lines(&mut files[into.index(n)].1, |ls| ls.insert(at.index(ls.len() + 1), copy));
        }
        Mutation::EditField { file, line, field, value, rehash: mode } => {
            let f = file.index(n);
            let mut ls = lines(&files[f].1);
            if ls.is_empty() {
                return;
            }
            let l = line.index(ls.len());
            let Some(mut fields) = parse(&ls[l]) else { return };
            let editable: Vec<usize> = (0..fields.len()).filter(|&i| fields[i].0 != "hash").collect();
            if editable.is_empty() {
                return;
            }
            fields[editable[field.index(editable.len())]].1 = value.clone();
            let mut head = match mode {
                Rehash::No => None,
                Rehash::This | Rehash::Chain => Some(rehash(&mut fields)),
            };
            ls[l] = serialize(&fields).into_bytes();
            files[f].1 = ls.concat();
            if *mode == Rehash::Chain {
                // Every later record, in this file and the next ones.
                for (g, file) in files.iter_mut().enumerate().skip(f) {
                    let mut ls = lines(&file.1);
                    let from = if g == f { l + 1 } else { 0 };
                    for line in ls.iter_mut().skip(from) {
                        let (Some(prev), Some(mut fields)) = (head.clone(), parse(line)) else {
                            head = None;
                            break;
                        };
                        set(&mut fields, "prev", &prev);
                        set(&mut fields, "signed_hash", &prev);
                        head = Some(rehash(&mut fields));
                        *line = serialize(&fields).into_bytes();
                    }
                    file.1 = ls.concat();
                }
            }
        }
    }
}

fn edit_lines(bytes: &mut Vec<u8>, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut ls = lines(bytes);
    f(&mut ls);
    *bytes = ls.concat();
}

// === what verify must say ===

/// The first changed place, in chain order: (file index, 1-based line). Lines cut off
/// the end of a file count from the last line left (where verify sees the file end).
fn first_change(orig: &Files, mutated: &Files) -> Option<(usize, u64)> {
    for (f, ((_, a), (_, b))) in orig.iter().zip(mutated).enumerate() {
        if a == b {
            continue;
        }
        let (la, lb) = (lines(a), lines(b));
        let same = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
        let line = if same == lb.len() { same } else { same + 1 };
        return Some((f, line as u64));
    }
    None
}

/// Changed only where no signature reaches: lines cut off the end of the newest file,
/// and its (new) last record, if that is a whole line.
fn only_unsigned_tail(orig: &Files, mutated: &Files) -> bool {
    let last = orig.len() - 1;
    if orig[..last] != mutated[..last] {
        return false;
    }
    let (lo, lm) = (lines(&orig[last].1), lines(&mutated[last].1));
    match lm.split_last() {
        None => false,
        Some((tail, rest)) => tail.ends_with(b"\n") && rest.len() < lo.len() && lo[..rest.len()] == *rest,
    }
}

fn line_count(files: &Files) -> u64 {
    files.iter().map(|(_, b)| lines(b).len() as u64).sum()
}

/// Run every tenth case through the binary as well (a process per case is slow).
static CASE: AtomicUsize = AtomicUsize::new(0);

fn check(sample: &Sample, mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let mut files = sample.files.clone();
    for m in mutations {
        apply(&mut files, m);
    }
    let dir = write_copy(&files);
    let changed = files != sample.files;
    let tail_only = only_unsigned_tail(&sample.files, &files);
    let first = first_change(&sample.files, &files);
    for key in [Some(sample.key.as_str()), None] {
        let result = verify::verify(dir.path(), key);
        match &result {
            Ok(r) => {
                prop_assert!(!changed || tail_only, "tampering not found (key {:?}): {:?}", key, r);
                prop_assert_eq!(r.records, line_count(&files), "records counted");
                if !changed && key.is_some() {
                    prop_assert_eq!(r, &sample.report);
                }
                if changed {
                    // What is left is unsigned, or the cut fell right after a checkpoint.
                    prop_assert!(r.records <= sample.report.records);
                }
            }
            Err(Failure::Tampered { file, line, what }) => {
                prop_assert!(changed, "an intact log reported as tampered: {}:{}: {}", file, line, what);
                prop_assert!(!what.is_empty());
                let Some(f) = files.iter().position(|(n, _)| n == file) else {
                    return Err(TestCaseError::fail(format!("reported file {file:?} is not a log file")));
                };
                let count = lines(&files[f].1).len() as u64;
                prop_assert!(*line <= count + 1, "{}:{} beyond the file's {} lines", file, line, count);
                let first = first.expect("changed");
                prop_assert!((f, *line) >= first, "{}:{}: {} is before the first change {:?}", file, line, what, first);
                if mutations.len() == 1 && mutations[0].is_plain() {
                    prop_assert_eq!((f, *line), first, "{}:{}: {}", file, line, what);
                }
            }
            Err(e) => prop_assert!(false, "readable files reported unreadable: {}", e),
        }
        if CASE.fetch_add(1, Ordering::Relaxed) % 10 == 0 {
            check_binary(dir.path(), key, &result)?;
        }
    }
    Ok(())
}

/// `menshen log verify`: exit 0 / 1, and the same place in its output.
fn check_binary(dir: &Path, key: Option<&str>, lib: &Result<Report, Failure>) -> Result<(), TestCaseError> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_menshen"));
    cmd.args(["log", "verify"]).arg(dir);
    if let Some(k) = key {
        cmd.args(["--pubkey", k]);
    }
    let out = cmd.output().expect("run menshen");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match lib {
        Ok(_) => prop_assert_eq!(out.status.code(), Some(0), "{}", text),
        Err(e) => {
            prop_assert_eq!(out.status.code(), Some(1), "{}", text);
            let Failure::Tampered { file, line, .. } = e else { unreachable!("checked above") };
            prop_assert!(text.contains(&format!("{file}:{line}:")), "{}", text);
            prop_assert!(text.contains("TAMPERED"), "{}", text);
        }
    }
    Ok(())
}

fn run(sample: &Sample, cases: u32, strategy: impl Strategy<Value = Vec<Mutation>>) {
    let mut runner = TestRunner::new(cfg(cases));
    if let Err(e) = runner.run(&strategy, |m| check(sample, &m)) {
        panic!("{e}");
    }
}

// === the properties ===

#[test]
fn one_mutation_is_found_where_it_is() {
    let sample = sample();
    // The unmutated copy first: it verifies, through the library and the binary.
    check(&sample, &[]).expect("the intact log");
    check_binary(write_copy(&sample.files).path(), Some(&sample.key), &Ok(sample.report.clone())).expect("binary");
    run(&sample, 256, prop::collection::vec(arb_mutation(), 1..=1));
}

#[test]
fn several_mutations_are_found() {
    let sample = sample();
    run(&sample, 128, prop::collection::vec(arb_mutation(), 2..5));
}

/// The two blind spots, shown on purpose (see the module doc): they verify, and the
/// report still counts exactly what is there.
#[test]
fn the_unsigned_tail_is_what_verify_cannot_judge() {
    let sample = sample();
    let last = sample.files.len() - 1;
    // The newest file loses its closing checkpoint: "verified", one unsigned record.
    let mut cut = sample.files.clone();
    edit_lines(&mut cut[last].1, |ls| {
        ls.pop();
    });
    let r = verify::verify(write_copy(&cut).path(), Some(&sample.key)).expect("a cut tail looks like a crash");
    assert_eq!(r.records, sample.report.records - 1);
    assert!(r.unsigned_tail > 0, "{r:?}");
    // The closing checkpoint's own `ts`, edited and re-hashed: nothing signs it.
    let mut forged = sample.files.clone();
    edit_lines(&mut forged[last].1, |ls| {
        let l = ls.last_mut().expect("a line");
        let mut fields = parse(l).expect("the checkpoint");
        set(&mut fields, "ts", "2031-01-01T00:00:00.000+08:00");
        rehash(&mut fields);
        *l = serialize(&fields).into_bytes();
    });
    let r = verify::verify(write_copy(&forged).path(), Some(&sample.key)).expect("unsigned by design");
    assert_eq!(r.records, sample.report.records);
}

fn write_copy(files: &Files) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    dir
}
