//! The writer task: the only code that touches the log files.
//!
//! Life of a file:
//! ```text
//! open: log.header (prev = last hash of the file before) ─▶ records … ─▶ checkpoints
//!       every 10,000 records and every 60 s ─▶ rotation (day change or past max_file)
//!       or stop: a closing log.checkpoint, fsync ─▶ next file
//! start after a crash: the torn last line is cut off and a log.recovery record says
//! how many bytes and their BLAKE3; the chain goes on from the last whole record.
//! ```

use super::chain::{self, SigningKey};
use super::files::{self, FileId, LogFile};
use super::record::*;
use super::{syslog, write_ts, Entry, LogState, GENESIS};
use crate::config::{OnFull, SyncMode};
use crate::metrics::Metrics;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The most records taken from the queue at once.
const BATCH: usize = 1024;
/// In interval mode, records are written together: after at most this long…
const COALESCE: Duration = Duration::from_millis(10);
/// …or once this much is buffered, whichever comes first.
const COALESCE_BYTES: usize = 64 * 1024;
/// A signed checkpoint after this many records…
const CHECKPOINT_RECORDS: u64 = 10_000;
/// …or this long, whichever comes first (only if something was written).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// The capacity warning (DH-1.13.7), and where it re-arms.
const WARN_RATIO: f64 = 0.7;
const REARM_RATIO: f64 = 0.65;
/// How far back the start-up scan reads to find the last whole record.
const TAIL_SCAN: u64 = 4 << 20;

pub struct WriterSettings {
    pub dir: PathBuf,
    pub gateway: String,
    pub tz: jiff::tz::TimeZone,
    pub sync: SyncMode,
    pub max_file: u64,
    pub max_disk: u64,
    pub on_full: OnFull,
    pub retention_days: u32,
    pub key: SigningKey,
    pub syslog: Option<syslog::Sender>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log directory {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("log directory {dir}: {reason}")]
    Chain { dir: String, reason: String },
}

/// The last whole record of the log: where the chain goes on.
struct Head {
    seq: u64,
    hash: String,
}

pub(super) struct Writer {
    s: WriterSettings,
    metrics: Arc<Metrics>,
    state: Arc<LogState>,
    seq: u64,
    prev: String,
    /// The file being written and its size (written bytes plus `buf`).
    file: Option<(FileId, std::fs::File)>,
    /// A file that should be open but could not be yet (its header is in `buf`).
    pending: Option<FileId>,
    size: u64,
    /// The name of the last file written (the next header's `previous_file`).
    last_name: Option<String>,
    /// Closed files, oldest first, with their sizes: what retention and overwrite prune.
    closed: Vec<LogFile>,
    /// All log files together, bytes.
    total: u64,
    /// Records not yet written (kept across a failed write).
    buf: Vec<u8>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    warned: bool,
    full: bool,
    failing: Option<(Instant, String)>,
    /// The syslog copy missed these sequence numbers (its queue was full).
    syslog_gap: Option<(u64, u64, u64)>,
    recovery: Option<Recovery>,
}

