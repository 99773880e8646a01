//! Live reload (SIGHUP, `POST /api/v1/reload`, `menshen reload`).
//!
//! All or nothing, in two phases:
//! ```text
//! prepare (may fail, changes nothing)          apply (cannot fail)
//!   read + validate the file, certs included     take the sockets of renamed listeners
//!   refuse restart-only changes, naming keys     swap cert, admin settings, rules+windows
//!   bind the new listeners' sockets              start new listeners, stop removed ones
//!                                                re-decide live connections; cut the
//!                                                ones the new policy refuses ("reload")
//!                                                keep a copy; log config.reload
//! ```
//! A failure logs `config.reload_failed` with every reason and leaves everything as it
//! was. Reloads are serialized, and run to the end once started (the API runs them in
//! a task of their own). Connections that keep their access are not touched: they go on
//! with the snapshot (and upstream) they were decided on. A listener is known by its
//! name: renaming one (even on the same address) closes its connections.

use crate::admin::api::AdminDynamic;
use crate::admin::auth::Lockout;
use crate::audit::{ConfigReload, ConfigReloadFailed, Event};
use crate::config::{self, Config, Mode};
use crate::listener::{self, CloseReason, Shared};
use crate::tls::CertStore;
use crate::windows::{Actor, WindowManager};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many good configs `state_dir/configs/` keeps (DH-1.4.2, DH-1.16.2).
pub const KEEP_CONFIGS: usize = 5;

/// What asked for the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Api => "api",
        }
    }
}

/// A successful reload, as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub config_digest: String,
    pub previous_digest: String,
    pub changes: Vec<String>,
    pub cut_connections: u64,
    pub listeners: Vec<ListenerAddr>,
    pub saved_as: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerAddr {
    pub name: String,
    pub addr: SocketAddr,
}

/// One running accept loop.
struct Slot {
    name: Arc<str>,
    /// The address as configured (port 0 in tests).
    bind: SocketAddr,
    /// The address it actually listens on.
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<TcpListener>,
}

/// What the running config is, for comparison with the next one.
struct Running {
    digest: String,
    text: String,
    restart_only: Vec<(&'static str, String)>,
    cert: Vec<u8>,
    drain_timeout: Duration,
    slots: Vec<Slot>,
}

/// The parts of the gateway a reload changes.
pub struct Reloader {
    path: PathBuf,
    state_dir: PathBuf,
    shared: Arc<Shared>,
    certs: Arc<CertStore>,
    windows: Arc<WindowManager>,
    admin: Option<(Arc<ArcSwap<AdminDynamic>>, Arc<Lockout>)>,
    running: Mutex<Running>,
}

/// How a new listener gets its socket.
enum Source {
    /// Same name and address: the loop goes on untouched.
    Keep(usize),
    /// A listener renamed on the same address: the old loop hands its socket over.
    Takeover(usize),
    /// Bound now, before anything is applied.
    Fresh(TcpListener),
}

impl Reloader {
    /// Built at start from the config in force; `listeners` are its bound sockets in
    /// config order. Starts their accept loops.
    pub fn start(
        cfg: &Config,
        listeners: Vec<TcpListener>,
        shared: Arc<Shared>,
        certs: Arc<CertStore>,
        windows: Arc<WindowManager>,
        admin: Option<(Arc<ArcSwap<AdminDynamic>>, Arc<Lockout>)>,
    ) -> Arc<Self> {
        let mut slots = Vec::new();
        for (l, sock) in cfg.policy.listeners.iter().zip(listeners) {
            slots.push(spawn_loop(&shared, l.name.as_str().into(), l.bind, sock));
        }
        let running = Running {
            digest: cfg.digest.clone(),
            text: cfg.text.clone(),
            restart_only: cfg.restart_only(),
            cert: leaf(cfg),
            drain_timeout: cfg.gateway.drain_timeout,
            slots,
        };
        let state_dir = cfg.gateway.state_dir.clone();
        if let Err(e) = save_copy(&state_dir, &cfg.text, &cfg.digest, jiff::Timestamp::now()) {
            tracing::warn!(error = %e, "cannot keep a copy of the config in state_dir/configs");
        }
        Arc::new(Reloader {
            path: cfg.path.clone(),
            state_dir,
            shared,
            certs,
            windows,
            admin,
            running: Mutex::new(running),
        })
    }

