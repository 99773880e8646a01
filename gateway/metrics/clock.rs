//! Whether the system clock is synchronized (DH-1.17.3: log timestamps depend on it).
//!
//! The kernel's NTP state is only available through `adjtimex(2)`; there is no safe
//! wrapper in the crates we use, so this one read-only call is the crate's only
//! `unsafe` code: `modes = 0` asks for the state and changes nothing.

/// `Some(true)` when the kernel says the clock is synchronized, `Some(false)` when it
/// says it is not, `None` where the question cannot be asked.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn synchronized() -> Option<bool> {
    // SAFETY: `timex` is plain data; zeroed is a valid value. With `modes == 0`
    // adjtimex only fills the struct and returns the clock state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: a valid, exclusive pointer to a live `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

#[cfg(not(target_os = "linux"))]
pub fn synchronized() -> Option<bool> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn asks_the_kernel() {
        // Whatever this machine's state, the question can be asked on Linux.
        #[cfg(target_os = "linux")]
        assert!(super::synchronized().is_some());
    }
}
