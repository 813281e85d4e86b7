//! Route holds. When a route's credentials are dead (the provider refused the
//! refresh token, or the smarthost refuses even a freshly issued token), trying
//! its messages only burns their retry budget until they bounce for a fault
//! that is the operator's, not the recipients'. So the route is held instead:
//! its messages stay queued and are not tried, and when the route resumes, the
//! held time is added back to every retry clock, as if it had never passed.
//!
//! A hold is written to the queue before anyone acts on it, so it survives a
//! restart. A watcher probes each held route, at once when the operator changes
//! something (the token source's state or token file) and otherwise with a
//! growing interval, and resumes it once a session authenticates again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Delivery;
use crate::clock::unix_now;
use crate::config::{AuthSecret, Transport};
use crate::oauth::external::FileStamp;
use crate::spool::{Envelope, StoreError};
use crate::upstream::{self, Failure};

/// How often the watcher looks at held routes; a changed token file is
/// noticed within this.
const WATCH_EVERY: Duration = Duration::from_secs(2);
const FIRST_PROBE: u64 = 60;
const MAX_PROBE: u64 = 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hold {
    pub route: String,
    pub since: u64,
    pub reason: String,
    /// The token source whose trouble this is, if any.
    pub source: Option<String>,
}

struct Live {
    hold: Hold,
    next_probe: u64,
    interval: u64,
    inputs: Option<FileStamp>,
}

#[derive(Default)]
pub struct Holds {
    map: Mutex<BTreeMap<String, Live>>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Live>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_held(&self, route: &str) -> bool {
        self.lock().contains_key(route)
    }

    pub fn list(&self) -> Vec<Hold> {
        self.lock().values().map(|l| l.hold.clone()).collect()
    }
}

impl Delivery {
    /// Loads the holds stored by an earlier run; each is probed at once.
    pub fn load_holds(&self) {
        let now = unix_now();
        for (route, bytes) in self.shared.spool.route_holds() {
            match serde_json::from_slice::<Hold>(&bytes) {
                Ok(hold) => {
                    tracing::warn!(
                        "route {route}: held since {} ({}); checking whether it works again",
                        crate::clock::rfc5322(crate::clock::from_unix(hold.since)),
                        hold.reason
                    );
                    let inputs = hold
                        .source
                        .as_deref()
                        .and_then(|s| self.shared.tokens.inputs(s));
                    self.holds.lock().insert(
                        route,
                        Live {
                            hold,
                            next_probe: now,
                            interval: FIRST_PROBE,
                            inputs,
                        },
                    );
                }
                Err(e) => tracing::error!("route {route}: unreadable hold record: {e}"),
            }
        }
    }

    /// Holds a route. Durable before it takes effect, so a crash never loses
    /// the record of time that must not count against the messages.
    pub(crate) async fn hold_route(
        &self,
        route: &str,
        source: Option<&str>,
        reason: String,
    ) -> Result<(), StoreError> {
        if let Some(live) = self.holds.lock().get_mut(route) {
            live.hold.reason = reason;
            return Ok(());
        }
        let hold = Hold {
            route: route.to_string(),
            since: unix_now(),
            reason: reason.clone(),
            source: source.map(str::to_string),
        };
        self.shared
            .spool
            .hold_route(route, &serde_json::to_vec(&hold).unwrap_or_default())
            .await?;
        let inputs = source.and_then(|s| self.shared.tokens.inputs(s));
        let mut holds = self.holds.lock();
        if holds.contains_key(route) {
            return Ok(());
        }
        holds.insert(
            route.to_string(),
            Live {
                next_probe: hold.since + FIRST_PROBE,
                interval: FIRST_PROBE,
                inputs,
                hold,
            },
        );
        drop(holds);
        let todo = match source {
            Some(s) => format!(
                "fix the token source {s} (`smarthost oauth status`, `smarthost oauth login {s}`)"
            ),
            None => "fix the route's credentials".to_string(),
        };
        tracing::error!(
            "route {route}: HELD: {reason}. Its mail stays queued and its retry time is not counted; {todo}. Delivery resumes by itself once authentication works."
        );
        Ok(())
    }

