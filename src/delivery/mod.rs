//! Delivery: a bounded pool of workers per route takes due messages from the
//! [`Scheduler`], tries their due recipients over the route's transport, records
//! every outcome durably, then logs and reschedules.
//!
//! Each worker holds at most one upstream connection and reuses it for the next
//! message (RSET in between only after an abandoned transaction), so
//! `max_connections` workers per route is also the route's connection limit. A
//! route with `rate` also has a [`ratelimit`] limiter its workers take a permit
//! from before each message.

pub mod hold;
mod notices;
pub mod ratelimit;
pub mod record;
pub(crate) use notices::Sent;
mod reload;
pub mod scheduler;
mod smtp;

use smtp::route_tls;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use tokio_rustls::TlsConnector;

use crate::clock::unix_now;
use crate::config::{Config, Route, Timeouts, Transport};
use crate::daemon::shared::Shared;
use crate::oauth::Tokens;
use crate::outcome::Outcome;
use crate::spool::{Envelope, Spool, State, StoreError};
use crate::upstream::{self, Connection, Resolver};

pub use reload::Reloaded;
pub use scheduler::Scheduler;

/// Delivery's state: the daemon's [`Shared`] state plus what only delivery
/// owns (route TLS clients and the resolver of the configuration in force,
/// route holds, rate limiters, the workers' generation).
pub struct Delivery {
    pub shared: Arc<Shared>,
    /// What is built from the configuration; a reload replaces it whole.
    current: RwLock<Arc<Generation>>,
    /// The generation the workers should belong to; [`STOPPING`] once the
    /// daemon stops. Workers of an older one finish their attempt and exit.
    generation: watch::Sender<u64>,
    pub holds: hold::Holds,
    /// Outside the [`Generation`]: what a route has sent must outlive a reload.
    limiters: ratelimit::Limiters,
}

/// The configuration in force, the TLS client settings of its routes and the
/// resolver of its `[dns]`.
struct Generation {
    number: u64,
    config: Arc<Config>,
    tls: HashMap<String, TlsConnector>,
    resolver: Resolver,
}

/// The worker generation that means "stop taking messages".
const STOPPING: u64 = u64::MAX;

/// What an attempt gave.
struct Tried {
    /// One per recipient tried.
    outcomes: Vec<Outcome>,
    /// For the log: `host[ip]:port`, `directory` or `none`.
    relay: String,
    /// For a notice's Remote-MTA.
    remote_host: Option<String>,
    /// The notice this relay owes a recipient sent with NOTIFY=SUCCESS: None
    /// when the upstream took NOTIFY itself (RFC 3461 5.2.1).
    success: Option<crate::dsn::notice::Action>,
}

impl Tried {
    /// Nothing was sent: every recipient has outcome `o`.
    fn nothing(o: Outcome, n: usize, relay: String) -> Tried {
        Tried {
            outcomes: vec![o; n],
            relay,
            remote_host: None,
            success: None,
        }
    }
}

