//! The log must never be the proxy's bottleneck, and an auditor's check must be quick.
//!
//! Writes 300,000 `http.request` records through the real writer (hash chain, signed
//! checkpoints every 10,000 records, `sync = "interval"`) on a single-threaded runtime
//! (one core), then verifies the directory. Targets: >= 100,000 records/s written,
//! >= 200,000 records/s verified. Run: `cargo bench --bench log_writer`.

use menshen::audit::{chain::SigningKey, AuditLog, Event, HttpRequest, WriterSettings};
use menshen::config::{OnFull, SyncMode};
use menshen::metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;

const RECORDS: u64 = 300_000;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let written = rt.block_on(async {
        let settings = WriterSettings {
            dir: dir.path().join("log"),
            gateway: "bench".into(),
            tz: jiff::tz::TimeZone::get("Asia/Taipei").expect("tz"),
            sync: SyncMode::Interval,
            max_file: 256 << 20,
            max_disk: 20 << 30,
            on_full: OnFull::Refuse,
            retention_days: 180,
            key: SigningKey::load_or_create(&dir.path().join("state")).expect("key"),
            syslog: None,
        };
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let (log, writer) = AuditLog::start(settings, metrics).expect("log");
        let started = Instant::now();
        for i in 0..RECORDS {
            log.record(Event::HttpRequest(HttpRequest {
                conn: 1_795_257_680_250_000_000 + i / 10,
                service: "school-admin".into(),
                src_ip: "192.168.10.23".parse().expect("ip"),
                method: "GET".into(),
                host: "admin.longsheng.example".into(),
                path: "/grades/2026/class-3".into(),
                status: 200,
                duration_ms: 12,
                bytes_out: 18_234,
            }))
            .await;
        }
        drop(log);
        writer.await.expect("writer");
        started.elapsed()
    });
    let rate = RECORDS as f64 / written.as_secs_f64();
    println!(
        "log writer: {RECORDS} records in {:.2} s = {:.0} records/s (chain, checkpoints, interval sync, one core)",
        written.as_secs_f64(),
        rate
    );

    let started = Instant::now();
    let report = menshen::audit::verify::verify(&dir.path().join("log"), None).expect("intact");
    let took = started.elapsed();
    println!(
        "log verify: {} records in {:.2} s = {:.0} records/s ({} checkpoints)",
        report.records,
        took.as_secs_f64(),
        report.records as f64 / took.as_secs_f64(),
        report.checkpoints
    );
}
