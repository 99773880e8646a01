//! The one place where windows change: admin actions and the clock.
//!
//! Every change is written to the store first, then the open windows are published as
//! a new policy snapshot, then connections riding a window that closed are cut (their
//! cut token is cancelled), then a `window.<state>` record and a notice go out.
//! The clock: a timer sleeps until the next start or end, but never more than a second,
//! so a clock step is caught within a second (the periodic sweep is the backstop).

use super::model::{Action, State, TransitionError, Window};
use super::notify::Notifier;
use super::store::{StoreError, WindowStore};
use crate::audit::{AuditLog, Event, WindowEvent};
use crate::policy::{OpenWindow, Policy, WindowIndex};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// The longest the timer sleeps between sweeps.
const SWEEP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no window {0}")]
    NotFound(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("window {0} changed meanwhile; reload it and try again")]
    Conflict(String),
}

/// Who did something, for the record.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub src: Option<IpAddr>,
}

impl Actor {
    /// Transitions made by the clock.
    pub fn system() -> Self {
        Actor { name: "system".into(), src: None }
    }
}

/// A window that is not final yet (or whose final state is not stored yet), with the
/// token its connections hold.
struct Live {
    window: Window,
    /// The state the store has: differs from `window.state` while a write is pending.
    stored: State,
    cut: CancellationToken,
}

pub struct WindowManager {
    store: Arc<dyn WindowStore>,
    policy: Arc<ArcSwap<Policy>>,
    log: AuditLog,
    notifier: Option<Notifier>,
    /// `[windows] allow_self_approval`; a reload may change it.
    allow_self: std::sync::atomic::AtomicBool,
    /// `menshen_windows{state}` is kept current from here.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Windows not yet final, by id. The lock also serializes every change.
    live: Mutex<HashMap<String, Live>>,
    wake: Notify,
}

use super::store::blocking;

impl WindowManager {
    /// Load the windows that are not final, bring them up to `now`, and publish.
    pub async fn start(
        store: Arc<dyn WindowStore>,
        policy: Arc<ArcSwap<Policy>>,
        log: AuditLog,
        notifier: Option<Notifier>,
        allow_self: bool,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Arc<Self>, ManagerError> {
        let open = blocking(&store, |s| s.list(&[State::Requested, State::Approved, State::Active])).await?;
        let live = open
            .into_iter()
            .map(|w| (w.id.clone(), Live { stored: w.state, window: w, cut: CancellationToken::new() }))
            .collect();
        let m = Arc::new(WindowManager {
            store,
            policy,
            log,
            notifier,
            allow_self: allow_self.into(),
            metrics,
            live: Mutex::new(live),
            wake: Notify::new(),
        });
        m.sweep(jiff::Timestamp::now()).await?;
        // Windows that were already open need no transition, but the fresh snapshot
        // does not know them yet.
        m.publish(&mut *m.live.lock().await);
        m.update_gauge().await;
        Ok(m)
    }

    /// Keep `menshen_windows{state}` current (at start and after every change).
    async fn update_gauge(&self) {
        let Some(m) = &self.metrics else { return };
        match self.counts().await {
            Ok(counts) => {
                for s in State::ALL {
                    let n = counts.get(&s).copied().unwrap_or(0);
                    m.windows.with_label_values(&[s.as_str()]).set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count windows for menshen_windows"),
        }
    }

    /// The timer: run until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = jiff::Timestamp::now();
            let next = match self.sweep(now).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "window sweep failed; retrying");
                    None
                }
            };
            let sleep = next
                .map(|t| Duration::try_from(t.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO))
                .unwrap_or(SWEEP)
                .min(SWEEP);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Apply the clock to every live window; returns the next moment something is due.
    async fn sweep(&self, now: jiff::Timestamp) -> Result<Option<jiff::Timestamp>, ManagerError> {
        let mut live = self.live.lock().await;
        let mut changed = Vec::new();
        let mut store_error = None;
        // The clock's transitions take effect first, stored or not: a window past its end
        // is unpublished and cut at once, even if the store is failing or locked.
        for l in live.values_mut() {
            if l.window.tick(now).is_some() {
                changed.push(l.window.clone());
            }
        }
        let pending: Vec<String> =
            live.values().filter(|l| l.window.state != l.stored).map(|l| l.window.id.clone()).collect();
        if !changed.is_empty() {
            self.publish(&mut live);
        }
        // Then the store catches up (retried every sweep until it works).
        for id in pending {
            let Some(l) = live.get_mut(&id) else { continue };
            let (w, expected) = (l.window.clone(), l.stored);
            match blocking(&self.store, move |s| s.update(&w, expected)).await {
                Ok(true) => l.stored = l.window.state,
                Ok(false) => {
                    // Another writer (an HA peer) changed it: take the stored version.
                    let id = l.window.id.clone();
                    if let Ok(Some(stored)) = blocking(&self.store, move |s| s.get(&id)).await {
                        l.stored = stored.state;
                        l.window = stored;
                    }
                }
                Err(e) => store_error = Some(e),
            }
        }
        // Final windows whose state is now stored can be forgotten.
        live.retain(|_, l| !(l.window.state.is_final() && l.stored == l.window.state));
        let next = live.values().filter_map(|l| l.window.next_tick()).min();
        // Records are queued while the lock is held, so they follow the order of changes.
        for w in changed {
            self.announce(w.state.as_str(), &w, &Actor::system(), None).await;
        }
        drop(live);
        self.update_gauge().await;
        match store_error {
            Some(e) => Err(e.into()),
            None => Ok(next),
        }
    }

