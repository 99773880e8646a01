//! The optional webhook: a JSON POST on each window transition, sent by its own task
//! from a bounded queue, retried with backoff; never blocks the proxy or the API.

use crate::audit::WindowEvent;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::sync::mpsc;

/// Notices waiting to be sent; past this, new ones are dropped with an error line
/// (the log record of the transition is written regardless).
const QUEUE: usize = 256;
/// Attempts per notice, with 1, 2, 4, 8 s between them.
const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Bytes>,
}

impl Notifier {
    /// Start the sender task for `url`.
    pub fn start(url: http::Uri, gateway: String, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(url, gateway, tls, rx));
        Notifier { tx }
    }

    pub fn send(&self, event: &WindowEvent) {
        let mut body = serde_json::json!({ "event": event.event_name() });
        if let (Some(obj), Ok(serde_json::Value::Object(fields))) = (body.as_object_mut(), serde_json::to_value(event))
        {
            obj.extend(fields);
        }
        if self.tx.try_send(Bytes::from(body.to_string())).is_err() {
            tracing::error!(window = %event.window, "webhook queue full or stopped; notice not sent (the log has the record)");
        }
    }
}

async fn run(
    url: http::Uri,
    gateway: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    while let Some(body) = rx.recv().await {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let req = http::Request::post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("user-agent", format!("menshen/{} ({gateway})", env!("CARGO_PKG_VERSION")))
                .body(Full::new(body.clone()));
            let Ok(req) = req else { break };
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => break,
                Ok(Ok(resp)) => {
                    tracing::warn!(status = %resp.status(), attempt, "webhook refused the notice")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, attempt, "webhook failed"),
                Err(_) => tracing::warn!(attempt, "webhook timed out"),
            }
            if attempt == ATTEMPTS {
                tracing::error!("webhook notice given up after {ATTEMPTS} attempts (the log has the record)");
            } else {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
