//! smarthost: a small, durable mail relay. Local programs hand it mail over SMTP;
//! it stores each message durably, picks an upstream smarthost by the envelope
//! sender, delivers over verified TLS with authentication, retries on an exim-style
//! schedule and bounces what cannot be delivered.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, validated as a whole (`smarthost check`).
//! - [`routing`]: the route table, envelope sender → route (`smarthost route`).
//! - [`smtp`]: the inbound side. [`smtp::grammar`] parses commands and addresses,
//!   [`smtp::address`] validates mailboxes, [`smtp::data`] receives DATA
//!   (dot-unstuffing, smuggling rules), all three pure;
//!   [`smtp::session`] is the per-client loop, [`smtp::server`] the listeners.
//! - [`spool`]: every durable change of a queued message (accept, record,
//!   hold, release, flush, delete, bounce, quarantine), its records and their
//!   bounds ([`spool::records`]), claims, the upgrade of older queues and
//!   `queue salvage` ([`spool::salvage`]); sled lives only here.
//! - [`retry`]: the exim retry schedule, a pure function of time.
//! - [`delivery`]: the scheduler (a bounded window of the spool's due
//!   index, [`spool::due`]) and the per-route workers; [`delivery::record`]
//!   applies attempt outcomes to recipients; [`delivery::hold`] holds a route
//!   whose credentials are dead.
//! - [`upstream`]: the SMTP client towards smarthosts (DNS, TLS, AUTH, transaction);
//!   [`upstream::sasl`] does XOAUTH2 and OAUTHBEARER.
//! - [`oauth`]: OAuth2 access tokens: the cache ([`oauth::tokens`]), the token
//!   endpoint ([`oauth::endpoint`]), the refresh-token state file
//!   ([`oauth::state`]), external sources ([`oauth::external`]) and the `oauth`
//!   commands ([`oauth::cli`]).
//! - [`outcome`]: what a reply means: sent, deferred or bounced.
//! - [`dsn`]: RFC 3461 parameters and RFC 3464 notices (failed, delayed, relayed).
//! - [`capture`]: the `directory` route that writes messages to files.
//! - [`intake`]: how a message enters the queue (SMTP sessions, local pickup).
//! - [`message_text`]: a message's header section, a header's value, dot-stuffing.
//! - [`sendmail`]: the `sendmail`/`mailq` command: flags ([`sendmail::args`]),
//!   message preparation ([`sendmail::message`]), submission ([`sendmail::submit`]).
//! - [`durable`]: syncing a directory so that the names in it survive a power cut.
//! - [`dropdir`]: the drop directory sendmail falls back to when the daemon is down.
//! - [`daemon`]: `smarthost serve`: start-up, systemd integration, reload, stop;
//!   [`daemon::logging`] formats the log as Postfix-style text or JSON.
//! - [`metrics`]: counters and gauges, `/metrics` (Prometheus) and `/healthz`.
//! - [`local_http`]: the bounded accept loop of the daemon's HTTP servers.
//! - [`import`]: `smarthost import`, translating a Postfix ([`import::postfix`])
//!   or exim ([`import::exim`]) smarthost setup into a configuration.
//! - [`control`]: queue control over a UNIX socket (server, client, mailq output).
//! - [`testsend`]: `smarthost test-send`: one message through a route now, the
//!   SMTP conversation printed ([`upstream::transcript`] records it).
//! - [`sysexits`]: exit codes callers of sendmail interpret.
//! - [`clock`]: Unix time and RFC 5322 dates.

pub mod admission;
pub mod auth;
pub mod capture;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod dropdir;
pub mod dsn;
pub mod durable;
pub mod import;
pub mod intake;
pub mod local;
pub mod local_http;
pub mod message_text;
pub mod metrics;
pub mod oauth;
pub mod outcome;
pub mod retry;
pub mod routing;
pub mod safe_fs;
pub mod sendmail;
pub mod smtp;
pub mod spool;
pub mod sysexits;
pub mod testsend;
pub mod upstream;
