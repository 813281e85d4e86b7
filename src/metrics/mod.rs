//! Observability: the counters, histogram and gauges behind `/metrics`, and
//! the hooks the relay calls when a message is accepted, attempted or removed.
//!
//! - [`exposition`]: the Prometheus text format (pure).
//! - [`histogram`]: fixed-bucket histograms on atomics.
//! - [`accepted`]: when recent messages were accepted, to the microsecond,
//!   for the delivery latency.
//! - the queue gauges come from the spool's counts (`spool::tally`).
//! - the listener for `/metrics` and `/healthz` is the daemon's (`daemon::metrics_http`).
//!
//! Delivery outcomes are per recipient in this relay, so the delivery counters
//! count recipients (`smarthost_recipients_*`); messages are counted where a
//! message is the unit: acceptance and leaving the queue. Hot paths touch only
//! atomics and one short lock on the acceptance times; a scrape reads the
//! spool's counts and one record, never scans the store.

pub mod accepted;
pub mod exposition;
pub mod histogram;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use accepted::Accepted;
use exposition::{Exposition, Kind, Num};
use histogram::{Histogram, DELIVERY_BUCKETS};

use crate::spool::{Ending, Envelope, State, Tally};

/// The queue gauges at one moment: the spool's counts and the arrival of
/// its oldest message.
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    pub tally: Tally,
    pub oldest: Option<u64>,
}

/// How a message left the queue, for `smarthost_messages_finished_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Delivered,
    Bounced,
    PartlyBounced,
    Deleted,
}

impl Finish {
    const ALL: [Finish; 4] = [
        Finish::Delivered,
        Finish::Bounced,
        Finish::PartlyBounced,
        Finish::Deleted,
    ];

    fn label(self) -> &'static str {
        match self {
            Finish::Delivered => "delivered",
            Finish::Bounced => "bounced",
            Finish::PartlyBounced => "partly_bounced",
            Finish::Deleted => "deleted",
        }
    }

    /// How a message whose every recipient is final ended (the word its
    /// history record gets).
    pub fn of(env: &Envelope) -> Finish {
        match env.ending() {
            Ending::Delivered => Finish::Delivered,
            Ending::Bounced => Finish::Bounced,
            Ending::PartlyBounced => Finish::PartlyBounced,
        }
    }
}

struct RouteCounters {
    messages_accepted: AtomicU64,
    recipients_accepted: AtomicU64,
    delivered: AtomicU64,
    deferred: AtomicU64,
    bounced: AtomicU64,
    /// Indexed by [`Finish`].
    finished: [AtomicU64; 4],
    latency: Histogram,
    /// Microseconds workers spent waiting for a rate-limit permit.
    rate_limit_wait: AtomicU64,
}

impl RouteCounters {
    fn new() -> RouteCounters {
        RouteCounters {
            messages_accepted: AtomicU64::new(0),
            recipients_accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            finished: Default::default(),
            latency: Histogram::new(&DELIVERY_BUCKETS),
            rate_limit_wait: AtomicU64::new(0),
        }
    }
}

pub struct Metrics {
    /// Unix time this process started, in seconds.
    started: f64,
    /// The daemon finished starting (`/healthz` says "starting" before).
    ready: AtomicBool,
    /// One entry per route name ever used. Route names come from the config,
    /// never from a client, so the map (and the label set) stays small; entries
    /// for the configured routes are made at start so every series exists from
    /// the first scrape, with zeros.
    routes: RwLock<BTreeMap<String, Arc<RouteCounters>>>,
    notifications: AtomicU64,
    /// Quarantined messages in the queue (see `spool`): kept, never tried.
    damaged: AtomicU64,
    /// Drop files refused and waiting in the drop directory's `.bad`.
    set_aside: AtomicU64,
    accepted: Accepted,
}

impl Metrics {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a String>) -> Metrics {
        let routes = routes
            .into_iter()
            .map(|r| (r.clone(), Arc::new(RouteCounters::new())))
            .collect();
        Metrics {
            started: now(),
            ready: AtomicBool::new(false),
            routes: RwLock::new(routes),
            notifications: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            set_aside: AtomicU64::new(0),
            accepted: Accepted::default(),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// Makes the series of routes a reload added exist from now on, with zeros.
    pub fn know_routes<'a>(&self, routes: impl IntoIterator<Item = &'a String>) {
        for r in routes {
            self.route(r);
        }
    }

