//! An access window and its lifecycle, as pure functions of the window and `now`.
//!
//! ```text
//!              approve               start reached            end reached
//!  requested ──────────▶ approved ─────────────────▶ active ──────────────▶ expired
//!     │  │                  │                          │
//!     │  └── end reached ───┼──────────────▶ expired   │
//!     │ deny                │ deny / revoke            │ deny / revoke
//!     ▼                     ▼                          ▼
//!   denied              denied / revoked          denied / revoked
//! ```
//! `denied` after approval is an admin overruling an approval ("deny after approve"):
//! like `revoked`, it cuts every connection riding the window. A window that was
//! approved and has ended is pending review until an admin posts a review (LY-1.6.5).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Requested,
    Approved,
    Active,
    Expired,
    Denied,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Denied => "denied",
            State::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "requested" => State::Requested,
            "approved" => State::Approved,
            "active" => State::Active,
            "expired" => State::Expired,
            "denied" => State::Denied,
            "revoked" => State::Revoked,
            _ => return None,
        })
    }

    /// No transition leaves these.
    pub fn is_final(self) -> bool {
        matches!(self, State::Expired | State::Denied | State::Revoked)
    }

    pub const ALL: [State; 6] =
        [State::Requested, State::Approved, State::Active, State::Expired, State::Denied, State::Revoked];
}

/// An admin's note after the window ended: what was checked (LY-1.6.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub by: String,
    pub at: jiff::Timestamp,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub id: String,
    pub state: State,
    /// The account that asked (a person, never a shared account).
    pub requester: String,
    /// The account that approved, denied or revoked it, if any.
    pub approver: Option<String>,
    pub services: Vec<String>,
    pub sources: Vec<IpNet>,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
    pub reason: String,
    /// Approved by its own requester (only where `allow_self_approval`): flagged for review.
    pub self_approved: bool,
    pub requested_at: jiff::Timestamp,
    pub approved_at: Option<jiff::Timestamp>,
    pub activated_at: Option<jiff::Timestamp>,
    /// When it became expired, denied or revoked.
    pub ended_at: Option<jiff::Timestamp>,
    /// Why an admin denied or revoked it.
    pub end_note: Option<String>,
    pub review: Option<Review>,
}

/// What an admin (or the clock) does to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Deny,
    Revoke,
    Review,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Revoke => "revoke",
            Action::Review => "review",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a {state} window cannot be {verb}")]
    WrongState { state: &'static str, verb: &'static str },
    #[error("the requester may not approve their own window (set [windows] allow_self_approval = true where staff is too few)")]
    SelfApproval,
    #[error("the window already ended at {0}")]
    AlreadyEnded(jiff::Timestamp),
    #[error("the window was already reviewed by {0}")]
    AlreadyReviewed(String),
    #[error("a self-approved window must be reviewed by another admin")]
    SelfReview,
}

impl Window {
    /// Whether connections may ride it at `now`.
    pub fn is_open_at(&self, now: jiff::Timestamp) -> bool {
        matches!(self.state, State::Approved | State::Active) && self.start <= now && now < self.end
    }

    /// Ended after being approved, and no admin has reviewed it yet.
    pub fn pending_review(&self) -> bool {
        self.approved_at.is_some() && self.state.is_final() && self.review.is_none()
    }

    /// Apply an admin action. `allow_self` is `[windows] allow_self_approval`.
    pub fn apply(
        &mut self,
        action: Action,
        actor: &str,
        note: Option<String>,
        allow_self: bool,
        now: jiff::Timestamp,
    ) -> Result<(), TransitionError> {
        let wrong = |w: &Window, verb| TransitionError::WrongState { state: w.state.as_str(), verb };
        match action {
            Action::Approve => {
                if self.state != State::Requested {
                    return Err(wrong(self, "approved"));
                }
                if now >= self.end {
                    return Err(TransitionError::AlreadyEnded(self.end));
                }
                if actor == self.requester {
                    if !allow_self {
                        return Err(TransitionError::SelfApproval);
                    }
                    self.self_approved = true;
                }
                self.state = State::Approved;
                self.approver = Some(actor.to_string());
                self.approved_at = Some(now);
            }
            Action::Deny | Action::Revoke => {
                let allowed = match action {
                    Action::Deny => matches!(self.state, State::Requested | State::Approved | State::Active),
                    _ => matches!(self.state, State::Requested | State::Approved | State::Active),
                };
                if !allowed {
                    return Err(wrong(self, if action == Action::Deny { "denied" } else { "revoked" }));
                }
                self.state = if action == Action::Deny { State::Denied } else { State::Revoked };
                self.approver = Some(actor.to_string());
                self.ended_at = Some(now);
                self.end_note = note;
            }
            Action::Review => {
                if !self.state.is_final() {
                    return Err(wrong(self, "reviewed before it ends"));
                }
                if let Some(r) = &self.review {
                    return Err(TransitionError::AlreadyReviewed(r.by.clone()));
                }
                // A self-approved window is flagged for review by someone else (DH-1.3.3).
                if self.self_approved && actor == self.requester {
                    return Err(TransitionError::SelfReview);
                }
                self.review = Some(Review { by: actor.to_string(), at: now, note: note.unwrap_or_default() });
            }
        }
        Ok(())
    }

