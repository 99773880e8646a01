//! What happened under a window, read back from the log (LY-1.6.5): connections,
//! bytes, first and last time, distinct sources.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `ts` of the first `conn.open` under the window.
    pub first: Option<String>,
    /// `end` of the last `conn.close` (or the last open, if none closed yet).
    pub last: Option<String>,
    pub sources: Vec<String>,
}

/// Scan the day files from the window's start date to the day after its end.
pub fn summarize(
    dir: &Path,
    window: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    tz: &jiff::tz::TimeZone,
) -> std::io::Result<Activity> {
    let first_day = start.to_zoned(tz.clone()).date();
    let last_day = end.to_zoned(tz.clone()).date().tomorrow().unwrap_or(jiff::civil::Date::MAX);
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Activity::default()),
        Err(e) => return Err(e),
    };
    files.retain(|p| {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let Some(date) = name.strip_prefix("menshen-").and_then(|r| r.get(..8)) else {
            return false;
        };
        jiff::civil::Date::strptime("%Y%m%d", date).is_ok_and(|d| d >= first_day && d <= last_day)
    });
    files.sort();

    let needle = format!("\"window\":{}", serde_json::Value::from(window));
    let mut conns: HashSet<u64> = HashSet::new();
    let mut sources = BTreeSet::new();
    let mut out = Activity::default();
    #[derive(Deserialize)]
    struct Rec {
        event: String,
        ts: String,
        conn: Option<u64>,
        src_ip: Option<String>,
        bytes_in: Option<u64>,
        bytes_out: Option<u64>,
        end: Option<String>,
    }
    for f in files {
        let file = std::fs::File::open(&f)?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            let open = line.contains("\"event\":\"conn.open\"") && line.contains(&needle);
            let close = line.contains("\"event\":\"conn.close\"");
            if !open && !close {
                continue;
            }
            let Ok(r) = serde_json::from_str::<Rec>(&line) else {
                continue;
            };
            match (r.event.as_str(), r.conn) {
                ("conn.open", Some(c)) => {
                    conns.insert(c);
                    out.connections += 1;
                    out.first.get_or_insert(r.ts.clone());
                    out.last = Some(r.ts);
                    if let Some(s) = r.src_ip {
                        sources.insert(s);
                    }
                }
                ("conn.close", Some(c)) if conns.contains(&c) => {
                    out.bytes_in += r.bytes_in.unwrap_or(0);
                    out.bytes_out += r.bytes_out.unwrap_or(0);
                    out.last = r.end.or(Some(r.ts));
                }
                _ => {}
            }
        }
    }
    out.sources = sources.into_iter().collect();
    Ok(out)
}
