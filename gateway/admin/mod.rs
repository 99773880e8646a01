//! The admin listener: TLS, only sources in `[admin].allow`, bearer tokens; the
//! windows API, health and metrics.

pub mod activity;
pub mod api;
pub mod auth;
pub mod server;
