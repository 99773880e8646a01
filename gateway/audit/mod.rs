//! The connection and audit log an auditor can verify.
//!
//! ```text
//! conn tasks ──record()──▶ [bounded mpsc] ──▶ writer task ──▶ menshen-YYYYMMDD[-N].jsonl
//!   (wait when full,                           seq, ts, prev/hash, checkpoints,
//!    counted in metrics)                       rotation, retention, capacity ──▶ syslog copy
//! ```
//! JSON Lines, one file per day in the gateway's time zone, continued in `-1`, `-2`, …
//! past `max_file`. Every file starts with a `log.header` (the signing key, the file
//! before); every record has `prev` and `hash` (see `chain`); `log.checkpoint` records
//! sign the chain head with the gateway's Ed25519 key. `menshen log verify` checks it all.
//!
//! Nothing is dropped silently: a full queue makes senders wait (`log_queue_full_total`);
//! a failing disk makes the writer retry every second while records wait; at `max_disk`
//! or on a write error, `on_full = "refuse"` refuses new connections (fail closed) and
//! `"overwrite-oldest"` removes the oldest file with a `log.prune` record.

pub mod chain;
pub mod files;
pub mod record;
pub mod syslog;
pub mod verify;
pub mod writer;

pub use record::*;
pub use writer::WriterSettings;

use crate::metrics::Metrics;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Records queued between the connection tasks and the writer.
const QUEUE: usize = 16 * 1024;
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
    state: Arc<LogState>,
}

/// What the rest of the gateway needs to know about the log's health.
#[derive(Debug, Default)]
pub struct LogState {
    /// New connections must be refused: the log is full or failing and `on_full` is
    /// `refuse` (fail closed).
    pub refuse: AtomicBool,
    /// Connections refused for it since the log last worked.
    pub refused: AtomicU64,
}

impl AuditLog {
    /// Open the log directory (sealing a torn tail) and start the writer task.
    pub fn start(
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(AuditLog, tokio::task::JoinHandle<()>), writer::OpenError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tz = settings.tz.clone();
        let state = Arc::new(LogState::default());
        let writer = writer::Writer::open(settings, metrics.clone(), state.clone())?;
        let handle = tokio::spawn(writer.run(rx));
        Ok((AuditLog { tx, metrics, tz, state }, handle))
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
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::error!("log writer is gone; record lost"),
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

    /// Whether new connections must be refused now (fail closed), counting the refusal.
    pub fn refuses_connections(&self) -> bool {
        let refuse = self.state.refuse.load(Ordering::Relaxed);
        if refuse {
            self.state.refused.fetch_add(1, Ordering::Relaxed);
        }
        refuse
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
