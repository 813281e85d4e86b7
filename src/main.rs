//! The `smarthost` command: `serve` runs the relay; `check` and `route` inspect a
//! configuration without touching the queue.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use smarthost::config::{self, Config};
use smarthost::control::{self, server::bind_socket};
use smarthost::delivery::Relay;
use smarthost::dropdir;
use smarthost::queue::Store;
use smarthost::smtp::server;

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits.h: cannot create (queue) files.
const EX_CANTCREAT: u8 = 73;
const EX_OSERR: u8 = 71;

#[derive(Parser)]
#[command(
    name = "smarthost",
    version,
    about = "A small, durable mail relay to upstream smarthosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: listen, queue, deliver.
    Serve {
        #[arg(long, short, default_value = "/etc/smarthost/smarthost.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and print its route table (never its secrets).
    Check {
        #[arg(long, short, default_value = "/etc/smarthost/smarthost.toml")]
        config: PathBuf,
    },
    /// Show which route a sender's mail takes, and which table entry decided it.
    Route {
        #[arg(long, short, default_value = "/etc/smarthost/smarthost.toml")]
        config: PathBuf,
        /// The envelope sender, e.g. app@example.com ("" or "<>" for the null sender).
        sender: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", config::describe(&c));
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Cmd::Route { config, sender } => match Config::load(&config) {
            Ok(c) => {
                let sender = sender.trim_start_matches('<').trim_end_matches('>');
                let m = c.routing.lookup(sender);
                println!(
                    "{} -> route {} (decided by {})",
                    if sender.is_empty() { "<>" } else { sender },
                    m.route,
                    m.decided_by
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Cmd::Serve { config } => serve(config),
    }
}

fn serve(path: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = match Config::load(&path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    runtime.block_on(async move {
        let store = match Store::open(&config.queue_path, config.queue_cache_size) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot open queue {}: {e}", config.queue_path.display());
                return ExitCode::from(EX_CANTCREAT);
            }
        };
        let relay = match Relay::new(config.clone(), store) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
        };
        let queued = match relay.load_queue() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read queue: {e}");
                return ExitCode::from(EX_CANTCREAT);
            }
        };
        let listeners = match server::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EX_OSERR);
            }
        };
        let local = &config.local;
        let submit = match bind_socket(&local.submit_socket(), 0o666, None) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("submission socket {}: {e}", local.submit_socket().display());
                return ExitCode::from(EX_OSERR);
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
                return ExitCode::from(EX_OSERR);
            }
        };
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
        tokio::select! {
            _ = server::serve(relay.clone(), listeners, Some(submit)) => {}
            _ = shutdown_signal() => {
                tracing::info!("shutting down; queued mail stays queued");
            }
        }
        ExitCode::SUCCESS
    })
}

/// Forgets finished messages past their retention, hourly.
async fn prune_history(relay: Arc<Relay>) {
    loop {
        let local = &relay.config.local;
        let cutoff = smarthost::clock::unix_now().saturating_sub(local.history.as_secs());
        match relay.store.prune_history(cutoff, local.history_max) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} finished message(s)"),
            Err(e) => tracing::warn!("pruning message history: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
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
