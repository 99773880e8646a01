//! A small plain-HTTP upstream for the quickstart and the tests: it answers every
//! request with what it received, so you can see what the gateway forwards.
//!
//! - `GET /slow?ms=N`: answers after N ms (at most 60 s).
//! - `GET /bytes?n=N`: a body of N bytes (at most 1 GiB), streamed.
//! - anything else: a JSON echo of method, path, and headers.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use tokio::net::TcpListener;

type DemoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serve until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(answer);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()))
        .unwrap_or(0)
}

async fn answer(req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    match req.uri().path() {
        "/slow" => {
            let ms = query_num(&req, "ms").min(60_000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(Response::new(Full::new(Bytes::from(format!("slept {ms} ms\n"))).boxed()))
        }
        "/bytes" => {
            let n = query_num(&req, "n").min(1 << 30);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..n.div_ceil(64 * 1024)).map(move |i| {
                let len = (n - i * 64 * 1024).min(64 * 1024) as usize;
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            });
            let body = StreamBody::new(futures_util::stream::iter(chunks));
            let mut resp = Response::new(BodyExt::boxed(body));
            resp.headers_mut().insert(http::header::CONTENT_LENGTH, n.into());
            Ok(resp)
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            let echo = serde_json::json!({ "method": method, "path": path, "headers": headers, "body_bytes": body });
            let mut resp = Response::new(Full::new(Bytes::from(echo.to_string() + "\n")).boxed());
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            Ok(resp)
        }
    }
}
