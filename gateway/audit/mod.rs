//! The connection and audit log: JSON Lines, one file per day in the gateway's time
//! zone (`menshen-YYYYMMDD.jsonl`), written by one task fed by a bounded channel.
//!
//! ```text
//! conn tasks ──record()──▶ [bounded mpsc] ──▶ writer task: seq, ts, prev/hash ──▶ file
//!   (wait when full,                            batch write, fsync per `sync`,
//!    counted in metrics)                        day change -> new file
//! ```
//! A record is never dropped: when the channel is full a sender waits (new connections
//! wait behind it) and `menshen_log_queue_full_total` counts it; when a write fails the
//! writer keeps the batch, counts `menshen_log_write_errors_total`, retries every second
//! and stops taking new records meanwhile, which backs up to the senders.
//! Every record carries `prev` (the previous record's hash) and `hash` (BLAKE3 of the
//! record's bytes as written, without its `hash` field).

pub mod record;

pub use record::*;

use crate::config::SyncMode;
use crate::metrics::Metrics;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Records queued between the connection tasks and the writer.
const QUEUE: usize = 16 * 1024;
/// The most records taken from the queue at once.
const BATCH: usize = 1024;
/// In interval mode, records are written together: after at most this long…
const COALESCE: Duration = Duration::from_millis(10);
/// …or once this much is buffered, whichever comes first.
const COALESCE_BYTES: usize = 64 * 1024;
/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Entry {
    ts: jiff::Timestamp,
    event: Event,
}

/// Sends records to the writer. Cheap to clone; the writer ends when every clone is gone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Entry>,
    metrics: Arc<Metrics>,
    tz: jiff::tz::TimeZone,
}

/// Where the writer stands in the chain.
struct Chain {
    seq: u64,
    prev: String,
}

pub struct WriterSettings {
    pub dir: PathBuf,
    pub gateway: String,
    pub tz: jiff::tz::TimeZone,
    pub sync: SyncMode,
}

impl AuditLog {
    /// Open the log directory and start the writer task.
    pub fn start(
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(AuditLog, tokio::task::JoinHandle<()>)> {
        std::fs::create_dir_all(&settings.dir)?;
        let chain = resume_chain(&settings.dir)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let tz = settings.tz.clone();
        let writer = Writer {
            s: settings,
            chain,
            file: None,
            day: None,
            metrics: metrics.clone(),
            buf: Vec::with_capacity(256 * 1024),
        };
        let handle = tokio::spawn(writer.run(rx));
        Ok((AuditLog { tx, metrics, tz }, handle))
    }

    /// Queue a record, waiting while the queue is full.
    pub async fn record(&self, event: Event) {
        let entry = Entry { ts: jiff::Timestamp::now(), event };
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(entry)) => {
                self.metrics.log_queue_full.inc();
                if self.tx.send(entry).await.is_err() {
                    tracing::error!("log writer is gone; record lost");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("log writer is gone; record lost")
            }
        }
    }

    /// Queue a record from synchronous code (a `Drop`): when the queue is full, a task
    /// waits for room instead, so the record is still never dropped.
    pub fn record_detached(&self, event: Event) {
        let entry = Entry { ts: jiff::Timestamp::now(), event };
        if let Err(mpsc::error::TrySendError::Full(entry)) = self.tx.try_send(entry) {
            self.metrics.log_queue_full.inc();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(entry).await;
            });
        }
    }

    /// An RFC 3339 time in the gateway's zone, as used in records.
    pub fn format_ts(&self, ts: jiff::Timestamp) -> String {
        format_ts(ts, &self.tz)
    }
}

/// RFC 3339 with milliseconds and the zone's offset, e.g. `2026-11-21T18:34:05.120+08:00`.
pub fn format_ts(ts: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let mut out = Vec::with_capacity(29);
    write_ts(&mut out, &ts.to_zoned(tz.clone()));
    String::from_utf8(out).unwrap_or_default()
}

/// The same, appended to a buffer (the writer's hot path: no strftime).
fn write_ts(out: &mut Vec<u8>, z: &jiff::Zoned) {
    let off = z.offset().seconds();
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute(),
        z.second(),
        z.millisecond(),
        off / 3600,
        (off / 60) % 60
    );
}

/// The file of a day: `menshen-YYYYMMDD.jsonl`.
pub fn file_name(date: jiff::civil::Date) -> String {
    format!("menshen-{:04}{:02}{:02}.jsonl", date.year(), date.month(), date.day())
}