    /// Ends a hold: every queued message of the route gets the held time added
    /// to its retry clock, durably and together with the removal of the hold,
    /// then goes back on the schedule.
    pub async fn resume_route(&self, route: &str) -> Result<(), StoreError> {
        let Some(since) = self.holds.lock().get(route).map(|l| l.hold.since) else {
            return Ok(());
        };
        let now = unix_now();
        let held = now.saturating_sub(since);
        let mut claimed = Vec::new();
        let mut envs = Vec::new();
        let mut changed_at = Vec::new();
        for env in self.shared.spool.messages() {
            let Ok(env) = env else { continue };
            if self.shared.route_name(&env) != route {
                continue;
            }
            // One an attempt still has is left alone: its clock was running.
            let Some(claim) = self.shared.spool.claim(&env.id) else {
                continue;
            };
            // Read again under the claim: an attempt may have changed it
            // since the scan read it.
            let Ok(Some(mut env)) = self.shared.spool.load(&env.id) else {
                continue;
            };
            claimed.push(claim);
            let mut changed = false;
            for r in env.recipients.iter_mut().filter(|r| !r.state.is_final()) {
                if let Some(first) = r.first_failure.as_mut() {
                    *first = first.saturating_add(held);
                    changed = true;
                }
            }
            if changed {
                env.event(now, format!("route {route} resumed after {held}s on hold"));
                changed_at.push(envs.len());
            }
            envs.push(env);
        }
        let changed: Vec<&Envelope> = changed_at.iter().filter_map(|&i| envs.get(i)).collect();
        if let Err(e) = self.shared.spool.reschedule(&changed, Some(route)).await {
            drop(claimed);
            return Err(e);
        }
        self.holds.lock().remove(route);
        // Scheduled while still claimed: a flush or reroute after the claims
        // end must find the newer due time, not have it replaced by these.
        for env in &envs {
            self.shared.schedule(env);
        }
        drop(claimed);
        tracing::info!(
            "route {route}: resumed after {held}s on hold; {} queued message(s) back on the schedule",
            envs.len()
        );
        Ok(())
    }

    /// Probes held routes until they work again.
    pub async fn watch_holds(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let now = unix_now();
            let due: Vec<(String, Option<String>, bool)> = {
                let holds = self.holds.lock();
                holds
                    .values()
                    .filter_map(|l| {
                        let changed = l
                            .hold
                            .source
                            .as_deref()
                            .map(|s| self.shared.tokens.inputs(s) != l.inputs)
                            .unwrap_or(false);
                        (changed || now >= l.next_probe)
                            .then(|| (l.hold.route.clone(), l.hold.source.clone(), changed))
                    })
                    .collect()
            };
            for (route, source, changed) in due {
                if changed {
                    tracing::info!("route {route}: token source changed; checking authentication");
                }
                self.probe(&route, source.as_deref()).await;
            }
        }
    }

    /// One try at a session on a held route; resumes it if authentication
    /// passes (or fails for reasons that are not about credentials).
    pub(crate) async fn probe(&self, route_name: &str, source: Option<&str>) {
        let inputs = source.and_then(|s| self.shared.tokens.inputs(s));
        if let Some(s) = source {
            self.shared.tokens.forget_failure(s).await;
        }
        let config = self.config();
        let Some(route) = config.routes.get(route_name) else {
            // The route is gone from the config: nothing to wait for.
            let _ = self.resume_route(route_name).await;
            return;
        };
        let Transport::Smtp(smtp) = &route.transport else {
            let _ = self.resume_route(route_name).await;
            return;
        };
        let Some(tls) = self.tls_for(route_name) else {
            return;
        };
        let resolver = self.resolver();
        let ctx = upstream::Context {
            hostname: &config.hostname,
            resolver: &resolver,
            tls: &tls,
            timeouts: &config.timeouts,
            tokens: &self.shared.tokens,
            transcript: None,
        };
        let result = upstream::connect(smtp, &ctx).await;
        let outcome = match result {
            Ok(conn) => {
                conn.quit(&config.timeouts).await;
                None
            }
            Err(e) if matches!(e.kind, Failure::AuthRejected | Failure::TokenDead) => {
                Some(e.reason)
            }
            // Unreachable or a slow endpoint says nothing about the credentials:
            // let the messages' own schedule deal with that.
            Err(_) => None,
        };
        match outcome {
            None => {
                if let Err(e) = self.resume_route(route_name).await {
                    tracing::error!("route {route_name}: cannot record the resume: {e}");
                }
            }
            Some(reason) => {
                let mut holds = self.holds.lock();
                if let Some(live) = holds.get_mut(route_name) {
                    live.inputs = inputs;
                    live.next_probe = unix_now() + live.interval;
                    live.interval = (live.interval * 2).min(MAX_PROBE);
                    if live.hold.reason != reason {
                        tracing::warn!("route {route_name}: still held: {reason}");
                        live.hold.reason = reason;
                    }
                }
            }
        }
    }
}

/// The token source a route's credentials come from, if any.
pub(crate) fn token_source(route: &crate::config::Route) -> Option<&str> {
    match &route.transport {
        Transport::Smtp(s) => match s.credentials.as_ref().map(|c| &c.secret) {
            Some(AuthSecret::Token { source }) => Some(source),
            _ => None,
        },
        Transport::Directory(_) => None,
    }
}
