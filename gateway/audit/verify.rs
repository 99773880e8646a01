//! `menshen log verify`: check a log directory the way an auditor would.
//!
//! For every record in file order: its hash matches its bytes; `seq` is one more than
//! the record before; `prev` is that record's hash; every file starts with a
//! `log.header` naming the file itself and ends (except the newest) with a signed
//! `log.checkpoint`; every checkpoint's Ed25519 signature over the chain head is valid
//! for the key. Earlier files may be missing only where a `log.prune` record names
//! the hash they ended with. The key comes from `--pubkey` (out of band: then even a
//! complete, re-signed rewrite is caught) or, failing that, from the first header.

use super::chain;
use super::files::{self, LogFile};
use super::writer::checkpoint_message;
use super::GENESIS;
use serde::Deserialize;
use std::borrow::Cow;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub checkpoints: u64,
    pub last_signed_seq: Option<u64>,
    /// Records after the last checkpoint: chained, not yet signed.
    pub unsigned_tail: u64,
    pub pubkey: String,
    /// The key was taken from the log itself (no `--pubkey`).
    pub pubkey_from_log: bool,
    pub prunes: u64,
    pub recoveries: u64,
    /// Not proof of tampering, but worth a look (e.g. a long unsigned tail).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The log is not what was written: the first bad place and what is wrong.
    #[error("{file}:{line}: {what}")]
    Tampered { file: String, line: u64, what: String },
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: String },
}

#[derive(Deserialize)]
struct Rec<'a> {
    seq: u64,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(default, borrow)]
    file: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pubkey: Option<Cow<'a, str>>,
    #[serde(default)]
    signed_seq: Option<u64>,
    #[serde(default, borrow)]
    signed_hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sig: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    last_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
}

