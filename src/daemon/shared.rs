//! What every side of the running daemon shares: the configuration in force,
//! the spool, the schedule, the token cache, the metrics, and whether the
//! daemon is stopping. The inbound side sees it only through an
//! [`crate::intake::Intake`]; delivery and the queue commands hold it through
//! [`crate::delivery::Delivery`], which adds what only delivery owns (route
//! TLS clients, the resolver, route holds, rate limiters).

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::Scheduler;
use crate::metrics::Metrics;
use crate::oauth::Tokens;
use crate::spool::{Envelope, Spool, StoreError};

pub struct Shared {
    /// Replaced whole by a reload; holders of the `Arc` (an open session, an
    /// attempt) keep the settings they started with.
    config: RwLock<Arc<Config>>,
    stopping: watch::Sender<bool>,
    pub spool: Spool,
    pub scheduler: Scheduler,
    pub tokens: Arc<Tokens>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(config: Arc<Config>, spool: Spool, tokens: Arc<Tokens>) -> Shared {
        Shared {
            metrics: Metrics::new(config.routes.keys()),
            config: RwLock::new(config),
            stopping: watch::Sender::new(false),
            spool,
            scheduler: Scheduler::new(),
            tokens,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new configuration in force (the reload decides when).
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Resolves once the daemon has begun to stop.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// From now on no session or worker takes new work.
    pub(crate) fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// The route a message leaves through: decided now, from the current table.
    pub fn route_name(&self, env: &Envelope) -> String {
        self.config()
            .routing
            .lookup(&env.route_sender)
            .route
            .to_string()
    }

    /// Puts a stored message on the schedule (unless it is held).
    pub fn schedule(&self, env: &Envelope) {
        if env.held {
            return;
        }
        if let Some(at) = env.next_due() {
            self.scheduler
                .schedule(&self.route_name(env), at, env.id.clone());
        }
    }

    /// Re-schedules everything in the queue after a start or a reopen;
    /// returns the count of messages scheduled. A damaged message is counted
    /// in the metrics and left alone; a queue that cannot be read is an error.
    pub fn load_queue(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        self.metrics.clear_damaged();
        for env in self.spool.messages() {
            match env {
                Ok(env) => {
                    self.metrics.loaded(&env);
                    self.schedule(&env);
                    n += 1;
                }
                Err(StoreError::Damaged { id, reason }) => {
                    self.metrics.damaged();
                    tracing::error!(
                        id,
                        "quarantined: {reason} (`smarthost queue delete {id}` removes it)"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}
