//! Forwarding allowed connections to their upstreams: HTTP (h1, h2, WebSocket) here;
//! `request` holds the checks a request passes before it is forwarded, `upstream` the
//! upstream address and its pooled client.

pub mod guard;
pub mod http;
mod request;
mod upstream;

pub use upstream::{HttpClient, Scheme, Upstream, CONNECT_TIMEOUT};

/// The body type sent upstream: the client's body, streamed as it arrives.
pub type ProxyBody = hyper::body::Incoming;