    fn route(&self, name: &str) -> Arc<RouteCounters> {
        if let Some(c) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return c.clone();
        }
        // A route added by a reload: made on first use.
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteCounters::new()))
            .clone()
    }

    /// A message was accepted into the queue (durably) and leaves by `route`.
    pub fn accepted(&self, route: &str, env: &Envelope) {
        let c = self.route(route);
        c.messages_accepted.fetch_add(1, Relaxed);
        c.recipients_accepted
            .fetch_add(env.recipients.len() as u64, Relaxed);
        self.accepted.note(&env.id, now());
    }

    /// A message was found damaged and quarantined.
    pub fn damaged(&self) {
        self.damaged.fetch_add(1, Relaxed);
    }

    /// The operator removed a damaged message.
    pub fn damaged_removed(&self) {
        let _ = self
            .damaged
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// The quarantined messages the queue holds (at start, after a reopen).
    pub fn set_damaged(&self, n: u64) {
        self.damaged.store(n, Relaxed);
    }

    /// How many refused drop files wait in `.bad` (after each one is set
    /// aside, and at start).
    pub fn set_aside(&self, n: u64) {
        self.set_aside.store(n, Relaxed);
    }

    pub fn set_aside_count(&self) -> u64 {
        self.set_aside.load(Relaxed)
    }

    /// How many quarantined messages the queue holds.
    pub fn damaged_count(&self) -> u64 {
        self.damaged.load(Relaxed)
    }

    /// A non-delivery notification was queued.
    pub fn notification(&self, dsn: &Envelope) {
        self.notifications.fetch_add(1, Relaxed);
        self.accepted.note(&dsn.id, now());
    }

    /// The outcomes of one attempt are durable: `env` holds the recipients'
    /// new states, `due` which of them were tried.
    pub fn attempted(&self, route: &str, env: &Envelope, due: &[usize]) {
        let c = self.route(route);
        let accepted = self.accepted.of(env);
        let now = now();
        for r in due.iter().filter_map(|&i| env.recipients.get(i)) {
            match r.state {
                State::Delivered => {
                    c.delivered.fetch_add(1, Relaxed);
                    c.latency.observe(now - accepted);
                }
                State::Bounced => {
                    c.bounced.fetch_add(1, Relaxed);
                }
                _ => {
                    c.deferred.fetch_add(1, Relaxed);
                }
            }
        }
        if env.is_finished() {
            self.finished(route, env, Finish::of(env));
        }
    }

    /// A worker of `route` waited this long for a rate-limit permit.
    pub fn rate_limit_waited(&self, route: &str, waited: std::time::Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.route(route).rate_limit_wait.fetch_add(micros, Relaxed);
    }

    /// The operator bounced `bounced` recipients of a message, which is gone.
    pub fn operator_bounced(&self, route: &str, env: &Envelope, bounced: usize) {
        self.route(route).bounced.fetch_add(bounced as u64, Relaxed);
        self.finished(route, env, Finish::of(env));
    }

    /// A message left the queue.
    pub fn finished(&self, route: &str, env: &Envelope, how: Finish) {
        if let Some(slot) = self.route(route).finished.get(how as usize) {
            slot.fetch_add(1, Relaxed);
        }
        self.accepted.forget(&env.id);
    }

    /// The exposition. `held` lists the held routes; `token_failures` the
    /// failure count of every token source.
    pub fn render(
        &self,
        held: &[String],
        token_failures: &[(String, u64)],
        queue: &QueueGauges,
    ) -> String {
        let routes: Vec<(String, Arc<RouteCounters>)> = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut e = Exposition::new();
        self.render_process(&mut e);
        render_routes(&mut e, &routes);
        e.family(
            "smarthost_notifications_created_total",
            Kind::Counter,
            "Non-delivery notifications (DSNs) queued to senders; their own recipients are counted by the recipient counters.",
        );
        e.sample(
            "smarthost_notifications_created_total",
            &[],
            self.notifications.load(Relaxed),
        );
        self.render_queue(&mut e, queue, &routes);
        e.family(
            "smarthost_route_held",
            Kind::Gauge,
            "1 while a route is held because its credentials are dead, else 0.",
        );
        let mut names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
        names.extend(held.iter().map(String::as_str));
        names.sort_unstable();
        names.dedup();
        for name in names {
            let on = u64::from(held.iter().any(|h| h == name));
            e.sample("smarthost_route_held", &[("route", name)], on);
        }
        e.family(
            "smarthost_token_refresh_failures_total",
            Kind::Counter,
            "Failed attempts to obtain an access token from a token source (answers from the 30s negative cache are not counted).",
        );
        for (source, n) in token_failures {
            e.sample(
                "smarthost_token_refresh_failures_total",
                &[("source", source)],
                *n,
            );
        }
        e.finish()
    }

    fn render_process(&self, e: &mut Exposition) {
        e.family(
            "smarthost_up",
            Kind::Gauge,
            "1 while the daemon runs and answers scrapes.",
        );
        e.sample("smarthost_up", &[], 1u64);
        e.family(
            "smarthost_build_info",
            Kind::Gauge,
            "The running version, as a label; always 1.",
        );
        e.sample(
            "smarthost_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );
        e.family(
            "smarthost_start_time_seconds",
            Kind::Gauge,
            "When the daemon started, in seconds since the Unix epoch.",
        );
        e.sample("smarthost_start_time_seconds", &[], self.started);
    }

    fn render_queue(
        &self,
        e: &mut Exposition,
        q: &QueueGauges,
        routes: &[(String, Arc<RouteCounters>)],
    ) {
        let total = q.tally.total;
        e.family(
            "smarthost_queue_messages",
            Kind::Gauge,
            "Messages in the queue (held ones included).",
        );
        e.sample("smarthost_queue_messages", &[], total.messages);
        e.family(
            "smarthost_queue_recipients",
            Kind::Gauge,
            "Recipients in the queue still to be delivered.",
        );
        e.sample("smarthost_queue_recipients", &[], total.recipients);
        e.family(
            "smarthost_queue_held_messages",
            Kind::Gauge,
            "Messages in the queue the operator holds.",
        );
        e.sample("smarthost_queue_held_messages", &[], total.held);
        e.family(
            "smarthost_queue_counted",
            Kind::Gauge,
            "1 when the queue gauges are exact; 0 while the queue is counted again after a crash (they count what has been seen so far).",
        );
        e.sample("smarthost_queue_counted", &[], u64::from(q.tally.complete));
        render_route_queue(e, q, routes);
        e.family(
            "smarthost_queue_oldest_message_age_seconds",
            Kind::Gauge,
            "Age of the oldest queued message; 0 when the queue is empty.",
        );
        let age = q
            .oldest
            .map(|at| (now() - at as f64).max(0.0))
            .unwrap_or(0.0);
        e.sample("smarthost_queue_oldest_message_age_seconds", &[], age);
        e.family(
            "smarthost_queue_damaged_messages",
            Kind::Gauge,
            "Quarantined messages: a record does not decode or a part is missing. Never tried; `smarthost queue list` shows why, `queue delete` or `queue bounce` removes them.",
        );
        e.sample(
            "smarthost_queue_damaged_messages",
            &[],
            self.damaged_count(),
        );
        e.family(
            "smarthost_drop_set_aside_files",
            Kind::Gauge,
            "Drop files the daemon could not queue, kept in the drop directory's .bad for the operator; the log says why.",
        );
        e.sample(
            "smarthost_drop_set_aside_files",
            &[],
            self.set_aside_count(),
        );
    }
}

/// The queue gauges of each route: every configured one (zero when it has
/// nothing queued) and any other the counts name.
fn render_route_queue(
    e: &mut Exposition,
    q: &QueueGauges,
    routes: &[(String, Arc<RouteCounters>)],
) {
    let mut names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
    names.extend(q.tally.routes.keys().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    for (family, help, read) in [
        (
            "smarthost_route_queue_messages",
            "Messages in the queue by the route they leave through.",
            (|c| c.messages) as fn(&crate::spool::tally::Counts) -> u64,
        ),
        (
            "smarthost_route_queue_recipients",
            "Recipients still to be delivered, by route.",
            |c| c.recipients,
        ),
    ] {
        e.family(family, Kind::Gauge, help);
        for name in &names {
            let n = q.tally.routes.get(*name).map_or(0, read);
            e.sample(family, &[("route", name)], n);
        }
    }
}

type Read = fn(&RouteCounters) -> Num;

/// The per-route counters: name, help, and how to read each.
const ROUTE_COUNTERS: [(&str, &str, Read); 6] = [
    (
        "smarthost_messages_accepted_total",
        "Messages accepted into the queue (SMTP, sendmail, drop directory), by the route they leave through.",
        |c| c.messages_accepted.load(Relaxed).into(),
    ),
    (
        "smarthost_recipients_accepted_total",
        "Recipients of the messages accepted into the queue.",
        |c| c.recipients_accepted.load(Relaxed).into(),
    ),
    (
        "smarthost_recipients_delivered_total",
        "Recipients delivered (status=sent).",
        |c| c.delivered.load(Relaxed).into(),
    ),
    (
        "smarthost_recipients_deferred_total",
        "Delivery attempts that left a recipient deferred (status=deferred); a recipient tried three times counts up to three.",
        |c| c.deferred.load(Relaxed).into(),
    ),
    (
        "smarthost_recipients_bounced_total",
        "Recipients that failed for good (status=bounced): refused, retry timeout, or bounced by the operator.",
        |c| c.bounced.load(Relaxed).into(),
    ),
    (
        "smarthost_rate_limit_wait_seconds_total",
        "Time the route's delivery workers spent waiting for its rate limit (summed over workers; a worker waits only once the limit is used up).",
        |c| (c.rate_limit_wait.load(Relaxed) as f64 / 1e6).into(),
    ),
];

fn render_routes(e: &mut Exposition, routes: &[(String, Arc<RouteCounters>)]) {
    for (name, help, read) in ROUTE_COUNTERS {
        e.family(name, Kind::Counter, help);
        for (route, c) in routes {
            e.sample(name, &[("route", route)], read(c));
        }
    }
    let name = "smarthost_messages_finished_total";
    e.family(
        name,
        Kind::Counter,
        "Messages that left the queue, by route and result (delivered, bounced, partly_bounced, deleted).",
    );
    for (route, c) in routes {
        for how in Finish::ALL {
            let n = c
                .finished
                .get(how as usize)
                .map(|a| a.load(Relaxed))
                .unwrap_or(0);
            e.sample(name, &[("route", route), ("result", how.label())], n);
        }
    }
    let name = "smarthost_delivery_latency_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Time from acceptance to delivery of each delivered recipient.",
    );
    for (route, c) in routes {
        e.histogram(name, &[("route", route)], &c.latency.snapshot());
    }
}

/// Unix time with sub-second precision.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
