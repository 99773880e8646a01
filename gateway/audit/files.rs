//! Log file names and their order.
//!
//! A day's first file is `menshen-YYYYMMDD.jsonl`; when it grows past `max_file` the
//! day goes on in `menshen-YYYYMMDD-1.jsonl`, `-2`, … The order is (date, N) with the
//! plain name as N = 0 (a byte-wise sort would put `-1` before `.jsonl`).

use std::path::{Path, PathBuf};

/// Where a file stands in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub date: jiff::civil::Date,
    pub part: u32,
}

impl FileId {
    pub fn name(&self) -> String {
        let d = self.date;
        if self.part == 0 {
            format!("menshen-{:04}{:02}{:02}.jsonl", d.year(), d.month(), d.day())
        } else {
            format!("menshen-{:04}{:02}{:02}-{}.jsonl", d.year(), d.month(), d.day(), self.part)
        }
    }

    pub fn parse(name: &str) -> Option<FileId> {
        let rest = name.strip_prefix("menshen-")?.strip_suffix(".jsonl")?;
        let (date, part) = match rest.split_once('-') {
            Some((d, p)) => (d, p.parse::<u32>().ok().filter(|p| *p > 0)?),
            None => (rest, 0),
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let date = jiff::civil::Date::strptime("%Y%m%d", date).ok()?;
        Some(FileId { date, part })
    }
}

/// A log file on disk.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub id: FileId,
    pub path: PathBuf,
    pub size: u64,
}

/// The log files in `dir`, in order. Other files are ignored.
pub fn list(dir: &Path) -> std::io::Result<Vec<LogFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(FileId::parse) else { continue };
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push(LogFile { id, path: entry.path(), size: meta.len() });
        }
    }
    out.sort_by_key(|f| f.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        let d = jiff::civil::date(2026, 11, 21);
        let a = FileId { date: d, part: 0 };
        let b = FileId { date: d, part: 1 };
        let c = FileId { date: d, part: 12 };
        let next = FileId { date: d.tomorrow().unwrap(), part: 0 };
        assert_eq!(a.name(), "menshen-20261121.jsonl");
        assert_eq!(c.name(), "menshen-20261121-12.jsonl");
        for id in [a, b, c, next] {
            assert_eq!(FileId::parse(&id.name()), Some(id));
        }
        let mut v = vec![next, c, a, b];
        v.sort();
        assert_eq!(v, vec![a, b, c, next]);
        for bad in [
            "menshen-2026112.jsonl",
            "menshen-20261121-0.jsonl",
            "menshen-20261121-x.jsonl",
            "other.jsonl",
            "menshen-20261399.jsonl",
        ] {
            assert_eq!(FileId::parse(bad), None, "{bad}");
        }
    }
}
