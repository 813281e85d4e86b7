//! The metrics listener: `GET /metrics` (the Prometheus text exposition) and
//! `GET /healthz` (200 `ok` while the daemon runs and its queue answers, 503
//! with the reason otherwise). HEAD is answered like GET without a body;
//! anything else gets 404 or 405.
//!
//! Connections are bounded as [`crate::local_http`] bounds them: a scraper
//! that stalls holds no task for long. The listener is loopback unless the operator said
//! otherwise (`[metrics] allow_remote`), because route names and counts say
//! who this machine sends mail for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::config::MetricsSettings;
use crate::delivery::Delivery;
use crate::metrics::exposition::CONTENT_TYPE;

/// How long the queue store may take to answer the health check's read.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
const PLAIN: &str = "text/plain; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("metrics listener {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the configured listener, if any, and serves it in a task. A bind
/// failure stops the start-up: an operator who configured metrics relies on
/// them.
pub async fn start(
    relay: &Arc<Delivery>,
    settings: Option<&MetricsSettings>,
) -> Result<(), BindError> {
    let Some(addr) = settings.map(|s| s.listen) else {
        return Ok(());
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    // Logged before the daemon says it is ready, with the port the system
    // chose when the config asked for port 0.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("metrics on http://{addr}/metrics and http://{addr}/healthz");
    }
    tokio::spawn(serve(relay.clone(), listener));
    Ok(())
}

/// Serves until the task is dropped.
pub async fn serve(relay: Arc<Delivery>, listener: TcpListener) {
    crate::local_http::serve(listener, "metrics listener", move |req| {
        let relay = relay.clone();
        async move { answer(&req, &relay).await }
    })
    .await;
}

async fn answer(req: &Request<Incoming>, relay: &Arc<Delivery>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return respond(StatusCode::NOT_FOUND, PLAIN, "not found\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    // hyper leaves out the body of a HEAD answer and keeps its length.
    if path == "/metrics" {
        let held: Vec<String> = relay.holds.list().into_iter().map(|h| h.route).collect();
        let body = relay.shared.metrics.render(
            &held,
            &relay.shared.tokens.failures(),
            &relay.shared.queue_gauges(),
        );
        return respond(StatusCode::OK, CONTENT_TYPE, body);
    }
    let metrics = &relay.shared.metrics;
    match health(relay).await {
        // Still serving: these need the operator, not a restart.
        Ok(()) if metrics.damaged_count() > 0 => respond(
            StatusCode::OK,
            PLAIN,
            format!(
                "degraded: {} damaged message(s) quarantined in the queue (see `smarthost queue list`)\n",
                metrics.damaged_count()
            ),
        ),
        Ok(()) if metrics.set_aside_count() > 0 => respond(
            StatusCode::OK,
            PLAIN,
            format!(
                "degraded: {} drop file(s) could not be queued and wait in the drop directory's .bad (see the log)\n",
                metrics.set_aside_count()
            ),
        ),
        Ok(()) => respond(StatusCode::OK, PLAIN, "ok\n".into()),
        Err(reason) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            format!("unavailable: {reason}\n"),
        ),
    }
}

/// Why the daemon is not healthy (`503 unavailable: ...`).
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error("stopping")]
    Stopping,
    #[error("starting")]
    Starting,
    #[error(transparent)]
    Queue(#[from] crate::spool::StoreError),
    #[error("queue check failed: {0}")]
    Check(#[from] tokio::task::JoinError),
    #[error("queue store did not answer within {}s", STORE_TIMEOUT.as_secs())]
    Slow,
}

/// Why the daemon is not healthy, if it is not.
async fn health(relay: &Arc<Delivery>) -> Result<(), Unhealthy> {
    if relay.shared.is_stopping() {
        return Err(Unhealthy::Stopping);
    }
    if !relay.shared.metrics.is_ready() {
        return Err(Unhealthy::Starting);
    }
    let store = relay.shared.spool.clone();
    match tokio::time::timeout(
        STORE_TIMEOUT,
        tokio::task::spawn_blocking(move || store.ping()),
    )
    .await
    {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Unhealthy::Slow),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
