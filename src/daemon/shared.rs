//! What every side of the running daemon shares: the configuration in force,
//! the spool, the schedule, the token cache, the metrics, and whether the
//! daemon is stopping. The inbound side sees it only through an
//! [`crate::intake::Intake`]; delivery and the queue commands hold it through
//! [`crate::delivery::Delivery`], which adds what only delivery owns (route
//! TLS clients, the resolver, route holds, rate limiters).

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::scheduler::{Refill, Scheduler};
use crate::metrics::Metrics;
use crate::oauth::Tokens;
use crate::spool::{Envelope, Router, Slot, Spool, StoreError};

pub struct Shared {
    /// Replaced whole by a reload; holders of the `Arc` (an open session, an
    /// attempt) keep the settings they started with.
    config: RwLock<Arc<Config>>,
    stopping: watch::Sender<bool>,
    pub spool: Spool,
    pub scheduler: Scheduler,
    pub tokens: Arc<Tokens>,
    pub metrics: Metrics,
    /// Held while a refill of the schedule reads the index: one at a time.
    refilling: std::sync::Mutex<()>,
}

impl Shared {
    pub fn new(config: Arc<Config>, spool: Spool, tokens: Arc<Tokens>) -> Shared {
        Shared {
            scheduler: Scheduler::new(config.queue_active_limit),
            metrics: Metrics::new(config.routes.keys()),
            config: RwLock::new(config),
            stopping: watch::Sender::new(false),
            spool,
            tokens,
            refilling: std::sync::Mutex::new(()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new configuration in force (the reload decides when): from
    /// now on, the queue indexes messages by its routing table.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        self.spool.set_router(router(&config));
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

    /// Puts a stored message on the schedule (unless it is held), in the
    /// slot the spool indexes it under.
    pub fn schedule(&self, env: &Envelope) {
        if let Some(Slot { route, at }) = self.spool.slot(env) {
            self.scheduler.schedule(&route, at, env.id.clone());
        }
    }

    /// Reads the next page of the queue's due index into the schedule's
    /// window, if it wants one, until a page sticks (the window may move
    /// while a page is read). Blocking: the index is read here.
    pub fn refill(&self) -> Result<(), StoreError> {
        let _one = self.refilling.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(refill) = self.scheduler.refill_from() {
            if self.read_page(&refill)? {
                break;
            }
        }
        Ok(())
    }

    /// One page of a route's index: the entries that still stand (the
    /// message is there, not held, due then, on this route). False if the
    /// lane moved meanwhile and the page must be read again.
    fn read_page(&self, refill: &Refill) -> Result<bool, StoreError> {
        let after = refill.after.as_ref().map(|(at, id)| (*at, id.as_str()));
        let room = refill.room.max(1);
        let page = self.spool.due_after(&refill.route, after, room)?;
        let complete = page.len() < room;
        let last = page.last().cloned();
        let mut found = Vec::with_capacity(page.len());
        for (at, id) in page {
            let env = match self.spool.load(&id) {
                Ok(Some(env)) if env.next_due() == Some(at) && !env.held => env,
                // Stale (moved on or gone), or quarantined: not for the schedule.
                Ok(_) | Err(StoreError::Damaged { .. }) => continue,
                Err(e) => return Err(e),
            };
            match self.spool.slot(&env) {
                Some(slot) if slot.route == refill.route => found.push((at, id)),
                _ => self.move_on(&env)?,
            }
        }
        Ok(self.scheduler.refilled(refill, found, last, complete))
    }

    /// A message whose index entry the routing table in force no longer
    /// agrees with (a reload left it behind, or a crash cut its move
    /// short): moved to the slot the table gives it, and scheduled there.
    /// One in an attempt or a queue command is left to it: its end writes
    /// the message, and so moves it.
    fn move_on(&self, env: &Envelope) -> Result<(), StoreError> {
        let Some(_claim) = self.spool.claim(&env.id) else {
            return Ok(());
        };
        let Some(env) = self.spool.load(&env.id)? else {
            return Ok(());
        };
        if self.spool.repair_due(&env)? {
            tracing::info!(id = %env.id, "queue: moved to the route it has now");
        }
        self.schedule(&env);
        Ok(())
    }

    /// Schedules the queue anew after a start or a reopen: the window is
    /// refilled from the due index, and the queue is counted for the
    /// metrics; returns the count of messages queued. A damaged message is
    /// counted in the metrics and left alone; a queue that cannot be read is
    /// an error.
    pub fn load_queue(&self) -> Result<usize, StoreError> {
        self.scheduler.reset(self.config().routes.keys());
        // The first page now, so that what is due goes out at once.
        self.refill()?;
        let mut n = 0;
        self.metrics.clear_damaged();
        for env in self.spool.messages() {
            match env {
                Ok(env) => {
                    self.metrics.loaded(&env);
                    n += 1;
                    if self.spool.repair_due(&env)? {
                        tracing::warn!(id = %env.id, "queue: due index entry repaired");
                        // Its entry may be behind the window's horizon now.
                        self.schedule(&env);
                    }
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

/// The spool's router for `config`: each message on the route its routing
/// table gives the message's sender.
pub fn router(config: &Arc<Config>) -> Router {
    let config = config.clone();
    Router::new(move |sender| config.routing.lookup(sender).route.to_string())
}