    /// `gateway.drain_timeout` of the config in force.
    pub async fn drain_timeout(&self) -> Duration {
        self.running.lock().await.drain_timeout
    }

    /// Wait for every accept loop to end (after `shared.draining` is cancelled).
    pub async fn stop_listeners(&self) {
        let mut running = self.running.lock().await;
        for slot in running.slots.drain(..) {
            slot.stop.cancel();
            let _ = slot.task.await;
        }
    }

    /// Read the config file again and put it in force, or change nothing. On failure,
    /// every problem, each as `file: key: reason`.
    pub async fn reload(&self, trigger: Trigger, actor: &Actor) -> Result<Reloaded, Vec<String>> {
        let mut running = self.running.lock().await;
        let result = self.apply(&mut running, trigger, actor).await;
        let m = &self.shared.metrics;
        match &result {
            Ok(done) => {
                m.config_reloads.with_label_values(&["ok"]).inc();
                m.config_last_reload_success.set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
                tracing::info!(changes = ?done.changes, cut = done.cut_connections, "config reloaded");
            }
            Err(errors) => {
                m.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!("config reload refused; the running config stays in force:\n{}", errors.join("\n"));
                self.shared
                    .log
                    .record(Event::ConfigReloadFailed(ConfigReloadFailed {
                        identity: actor.name.clone(),
                        src_ip: actor.src,
                        trigger: trigger.as_str(),
                        config: self.path.display().to_string(),
                        errors: errors.clone(),
                    }))
                    .await;
            }
        }
        result
    }

    async fn apply(&self, running: &mut Running, trigger: Trigger, actor: &Actor) -> Result<Reloaded, Vec<String>> {
        if self.shared.draining.is_cancelled() {
            return Err(vec![format!("{}: the gateway is stopping; nothing was applied", self.path.display())]);
        }
        // Prepare: everything that can fail, before anything changes.
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path, Mode::Run))
            .await
            .map_err(|e| vec![format!("{}: the config reader failed: {e}", self.path.display())])?;
        let cfg = loaded.map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let refused = config::restart_only_changes(&running.restart_only, &cfg);
        if !refused.is_empty() {
            return Err(refused.iter().map(ToString::to_string).collect());
        }
        let file = cfg.path.display().to_string();
        let Some(certified) = cfg.tls.certified_key.clone() else {
            return Err(vec![format!("{file}: tls.cert: no certificate loaded")]);
        };
        let (admin_settings, lockout) = match (&self.admin, &cfg.admin) {
            (Some(_), Some(a)) => (Some(a.allow.clone()), Some(a.lockout)),
            _ => (None, None),
        };
        let sources = plan_listeners(&running.slots, &cfg).await?;

        // Apply: nothing below fails.
        let mut changes = config::diff::summarize(&running.text, &cfg.text);
        let cert = leaf(&cfg);
        if cert != running.cert {
            let subject = cfg.tls.cert_info.as_ref().map(|c| c.subject.clone()).unwrap_or_default();
            changes.push(format!("tls certificate replaced ({subject})"));
        }
        let mut old: Vec<Option<Slot>> = running.slots.drain(..).map(Some).collect();
        let mut handed = std::collections::HashMap::new();
        for s in &sources {
            if let Source::Takeover(i) = s {
                if let Some(slot) = old[*i].take() {
                    slot.stop.cancel();
                    handed.insert(*i, slot.task.await);
                }
            }
        }
        self.certs.replace(certified);
        let wanted = cfg.limits.max_connections;
        self.shared.limits.apply(cfg.limits);
        let effective = self.shared.limits.max_connections();
        if effective < wanted {
            changes.push(format!(
                "limits.max_connections: {wanted}, but the open-files limit allows {effective} (raise LimitNOFILE)"
            ));
        }
        if let (Some((dynamic, lockout_state)), Some(allow), Some(lockout)) = (&self.admin, admin_settings, lockout) {
            dynamic.store(Arc::new(AdminDynamic {
                accounts: cfg.accounts.clone(),
                allow,
                settings: cfg.windows.clone(),
            }));
            lockout_state.set_settings(lockout);
        }
        self.windows.install(&cfg.policy, cfg.windows.allow_self_approval).await;
        // After the swap, before the re-check: a connection decided on the old snapshot
        // that registers after the re-check sees the new generation and checks itself.
        self.shared.bump_generation();

