//! `smarthost test-send`: sends one short message through a named route right
//! now and prints the SMTP conversation, AUTH data redacted, then a one-line
//! verdict. It goes through exactly what delivery uses ([`upstream::connect`]
//! and [`Connection::send`](upstream::Connection::send)): the route's TLS mode,
//! certificate checks, AUTH mechanism and token source, SIZE, 8BITMIME and
//! SMTPUTF8. It never touches the queue, and needs the secrets, so it runs as
//! root or the smarthost user.
//!
//! Exit codes (sysexits.h): 0 delivered; 64 usage (unknown route, a directory
//! route, a bad address); 69 the smarthost refused the message for good (a
//! 5xx to MAIL, RCPT or DATA); 70 an internal failure; 75 a temporary failure
//! (connection, TLS, timeout, a 4xx, no token for now); 77 the credentials
//! were refused, or the token source needs `smarthost oauth login`; 78 a
//! configuration problem.

pub mod cert;
pub mod message;

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::clock::unix_now;
use crate::config::{AuthSecret, Config, ConfigError, Route, SmtpRoute, Transport};
use crate::oauth::Tokens;
use crate::outcome::Outcome;
use crate::routing::Pattern;
use crate::smtp::address::{needs_smtputf8, validate_mailbox};
use crate::sysexits::*;
use crate::upstream::transcript::Event;
use crate::upstream::{self, ConnectError, Failure, Resolver, Transcript};

/// What to send, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub route: String,
    pub to: String,
    /// Default: [`default_sender`].
    pub from: Option<String>,
    /// Default: `smarthost test-send via route R`.
    pub subject: Option<String>,
}

/// Why no attempt was made.
#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no route named {name:?}; the routes are: {}", .known.join(", "))]
    UnknownRoute { name: String, known: Vec<String> },
    #[error("route {0} writes to a directory; test-send tests routes to a smarthost")]
    NotSmtp(String),
    /// A bad address or subject.
    #[error("{0}")]
    Usage(String),
    #[error("route {route}: {reason}")]
    Tls { route: String, reason: String },
    #[error("{0}")]
    Internal(String),
}

impl TestSendError {
    pub fn exit_code(&self) -> u8 {
        match self {
            TestSendError::Config(_) | TestSendError::Tls { .. } => EX_CONFIG,
            TestSendError::UnknownRoute { .. }
            | TestSendError::NotSmtp(_)
            | TestSendError::Usage(_) => EX_USAGE,
            TestSendError::Internal(_) => EX_SOFTWARE,
        }
    }
}

/// How the attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered { relay: String, reply: String },
    Failed { reason: String, exit_code: u8 },
}

impl Verdict {
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Delivered { .. } => EX_OK,
            Verdict::Failed { exit_code, .. } => *exit_code,
        }
    }

    /// The last line of the output.
    pub fn line(&self, to: &str) -> String {
        match self {
            Verdict::Delivered { relay, reply } => {
                format!("test-send: delivered to {to} via {relay} ({reply})")
            }
            Verdict::Failed { reason, .. } => format!("test-send: FAILED: {reason}"),
        }
    }
}

/// Runs the command with the config at `path`, printing to stdout (the
/// transcript and verdict) and stderr (why nothing was attempted). Returns the
/// exit code.
pub fn run(path: &Path, opts: &Options) -> u8 {
    let result = Config::load(path)
        .map_err(TestSendError::from)
        .and_then(|config| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TestSendError::Internal(format!("async runtime: {e}")))?;
            let transcript = Transcript::new(|event| {
                let mut out = std::io::stdout().lock();
                // A closed stdout must not stop the test: the exit code still tells.
                let _ = writeln!(out, "{}", format_event(&event, unix_now()));
                let _ = out.flush();
            });
            runtime.block_on(attempt(&config, opts, &transcript))
        });
    match result {
        Ok(verdict) => {
            println!("{}", verdict.line(&opts.to));
            verdict.exit_code()
        }
        Err(e) => {
            eprintln!("smarthost test-send: {e}");
            e.exit_code()
        }
    }
}