struct Writer {
    s: WriterSettings,
    chain: Chain,
    file: Option<std::fs::File>,
    day: Option<jiff::civil::Date>,
    metrics: Arc<Metrics>,
    /// Serialized records not yet written (kept across a failed write).
    buf: Vec<u8>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let always = self.s.sync == SyncMode::Always;
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Written but not yet fsynced (interval mode).
        let mut dirty = false;
        // When the records buffered so far must be written (interval mode).
        let mut write_by: Option<tokio::time::Instant> = None;
        loop {
            let deadline = write_by.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for entry in batch.drain(..) {
                        let zoned = entry.ts.to_zoned(self.s.tz.clone());
                        let date = zoned.date();
                        if self.day.is_some_and(|d| d != date) {
                            // The old day's records go to the old day's file, durably.
                            self.write_retrying(true).await;
                            self.file = None;
                        }
                        self.day = Some(date);
                        self.append(&entry.event, &zoned);
                    }
                    if always || self.buf.len() >= COALESCE_BYTES {
                        self.write_retrying(always).await;
                        dirty = !always;
                        write_by = None;
                    } else if write_by.is_none() {
                        write_by = Some(tokio::time::Instant::now() + COALESCE);
                    }
                }
                _ = tokio::time::sleep_until(deadline), if write_by.is_some() => {
                    self.write_retrying(false).await;
                    dirty = true;
                    write_by = None;
                }
                _ = tick.tick(), if dirty => {
                    match self.fsync().await {
                        Ok(()) => dirty = false,
                        Err(e) => {
                            self.metrics.log_write_errors.inc();
                            tracing::error!(error = %e, "log fsync failed; retrying");
                        }
                    }
                }
            }
        }
        // Every sender is gone: write what is left and make it durable.
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

    /// Write the buffer, retrying every second until it works; meanwhile no record is
    /// taken from the queue, so senders wait (nothing is dropped).
    async fn write_retrying(&mut self, sync: bool) {
        while let Err(e) = self.write(sync).await {
            self.metrics.log_write_errors.inc();
            tracing::error!(error = %e, dir = %self.s.dir.display(), "log write failed; retrying in 1 s (new records wait)");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Serialize one record into the buffer.
    fn append(&mut self, event: &Event, zoned: &jiff::Zoned) {
        let start = self.buf.len();
        self.chain.seq += 1;
        let _ = write!(self.buf, "{{\"seq\":{},\"ts\":\"", self.chain.seq);
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
        let _ = write!(self.buf, ",\"prev\":\"{}\"}}", self.chain.prev);
        let hash = blake3::hash(&self.buf[start..]).to_hex();
        self.buf.pop();
        let _ = writeln!(self.buf, ",\"hash\":\"{hash}\"}}");
        self.chain.prev = hash.to_string();
        self.metrics.log_records.inc();
    }

    /// Write the buffer to the day's file; with `sync`, also fsync it.
    async fn write(&mut self, sync: bool) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            if self.file.is_none() {
                let day = self.day.unwrap_or_else(|| jiff::Timestamp::now().to_zoned(self.s.tz.clone()).date());
                let path = self.s.dir.join(file_name(day));
                self.file = Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
            }
            if let Some(f) = self.file.as_mut() {
                // A page-cache write: short enough to make here.
                f.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        if sync {
            self.fsync().await?;
        }
        Ok(())
    }

    /// fsync on a blocking thread: a slow disk must not stall the async workers.
    async fn fsync(&self) -> std::io::Result<()> {
        let Some(f) = &self.file else { return Ok(()) };
        let f = f.try_clone()?;
        tokio::task::spawn_blocking(move || f.sync_data()).await.map_err(std::io::Error::other)?
    }
}

/// Continue the chain from the newest record in the directory, if any.
fn resume_chain(dir: &Path) -> std::io::Result<Chain> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("menshen-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for path in files.iter().rev() {
        let text = std::fs::read_to_string(path)?;
        for line in text.lines().rev() {
            #[derive(serde::Deserialize)]
            struct Tail {
                seq: u64,
                hash: String,
            }
            if let Ok(t) = serde_json::from_str::<Tail>(line) {
                return Ok(Chain { seq: t.seq, prev: t.hash });
            }
        }
    }
    Ok(Chain { seq: 0, prev: GENESIS.to_string() })
}