        let mut slots = Vec::new();
        for (l, source) in cfg.policy.listeners.iter().zip(sources) {
            let name: Arc<str> = l.name.as_str().into();
            let slot = match source {
                Source::Keep(i) => match old[i].take() {
                    Some(slot) => slot,
                    None => continue,
                },
                Source::Takeover(i) => match handed.remove(&i) {
                    Some(Ok(sock)) => spawn_loop(&self.shared, name, l.bind, sock),
                    // The old loop died: bind afresh (its socket is closed by now).
                    _ => match crate::listener::bind(l.bind) {
                        Ok(sock) => spawn_loop(&self.shared, name, l.bind, sock),
                        Err(e) => {
                            tracing::error!(listener = %l.name, error = %e, "cannot take over the listener's socket");
                            changes.push(format!("listener {}: NOT LISTENING: cannot bind {}: {e}", l.name, l.bind));
                            continue;
                        }
                    },
                },
                Source::Fresh(sock) => spawn_loop(&self.shared, name, l.bind, sock),
            };
            crate::server::announce_listener(&slot.name, slot.addr);
            slots.push(slot);
        }
        // Listeners the new config does not have: stop accepting and close the socket.
        for slot in old.into_iter().flatten() {
            slot.stop.cancel();
            let _ = slot.task.await;
            tracing::info!(listener = %slot.name, "listener closed by reload");
        }
        let cut = self.recheck_connections(&cfg);
        let (dir, text, digest) = (self.state_dir.clone(), cfg.text.clone(), cfg.digest.clone());
        let saved = tokio::task::spawn_blocking(move || save_copy(&dir, &text, &digest, jiff::Timestamp::now())).await;
        let saved_as = match saved.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(p) => Some(p.display().to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep a copy of the config in state_dir/configs");
                None
            }
        };
        let previous_digest = std::mem::replace(&mut running.digest, cfg.digest.clone());
        running.text = cfg.text;
        running.cert = cert;
        running.drain_timeout = cfg.gateway.drain_timeout;
        running.slots = slots;
        self.shared
            .log
            .record(Event::ConfigReload(ConfigReload {
                identity: actor.name.clone(),
                src_ip: actor.src,
                trigger: trigger.as_str(),
                config: file,
                config_digest: cfg.digest.clone(),
                previous_digest: previous_digest.clone(),
                changes: changes.clone(),
                cut_connections: cut,
                saved_as: saved_as.clone(),
            }))
            .await;
        Ok(Reloaded {
            config_digest: cfg.digest,
            previous_digest,
            changes,
            cut_connections: cut,
            listeners: running.slots.iter().map(|s| ListenerAddr { name: s.name.to_string(), addr: s.addr }).collect(),
            saved_as,
        })
    }

    /// Decide every live connection again on the snapshot now in force; cut those it
    /// refuses, or routes elsewhere. Returns how many were cut.
    fn recheck_connections(&self, cfg: &Config) -> u64 {
        let policy = self.shared.policy.load_full();
        let now = jiff::Timestamp::now();
        let admin_allow = self.admin.as_ref().map(|(d, _)| d.load_full());
        let mut cut = 0;
        for record in self.shared.live_connections() {
            let keep = if record.listener == crate::admin::server::LISTENER {
                cfg.admin.is_some()
                    && admin_allow.as_ref().is_some_and(|d| crate::admin::server::admits(&policy, d, record.src))
            } else {
                record.allowed_by(&policy, now)
            };
            if !keep {
                record.revoke(CloseReason::Reload);
                cut += 1;
            }
        }
        cut
    }
}