/// Sends the test message through the route, reporting the conversation to
/// `transcript`.
pub async fn attempt(
    config: &Config,
    opts: &Options,
    transcript: &Transcript,
) -> Result<Verdict, TestSendError> {
    let test = prepare(config, opts)?;
    let tls =
        upstream::tls::connector(test.smtp.ca_file.as_deref()).map_err(|e| TestSendError::Tls {
            route: test.route.name.clone(),
            reason: e.to_string(),
        })?;
    let resolver =
        Resolver::new(&config.dns).map_err(|e| TestSendError::Internal(e.to_string()))?;
    let tokens =
        Tokens::with_system_roots(config).map_err(|e| TestSendError::Internal(e.to_string()))?;
    let ctx = upstream::Context {
        hostname: &config.hostname,
        resolver: &resolver,
        tls: &tls,
        timeouts: &config.timeouts,
        tokens: &tokens,
        transcript: Some(transcript),
    };
    test.introduce(&tokens, transcript);

    let mut conn = match upstream::connect(test.smtp, &ctx).await {
        Ok(c) => c,
        Err(e) => return Ok(not_connected(&e, transcript)),
    };
    let smtputf8 = needs_smtputf8(&test.from) || needs_smtputf8(&test.to);
    let t = &config.timeouts;
    let tr = conn
        .send(
            &upstream::Outgoing {
                sender: &test.from,
                recipients: vec![(&test.to, Default::default())],
                smtputf8,
                eight_bit: false,
                dsn: &Default::default(),
            },
            &mut crate::spool::BodyReader::from_bytes(test.body.clone()),
            t,
        )
        .await;
    let relay = conn.relay.clone();
    if tr.reusable {
        conn.quit(t).await;
    }
    let outcome = tr.outcomes.into_iter().next();
    Ok(judge(
        outcome.unwrap_or_else(|| Outcome::deferred("no outcome")),
        &relay,
        transcript,
    ))
}

/// A checked request: the route, both addresses and the message.
struct Prepared<'a> {
    route: &'a Route,
    smtp: &'a SmtpRoute,
    from: String,
    to: String,
    body: Vec<u8>,
}

fn prepare<'a>(config: &'a Config, opts: &Options) -> Result<Prepared<'a>, TestSendError> {
    let (route, smtp) = smtp_route(config, &opts.route)?;
    let bare = |a: &str| a.trim_start_matches('<').trim_end_matches('>').to_string();
    let from = match &opts.from {
        Some(f) => bare(f),
        None => default_sender(config, route),
    };
    let to = bare(&opts.to);
    for (what, address) in [("sender", &from), ("recipient", &to)] {
        validate_mailbox(address)
            .map_err(|e| TestSendError::Usage(format!("{what} address {address:?}: {e}")))?;
    }
    let subject = opts
        .subject
        .clone()
        .unwrap_or_else(|| format!("smarthost test-send via route {}", route.name));
    if subject.chars().any(char::is_control) {
        return Err(TestSendError::Usage(
            "the subject must be one line without control characters".into(),
        ));
    }
    let body = message::build(&message::TestMessage {
        hostname: &config.hostname,
        route: &route.name,
        from: &from,
        to: &to,
        subject: &subject,
        now: SystemTime::now(),
    })
    .map_err(|e| TestSendError::Usage(format!("cannot build the test message: {e}")))?;
    Ok(Prepared {
        route,
        smtp,
        from,
        to,
        body,
    })
}

impl Prepared<'_> {
    /// The transcript's first lines: the route, its token source, the message.
    fn introduce(&self, tokens: &Tokens, transcript: &Transcript) {
        let route = self.route;
        transcript.note(&format!("route {}: {}", route.name, route.describe()));
        if let Some(AuthSecret::Token { source }) =
            self.smtp.credentials.as_ref().map(|c| &c.secret)
        {
            if let Some(s) = tokens.source(source) {
                transcript.note(&format!("token source {source}: {}", s.describe()));
            }
        }
        transcript.note(&format!(
            "message from <{}> to <{}>: {} bytes",
            self.from,
            self.to,
            self.body.len()
        ));
    }
}

