//! Prometheus metrics: one registry built at start and passed down as `Arc<Metrics>`.
//! Label values come from bounded sets only (listener and service names from the config,
//! enum reasons, status codes): never a client address, path or raw host.

pub mod clock;
pub mod http;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub bytes: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub tls_handshake_failures: IntCounterVec,
    pub log_records: IntCounter,
    pub log_write_errors: IntCounter,
    /// Times a sender found the log queue full and had to wait.
    pub log_queue_full: IntCounter,
    pub build_info: IntGaugeVec,
    /// Windows per state (set when scraped, from the store).
    pub windows: IntGaugeVec,
    /// Connections cut because the window they rode ended, was revoked or denied.
    pub window_cuts: IntCounter,
    /// All log files together over `max_disk`.
    pub log_disk_usage: prometheus::Gauge,
    /// Admin accounts or sources locked out after failed logins.
    pub admin_lockouts: IntCounter,
    /// Config loads by result (`ok`, `error`); the start counts as the first `ok`.
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: prometheus::Gauge,
    /// 1 when the kernel says the clock is NTP-synchronized, else 0 (DH-1.17.3).
    pub clock_synchronized: IntGauge,
}

impl Metrics {
    /// Read the clock state again (on each scrape).
    pub fn refresh_clock(&self) {
        self.clock_synchronized.set(i64::from(clock::synchronized().unwrap_or(false)));
    }

    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("menshen".into()), None)?;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time from request to the end of the response.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["service"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let m = Metrics {
            connections: counter_vec(
                "connections_total",
                "Connections decided, by outcome.",
                &["listener", "service", "action", "reason"],
            )?,
            connections_active: gauge_vec(
                "connections_active",
                "Allowed connections now open.",
                &["listener", "service"],
            )?,
            bytes: counter_vec(
                "bytes_total",
                "Bytes through allowed connections (in: from clients, out: to clients).",
                &["service", "direction"],
            )?,
            http_requests: counter_vec("http_requests_total", "HTTP requests, by status code.", &["service", "code"])?,
            http_duration,
            tls_handshake_failures: counter_vec(
                "tls_handshake_failures_total",
                "Failed TLS handshakes.",
                &["listener", "reason"],
            )?,
            log_records: counter("log_records_total", "Records written to the log.")?,
            log_write_errors: counter("log_write_errors_total", "Failed log writes or fsyncs (retried).")?,
            log_queue_full: counter("log_queue_full_total", "Times a record waited because the log queue was full.")?,
            build_info: gauge_vec("build_info", "Always 1; the version as a label.", &["version"])?,
            windows: gauge_vec("windows", "Access windows by state.", &["state"])?,
            window_cuts: counter("window_cuts_total", "Connections cut at the end of their window.")?,
            log_disk_usage: {
                let g = prometheus::Gauge::new("log_disk_usage_ratio", "All log files together over log.max_disk.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            admin_lockouts: counter("admin_lockouts_total", "Admin accounts or sources locked out.")?,
            config_reloads: counter_vec("config_reloads_total", "Config loads, by result.", &["result"])?,
            config_last_reload_success: {
                let g = prometheus::Gauge::new(
                    "config_last_reload_success_timestamp_seconds",
                    "When the running config was loaded (Unix time).",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            clock_synchronized: {
                let g = IntGauge::new("clock_synchronized", "1 if the kernel reports the clock NTP-synchronized.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.refresh_clock();
        Ok(m)
    }
}
