//! The TOML configuration: what the operator writes, checked as a whole before the
//! daemon uses any of it.
//!
//! Parsing is strict (`deny_unknown_fields`) because a misspelt key in a mail relay
//! config silently falls back to a default, and the default might be "no TLS".
//! Every problem found is reported with the file and line it came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::retry::Schedule;

mod dns;
mod local;
mod log;
mod metrics;
pub mod preset;
pub mod rate;
mod route;
mod secret;
mod submission;
mod token;

use crate::routing::RouteTable;
pub use dns::Dns;
pub use local::Local;
pub use log::SyslogSettings;
pub use metrics::MetricsSettings;
use route::RawRoute;
pub use route::{
    describe, AuthMechanism, AuthSecret, Credentials, Route, SmtpRoute, TlsMode, Transport,
};
pub use secret::{open_secret, read_secret_file, Secret, SecretError};
pub use submission::{SenderPattern, Submission, SubmissionListener, SubmissionTls};
pub use token::{
    Grant, OAuth2Source, OAuthSettings, Provider, ProxySettings, TokenKind, TokenSource,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// `/etc/aliases` or `/etc/mailname` (see `[local]`) cannot be used.
    #[error(transparent)]
    Names(#[from] crate::local::AliasError),
}

/// One validation problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

// ---- the file format -------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    listen: Option<Vec<Spanned<String>>>,
    trusted_networks: Option<Vec<Spanned<String>>>,
    queue_path: Option<PathBuf>,
    queue_cache_size: Option<u64>,
    queue_active_limit: Option<usize>,
    retry: Option<Spanned<String>>,
    delay_warning: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    routing: Option<Spanned<RawRouting>>,
    #[serde(default)]
    local: local::RawLocal,
    #[serde(default, rename = "token_source")]
    token_sources: Vec<Spanned<token::RawTokenSource>>,
    #[serde(default)]
    oauth: token::RawOAuth,
    metrics: Option<Spanned<metrics::RawMetrics>>,
    #[serde(default)]
    dns: dns::RawDns,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    submission: Vec<Spanned<submission::RawSubmission>>,
    #[serde(default)]
    auth: submission::RawAuth,
}

/// The longest line taken in (without CRLF): cron output and one-line HTML
/// bodies from PHP run far past RFC 5322's 998, and delivery re-encodes any
/// such line (`upstream::downgrade`), so only memory bounds it: one line is
/// held whole while it is converted.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<u64>,
    max_recipients: Option<usize>,
    max_line_length: Option<usize>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    command: Option<Spanned<String>>,
    data: Option<Spanned<String>>,
    connect: Option<Spanned<String>>,
    greeting: Option<Spanned<String>>,
    upstream_command: Option<Spanned<String>>,
    upstream_data: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    default: String,
    #[serde(default)]
    senders: BTreeMap<String, Spanned<String>>,
}