/// No session: refused credentials and dead token sources need the operator.
fn not_connected(e: &ConnectError, transcript: &Transcript) -> Verdict {
    let exit_code = match e.kind {
        Failure::AuthRejected | Failure::TokenDead => EX_NOPERM,
        Failure::TokenUnavailable | Failure::Other => EX_TEMPFAIL,
    };
    let reason = match &e.relay {
        Some(relay) => format!("{relay}: {}", e.reason),
        None => e.reason.clone(),
    };
    Verdict::Failed {
        reason: transcript.scrub(&reason),
        exit_code,
    }
}

/// What the transaction's outcome for the one recipient means.
fn judge(outcome: Outcome, relay: &str, transcript: &Transcript) -> Verdict {
    match outcome {
        Outcome::Sent { reply } => Verdict::Delivered {
            relay: relay.to_string(),
            reply,
        },
        Outcome::Bounced { reason, .. } => Verdict::Failed {
            reason: transcript.scrub(&format!("{relay} refused the message: {reason}")),
            exit_code: EX_UNAVAILABLE,
        },
        Outcome::Deferred { reason } | Outcome::Waiting { reason } => Verdict::Failed {
            reason: transcript.scrub(&format!("{relay}: {reason} (temporary)")),
            exit_code: EX_TEMPFAIL,
        },
    }
}

/// The named route, which must go to a smarthost.
fn smtp_route<'a>(
    config: &'a Config,
    name: &str,
) -> Result<(&'a Route, &'a SmtpRoute), TestSendError> {
    let Some(route) = config.routes.get(name) else {
        let mut known: Vec<String> = config.routes.keys().cloned().collect();
        known.sort();
        return Err(TestSendError::UnknownRoute {
            name: name.to_string(),
            known,
        });
    };
    match &route.transport {
        Transport::Smtp(s) => Ok((route, s)),
        Transport::Directory(_) => Err(TestSendError::NotSmtp(route.name.clone())),
    }
}

/// The sender when `--from` is not given: the route's user name if it is an
/// address (Office 365 and Gmail accept only the signed-in mailbox as
/// sender, Mailgun's SMTP users are `postmaster@<domain>`); else an address,
/// or `postmaster@` a domain, that the route table sends through this route
/// (the smarthost is set up for those); else `postmaster@<hostname>`.
pub fn default_sender(config: &Config, route: &Route) -> String {
    if let Transport::Smtp(SmtpRoute {
        credentials: Some(c),
        ..
    }) = &route.transport
    {
        if c.username.contains('@') && validate_mailbox(&c.username).is_ok() {
            return c.username.clone();
        }
    }
    for (pattern, name) in config.routing.entries() {
        if name != route.name {
            continue;
        }
        match pattern {
            Pattern::Address { local, domain } => return format!("{local}@{domain}"),
            Pattern::Domain(domain) => return format!("postmaster@{domain}"),
            // Only subdomains route here, and which one is anyone's guess.
            Pattern::Parent(_) => {}
        }
    }
    format!("postmaster@{}", config.hostname)
}

/// One transcript event as a line of output: `S: ...`, `C: ...`, `[note]`.
pub fn format_event(event: &Event<'_>, now: u64) -> String {
    match event {
        Event::Server(line) => format!("S: {line}"),
        Event::Client(line) => format!("C: {line}"),
        Event::Note(note) => format!("[{note}]"),
        Event::Tls(info) => {
            let certificate = match info.certificate.as_deref().map(cert::summary) {
                Some(Some(s)) => format!("; server certificate: {}", s.describe(now as i64)),
                Some(None) => "; server certificate: (not understood)".into(),
                None => String::new(),
            };
            format!(
                "[TLS handshake: {}, {}{certificate}]",
                info.version, info.cipher
            )
        }
    }
}

#[cfg(test)]
mod tests;
