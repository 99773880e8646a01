//! `menshen run`: load, bind, log, serve; SIGTERM/SIGINT drain and stop.
//!
//! SIGHUP reloads the config (see [`crate::reload`]).
//! Shutdown protocol: stop accepting -> ask every connection to finish (hyper's
//! graceful shutdown) -> wait up to `drain_timeout` -> cut what is left -> write
//! `gateway.stop` -> flush and fsync the log -> exit 0.

use crate::audit::{AuditLog, Event, GatewayStart, GatewayStop, WriterSettings};
use crate::config::{self, Mode};
use crate::listener::Shared;
use crate::metrics::Metrics;
use crate::tls;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("listener {name:?}: cannot listen on {addr}: {source}")]
    Bind { name: String, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Log(#[from] crate::audit::writer::OpenError),
    #[error("{0}")]
    Key(#[from] crate::audit::chain::KeyError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("signals: {0}")]
    Signal(std::io::Error),
    #[error("{0}")]
    Windows(#[from] crate::windows::ManagerError),
    #[error("{0}")]
    Store(#[from] crate::windows::StoreError),
    #[error("{0}")]
    Blocks(#[from] crate::blocks::BlockError),
}

pub async fn run(config_path: &Path) -> Result<(), RunError> {
    // Handlers first: a SIGTERM that arrives while starting must drain, not kill.
    let mut signals = Signals::install().map_err(RunError::Signal)?;
    let nofile = crate::listener::limits::raise_nofile();
    let cfg = config::load(config_path, Mode::Run)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let certified =
        cfg.tls.certified_key.clone().ok_or_else(|| tls::TlsError::Invalid("no certificate loaded".into()))?;
    let certs = tls::CertStore::new(certified);
    let server_tls = tls::server_config(certs.clone(), cfg.tls.min_version)?;
    let (gateway, tls_settings, log_settings, admin) = (&cfg.gateway, &cfg.tls, &cfg.log, &cfg.admin);

    // Bind everything before writing anything: a bind failure leaves no trace to explain.
    let mut bound = Vec::new();
    for l in cfg.policy.listeners.iter() {
        let sock = crate::listener::bind(l.bind).map_err(|source| RunError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        })?;
        let addr = sock.local_addr().map_err(|source| RunError::Bind { name: l.name.clone(), addr: l.bind, source })?;
        bound.push((l.name.clone(), addr, sock));
    }

    let admin_sock = match admin {
        Some(a) => {
            let name = crate::admin::server::LISTENER.to_string();
            let sock = crate::listener::bind(a.bind).map_err(|source| RunError::Bind {
                name: name.clone(),
                addr: a.bind,
                source,
            })?;
            let addr = sock.local_addr().map_err(|source| RunError::Bind { name, addr: a.bind, source })?;
            Some((sock, addr))
        }
        None => None,
    };
    let metrics_sock = match gateway.metrics_bind {
        Some(addr) => Some(crate::listener::bind(addr).map_err(|source| RunError::Bind {
            name: "metrics".into(),
            addr,
            source,
        })?),
        None => None,
    };
    // The window store: a damaged or locked database stops the start, with its path.
    let sqlite = Arc::new(crate::windows::SqliteStore::open(&gateway.state_dir)?);
    let store: Arc<dyn crate::windows::WindowStore> = sqlite.clone();

    let metrics = Arc::new(Metrics::new()?);
    let key = crate::audit::chain::SigningKey::load_or_create(&gateway.state_dir)?;
    let syslog = match &log_settings.syslog {
        Some(target) => {
            let roots = tls::upstream_roots(None)?;
            Some(crate::audit::syslog::Sender::start(
                target.clone(),
                &gateway.name,
                tls::upstream_client_config(roots)?,
            ))
        }
        None => None,
    };
    let (log, writer) = AuditLog::start(
        WriterSettings {
            dir: log_settings.dir.clone(),
            gateway: gateway.name.clone(),
            tz: gateway.timezone.clone(),
            sync: log_settings.sync,
            max_file: log_settings.max_file,
            max_disk: log_settings.max_disk,
            on_full: log_settings.on_full,
            retention_days: log_settings.retention_days,
            key,
            syslog,
        },
        metrics.clone(),
    )?;

    let shared = Shared::new(
        cfg.policy.clone(),
        server_tls,
        log.clone(),
        metrics,
        tls_settings.handshake_timeout,
        log_settings.http_requests,
        cfg.limits,
    );
    let notifier = match &cfg.windows.webhook {
        Some(url) => {
            let roots = tls::upstream_roots(None)?;
            Some(crate::windows::notify::Notifier::start(
                url.clone(),
                gateway.name.clone(),
                tls::upstream_client_config(roots)?,
            ))
        }
        None => None,
    };
    let manager = crate::windows::WindowManager::start(
        store,
        shared.policy.clone(),
        log.clone(),
        notifier,
        cfg.windows.allow_self_approval,
        Some(shared.metrics.clone()),
    )
    .await?;
    let timer_stop = tokio_util::sync::CancellationToken::new();
    let timer = tokio::spawn(manager.clone().run(timer_stop.clone()));
    let blocks = crate::blocks::BlockManager::start(sqlite, shared.clone()).await?;
    let block_sweep = tokio::spawn(blocks.clone().run(timer_stop.clone()));
    // Rate-limit state of sources not seen lately is dropped every minute; the counts
    // of flooding sources' refusals are written every second.
    let limits_sweep = {
        let (shared, stop) = (shared.clone(), timer_stop.clone());
        tokio::spawn(async move {
            let mut second = tokio::time::interval(Duration::from_secs(1));
            second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = second.tick() => {
                        crate::listener::refusals::flush(&shared, false).await;
                        ticks += 1;
                        if ticks % 60 == 0 {
                            shared.limits.sweep();
                        }
                    }
                }
            }
            crate::listener::refusals::flush(&shared, true).await;
        })
    };

    // `gateway.start` comes first in the log: only then are connections accepted
    // (the kernel queues any that arrive meanwhile).
    let described = bound.iter().map(|(name, addr, _)| format!("{name}={addr}")).collect();
    log.record(Event::GatewayStart(GatewayStart {
        version: env!("CARGO_PKG_VERSION"),
        config: config_path.display().to_string(),
        config_digest: cfg.digest.clone(),
        listeners: described,
        pid: std::process::id(),
    }))
    .await;
    shared.metrics.config_reloads.with_label_values(&["ok"]).inc();
    shared.metrics.config_last_reload_success.set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    let capped = shared.limits.cap_by_descriptors(nofile);
    if let Some(n) = nofile {
        // As many upstream sockets as client connections: together within the limit.
        crate::listener::limits::budget_upstream_sockets(crate::listener::limits::connections_for(n));
    }
    if let (Some(nofile), Some(effective)) = (nofile, capped) {
        let max_connections = shared.limits.settings().max_connections;
        tracing::warn!(
            "{nofile} open files allow {effective} proxy connections at once, not max_connections = \
             {max_connections}: raise LimitNOFILE"
        );
        log.record(Event::FdLimit(crate::audit::FdLimit { nofile, max_connections, effective })).await;
    }
    if crate::metrics::clock::synchronized() == Some(false) {
        tracing::warn!("the clock is not NTP-synchronized: log times may drift (DH-1.17.3)");
        let note = "the kernel does not report the clock as synchronized; log times may drift";
        log.record(Event::ClockUnsynchronized(crate::audit::ClockUnsynchronized { note })).await;
    }
    let mut loops = Vec::new();
    if let Some(sock) = metrics_sock {
        if let Ok(addr) = sock.local_addr() {
            announce_listener("metrics", addr);
        }
        loops.push(tokio::spawn(crate::metrics::http::serve(sock, shared.metrics.clone(), shared.draining.clone())));
    }
    for (name, addr, _) in &bound {
        announce_listener(name, *addr);
    }
    let admin_parts = admin.as_ref().map(|a| {
        let dynamic = Arc::new(arc_swap::ArcSwap::from_pointee(crate::admin::api::AdminDynamic {
            accounts: cfg.accounts.clone(),
            allow: a.allow.clone(),
            settings: cfg.windows.clone(),
        }));
        (dynamic, Arc::new(crate::admin::auth::Lockout::new(a.lockout)))
    });
    let reloader = crate::reload::Reloader::start(
        &cfg,
        bound.into_iter().map(|(_, _, sock)| sock).collect(),
        shared.clone(),
        certs,
        manager.clone(),
        admin_parts.clone(),
    );
    if let (Some((sock, addr)), Some((dynamic, lockout))) = (admin_sock, admin_parts) {
        let state = Arc::new(crate::admin::api::AdminState {
            policy: shared.policy.clone(),
            dynamic,
            lockout,
            windows: manager.clone(),
            blocks: blocks.clone(),
            connections: shared.clone(),
            reloader: reloader.clone(),
            tz: gateway.timezone.clone(),
            log: log.clone(),
            log_dir: log_settings.dir.clone(),
            metrics: shared.metrics.clone(),
        });
        announce_listener(crate::admin::server::LISTENER, addr);
        loops.push(tokio::spawn(crate::admin::server::accept_loop(sock, shared.clone(), state)));
    }
    tracing::info!(gateway = %gateway.name, log = %log_settings.dir.display(), "serving");

    let reason = loop {
        match signals.next().await {
            Signal::Stop(reason) => break reason,
            Signal::Reload => {
                tracing::info!("SIGHUP: reloading {}", config_path.display());
                let _ = reloader.reload(crate::reload::Trigger::Signal, &crate::windows::Actor::system()).await;
            }
        }
    };
    let drain_timeout = reloader.drain_timeout().await;
    tracing::info!(signal = reason, drain = ?drain_timeout, "stopping: draining connections");

    shared.draining.cancel();
    reloader.stop_listeners().await;
    for l in loops {
        let _ = l.await;
    }
    shared.tasks.close();
    let mut cut = 0;
    if tokio::time::timeout(drain_timeout, shared.tasks.wait()).await.is_err() {
        cut = shared.tasks.len() as u64;
        tracing::warn!(connections = cut, "drain timeout passed; cutting the rest");
        shared.stop_now.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await;
    }
    timer_stop.cancel();
    let _ = timer.await;
    let _ = block_sweep.await;
    let _ = limits_sweep.await;
    drop(blocks);
    drop(reloader);
    drop(manager);
    log.record(Event::GatewayStop(GatewayStop {
        version: env!("CARGO_PKG_VERSION"),
        config_digest: cfg.digest.clone(),
        reason,
        cut_connections: cut,
    }))
    .await;
    drop(shared);
    drop(log);
    if tokio::time::timeout(Duration::from_secs(10), writer).await.is_err() {
        tracing::error!("log writer did not finish in 10 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// `menshen: listener NAME on ADDR` on stdout: tests and scripts read it to learn
/// ephemeral ports. A closed stdout is no reason to fail (println! would panic).
pub fn announce_listener(name: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "menshen: listener {name} on {addr}");
}

/// The signals the gateway acts on, registered once at start.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal: SIGTERM or SIGINT stop, SIGHUP reloads.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

enum Signal {
    Stop(&'static str),
    #[cfg_attr(not(unix), allow(dead_code))]
    Reload,
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals)
    }

    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("ctrl-c")
    }
}