/// An attempt that could not be made because the route's credentials are dead.
struct HoldRoute {
    source: Option<String>,
    reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("route {route}: {reason}")]
    Tls { route: String, reason: String },
    #[error(transparent)]
    Resolver(#[from] crate::upstream::ResolveError),
    #[error(transparent)]
    Http(#[from] crate::oauth::tokens::HttpClientError),
    #[error("the daemon is stopping")]
    Stopping,
}

impl Delivery {
    /// The daemon's shared state and delivery's own, for `config`.
    pub fn new(config: Arc<Config>, spool: Spool) -> Result<Arc<Delivery>, DeliveryError> {
        let tls = route_tls(&config)?;
        let resolver = Resolver::new(&config.dns)?;
        let http_tls = upstream::tls::client_config(None).map_err(|e| DeliveryError::Tls {
            route: "(token endpoints)".into(),
            reason: e.to_string(),
        })?;
        let http = crate::oauth::tokens::http_client(http_tls, config.oauth.proxy.as_ref())?;
        let tokens = Arc::new(Tokens::new(&config.token_sources, http));
        Ok(Arc::new(Delivery {
            shared: Arc::new(Shared::new(config.clone(), spool, tokens)),
            holds: hold::Holds::default(),
            limiters: ratelimit::Limiters::new(&config),
            current: RwLock::new(Arc::new(Generation {
                number: 0,
                config,
                tls,
                resolver,
            })),
            generation: watch::Sender::new(0),
        }))
    }

    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration in force (see [`Shared::config`]).
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    fn resolver(&self) -> Resolver {
        self.current().resolver.clone()
    }

    /// Stops the sessions and the workers taking new work (attempts in
    /// flight go on).
    pub fn stop(&self) {
        self.shared.begin_stop();
        self.generation.send_replace(STOPPING);
    }

    /// Waits until no message is being worked on, or `limit` passes; false if
    /// some attempt was still running then.
    pub async fn idle_within(&self, limit: Duration) -> bool {
        self.shared.spool.idle_within(limit).await
    }

    /// Starts the workers of every route.
    pub fn spawn_workers(self: &Arc<Self>) {
        let current = self.current();
        for route in current.config.routes.values() {
            for _ in 0..route.max_connections {
                let relay = self.clone();
                let route = route.clone();
                let number = current.number;
                tokio::spawn(async move { relay.worker(route, number).await });
            }
        }
    }

    async fn worker(self: Arc<Self>, route: Route, generation: u64) {
        let mut conn: Option<Connection> = None;
        let mut changes = self.generation.subscribe();
        let timeouts = self.config().timeouts.clone();
        let limiter = self.limiters.get(&route.name);
        loop {
            if *changes.borrow_and_update() != generation {
                if let Some(c) = conn.take() {
                    c.quit(&timeouts).await;
                }
                return;
            }
            // Before taking a message, so one the route may not send yet stays
            // on the schedule, unclaimed: a flush, hold or reload still sees it.
            let permit = match &limiter {
                Some(l) => match self
                    .permit(l, &route.name, &mut conn, &mut changes, &timeouts)
                    .await
                {
                    Some(p) => Some(p),
                    None => continue,
                },
                None => None,
            };
            let idle = conn.as_ref().map(|_| timeouts.idle);
            let next = tokio::select! {
                next = self.shared.scheduler.next(&route.name, idle) => next,
                _ = changes.changed() => continue,
            };
            let Some(id) = next else {
                if let Some(c) = conn.take() {
                    c.quit(&timeouts).await;
                }
                continue;
            };
            if *self.generation.borrow() != generation {
                self.hand_back(&id, &route.name);
                continue;
            }
            if self.holds.is_held(&route.name) {
                // The resume puts every message of the route back on the schedule.
                continue;
            }
            let Some(claim) = self.shared.spool.claim(&id) else {
                // A queue command has it; look again shortly (the envelope decides).
                self.shared
                    .scheduler
                    .retry_soon(&route.name, unix_now() + 1, id);
                continue;
            };
            let result = self.attempt(&route, &id, &mut conn).await;
            // Counted from the attempt's end (see `ratelimit`), and counted even
            // when it failed: the upstream may have taken the message anyway.
            if let Some(p) = permit {
                p.spend();
            }
            drop(claim);
            self.settle(&route, id, result).await;
        }
    }

    /// A message taken off a schedule that a reload has just rebuilt goes
    /// back to whichever route it has now, unless the daemon is stopping.
    fn hand_back(&self, id: &str, route: &str) {
        if *self.generation.borrow() == STOPPING {
            return;
        }
        match self.shared.spool.load(id) {
            Ok(Some(env)) => self.shared.schedule(&env),
            Ok(None) | Err(StoreError::Damaged { .. }) => {}
            // Not readable now: looked at again shortly (the envelope
            // decides then).
            Err(_) => {
                self.shared
                    .scheduler
                    .retry_soon(route, unix_now() + 60, id.to_string());
            }
        }
    }

    /// After an attempt: a damaged message is set aside; one whose
    /// bookkeeping failed stays queued and is looked at again later.
    async fn settle(&self, route: &Route, id: String, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {}
            Err(StoreError::Damaged { reason, .. }) => self.quarantine(&id, &reason).await,
            Err(e) => {
                tracing::error!("{id}: delivery bookkeeping failed: {e}; retrying in 60s");
                let on = match self.shared.spool.load(&id) {
                    Ok(Some(env)) => self.shared.route_name(&env),
                    _ => route.name.clone(),
                };
                self.shared.scheduler.retry_soon(&on, unix_now() + 60, id);
            }
        }
    }

    /// Sets a damaged message aside for good: it is never tried again, and
    /// the operator sees it in `queue list` and the metrics.
    async fn quarantine(&self, id: &str, reason: &str) {
        match self.shared.spool.quarantine(id, reason).await {
            Ok(()) => {
                self.shared.metrics.damaged();
                tracing::error!(
                    id,
                    "quarantined: {reason} (`smarthost queue delete {id}` removes it)"
                );
            }
            // Not marked: the next start finds the damage again.
            Err(e) => tracing::error!(
                id,
                "damaged ({reason}), and the quarantine cannot be recorded: {e}"
            ),
        }
    }

    /// Waits for a permit from the route's limiter. None sends the worker
    /// round its loop again: its generation ended, or it waited out the idle
    /// timeout and closed its connection rather than hold it open, idle, for
    /// what may be minutes.
    async fn permit(
        &self,
        limiter: &Arc<ratelimit::RouteLimiter>,
        route: &str,
        conn: &mut Option<Connection>,
        changes: &mut watch::Receiver<u64>,
        timeouts: &Timeouts,
    ) -> Option<ratelimit::Permit> {
        let waiting = tokio::time::Instant::now();
        let give_up = conn
            .as_ref()
            .and_then(|_| waiting.checked_add(timeouts.idle));
        let permit = tokio::select! {
            p = limiter.acquire(give_up) => p,
            _ = changes.changed() => return None,
        };
        self.shared
            .metrics
            .rate_limit_waited(route, waiting.elapsed());
        if permit.is_none() {
            if let Some(c) = conn.take() {
                c.quit(timeouts).await;
            }
        }
        permit
    }

    async fn attempt(
        &self,
        route: &Route,
        id: &str,
        conn: &mut Option<Connection>,
    ) -> Result<(), StoreError> {
        let Some(mut env) = self.shared.spool.load(id)? else {
            return Ok(());
        };
        if env.held {
            return Ok(());
        }
        let now = unix_now();
        let due = env.due_recipients(now);
        if due.is_empty() {
            self.shared.schedule(&env);
            return Ok(());
        }
        // A body that is missing or cut short is found before a word goes
        // to the upstream: the message is quarantined, not half-sent.
        self.shared.spool.check_body(&env)?;
        let rcpts: Vec<String> = due
            .iter()
            .filter_map(|&i| env.recipients.get(i).map(|r| r.address.clone()))
            .collect();
        let tried = match &route.transport {
            Transport::Directory(dir) => self.directory_attempt(dir, &env, &rcpts).await,
            Transport::Smtp(smtp) => match self.smtp_attempt(route, smtp, &env, &due, conn).await {
                Ok(r) => r,
                // Not an attempt: nothing is recorded against the message.
                Err(h) => {
                    return self
                        .hold_route(&route.name, h.source.as_deref(), h.reason)
                        .await
                }
            },
        };
        self.finish(&mut env, &due, tried).await
    }

    /// The `directory` route: the message written into a directory.
    async fn directory_attempt(
        &self,
        dir: &std::path::Path,
        env: &Envelope,
        rcpts: &[String],
    ) -> Tried {
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let body = self.shared.spool.body(env);
        let o = match crate::capture::deliver(dir, &env.id, &env.sender, &refs, body).await {
            Ok(reply) => Outcome::Sent { reply },
            Err(e) => Outcome::deferred(format!("writing to directory: {e}")),
        };
        Tried {
            // The directory is the end of the road: the message is delivered.
            success: Some(crate::dsn::notice::Action::Delivered),
            ..Tried::nothing(o, rcpts.len(), "directory".into())
        }
    }

    /// Records the outcomes durably (with the notices they call for,
    /// atomically), then logs them and reschedules what is left.
    async fn finish(
        &self,
        env: &mut Envelope,
        due: &[usize],
        tried: Tried,
    ) -> Result<(), StoreError> {
        let now = unix_now();
        let Tried {
            outcomes,
            relay,
            remote_host,
            success,
        } = tried;
        let relay = relay.as_str();
        let retry = self.config().retry.clone();
        let failed = record::apply(env, due, &outcomes, Some(relay), &retry, now);
        let sent = notices::Sent {
            due,
            failed: &failed,
            success,
            remote_host: remote_host.as_deref(),
        };
        let mut notices = self.notices_for(env, &sent, now).await?;
        let delay = now.saturating_sub(env.arrived);
        history(env, due, &outcomes, relay, now);
        self.shared
            .spool
            .record(env, due, env.ending().word(), &mut notices)
            .await?;
        // The current table's route: the attempt's, except across a reload.
        let route = self.shared.route_name(env);
        self.shared.metrics.attempted(&route, env, due);

        for (&i, o) in due.iter().zip(&outcomes) {
            let Some(r) = env.recipients.get(i) else {
                continue;
            };
            tracing::info!(
                id = %env.id,
                to = %r.address,
                relay,
                delay,
                route,
                attempts = r.attempts,
                status = status_word(r.state),
                detail = r.last_error.as_deref().unwrap_or(o.detail()),
            );
        }
        self.notices_stored(&env.id, notices);
        if env.is_finished() {
            tracing::info!(id = %env.id, "removed");
        } else {
            // On the route the current table gives: a reload during the attempt
            // may have moved the message.
            self.shared.schedule(env);
        }
        Ok(())
    }
}

/// One event per recipient tried, for `queue show`.
fn history(env: &mut Envelope, due: &[usize], outcomes: &[Outcome], relay: &str, now: u64) {
    for (&i, o) in due.iter().zip(outcomes) {
        if let Some(r) = env.recipients.get(i) {
            let detail = r
                .last_error
                .clone()
                .unwrap_or_else(|| o.detail().to_string());
            let text = format!(
                "to=<{}> relay={} status={} ({})",
                r.address,
                relay,
                status_word(r.state),
                detail
            );
            env.event(now, text);
        }
    }
}

fn status_word(state: State) -> &'static str {
    match state {
        State::Delivered => "sent",
        State::Bounced => "bounced",
        _ => "deferred",
    }
}
