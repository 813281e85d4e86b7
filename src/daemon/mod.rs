//! The daemon (`smarthost serve`): opens the queue, binds or takes over the
//! listeners, starts the workers and the local servers, and runs until stopped.

pub mod logging;

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::control::{self, server::bind_socket};
use crate::delivery::Relay;
use crate::dropdir;
use crate::metrics::Phase;
use crate::queue::Store;
use crate::smtp::server;
use crate::sysexits::*;
pub use logging::LogFormat;

pub fn run(path: &Path, log_format: LogFormat) -> u8 {
    logging::init(log_format);
    // One provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return EX_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return EX_OSERR;
        }
    };
    runtime.block_on(async move {
        let store = match Store::open(&config.queue_path, config.queue_cache_size) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot open queue {}: {e}", config.queue_path.display());
                return EX_CANTCREAT;
            }
        };
        let relay = match Relay::new(config.clone(), store) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return EX_CONFIG;
            }
        };
        relay.load_holds();
        let queued = match relay.load_queue() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read queue: {e}");
                return EX_CANTCREAT;
            }
        };
        let listeners = match server::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return EX_OSERR;
            }
        };
        let local = &config.local;
        let submit = match bind_socket(&local.submit_socket(), 0o666, None) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("submission socket {}: {e}", local.submit_socket().display());
                return EX_OSERR;
            }
        };
        let control = match bind_socket(
            &local.control_socket(),
            0o660,
            local.control_group.as_deref(),
        ) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("control socket {}: {e}", local.control_socket().display());
                return EX_OSERR;
            }
        };
        if let Err(code) = start_sharing(&relay).await {
            return code;
        }
        if let Err(e) = crate::metrics::http::start(&relay, config.metrics.as_ref()).await {
            tracing::error!("{e}");
            return EX_OSERR;
        }
        if let Err(e) = dropdir::prepare(&local.drop_dir) {
            // sendmail still works through the socket; only the fallback is lost.
            tracing::warn!("drop directory {}: {e}", local.drop_dir.display());
        }
        // Mail dropped while the daemon was down is queued before anything else.
        let picked = dropdir::pickup(&relay).await;
        if picked > 0 {
            tracing::info!("picked up {picked} message(s) from the drop directory");
        }
        relay.spawn_workers();
        tokio::spawn(dropdir::run(relay.clone()));
        tokio::spawn(control::server::serve(relay.clone(), control));
        tokio::spawn(prune_history(relay.clone()));
        tokio::spawn(relay.clone().watch_holds());
        tokio::spawn(keep_tokens_alive(relay.clone()));
        let addrs: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!(
            "smarthost ready: listening on {} and {} with {} queued message(s)",
            addrs.join(", "),
            local.submit_socket().display(),
            queued + picked
        );
        relay.metrics.set_phase(Phase::Running);
        tokio::select! {
            _ = server::serve(relay.clone(), listeners, Some(submit)) => {}
            _ = shutdown_signal() => {
                relay.metrics.set_phase(Phase::Stopping);
                tracing::info!("shutting down; queued mail stays queued");
            }
        }
        EX_OK
    })
}

/// Forgets finished messages past their retention, hourly.
async fn prune_history(relay: Arc<Relay>) {
    loop {
        let local = &relay.config.local;
        let cutoff = crate::clock::unix_now().saturating_sub(local.history.as_secs());
        match relay.store.prune_history(cutoff, local.history_max) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} finished message(s)"),
            Err(e) => tracing::warn!("pruning message history: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// The optional servers that hand this daemon's tokens to other local programs.
async fn start_sharing(relay: &Arc<Relay>) -> Result<(), u8> {
    use crate::oauth::share;
    let o = &relay.config.oauth;
    let sources = relay.config.token_sources.clone();
    if let Some(path) = &o.share_socket {
        let listener = bind_socket(path, 0o660, o.share_group.as_deref()).map_err(|e| {
            tracing::error!("oauth.share_socket {}: {e}", path.display());
            EX_OSERR
        })?;
        tracing::info!("sharing tokens on {}", path.display());
        tokio::spawn(share::serve_socket(
            listener,
            relay.tokens.clone(),
            sources.clone(),
        ));
    }
    if let (Some(addr), Some(password)) = (o.share_http, &o.share_http_password) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            tracing::error!("oauth.share_http {addr}: {e}");
            EX_OSERR
        })?;
        tracing::info!("sharing tokens over HTTP on {addr}");
        tokio::spawn(share::serve_http(
            listener,
            relay.tokens.clone(),
            sources,
            password.clone(),
        ));
    }
    Ok(())
}

/// Exchanges idle refresh tokens before the provider forgets them, hourly.
async fn keep_tokens_alive(relay: Arc<Relay>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        relay.tokens.keepalive().await;
        tokio::time::sleep(std::time::Duration::from_secs(3540)).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
