//! Menshen: an access gateway for maintenance and admin interfaces.
//!
//! See `DESIGN.md` for the architecture; each module opens with its job.
// No unsafe code, except the one read-only adjtimex(2) call in `metrics::clock`
// (the kernel's NTP state has no safe API); every other module is checked.
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod blocks;
pub mod cli;
pub mod config;
pub mod demo;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod tls;
pub mod windows;