pub fn verify(dir: &Path, pubkey: Option<&str>) -> Result<Report, Failure> {
    let unreadable =
        |path: &Path, e: std::io::Error| Failure::Unreadable { path: path.display().to_string(), error: e.to_string() };
    let all: Vec<LogFile> = files::list(dir).map_err(|e| unreadable(dir, e))?;
    if all.is_empty() {
        return Err(Failure::Tampered { file: dir.display().to_string(), line: 0, what: "no log files".into() });
    }
    let mut key = pubkey.map(|k| k.trim().to_ascii_lowercase());
    let from_log = key.is_none();
    let mut report = Report {
        files: all.len(),
        records: 0,
        checkpoints: 0,
        last_signed_seq: None,
        unsigned_tail: 0,
        pubkey: String::new(),
        pubkey_from_log: from_log,
        prunes: 0,
        recoveries: 0,
        warnings: Vec::new(),
    };
    // The chain so far: (seq, hash) of the last record.
    let mut head: Option<(u64, String)> = None;
    // The first file's header may link to pruned files: a prune record must explain it.
    let mut unexplained_start: Option<(String, String)> = None;
    // The prune record that explained it (file, line, seq): it must be signed later,
    // or anyone could delete old files and append a matching prune record.
    let mut explained_by: Option<(String, u64, u64)> = None;
    // `ts` of the last checkpoint and of the last record, for the unsigned-tail check.
    let mut last_signed_ts: Option<String> = None;
    let mut last_ts = String::new();
    for (i, f) in all.iter().enumerate() {
        let name = f.id.name();
        let bytes = std::fs::read(&f.path).map_err(|e| unreadable(&f.path, e))?;
        let bad = |line: u64, what: String| Failure::Tampered { file: name.clone(), line, what };
        if bytes.is_empty() {
            return Err(bad(0, "empty file (its records were removed)".into()));
        }
        if bytes.last() != Some(&b'\n') {
            let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            return Err(bad(lines + 1, "truncated: the last line is incomplete".into()));
        }
        let mut last_event = String::new();
        for (n, line) in bytes[..bytes.len() - 1].split(|b| *b == b'\n').enumerate() {
            let lineno = n as u64 + 1;
            let Some((covered, claimed)) = chain::split_hash(line) else {
                return Err(bad(lineno, "not a Menshen record (no hash at its end)".into()));
            };
            if chain::hash_hex(&covered) != claimed {
                return Err(bad(lineno, "edited: the hash does not match the record's contents".into()));
            }
            let r: Rec = serde_json::from_slice(line).map_err(|e| bad(lineno, format!("unreadable record: {e}")))?;
            if lineno == 1 {
                if r.event != "log.header" {
                    return Err(bad(1, format!("the file does not begin with its log.header (found {})", r.event)));
                }
                if r.file.as_deref() != Some(name.as_str()) {
                    return Err(bad(
                        1,
                        format!("the header names file {:?}: renamed or moved", r.file.as_deref().unwrap_or("")),
                    ));
                }
                let hk = r.pubkey.as_deref().unwrap_or("").to_ascii_lowercase();
                match &key {
                    Some(k) if *k != hk => {
                        return Err(bad(1, format!("the header names signing key {hk}, not {k}")));
                    }
                    Some(_) => {}
                    None => key = Some(hk),
                }
            } else if r.event == "log.header" {
                return Err(bad(lineno, "a log.header in the middle of a file: records were inserted".into()));
            }
            match &head {
                None => {
                    if r.prev != GENESIS {
                        unexplained_start = Some((name.clone(), r.prev.to_string()));
                    }
                }
                Some((seq, hash)) => {
                    if r.prev != *hash {
                        let what = if lineno == 1 {
                            format!("the header links to {}, but {} ends with {hash}: a file in between is missing or altered", r.prev, all[i - 1].id.name())
                        } else {
                            "prev does not match the record before: a record was removed, inserted or reordered"
                                .to_string()
                        };
                        return Err(bad(lineno, what));
                    }
                    if r.seq != seq + 1 {
                        return Err(bad(
                            lineno,
                            format!("seq {} follows {seq}: a record was removed, inserted or reordered", r.seq),
                        ));
                    }
                }
            }
            match r.event.as_ref() {
                "log.checkpoint" => {
                    let k = key.as_deref().unwrap_or("");
                    let (Some(sseq), Some(shash), Some(sig)) =
                        (r.signed_seq, r.signed_hash.as_deref(), r.sig.as_deref())
                    else {
                        return Err(bad(lineno, "a checkpoint without its signature fields".into()));
                    };
                    if Some((sseq, shash.to_string())) != head.clone() || shash != r.prev {
                        return Err(bad(lineno, "the checkpoint signs another place in the chain".into()));
                    }
                    if !chain::verify_hex(k, checkpoint_message(sseq, shash).as_bytes(), sig) {
                        return Err(bad(lineno, "the checkpoint's signature is not valid for the key: the records before it were rewritten (or the key is wrong)".into()));
                    }
                    report.checkpoints += 1;
                    report.last_signed_seq = Some(sseq);
                    report.unsigned_tail = 0;
                    last_signed_ts = Some(r.ts.to_string());
                }
                "log.prune" => {
                    report.prunes += 1;
                    if unexplained_start.as_ref().is_some_and(|(_, h)| r.last_hash.as_deref() == Some(h.as_str())) {
                        unexplained_start = None;
                        explained_by = Some((name.clone(), lineno, r.seq));
                    }
                    report.unsigned_tail += 1;
                }
                "log.recovery" => {
                    report.recoveries += 1;
                    report.unsigned_tail += 1;
                }
                _ => report.unsigned_tail += 1,
            }
            report.records += 1;
            last_ts = r.ts.to_string();
            head = Some((r.seq, claimed.to_string()));
            last_event = r.event.into_owned();
        }
        if i + 1 < all.len() && last_event != "log.checkpoint" {
            let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            return Err(bad(lines, "truncated: the file does not end with its closing checkpoint".into()));
        }
    }
    if let Some((file, hash)) = unexplained_start {
        return Err(Failure::Tampered {
            file,
            line: 1,
            what: format!("earlier files are missing: the header links to {hash} and no log.prune record names it"),
        });
    }
    if let Some((file, line, seq)) = explained_by {
        if report.last_signed_seq.is_none_or(|s| s < seq) {
            return Err(Failure::Tampered {
                file,
                line,
                what:
                    "the log.prune record that explains the missing earlier files is not covered by a signed checkpoint"
                        .into(),
            });
        }
    }
    // The writer signs at least every 60 s while it has records: a longer unsigned
    // stretch means it stopped (a crash, a kill) or the tail was rewritten.
    let span =
        |a: &str, b: &str| Some(b.parse::<jiff::Timestamp>().ok()?.duration_since(a.parse::<jiff::Timestamp>().ok()?));
    if let Some(s) = last_signed_ts.as_deref().and_then(|t| span(t, &last_ts)) {
        if report.unsigned_tail > 0 && s > jiff::SignedDuration::from_secs(120) {
            report.warnings.push(format!(
                "the last {} record(s) span {}s after the last checkpoint, which the gateway would have signed: was it killed, or was the tail rewritten?",
                report.unsigned_tail,
                s.as_secs()
            ));
        }
    }
    report.pubkey = key.unwrap_or_default();
    Ok(report)
}