impl Writer {
    /// Scan the directory, seal a torn tail, and find where the chain goes on.
    pub(super) fn open(s: WriterSettings, metrics: Arc<Metrics>, state: Arc<LogState>) -> Result<Self, OpenError> {
        let dir = s.dir.display().to_string();
        let io = |source| OpenError::Io { dir: dir.clone(), source };
        std::fs::create_dir_all(&s.dir).map_err(io)?;
        // A directory we cannot write to is a start-up error, not a silent loss.
        let probe = s.dir.join(".menshen-write-probe");
        std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe)).map_err(|e| OpenError::Io {
            dir: dir.clone(),
            source: std::io::Error::new(e.kind(), format!("not writable: {e}")),
        })?;
        let mut all = files::list(&s.dir).map_err(io)?;
        let mut recovery = None;
        let mut head = None;
        // The newest file holds the head; a torn tail (a crash mid-write) is cut off.
        while let Some(last) = all.last_mut() {
            let (found, torn) = last_record(&last.path).map_err(io)?;
            if let Some((torn_bytes, torn_blake3)) = torn {
                let f = std::fs::OpenOptions::new().write(true).open(&last.path).map_err(io)?;
                last.size -= torn_bytes;
                f.set_len(last.size).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::warn!(file = %last.path.display(), torn_bytes, "sealed a torn log tail (the gateway did not stop cleanly)");
                recovery = Some(Recovery { file: last.id.name(), torn_bytes, torn_blake3 });
            }
            match found {
                LastLine::Record(h) => {
                    head = Some(h);
                    break;
                }
                LastLine::Unreadable => {
                    return Err(OpenError::Chain {
                        dir: dir.clone(),
                        reason: format!(
                            "the last record of {} is unreadable; it may have been altered: run `menshen log verify`",
                            last.path.display()
                        ),
                    });
                }
                LastLine::Empty => {
                    // Only a torn first line was in it: the file is empty now.
                    std::fs::remove_file(&last.path).map_err(io)?;
                    all.pop();
                }
            }
        }
        let total = all.iter().map(|f| f.size).sum();
        let last_name = all.last().map(|f| f.id.name());
        // The newest file is resumed: the recovery record (if any) goes right after the
        // cut, and the file is closed with a checkpoint when it rotates, like any other.
        let (file, size) = match all.pop() {
            Some(last) => {
                let f = std::fs::OpenOptions::new().append(true).open(&last.path).map_err(io)?;
                (Some((last.id, f)), last.size)
            }
            None => (None, 0),
        };
        let (seq, prev) = match head {
            Some(h) => (h.seq, h.hash),
            None => (0, GENESIS.to_string()),
        };
        Ok(Writer {
            s,
            metrics,
            state,
            seq,
            prev,
            file,
            pending: None,
            size,
            last_name,
            closed: all,
            total,
            buf: Vec::with_capacity(256 * 1024),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            warned: false,
            full: false,
            failing: None,
            syslog_gap: None,
            recovery,
        })
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let always = self.s.sync == SyncMode::Always;
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        let mut write_by: Option<tokio::time::Instant> = None;
        let mut housekeeping = Instant::now();
        let now = jiff::Timestamp::now().to_zoned(self.s.tz.clone());
        if self.file.is_some() {
            if let Some(r) = self.recovery.take() {
                self.append(&Event::Recovery(r), &now);
            }
        }
        // Seal and leave a file of another day (or a full one) before anything else.
        self.before_record(&now).await;
        self.housekeeping(now.timestamp()).await;
        self.write_retrying(always).await;
        loop {
            let deadline = write_by.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for entry in batch.drain(..) {
                        let zoned = entry.ts.to_zoned(self.s.tz.clone());
                        self.before_record(&zoned).await;
                        self.append(&entry.event, &zoned);
                        if self.since_checkpoint >= CHECKPOINT_RECORDS {
                            self.checkpoint(&zoned);
                        }
                    }
                    if always || self.buf.len() >= COALESCE_BYTES {
                        self.write_retrying(always).await;
                        self.make_room().await;
                        dirty = !always;
                        write_by = None;
                    } else if write_by.is_none() {
                        write_by = Some(tokio::time::Instant::now() + COALESCE);
                    }
                }
                _ = tokio::time::sleep_until(deadline), if write_by.is_some() => {
                    self.write_retrying(false).await;
                    self.make_room().await;
                    dirty = true;
                    write_by = None;
                }
                _ = tick.tick() => {
                    let now = jiff::Timestamp::now();
                    if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                        let zoned = now.to_zoned(self.s.tz.clone());
                        self.before_record(&zoned).await;
                        self.checkpoint(&zoned);
                        self.write_retrying(always).await;
                        dirty = !always;
                    }
                    if dirty {
                        match self.fsync().await {
                            Ok(()) => dirty = false,
                            Err(e) => {
                                self.metrics.log_write_errors.inc();
                                tracing::error!(error = %e, "log fsync failed; retrying");
                            }
                        }
                    }
                    // Retention hourly; capacity every 10 s while full (space may be back).
                    let every = if self.full { Duration::from_secs(2) } else { Duration::from_secs(3600) };
                    if housekeeping.elapsed() >= every {
                        housekeeping = Instant::now();
                        self.housekeeping(now).await;
                        if !self.buf.is_empty() {
                            self.write_retrying(always).await;
                            dirty = !always;
                        }
                    }
                }
            }
        }
        // Every sender is gone: close the chain with a signature and make it durable.
        if self.file.is_some() || self.since_checkpoint > 0 {
            let zoned = jiff::Timestamp::now().to_zoned(self.s.tz.clone());
            self.checkpoint(&zoned);
        }
        for attempt in 1..=5 {
            match self.write(true).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.log_write_errors.inc();
                    tracing::error!(error = %e, attempt, "final log write failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tracing::error!(bytes = self.buf.len(), "giving up on the log tail at shutdown");
    }

    /// Make sure a file is open for a record dated `zoned`, rotating when the day
    /// changed or the file is past `max_file`.
    async fn before_record(&mut self, zoned: &jiff::Zoned) {
        let current = self.file.as_ref().map(|(id, _)| *id).or(self.pending);
        // Never back to an earlier day (a record stamped 23:59:59.999 arriving after
        // midnight, or a clock stepped back): files must follow the chain's order.
        let date = current.map_or(zoned.date(), |c| c.date.max(zoned.date()));
        let rotate = match current {
            None => true,
            Some(id) => id.date != date || self.size >= self.s.max_file,
        };
        if !rotate {
            return;
        }
        if current.is_some() {
            // Close the old file with a signature; it must be durable before the next.
            self.checkpoint(zoned);
            self.write_retrying(true).await;
            if let Some((id, _)) = self.file.take() {
                self.closed.push(LogFile { id, path: self.s.dir.join(id.name()), size: self.size });
            }
        }
        let id = self.next_id(date);
        let name = id.name();
        self.size = 0;
        // If it cannot be opened now, the next write tries again (and fails closed
        // meanwhile); the header below is the file's first record either way.
        self.pending = Some(id);
        self.open_pending();
        let header = Header {
            file: name.clone(),
            previous_file: self.last_name.replace(name),
            pubkey: self.s.key.public_hex(),
            version: env!("CARGO_PKG_VERSION"),
        };
        self.append(&Event::Header(header), zoned);
        if let Some(r) = self.recovery.take() {
            self.append(&Event::Recovery(r), zoned);
        }
    }

    fn open_pending(&mut self) -> Option<std::io::Error> {
        let id = self.pending?;
        match std::fs::OpenOptions::new().create(true).append(true).open(self.s.dir.join(id.name())) {
            Ok(f) => {
                self.file = Some((id, f));
                self.pending = None;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, file = %id.name(), "cannot open a new log file");
                Some(e)
            }
        }
    }

    /// The next file for `date`: after the newest existing part of that day.
    fn next_id(&self, date: jiff::civil::Date) -> FileId {
        let newest = self.closed.iter().filter(|f| f.id.date == date).map(|f| f.id.part).max();
        FileId { date, part: newest.map_or(0, |p| p + 1) }
    }

    /// Serialize one record into the buffer (and the syslog copy).
    fn append(&mut self, event: &Event, zoned: &jiff::Zoned) {
        let start = self.buf.len();
        self.seq += 1;
        let _ = write!(self.buf, "{{\"seq\":{},\"ts\":\"", self.seq);
        write_ts(&mut self.buf, zoned);
        let _ = write!(self.buf, "\",\"event\":\"{}\",\"gateway\":", event.name());
        let _ = serde_json::to_writer(&mut self.buf, &self.s.gateway);
        let fields_at = self.buf.len();
        if event.write_fields(&mut self.buf).is_err() {
            self.buf.truncate(fields_at);
            self.buf.extend_from_slice(b"{}");
        }
        // Splice the event's object into the record: drop its braces.
        let end = self.buf.len();
        if end - fields_at > 2 {
            self.buf[fields_at] = b',';
            self.buf.truncate(end - 1);
        } else {
            self.buf.truncate(fields_at);
        }
        let _ = write!(self.buf, ",\"prev\":\"{}\"}}", self.prev);
        let hash = blake3::hash(&self.buf[start..]).to_hex();
        self.buf.pop();
        let _ = writeln!(self.buf, ",\"hash\":\"{hash}\"}}");
        self.prev = hash.to_string();
        self.size += (self.buf.len() - start) as u64;
        self.since_checkpoint += 1;
        self.metrics.log_records.inc();
        if self.s.syslog.is_some() {
            self.copy_to_syslog(start, event.name(), zoned);
        }
    }

    fn copy_to_syslog(&mut self, start: usize, event: &'static str, zoned: &jiff::Zoned) {
        let Some(tx) = &self.s.syslog else { return };
        let line = &self.buf[start..self.buf.len() - 1];
        if tx.send(line, event, zoned) {
            if let Some((dropped, first, last)) = self.syslog_gap.take() {
                let gap = SyslogGap { dropped, first_seq: first, last_seq: last };
                self.append(&Event::SyslogGap(gap), zoned);
            }
        } else {
            let seq = self.seq;
            let gap = self.syslog_gap.get_or_insert((0, seq, seq));
            gap.0 += 1;
            gap.2 = seq;
        }
    }

    /// A signed checkpoint over the chain head.
    fn checkpoint(&mut self, zoned: &jiff::Zoned) {
        let msg = checkpoint_message(self.seq, &self.prev);
        let cp = Checkpoint {
            signed_seq: self.seq,
            signed_hash: self.prev.clone(),
            sig: self.s.key.sign_hex(msg.as_bytes()),
        };
        self.append(&Event::Checkpoint(cp), zoned);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// Write, retrying every second until it works. Meanwhile no record is taken from
    /// the queue (senders wait: nothing is dropped), and `on_full` decides whether new
    /// connections are refused or the oldest file makes room.
    async fn write_retrying(&mut self, sync: bool) {
        loop {
            match self.write(sync).await {
                Ok(()) => {
                    if let Some((since, error)) = self.failing.take() {
                        let refused = self.state.refused.swap(0, Ordering::Relaxed);
                        self.set_refuse(self.full && self.s.on_full == OnFull::Refuse);
                        tracing::info!(%error, "log writes work again");
                        let zoned = jiff::Timestamp::now().to_zoned(self.s.tz.clone());
                        let failed_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                        self.append(
                            &Event::WriteRecovered(WriteRecovered { error, failed_ms, refused_connections: refused }),
                            &zoned,
                        );
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.log_write_errors.inc();
                    tracing::error!(error = %e, dir = %self.s.dir.display(), "log write failed; retrying in 1 s (new records wait)");
                    if self.failing.is_none() {
                        self.failing = Some((Instant::now(), e.to_string()));
                    }
                    // overwrite-oldest makes room on ENOSPC and goes on; otherwise no
                    // unlogged traffic while records cannot be written, whatever on_full says.
                    if self.s.on_full == OnFull::OverwriteOldest
                        && e.raw_os_error() == Some(28)
                        && Box::pin(self.prune_oldest(1, "overwrite-oldest", true)).await
                    {
                        continue;
                    }
                    self.set_refuse(true);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn set_refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::Relaxed);
    }

    /// Write the buffer to the current file; with `sync`, also fsync it.
    async fn write(&mut self, sync: bool) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            if let Some(e) = self.open_pending() {
                return Err(e);
            }
            let Some((_, f)) = self.file.as_ref() else {
                return Err(std::io::Error::other("no log file is open"));
            };
            // On a blocking thread: under disk pressure even a page-cache write can
            // stall, and on one core that would stall every connection.
            let mut f = f.try_clone()?;
            let buf = std::mem::take(&mut self.buf);
            let write = move || {
                // A failed write may have written part of the batch: cut the file back
                // to where the batch began, so the retry writes it whole, once. (If even
                // that fails, verify reports the seam; nothing is lost silently.)
                let before = f.metadata().map(|m| m.len());
                let result = f.write_all(&buf);
                if let (Err(_), Ok(len)) = (&result, before) {
                    let _ = f.set_len(len);
                }
                (result, buf)
            };
            let (result, mut buf) = tokio::task::spawn_blocking(write).await.map_err(std::io::Error::other)?;
            if let Err(e) = result {
                self.buf = buf;
                return Err(e);
            }
            self.total += buf.len() as u64;
            buf.clear();
            self.buf = buf;
            self.capacity();
        }
        if sync {
            self.fsync().await?;
        }
        Ok(())
    }

    /// fsync on a blocking thread: a slow disk must not stall the async workers.
    async fn fsync(&self) -> std::io::Result<()> {
        let Some((_, f)) = &self.file else { return Ok(()) };
        let f = f.try_clone()?;
        tokio::task::spawn_blocking(move || f.sync_data()).await.map_err(std::io::Error::other)?
    }

    /// React to the space used: warn at 70 %, and at 100 % (on_full = refuse) refuse
    /// new connections until there is room again.
    fn capacity(&mut self) {
        let ratio = self.total as f64 / self.s.max_disk as f64;
        self.metrics.log_disk_usage.set(ratio);
        let event = if ratio >= WARN_RATIO && !self.warned {
            self.warned = true;
            Some("log.capacity_warning")
        } else {
            if ratio < REARM_RATIO {
                self.warned = false;
            }
            None
        };
        let mut events: Vec<&'static str> = event.into_iter().collect();
        if ratio >= 1.0 && !self.full && self.s.on_full == OnFull::Refuse {
            self.full = true;
            self.set_refuse(true);
            tracing::error!(
                usage = self.total,
                max_disk = self.s.max_disk,
                "log is full: refusing new connections (on_full = refuse)"
            );
            events.push("log.full");
        } else if ratio < 1.0 && self.full {
            self.full = false;
            if self.failing.is_none() {
                self.set_refuse(false);
            }
            events.push("log.capacity_ok");
        }
        if events.is_empty() {
            return;
        }
        let zoned = jiff::Timestamp::now().to_zoned(self.s.tz.clone());
        let on_full = match self.s.on_full {
            OnFull::Refuse => "refuse",
            OnFull::OverwriteOldest => "overwrite-oldest",
        };
        for event in events {
            let c = Capacity {
                event,
                usage_bytes: self.total,
                max_disk: self.s.max_disk,
                ratio: (ratio * 1000.0).round() / 1000.0,
                on_full,
            };
            self.append(&Event::Capacity(c), &zoned);
        }
    }

    /// Retention, the disk cap, and a fresh look at the space used.
    async fn housekeeping(&mut self, now: jiff::Timestamp) {
        // Sizes change under us when an admin removes files: count again.
        if let Ok(all) = files::list(&self.s.dir) {
            let current = self.file.as_ref().map(|(id, _)| *id);
            self.closed = all.iter().filter(|f| Some(f.id) != current).cloned().collect();
            self.total = all.iter().map(|f| f.size).sum::<u64>() + self.buf.len() as u64;
        }
        let today = now.to_zoned(self.s.tz.clone()).date();
        let keep_from = today.checked_sub(jiff::Span::new().days(i64::from(self.s.retention_days))).unwrap_or(today);
        let expired = self.closed.iter().take_while(|f| f.id.date < keep_from).count();
        if expired > 0 {
            self.prune_oldest(expired, "retention", false).await;
        }
        if self.s.on_full == OnFull::OverwriteOldest {
            while self.total as f64 >= self.s.max_disk as f64 && !self.closed.is_empty() {
                if !self.prune_oldest(1, "overwrite-oldest", false).await {
                    break;
                }
            }
        }
        self.capacity();
    }

    /// `on_full = "overwrite-oldest"`: past `max_disk`, remove the oldest files (with
    /// a prune record) until the rest fits again; the current file is never removed.
    async fn make_room(&mut self) {
        while self.s.on_full == OnFull::OverwriteOldest && self.total >= self.s.max_disk && !self.closed.is_empty() {
            if !Box::pin(self.prune_oldest(1, "overwrite-oldest", false)).await {
                break;
            }
        }
    }

    /// Remove the `n` oldest closed files, first writing (durably) a prune record that
    /// names them and the hash their last record had. False if nothing could be removed.
    /// With `delete_first` (the disk is full), the files go before the record is
    /// written, or there would be no room for it; otherwise the record is durable first.
    async fn prune_oldest(&mut self, n: usize, reason: &'static str, delete_first: bool) -> bool {
        let n = n.min(self.closed.len());
        if n == 0 {
            return false;
        }
        let victims: Vec<LogFile> = self.closed[..n].to_vec();
        let Some(newest) = victims.last() else { return false };
        let Ok((LastLine::Record(head), _)) = last_record(&newest.path) else {
            tracing::error!(file = %newest.path.display(), "cannot read the last record of a file to prune; keeping it");
            return false;
        };
        // Appended to the current file, without rotating: rotation itself may be what
        // needs the room.
        let zoned = jiff::Timestamp::now().to_zoned(self.s.tz.clone());
        let files = victims.iter().map(|f| f.id.name()).collect();
        self.append(&Event::Prune(Prune { reason, files, last_seq: head.seq, last_hash: head.hash }), &zoned);
        // Signed at once: verify accepts a prune only under a signature.
        self.checkpoint(&zoned);
        if !delete_first && self.write(true).await.is_err() {
            return false;
        }
        for v in &victims {
            match std::fs::remove_file(&v.path) {
                Ok(()) => self.total = self.total.saturating_sub(v.size),
                Err(e) => tracing::error!(error = %e, file = %v.path.display(), "cannot remove a pruned log file"),
            }
        }
        self.closed.drain(..n);
        tracing::info!(reason, files = n, "pruned old log files");
        true
    }
}

/// What a checkpoint's signature covers.
pub fn checkpoint_message(seq: u64, hash: &str) -> String {
    format!("menshen-checkpoint:{seq}:{hash}")
}

/// The last whole line of a file.
enum LastLine {
    Record(Head),
    /// A whole line that is not a Menshen record.
    Unreadable,
    Empty,
}

/// The last whole record of a file (its seq and the hash it claims), and the torn
/// bytes after it if the file does not end with a newline: (length, BLAKE3).
fn last_record(path: &Path) -> std::io::Result<(LastLine, Option<(u64, String)>)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL_SCAN);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    let whole = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let torn =
        (whole < tail.len()).then(|| ((tail.len() - whole) as u64, blake3::hash(&tail[whole..]).to_hex().to_string()));
    let Some(line) = tail[..whole].split(|b| *b == b'\n').rev().find(|l| !l.is_empty()) else {
        return Ok((LastLine::Empty, torn));
    };
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let head = chain::split_hash(line).and_then(|(_, claimed)| {
        Some(Head { seq: serde_json::from_slice::<Seq>(line).ok()?.seq, hash: claimed.to_string() })
    });
    Ok((head.map_or(LastLine::Unreadable, LastLine::Record), torn))
}