    /// The transition the clock makes at `now`, if any: approved -> active at start,
    /// active/approved/requested -> expired at end. Returns the new state.
    pub fn tick(&mut self, now: jiff::Timestamp) -> Option<State> {
        let next = match self.state {
            State::Requested | State::Approved | State::Active if now >= self.end => State::Expired,
            State::Approved if now >= self.start => State::Active,
            _ => return None,
        };
        self.state = next;
        match next {
            State::Active => self.activated_at = Some(now),
            _ => self.ended_at = Some(now),
        }
        Some(next)
    }

    /// The next moment `tick` would change something.
    pub fn next_tick(&self) -> Option<jiff::Timestamp> {
        match self.state {
            State::Approved => Some(self.start.min(self.end)),
            State::Requested | State::Active => Some(self.end),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn window() -> Window {
        Window {
            id: "w1".into(),
            state: State::Requested,
            requester: "vendor-li".into(),
            approver: None,
            services: vec!["school-admin".into()],
            sources: vec!["203.0.113.0/24".parse().unwrap()],
            start: ts("2026-11-21T02:00:00Z"),
            end: ts("2026-11-21T04:00:00Z"),
            reason: "patch".into(),
            self_approved: false,
            requested_at: ts("2026-11-21T01:00:00Z"),
            approved_at: None,
            activated_at: None,
            ended_at: None,
            end_note: None,
            review: None,
        }
    }

    #[test]
    fn full_lifecycle() {
        let mut w = window();
        let t0 = ts("2026-11-21T01:30:00Z");
        assert_eq!(w.next_tick(), Some(w.end));
        w.apply(Action::Approve, "chen", None, false, t0).unwrap();
        assert_eq!(w.state, State::Approved);
        assert!(!w.is_open_at(t0));
        assert_eq!(w.tick(t0), None);
        assert_eq!(w.next_tick(), Some(w.start));
        assert_eq!(w.tick(w.start), Some(State::Active));
        assert!(w.is_open_at(w.start));
        assert!(!w.is_open_at(w.end));
        assert!(!w.pending_review());
        assert_eq!(w.tick(w.end), Some(State::Expired));
        assert!(w.pending_review());
        assert_eq!(w.next_tick(), None);
        w.apply(Action::Review, "chen", Some("logs checked".into()), false, w.end).unwrap();
        assert!(!w.pending_review());
        assert!(matches!(
            w.apply(Action::Review, "wang", None, false, w.end),
            Err(TransitionError::AlreadyReviewed(_))
        ));
    }

    #[test]
    fn self_approval_only_when_configured() {
        let mut w = window();
        let t0 = ts("2026-11-21T01:30:00Z");
        assert_eq!(w.apply(Action::Approve, "vendor-li", None, false, t0), Err(TransitionError::SelfApproval));
        assert_eq!(w.state, State::Requested);
        w.apply(Action::Approve, "vendor-li", None, true, t0).unwrap();
        assert!(w.self_approved);
    }

    #[test]
    fn wrong_states_are_refused() {
        let t0 = ts("2026-11-21T01:30:00Z");
        let mut w = window();
        w.apply(Action::Deny, "chen", Some("no".into()), false, t0).unwrap();
        assert_eq!(w.state, State::Denied);
        assert!(!w.pending_review(), "never approved, nothing to review");
        for a in [Action::Approve, Action::Deny, Action::Revoke] {
            assert!(matches!(w.apply(a, "chen", None, false, t0), Err(TransitionError::WrongState { .. })), "{a:?}");
        }
        let mut w = window();
        assert!(matches!(w.apply(Action::Review, "chen", None, false, t0), Err(TransitionError::WrongState { .. })));
        // Not approved before its end: expired, and can no longer be approved.
        assert_eq!(w.tick(w.end), Some(State::Expired));
        assert!(matches!(
            w.apply(Action::Approve, "chen", None, false, w.end),
            Err(TransitionError::WrongState { .. })
        ));
        let mut w = window();
        assert_eq!(w.apply(Action::Approve, "chen", None, false, w.end), Err(TransitionError::AlreadyEnded(w.end)));
    }

    #[test]
    fn revoke_and_deny_after_approve_end_it() {
        for action in [Action::Revoke, Action::Deny] {
            let mut w = window();
            w.apply(Action::Approve, "chen", None, false, w.start).unwrap();
            w.tick(w.start);
            assert_eq!(w.state, State::Active);
            w.apply(action, "wang", Some("done early".into()), false, w.start).unwrap();
            assert!(w.state.is_final());
            assert!(!w.is_open_at(w.start));
            assert!(w.pending_review());
            assert_eq!(w.end_note.as_deref(), Some("done early"));
        }
    }

    #[test]
    fn approved_after_its_start_goes_straight_to_active_then_expired() {
        let mut w = window();
        let late = ts("2026-11-21T03:00:00Z");
        w.apply(Action::Approve, "chen", None, false, late).unwrap();
        assert!(w.is_open_at(late));
        assert_eq!(w.tick(late), Some(State::Active));
        // A gateway down through the whole window: the next tick ends it.
        let mut w2 = window();
        w2.apply(Action::Approve, "chen", None, false, w2.start).unwrap();
        assert_eq!(w2.tick(ts("2026-11-22T00:00:00Z")), Some(State::Expired));
    }
}
