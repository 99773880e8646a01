//! Bearer tokens and lockout.
//!
//! A token is `name.secret` (from `menshen token --account NAME`) or a bare secret;
//! the config holds only its SHA-256. The presented token's hash is compared in
//! constant time against every account's hash. The `name.` prefix only says whom a
//! failure counts against: 5 failures within 15 minutes lock that account and the
//! source address for 15 minutes (DH-1.13.6; all three numbers configurable).

use crate::config::{Account, LockoutSettings};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// SHA-256 of a token as sent.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A fresh token (`name.` + 32 random bytes in hex) and its `token_sha256`.
pub fn new_token(account: Option<&str>) -> Result<(String, String), String> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "the system random source failed".to_string())?;
    let token = match account {
        Some(name) => format!("{name}.{}", hex(&secret)),
        None => hex(&secret),
    };
    let hash = hex(&token_hash(&token));
    Ok((token, hash))
}

/// The account a token belongs to. Every account's hash is compared, in constant time,
/// whatever matches first.
pub fn authenticate<'a>(accounts: &'a [Account], token: &str) -> Option<&'a Account> {
    let digest = token_hash(token);
    let mut found = None;
    for a in accounts {
        if aws_lc_rs::constant_time::verify_slices_are_equal(&digest, &a.token_sha256).is_ok() {
            found = Some(a);
        }
    }
    found
}

/// The account name a token claims (the part before the first '.'), if any.
pub fn claimed_name(token: &str) -> Option<&str> {
    token.split_once('.').map(|(n, _)| n).filter(|n| !n.is_empty() && n.len() <= 64)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Account(String),
    Source(IpAddr),
}

impl Subject {
    pub fn describe(&self) -> String {
        match self {
            Subject::Account(a) => format!("account {a}"),
            Subject::Source(ip) => format!("source {ip}"),
        }
    }
}

/// Failure counting and lockouts. Time is passed in, so tests control the clock.
pub struct Lockout {
    state: Mutex<LockState>,
}

struct LockState {
    settings: LockoutSettings,
    failures: HashMap<Subject, VecDeque<jiff::Timestamp>>,
    locked_until: HashMap<Subject, jiff::Timestamp>,
}

impl Lockout {
    pub fn new(settings: LockoutSettings) -> Self {
        Lockout { state: Mutex::new(LockState { settings, failures: HashMap::new(), locked_until: HashMap::new() }) }
    }

    /// New thresholds from a reload; counts and lockouts in force are kept.
    pub fn set_settings(&self, settings: LockoutSettings) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).settings = settings;
    }

    /// Until when any of `subjects` is locked, if one is.
    pub fn locked(&self, subjects: &[Subject], now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.locked_until.retain(|_, until| *until > now);
        subjects.iter().filter_map(|s| st.locked_until.get(s).copied()).max()
    }

    /// Count a failure against each subject; returns those it newly locks, with the end.
    pub fn fail(&self, subjects: &[Subject], now: jiff::Timestamp) -> Vec<(Subject, jiff::Timestamp)> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = jiff::SignedDuration::try_from(st.settings.window).unwrap_or(jiff::SignedDuration::MAX);
        let duration = jiff::SignedDuration::try_from(st.settings.duration).unwrap_or(jiff::SignedDuration::MAX);
        let failures = st.settings.failures as usize;
        let mut newly = Vec::new();
        for s in subjects {
            let q = st.failures.entry(s.clone()).or_default();
            q.push_back(now);
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if q.len() >= failures {
                q.clear();
                let until = now.checked_add(duration).unwrap_or(jiff::Timestamp::MAX);
                st.locked_until.insert(s.clone(), until);
                newly.push((s.clone(), until));
            }
        }
        // Keep memory bounded: forget subjects with no recent failure.
        if st.failures.len() > 10_000 {
            st.failures.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        newly
    }

    /// A success clears the account's and the source's failure counts.
    pub fn succeed(&self, subjects: &[Subject]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for s in subjects {
            st.failures.remove(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use std::time::Duration;

    fn account(name: &str, token: &str) -> Account {
        Account {
            name: name.into(),
            role: Role::Admin,
            token_sha256: token_hash(token),
            vendor: None,
            services: vec![],
        }
    }

    #[test]
    fn tokens_round_trip() {
        let (token, hash) = new_token(Some("chen")).unwrap();
        assert!(token.starts_with("chen."));
        assert_eq!(token.len(), 5 + 64);
        assert_eq!(parse_hex32(&hash), Some(token_hash(&token)));
        let accounts = vec![account("wang", "other"), account("chen", &token)];
        assert_eq!(authenticate(&accounts, &token).map(|a| a.name.as_str()), Some("chen"));
        assert!(authenticate(&accounts, "chen.wrong").is_none());
        assert!(authenticate(&accounts, "").is_none());
        assert_eq!(claimed_name("chen.abc"), Some("chen"));
        assert_eq!(claimed_name("abc"), None);
        assert_ne!(new_token(None).unwrap().0, new_token(None).unwrap().0);
        assert!(parse_hex32("zz").is_none());
        assert!(parse_hex32(&"g".repeat(64)).is_none());
    }

    #[test]
    fn five_failures_lock_for_fifteen_minutes() {
        let l = Lockout::new(LockoutSettings {
            failures: 5,
            window: Duration::from_secs(900),
            duration: Duration::from_secs(900),
        });
        let t0: jiff::Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        let min = |m: i64| t0 + jiff::SignedDuration::from_mins(m);
        let who = [Subject::Account("chen".into()), Subject::Source("127.0.0.2".parse().unwrap())];
        for i in 0..4 {
            assert!(l.fail(&who, min(i)).is_empty());
            assert_eq!(l.locked(&who, min(i)), None);
        }
        let locked = l.fail(&who, min(4));
        assert_eq!(locked.len(), 2);
        assert_eq!(l.locked(&who[..1], min(5)), Some(min(19)));
        assert_eq!(l.locked(&who[1..], min(18)), Some(min(19)));
        assert_eq!(l.locked(&who, min(19)), None, "expired");
        // Failures spread over more than the window do not add up.
        for i in 0..8 {
            assert!(l.fail(&who, min(20 + i * 4)).is_empty(), "failure {i}");
        }
        // A success resets the count.
        l.fail(&who, min(60));
        l.succeed(&who);
        for i in 0..4 {
            assert!(l.fail(&who, min(61 + i)).is_empty());
        }
    }
}