    /// Put a reloaded config's rules in force, with the open windows re-indexed against
    /// its services (matched by name). Under the window lock, so no window change can
    /// publish a snapshot of the old rules afterwards.
    pub async fn install(&self, rules: &Policy, allow_self: bool) {
        let mut live = self.live.lock().await;
        self.allow_self.store(allow_self, std::sync::atomic::Ordering::Relaxed);
        self.publish_on(Some(rules), &mut live);
    }

    /// Rebuild the open-window index into a new policy snapshot; cut and forget
    /// windows that became final.
    fn publish(&self, live: &mut HashMap<String, Live>) {
        self.publish_on(None, live);
    }

    /// [`Self::publish`], on the rules of `rules` if given (a reload), else of the
    /// snapshot in force. The swap is a read-copy-update, so a block-list change made
    /// meanwhile is kept.
    fn publish_on(&self, rules: Option<&Policy>, live: &mut HashMap<String, Live>) {
        self.policy.rcu(|current| {
            let base = match rules {
                Some(r) => r.with_blocks(current.blocks.clone()),
                None => Policy::clone(current),
            };
            let index = Self::index(&base, live);
            Arc::new(base.with_windows(index))
        });
        // Only after the new snapshot is in place: no new connection can ride these.
        live.retain(|_, l| {
            if l.window.state.is_final() {
                l.cut.cancel();
                // Kept until the store has the final state too.
                l.stored != l.window.state
            } else {
                true
            }
        });
    }

    /// The open windows, indexed against `current`'s services.
    fn index(current: &Policy, live: &HashMap<String, Live>) -> WindowIndex {
        // Only services that windows may open (window_max set): a reload that removes a
        // service's window_max closes its windows' access too.
        let service_ids: HashMap<&str, usize> = current
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.window_max.is_some())
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut entries = Vec::new();
        for l in live.values() {
            let w = &l.window;
            if matches!(w.state, State::Approved | State::Active) {
                let svcs = w.services.iter().filter_map(|s| service_ids.get(s.as_str()).copied()).collect();
                let open = OpenWindow {
                    id: w.id.as_str().into(),
                    requester: w.requester.as_str().into(),
                    start: w.start,
                    end: w.end,
                    cut: l.cut.clone(),
                };
                entries.push((open, svcs, w.sources.clone()));
            }
        }
        WindowIndex::new(current.services.len(), entries)
    }

    /// Store a new request (already validated).
    pub async fn create(&self, w: Window, actor: &Actor) -> Result<Window, ManagerError> {
        let mut live = self.live.lock().await;
        let stored = w.clone();
        blocking(&self.store, move |s| s.insert(&stored)).await?;
        live.insert(w.id.clone(), Live { stored: w.state, window: w.clone(), cut: CancellationToken::new() });
        self.announce("requested", &w, actor, None).await;
        drop(live);
        self.wake.notify_one();
        self.update_gauge().await;
        Ok(w)
    }

    /// An admin action on a window.
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        actor: &Actor,
        note: Option<String>,
    ) -> Result<Window, ManagerError> {
        let mut live = self.live.lock().await;
        let key = id.to_string();
        let mut w =
            blocking(&self.store, move |s| s.get(&key)).await?.ok_or_else(|| ManagerError::NotFound(id.to_string()))?;
        let before = w.state;
        w.apply(
            action,
            &actor.name,
            note.clone(),
            self.allow_self.load(std::sync::atomic::Ordering::Relaxed),
            jiff::Timestamp::now(),
        )?;
        let stored = w.clone();
        if !blocking(&self.store, move |s| s.update(&stored, before)).await? {
            return Err(ManagerError::Conflict(id.to_string()));
        }
        if let Some(l) = live.get_mut(id) {
            l.window = w.clone();
            l.stored = w.state;
        } else if !w.state.is_final() {
            live.insert(w.id.clone(), Live { stored: w.state, window: w.clone(), cut: CancellationToken::new() });
        }
        if action != Action::Review {
            self.publish(&mut live);
        }
        let event = if action == Action::Review { "reviewed" } else { w.state.as_str() };
        self.announce(event, &w, actor, note.as_deref()).await;
        drop(live);
        self.wake.notify_one();
        self.update_gauge().await;
        Ok(w)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Window>, ManagerError> {
        let key = id.to_string();
        Ok(blocking(&self.store, move |s| s.get(&key)).await?)
    }

    pub async fn list(&self, states: Vec<State>) -> Result<Vec<Window>, ManagerError> {
        Ok(blocking(&self.store, move |s| s.list(&states)).await?)
    }

    /// Counts per state, for the `menshen_windows{state}` gauge.
    pub async fn counts(&self) -> Result<HashMap<State, usize>, ManagerError> {
        let all = self.list(vec![]).await?;
        let mut out = HashMap::new();
        for w in all {
            *out.entry(w.state).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// The `window.<event>` record and the webhook notice.
    async fn announce(&self, event: &str, w: &Window, actor: &Actor, note: Option<&str>) {
        let record = WindowEvent::from_window(event, w, &actor.name, actor.src, note, &self.log);
        if let Some(n) = &self.notifier {
            n.send(&record);
        }
        self.log.record(Event::Window(record)).await;
    }
}