/// For each listener of the new config, where its socket comes from. Binds the new ones;
/// fails, binding nothing, if one cannot be bound.
async fn plan_listeners(slots: &[Slot], cfg: &Config) -> Result<Vec<Source>, Vec<String>> {
    let file = cfg.path.display().to_string();
    let mut used = vec![false; slots.len()];
    let mut sources = Vec::new();
    for l in &cfg.policy.listeners {
        let same = (0..slots.len()).find(|&i| !used[i] && *slots[i].name == *l.name && slots[i].bind == l.bind);
        if let Some(i) = same {
            used[i] = true;
        }
        sources.push(same.map(Source::Keep));
    }
    // A new name on an address already served (a real port, not 0) takes that socket.
    for (l, source) in cfg.policy.listeners.iter().zip(sources.iter_mut()) {
        if source.is_some() || l.bind.port() == 0 {
            continue;
        }
        if let Some(i) = (0..slots.len()).find(|&i| !used[i] && slots[i].bind == l.bind) {
            used[i] = true;
            *source = Some(Source::Takeover(i));
        }
    }
    let mut errors = Vec::new();
    for (i, (l, source)) in cfg.policy.listeners.iter().zip(sources.iter_mut()).enumerate() {
        if source.is_none() {
            match crate::listener::bind(l.bind) {
                Ok(sock) => *source = Some(Source::Fresh(sock)),
                Err(e) => errors
                    .push(format!("{file}: listener[{i}].bind: cannot listen on {} for {:?}: {e}", l.bind, l.name)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(sources.into_iter().flatten().collect())
}

fn spawn_loop(shared: &Arc<Shared>, name: Arc<str>, bind: SocketAddr, sock: TcpListener) -> Slot {
    let addr = sock.local_addr().unwrap_or(bind);
    let stop = CancellationToken::new();
    let task = tokio::spawn(listener::accept_loop(sock, name.clone(), stop.clone(), shared.clone()));
    Slot { name, bind, addr, stop, task }
}

/// The served certificate's DER, to tell whether a reload replaced it.
fn leaf(cfg: &Config) -> Vec<u8> {
    cfg.tls.certified_key.as_ref().and_then(|k| k.cert.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default()
}

/// Keep `text` as `state_dir/configs/<UTC time>-<digest>.toml` (owner-only: it holds
/// token hashes), and only the newest [`KEEP_CONFIGS`]. The same digest as the newest
/// copy is not stored twice.
pub fn save_copy(state_dir: &Path, text: &str, digest: &str, now: jiff::Timestamp) -> std::io::Result<PathBuf> {
    let dir = state_dir.join("configs");
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut kept = list_copies(&dir)?;
    let short = &digest[..digest.len().min(16)];
    if let Some(newest) = kept.last() {
        if newest.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&format!("-{short}.toml"))) {
            return Ok(newest.clone());
        }
    }
    let stamp = now.strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
    let path = dir.join(format!("{stamp}-{short}.toml"));
    let tmp = dir.join(format!(".{stamp}-{short}.tmp"));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        // Also when a leftover temporary file had another mode.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    kept.push(path.clone());
    while kept.len() > KEEP_CONFIGS {
        let oldest = kept.remove(0);
        if let Err(e) = std::fs::remove_file(&oldest) {
            tracing::warn!(file = %oldest.display(), error = %e, "cannot remove an old kept config");
        }
    }
    Ok(path)
}

/// The kept copies, oldest first (their names start with the time).
fn list_copies(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with('.') && name.ends_with(".toml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_five_configs_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let t0: jiff::Timestamp = "2026-11-21T05:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let first = save_copy(dir.path(), "a = 1\n", "aaaaaaaaaaaaaaaaaaaa", at(0)).unwrap();
        let again = save_copy(dir.path(), "a = 1\n", "aaaaaaaaaaaaaaaaaaaa", at(1)).unwrap();
        assert_eq!(again, first, "same digest, no new copy");
        for i in 0..7 {
            save_copy(dir.path(), &format!("a = {i}\n"), &format!("{i}{}", "b".repeat(19)), at(10 + i)).unwrap();
        }
        let kept = list_copies(&dir.path().join("configs")).unwrap();
        assert_eq!(kept.len(), KEEP_CONFIGS);
        assert!(!kept.contains(&first), "the oldest went first");
        assert_eq!(std::fs::read_to_string(kept.last().unwrap()).unwrap(), "a = 6\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(kept.last().unwrap()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
