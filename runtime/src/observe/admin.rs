//! The admin HTTP server (`statefun run --admin-listen`): `GET /metrics`
//! (Prometheus text), `/health` (200 while the process serves), `/ready` (200
//! once every partition held here serves, else 503 and why), `/status.json`
//! and `/`, the status page that draws it. Read-only: nothing here changes
//! what the runtime does.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Observer;
use crate::now_ms;

/// The status page: static HTML with a little JavaScript, no build step, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

/// OpenMetrics, which Prometheus negotiates; the text format 0.0.4 readers take it too.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the task is dropped; each connection on its own task.
pub async fn serve(listener: TcpListener, observer: Arc<Observer>) {
    observer.watch();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, usually: wait, do not spin.
                tracing::warn!("admin server: accepting a connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let observer = observer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = answer(&observer, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("admin server: connection ended: {e}");
            }
        });
    }
}

fn answer(observer: &Observer, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    let now = now_ms();
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, METRICS_TYPE, observer.metrics_text(now)),
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" => match observer.board.readiness(now) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(reason) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {reason}\n")),
        },
        "/status.json" => reply(StatusCode::OK, "application/json", observer.status_json(now).to_string()),
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        other => reply(StatusCode::NOT_FOUND, "text/plain", format!("no such page: {other}\n")),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