// ---- the validated configuration --------------------------------------------

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Inbound: waiting for the next command line, as a whole.
    pub command: Duration,
    /// Inbound: between chunks of DATA; the whole of DATA may take this plus a
    /// second for every 500 bytes received (see `smtp::session`).
    pub data: Duration,
    /// Upstream: TCP connect (and TLS handshake) per address.
    pub connect: Duration,
    /// Upstream: the 220 greeting.
    pub greeting: Duration,
    /// Upstream: each command's reply.
    pub upstream_command: Duration,
    /// Upstream: the reply after the final dot (RFC 5321 4.5.3.2.6 says 10 minutes).
    pub upstream_data: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    pub trusted_networks: Vec<IpNet>,
    pub queue_path: PathBuf,
    pub queue_cache_size: u64,
    /// Queued messages the schedule keeps in memory (see
    /// `delivery::scheduler`); the rest wait in the queue's due index.
    pub queue_active_limit: usize,
    pub retry: Schedule,
    /// How long a message waits before its sender is warned (once), or
    /// None for never (`delay_warning = "never"`).
    pub delay_warning: Option<Duration>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub routes: HashMap<String, Route>,
    pub routing: RouteTable,
    pub local: Local,
    pub token_sources: BTreeMap<String, TokenSource>,
    pub oauth: OAuthSettings,
    /// The `/metrics` and `/healthz` listener, if configured.
    pub metrics: Option<MetricsSettings>,
    pub dns: Dns,
    /// `[log] syslog`: the log also goes to syslog, facility mail. Read at
    /// start only (a reload keeps the running log).
    pub syslog: Option<SyslogSettings>,
    /// `[[submission]]` listeners and `[auth]`.
    pub submission: Submission,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, true)
    }

    /// Loads the configuration for a client command (`sendmail`, `queue`, ...),
    /// which may run as any local user: everything is validated, but secret files
    /// are not read, so their 0600 permissions keep working.
    pub fn load_for_client(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, read_secrets: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = Self::parse_with(&text, &file, base, read_secrets)?;
        // The system's files, read only for a configuration from a file: a
        // configuration given as text (tests, `check` of a string) stays
        // independent of the machine.
        config.local.load_names()?;
        Ok(config)
    }

    /// Parse and validate; relative paths are taken relative to `base`, the
    /// directory of the config file, so a config can sit next to its secrets.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, file, base, true)
    }

    /// [`Config::parse`] without reading secret files, as
    /// [`Config::load_for_client`] does: the config fuzz target's entry point.
    #[doc(hidden)]
    pub fn parse_for_client(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        Self::parse_with(text, file, base, false)
    }

    fn parse_with(
        text: &str,
        file: &str,
        base: &Path,
        read_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: parse_message(&e, text),
        })?;
        let mut v = Validator {
            file,
            text,
            problems: Vec::new(),
            read_secrets,
        };
        let config = v.config(raw, base);
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(v.problems)),
        }
    }

    pub fn route_for(&self, sender: &str) -> Option<&Route> {
        self.routes.get(self.routing.lookup(sender).route)
    }

    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
    read_secrets: bool,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn problem(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            message: message.into(),
        });
    }

    fn duration(&mut self, value: &Option<Spanned<String>>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.problem(Some(s.span()), "timeout must be greater than zero");
                    default
                }
                Err(e) => {
                    self.problem(
                        Some(s.span()),
                        format!("invalid duration {:?}: {e}", s.get_ref()),
                    );
                    default
                }
            },
        }
    }

    fn config(&mut self, raw: RawConfig, base: &Path) -> Option<Config> {
        let hostname = self.hostname(raw.hostname);
        let listen = self.listen(raw.listen);
        let trusted_networks = self.trusted_networks(raw.trusted_networks);
        let retry = self.retry(raw.retry.as_ref());
        let delay_warning = self.delay_warning(raw.delay_warning.as_ref());
        let limits = self.limits(&raw.limits);
        let timeouts = self.timeouts(&raw.timeouts);
        let queue_path = base.join(
            raw.queue_path
                .unwrap_or_else(|| PathBuf::from("/var/lib/smarthost/queue")),
        );
        let oauth = self.oauth_settings(raw.oauth, base, &queue_path);
        let token_sources = self.token_sources(raw.token_sources, base, &oauth.state_dir);
        let routes = self.routes(raw.routes, base, &token_sources);
        let routing = self.routing(raw.routing, &routes)?;
        let local = self.local(raw.local, base, &hostname);
        let metrics = self.metrics(raw.metrics);
        let dns = self.dns(raw.dns);
        let syslog = self.log(raw.log, base);
        let submission = self.submission(raw.submission, raw.auth, base);

        Some(Config {
            file: self.file.to_string(),
            hostname,
            listen,
            trusted_networks,
            queue_path,
            queue_cache_size: raw.queue_cache_size.unwrap_or(16 * 1024 * 1024),
            queue_active_limit: raw
                .queue_active_limit
                .unwrap_or(crate::delivery::scheduler::DEFAULT_LIMIT)
                .max(2),
            retry,
            delay_warning,
            limits,
            timeouts,
            routes,
            routing,
            local,
            token_sources,
            oauth,
            metrics,
            dns,
            syslog,
            submission,
        })
    }

    /// Without a setting, the machine's own name.
    fn hostname(&mut self, raw: Option<String>) -> String {
        match raw {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            Some(_) => {
                self.problem(None, "hostname must not be empty");
                String::new()
            }
            None => system_hostname(),
        }
    }

    /// Without a setting, loopback only: relaying for others is an explicit choice.
    fn listen(&mut self, raw: Option<Vec<Spanned<String>>>) -> Vec<SocketAddr> {
        let raw = raw.unwrap_or_else(|| {
            vec![
                Spanned::new(0..0, "127.0.0.1:25".to_string()),
                Spanned::new(0..0, "[::1]:25".to_string()),
            ]
        });
        let mut listen = Vec::new();
        for l in &raw {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => listen.push(a),
                Err(_) => self.problem(
                    Some(l.span()),
                    format!(
                        "listen address {:?} is not IP:port (IPv6 as [::1]:25)",
                        l.get_ref()
                    ),
                ),
            }
        }
        listen
    }

    /// Networks as CIDR or single addresses; without a setting, loopback only.
    fn trusted_networks(&mut self, raw: Option<Vec<Spanned<String>>>) -> Vec<IpNet> {
        let raw = raw.unwrap_or_else(|| {
            vec![
                Spanned::new(0..0, "127.0.0.0/8".to_string()),
                Spanned::new(0..0, "::1/128".to_string()),
            ]
        });
        let mut trusted_networks = Vec::new();
        for n in &raw {
            let text = n.get_ref();
            let parsed = text.parse::<IpNet>().or_else(|_| {
                text.parse::<std::net::IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| ())
            });
            match parsed {
                Ok(net) => trusted_networks.push(net),
                Err(()) => self.problem(
                    Some(n.span()),
                    format!("trusted network {text:?} is not an address or CIDR network"),
                ),
            }
        }
        trusted_networks
    }

    fn retry(&mut self, raw: Option<&Spanned<String>>) -> Schedule {
        let Some(s) = raw else {
            return Schedule::default();
        };
        match s.get_ref().parse::<Schedule>() {
            Ok(sched) => sched,
            Err(e) => {
                self.problem(Some(s.span()), format!("retry schedule: {e}"));
                Schedule::default()
            }
        }
    }

    /// Exim warns after 24 hours, Postfix never (its `delay_warning_time` is
    /// 0): 24 hours tells a sender of a message that is late by a working day,
    /// and waits out the short outages after which most mail goes anyway.
    fn delay_warning(&mut self, raw: Option<&Spanned<String>>) -> Option<Duration> {
        const DEFAULT: Duration = Duration::from_secs(24 * 3600);
        let Some(s) = raw else {
            return Some(DEFAULT);
        };
        if s.get_ref() == "never" {
            return None;
        }
        match crate::retry::parse_age(s.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(Some(s.span()), "delay_warning: use \"never\", not zero");
                Some(DEFAULT)
            }
            Err(e) => {
                self.problem(Some(s.span()), format!("delay_warning: {e}"));
                Some(DEFAULT)
            }
        }
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let limits = Limits {
            max_message_size: raw.max_message_size.unwrap_or(25 * 1024 * 1024),
            max_recipients: raw.max_recipients.unwrap_or(100),
            max_line_length: raw.max_line_length.unwrap_or(DEFAULT_MAX_LINE),
            max_connections: raw.max_connections.unwrap_or(200),
        };
        if limits.max_message_size == 0 || limits.max_recipients == 0 {
            self.problem(None, "limits must be greater than zero");
        }
        if limits.max_line_length < 78 || limits.max_connections == 0 {
            self.problem(
                None,
                "limits.max_line_length must be at least 78 and max_connections at least 1",
            );
        }
        limits
    }

    fn timeouts(&mut self, t: &RawTimeouts) -> Timeouts {
        Timeouts {
            command: self.duration(&t.command, Duration::from_secs(300)),
            data: self.duration(&t.data, Duration::from_secs(600)),
            connect: self.duration(&t.connect, Duration::from_secs(30)),
            greeting: self.duration(&t.greeting, Duration::from_secs(300)),
            upstream_command: self.duration(&t.upstream_command, Duration::from_secs(300)),
            upstream_data: self.duration(&t.upstream_data, Duration::from_secs(600)),
            idle: self.duration(&t.idle, Duration::from_secs(5)),
        }
    }

    /// The valid sources by name; a name given twice is a problem, the first kept.
    fn token_sources(
        &mut self,
        raw: Vec<Spanned<token::RawTokenSource>>,
        base: &Path,
        state_dir: &Path,
    ) -> BTreeMap<String, TokenSource> {
        let mut token_sources = BTreeMap::new();
        for t in raw {
            let span = t.span();
            let Some(source) = self.token_source(t.into_inner(), span.clone(), base, state_dir)
            else {
                continue;
            };
            if token_sources.contains_key(&source.name) {
                self.problem(
                    Some(span),
                    format!("token_source {:?} defined twice", source.name),
                );
            } else {
                token_sources.insert(source.name.clone(), source);
            }
        }
        token_sources
    }

    /// The valid routes by name; a name given twice is a problem, the first kept.
    fn routes(
        &mut self,
        raw: Vec<Spanned<RawRoute>>,
        base: &Path,
        token_sources: &BTreeMap<String, TokenSource>,
    ) -> HashMap<String, Route> {
        let mut routes = HashMap::new();
        for r in raw {
            let span = r.span();
            let Some(route) = self.route(r.into_inner(), span.clone(), base, token_sources) else {
                continue;
            };
            if routes.contains_key(&route.name) {
                self.problem(Some(span), format!("route {:?} defined twice", route.name));
            } else {
                routes.insert(route.name.clone(), route);
            }
        }
        routes
    }

    /// None without a `[routing]` table: a config without a default route is
    /// unusable, so validation stops there.
    fn routing(
        &mut self,
        raw: Option<Spanned<RawRouting>>,
        routes: &HashMap<String, Route>,
    ) -> Option<RouteTable> {
        let Some(rt) = raw else {
            self.problem(
                None,
                "missing [routing] table with a default route (routing.default = \"<route name>\")",
            );
            return None;
        };
        let span = rt.span();
        let rt = rt.into_inner();
        if !routes.contains_key(&rt.default) {
            self.problem(
                Some(span),
                format!("routing.default names unknown route {:?}", rt.default),
            );
        }
        let mut table = RouteTable::new(rt.default.clone());
        for (pattern, route) in &rt.senders {
            if !routes.contains_key(route.get_ref()) {
                self.problem(
                    Some(route.span()),
                    format!(
                        "sender {pattern:?} names unknown route {:?}",
                        route.get_ref()
                    ),
                );
            }
            if let Err(e) = table.insert(pattern, route.get_ref().clone()) {
                self.problem(Some(route.span()), format!("sender {pattern:?}: {e}"));
            }
        }
        Some(table)
    }
}

/// Where and what, without the offending line itself, which toml's own
/// rendering quotes: that line may hold the password of an `http` token
/// source's URL, and `check` and `serve` print this to the journal.
fn parse_message(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return format!("TOML parse error: {message}");
    };
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

/// Whether mail or tokens sent to `host` (a name, an address, or an address
/// in brackets) stay on this machine: the one test for routes and token
/// URLs alike.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn system_hostname() -> String {
    for f in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(f) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "localhost".to_string()
}

#[cfg(test)]
mod tests;
