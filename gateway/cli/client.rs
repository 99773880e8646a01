//! A small client for the admin API, used by the `window` verbs.
//! URL and token come from `--url`/`--token` or `MENSHEN_ADMIN_URL`/`MENSHEN_TOKEN`;
//! the gateway's certificate is checked against the system roots or `--ca`
//! (`MENSHEN_ADMIN_CA`), e.g. the quickstart's self-signed certificate.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Why a call failed: the gateway said no (exit 1), or we could not ask (exit 2).
#[derive(Debug)]
pub enum CallError {
    /// `body` is the whole JSON answer (a refused reload lists every problem in `errors`).
    Refused {
        status: u16,
        message: String,
        code: String,
        body: Value,
    },
    Unreachable(String),
}

pub struct AdminClient {
    base: http::Uri,
    token: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(url: &str, token: &str, ca: Option<&Path>) -> Result<Self, String> {
        let base: http::Uri = url.parse().map_err(|_| format!("admin URL {url:?} is not a URL"))?;
        if base.scheme_str() != Some("https") || base.host().is_none() {
            return Err(format!("admin URL {url:?} must be https://HOST:PORT"));
        }
        let roots = crate::tls::upstream_roots(ca).map_err(|e| e.to_string())?;
        let tls = crate::tls::upstream_client_config(roots).map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(AdminClient { base, token: token.to_string(), client })
    }

    pub async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value, CallError> {
        let authority = self.base.authority().map(|a| a.as_str()).unwrap_or_default();
        let uri = format!("https://{authority}{path}");
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| CallError::Unreachable(describe(&e)))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| CallError::Unreachable(e.to_string()))?.to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status.is_success() {
                Ok(value)
            } else {
                let message = value["error"].as_str().unwrap_or("(no message)").to_string();
                let code = value["code"].as_str().unwrap_or("").to_string();
                if status.is_server_error() {
                    Err(CallError::Unreachable(format!("{status}: {message}")))
                } else {
                    Err(CallError::Refused { status: status.as_u16(), message, code, body: value })
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .unwrap_or_else(|_| Err(CallError::Unreachable("no answer within 30 s".into())))
    }
}

/// The innermost cause of a client error (connection refused, certificate unknown, …).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}
