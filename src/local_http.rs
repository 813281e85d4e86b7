//! The accept loop of the daemon's small HTTP/1.1 servers (token sharing over
//! HTTP, metrics). Every local user can connect to them, so each is bounded:
//! one request per connection, a limit on the time to send the request head
//! and on its size, on a connection's whole life, and on how many connections
//! are served at once (more wait in the listen backlog).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last in all, reading the answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 16;

/// Serves `answer` on `listener` until the task is dropped. `name` says which
/// server it is in log lines. Request bodies are never read.
pub async fn serve<F, Fut>(listener: TcpListener, name: &'static str, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("{name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answer = answer.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let reply = answer(req);
                async move { Ok::<_, Infallible>(reply.await) }
            }),
        );
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!("{name}: connection ended: {e}"),
                Err(_) => tracing::debug!("{name}: connection timed out"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}
