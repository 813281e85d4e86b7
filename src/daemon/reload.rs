//! Reloading the configuration (SIGHUP, `smarthost reload`, `systemctl
//! reload`): the file is read and validated as a whole first; a configuration
//! that fails is refused, logged, and the one in force keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use super::systemd;
use crate::config::Config;
use crate::delivery::{Delivery, Reloaded};

/// One reload at a time: a second SIGHUP during a reload waits for it.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a reload was refused; the configuration in force keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reading the configuration: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Refused(#[from] crate::delivery::DeliveryError),
}

/// Re-reads the file the running configuration came from and puts it in force.
/// The error text is what the operator needs to fix; it never holds a secret
/// (config errors name files and settings, not their content).
pub async fn run(relay: &Arc<Delivery>) -> Result<Reloaded, ReloadError> {
    let _one = RELOADING.lock().await;
    systemd::reloading();
    let path = PathBuf::from(&relay.config().file);
    tracing::info!("reloading {}", path.display());
    let loaded = match tokio::task::spawn_blocking(move || Config::load(&path)).await {
        Ok(config) => config.map_err(ReloadError::from),
        Err(e) => Err(e.into()),
    };
    let result = match loaded {
        Ok(config) => relay.reload(config).await.map_err(ReloadError::from),
        Err(e) => Err(e),
    };
    match &result {
        Ok(r) => {
            tracing::info!(
                "reloaded: {} route(s), {} queued message(s) rescheduled, {} on a new route",
                r.routes,
                r.queued,
                r.rerouted
            );
            if !r.needs_restart.is_empty() {
                tracing::warn!(
                    "changed settings that apply only after a restart: {}",
                    r.needs_restart.join(", ")
                );
            }
        }
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays in force: {e}")
        }
    }
    // READY=1 ends the reload either way: the old configuration still serves.
    systemd::ready(&match &result {
        Ok(_) => super::status_line(relay),
        Err(_) => format!("{} (last reload refused)", super::status_line(relay)),
    });
    result
}
