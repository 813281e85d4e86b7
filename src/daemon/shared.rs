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
use crate::metrics::{Metrics, QueueGauges};
use crate::oauth::Tokens;
use crate::spool::{Envelope, Router, Slot, Spool, Standing, StoreError};

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
    /// What the last crash left has been swept (once a start).
    swept: std::sync::atomic::AtomicBool,
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
            swept: std::sync::atomic::AtomicBool::new(false),
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
    /// slot the spool indexes it under. One indexed elsewhere (written by
    /// the routing table a reload has just replaced, or not readable now)
    /// is kept in memory on the route it has now, due then: its attempt's
    /// write moves its index entry.
    pub fn schedule(&self, env: &Envelope) {
        let Some(now) = self.spool.slot(env) else {
            return;
        };
        match self.spool.indexed(&env.id) {
            Ok(Some(slot)) if slot == now => {
                self.scheduler
                    .schedule(&slot.route, slot.at, env.id.clone());
            }
            _ => self
                .scheduler
                .retry_soon(&now.route, now.at, env.id.clone()),
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
            let slot = Slot {
                route: refill.route.clone(),
                at,
            };
            match self.spool.standing(&id, &slot)? {
                Standing::Stands => found.push((at, id)),
                Standing::Stale => {}
                Standing::Elsewhere | Standing::Unreadable => match self.spool.load(&id) {
                    Ok(Some(env)) => self.move_on(&env)?,
                    Ok(None) => {}
                    Err(StoreError::Damaged { id, reason }) => self.quarantined(&id, &reason)?,
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(self.scheduler.refilled(refill, found, last, complete))
    }

    /// A message found damaged as it is read: set aside (if it is not
    /// already), counted and logged, so the operator sees it.
    pub fn quarantined(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        if self.spool.mark_damaged(id, reason)? {
            self.metrics.damaged();
            tracing::error!(
                id,
                "quarantined: {reason} (`smarthost queue delete {id}` removes it)"
            );
        }
        Ok(())
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

    /// Schedules the queue anew after a start or a reopen: each route's
    /// lane is refilled from the due index, one page each, and the
    /// quarantined messages are counted. Reads nothing else: the queue's
    /// counts come from the spool, and whatever else must look at every
    /// message runs after the start ([`Shared::audit`]). Returns the count
    /// of messages queued.
    pub fn load_queue(&self) -> Result<u64, StoreError> {
        // A lane for every route the index has, configured or not: the
        // refill of one the table no longer has moves its messages on.
        let mut routes: Vec<String> = self.config().routes.keys().cloned().collect();
        routes.extend(self.spool.index_routes()?);
        routes.sort();
        routes.dedup();
        self.scheduler.reset(&routes);
        // The first pages now, so that what is due goes out at once.
        self.refill()?;
        self.metrics.set_damaged(self.spool.damaged_count()?);
        Ok(self.spool.tally().total.messages)
    }

    /// After a crash or a reopen, or in a queue an older version wrote:
    /// counts the queue again, and repairs every message's index entry the
    /// records or the routing table disagree with (scheduling it anew), a
    /// message at a time beside the running daemon. Nothing is delivered
    /// twice: a message is repaired only under its claim, and one an
    /// attempt holds is written by that attempt's end. Blocking.
    pub fn audit(&self) -> Result<(), StoreError> {
        if self.spool.crashed() && !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let removed = self.spool.sweep_orphans()?;
            if removed > 0 {
                tracing::info!(
                    "queue: removed {removed} record(s) left without a message by a crash"
                );
            }
        }
        if !self.spool.needs_recount() {
            return Ok(());
        }
        tracing::info!("queue: counting the queue and checking its due index");
        let mut repaired = 0u64;
        self.spool.recount(|id| {
            let Some(_claim) = self.spool.claim(id) else {
                return;
            };
            match self.spool.load(id) {
                Ok(Some(env)) => match self.spool.repair_due(&env) {
                    Ok(true) => {
                        repaired += 1;
                        self.schedule(&env);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(id, "queue: cannot repair its due index entry: {e}"),
                },
                Ok(None) => {}
                Err(StoreError::Damaged { reason, .. }) => {
                    if let Err(e) = self.quarantined(id, &reason) {
                        tracing::warn!(id, "queue: cannot quarantine: {e}");
                    }
                }
                Err(e) => tracing::warn!(id, "queue: cannot read: {e}"),
            }
        })?;
        let total = self.spool.tally().total;
        tracing::info!(
            "queue: counted {} message(s), {} recipient(s); {repaired} due index entr(ies) repaired",
            total.messages,
            total.recipients
        );
        Ok(())
    }

    /// The queue gauges now.
    pub fn queue_gauges(&self) -> QueueGauges {
        QueueGauges {
            tally: self.spool.tally(),
            oldest: self.spool.oldest_arrival().ok().flatten(),
        }
    }
}

/// The spool's router for `config`: each message on the route its routing
/// table gives the message's sender.
pub fn router(config: &Arc<Config>) -> Router {
    let fingerprint = format!("{:?}", config.routing);
    let config = config.clone();
    Router::new(move |sender| config.routing.lookup(sender).route.to_string())
        .with_fingerprint(fingerprint)
}
