//! The accept loop of the daemon's small HTTP/1.1 servers (token sharing over
//! HTTP, metrics). Every local user can connect to them, so each is bounded:
//! one request per connection, a limit on the time to send the request head
//! and on its size, on a connection's whole life, and on how many connections
//! are served at once, an idle one making room for a newer one ([`serve`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last in all, reading the answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `answer` on `listener` until the task is dropped. `name` says which
/// server it is in log lines. Request bodies are never read.
///
/// Every local user shares 127.0.0.1, so a share per address would lock out
/// the monitoring probe with the crowd. Instead accepting never waits: when
/// every slot is taken, the connection that has waited longest without
/// sending its request is closed for the new one. A real client sends its
/// request at once and is answered; an idle crowd only pushes itself out.
pub async fn serve<F, Fut>(listener: TcpListener, name: &'static str, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let idle = Arc::new(Idle::default());
    let active = Arc::new(AtomicUsize::new(0));
    for id in 0u64.. {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off; the other servers go on.
                tracing::warn!("{name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS && !idle.evict_oldest() {
            // Every slot is answering a request; those end within the
            // connection timeout.
            continue;
        }
        let cancelled = idle.add(id);
        active.fetch_add(1, Ordering::Relaxed);
        let (answer, asked) = (answer.clone(), idle.clone());
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                // It asked: no longer idle, so never closed for another.
                asked.remove(id);
                let reply = answer(req);
                async move { Ok::<_, Infallible>(reply.await) }
            }),
        );
        let (active, idle) = (active.clone(), idle.clone());
        tokio::spawn(async move {
            tokio::select! {
                done = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match done {
                    Ok(Err(e)) => tracing::debug!("{name}: connection ended: {e}"),
                    Err(_) => tracing::debug!("{name}: connection timed out"),
                    Ok(Ok(())) => {}
                },
                Ok(()) = cancelled => tracing::debug!("{name}: idle connection closed for a newer one"),
            }
            idle.remove(id);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The connections that have not sent a request yet, oldest first, each
/// with the means to close it.
#[derive(Default)]
struct Idle(Mutex<VecDeque<(u64, oneshot::Sender<()>)>>);

impl Idle {
    fn add(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().push_back((id, tx));
        rx
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }

    /// Closes the oldest idle connection; false if there is none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, close)) => {
                let _ = close.send(());
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
