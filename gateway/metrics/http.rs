//! The optional plain-HTTP `/metrics` on a loopback address (`gateway.metrics_bind`),
//! for a Prometheus on the same host. It answers `GET /metrics` and nothing else.

use super::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The registry in Prometheus' text format.
pub fn render(metrics: &Metrics) -> String {
    metrics.refresh_clock();
    prometheus::TextEncoder::new().encode_to_string(&metrics.registry.gather()).unwrap_or_default()
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let mut resp = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                        let mut r = http::Response::new(Full::new(Bytes::from(render(&metrics))));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        );
                        r
                    } else {
                        http::Response::new(Full::new(Bytes::from_static(b"only GET /metrics here\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *resp.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}
