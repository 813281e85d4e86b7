//! The TOML configuration: what the operator writes, checked as a whole before the
//! daemon uses any of it.
//!
//! Parsing is strict (`deny_unknown_fields`) because a misspelt key in a mail relay
//! config silently falls back to a default, and the default might be "no TLS".
//! Every problem found is reported with the file and line it came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::retry::Schedule;
use crate::routing::RouteTable;

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

/// A secret read from a file. Its Debug and Display never show the value, so it can
/// sit inside structures that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
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
    retry: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    routing: Option<Spanned<RawRouting>>,
}

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
struct RawRoute {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    host: Option<String>,
    hosts: Option<Vec<String>>,
    port: Option<u16>,
    tls: Option<String>,
    allow_plaintext: Option<bool>,
    ca_file: Option<PathBuf>,
    auth: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    max_connections: Option<usize>,
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    default: String,
    #[serde(default)]
    senders: BTreeMap<String, Spanned<String>>,
}

// ---- the validated configuration --------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// EHLO, STARTTLS, EHLO again: port 587.
    StartTls,
    /// TLS from the first byte: port 465.
    Implicit,
    /// Plain text; only to loopback unless the operator insists.
    None,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "tls",
            TlsMode::None => "none",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMechanism::Plain => "plain",
            AuthMechanism::Login => "login",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub mechanism: AuthMechanism,
    pub username: String,
    pub password: Secret,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SmtpRoute {
    pub hosts: Vec<String>,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone)]
pub enum Transport {
    Smtp(SmtpRoute),
    /// Writes each message as an `.eml` file: the quick start and pipeline tests.
    Directory(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub transport: Transport,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Inbound: waiting for the next command.
    pub command: Duration,
    /// Inbound: between chunks of DATA.
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
    pub retry: Schedule,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub routes: HashMap<String, Route>,
    pub routing: RouteTable,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &file, base)
    }

    /// Parse and validate; relative paths are taken relative to `base`, the
    /// directory of the config file, so a config can sit next to its secrets.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut v = Validator {
            file,
            text,
            problems: Vec::new(),
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

    fn problem(&mut self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) {
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
        let hostname = match raw.hostname {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            Some(_) => {
                self.problem(None, "hostname must not be empty");
                String::new()
            }
            None => system_hostname(),
        };

        let listen_raw = raw.listen.unwrap_or_else(|| {
            vec![
                Spanned::new(0..0, "127.0.0.1:25".to_string()),
                Spanned::new(0..0, "[::1]:25".to_string()),
            ]
        });
        let mut listen = Vec::new();
        for l in &listen_raw {
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

        let trusted_raw = raw.trusted_networks.unwrap_or_else(|| {
            vec![
                Spanned::new(0..0, "127.0.0.0/8".to_string()),
                Spanned::new(0..0, "::1/128".to_string()),
            ]
        });
        let mut trusted_networks = Vec::new();
        for n in &trusted_raw {
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

        let retry = match &raw.retry {
            None => Schedule::default(),
            Some(s) => match s.get_ref().parse::<Schedule>() {
                Ok(sched) => sched,
                Err(e) => {
                    self.problem(Some(s.span()), format!("retry schedule: {e}"));
                    Schedule::default()
                }
            },
        };

        let limits = Limits {
            max_message_size: raw.limits.max_message_size.unwrap_or(25 * 1024 * 1024),
            max_recipients: raw.limits.max_recipients.unwrap_or(100),
            max_line_length: raw.limits.max_line_length.unwrap_or(998),
            max_connections: raw.limits.max_connections.unwrap_or(200),
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

        let t = &raw.timeouts;
        let timeouts = Timeouts {
            command: self.duration(&t.command, Duration::from_secs(300)),
            data: self.duration(&t.data, Duration::from_secs(600)),
            connect: self.duration(&t.connect, Duration::from_secs(30)),
            greeting: self.duration(&t.greeting, Duration::from_secs(300)),
            upstream_command: self.duration(&t.upstream_command, Duration::from_secs(300)),
            upstream_data: self.duration(&t.upstream_data, Duration::from_secs(600)),
            idle: self.duration(&t.idle, Duration::from_secs(5)),
        };

        let mut routes = HashMap::new();
        for r in raw.routes {
            let span = r.span();
            let r = r.into_inner();
            if let Some(route) = self.route(r, span.clone(), base) {
                if routes.contains_key(&route.name) {
                    self.problem(Some(span), format!("route {:?} defined twice", route.name));
                } else {
                    routes.insert(route.name.clone(), route);
                }
            }
        }

        let routing = match raw.routing {
            None => {
                self.problem(
                    None,
                    "missing [routing] table with a default route (routing.default = \"<route name>\")",
                );
                return None;
            }
            Some(rt) => {
                let span = rt.span();
                let rt = rt.into_inner();
                if !routes.contains_key(&rt.default) {
                    self.problem(
                        Some(span.clone()),
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
                table
            }
        };

        Some(Config {
            file: self.file.to_string(),
            hostname,
            listen,
            trusted_networks,
            queue_path: base.join(
                raw.queue_path
                    .unwrap_or_else(|| PathBuf::from("/var/lib/smarthost/queue")),
            ),
            queue_cache_size: raw.queue_cache_size.unwrap_or(16 * 1024 * 1024),
            retry,
            limits,
            timeouts,
            routes,
            routing,
        })
    }

    fn route(&mut self, r: RawRoute, span: std::ops::Range<usize>, base: &Path) -> Option<Route> {
        let name = r.name.trim().to_string();
        if name.is_empty() {
            self.problem(Some(span), "route name must not be empty");
            return None;
        }
        let here = Some(span.clone());
        let max_connections = r.max_connections.unwrap_or(4);
        if max_connections == 0 {
            self.problem(
                here.clone(),
                format!("route {name:?}: max_connections must be at least 1"),
            );
        }
        let kind = r.kind.as_deref().unwrap_or("smtp");
        let transport = match kind {
            "directory" => {
                let Some(path) = r.path else {
                    self.problem(
                        here,
                        format!("route {name:?}: type = \"directory\" needs path"),
                    );
                    return None;
                };
                if r.host.is_some() || r.hosts.is_some() || r.username.is_some() {
                    self.problem(
                        here,
                        format!("route {name:?}: a directory route takes only path"),
                    );
                    return None;
                }
                Transport::Directory(base.join(path))
            }
            "smtp" => {
                if r.path.is_some() {
                    self.problem(
                        here.clone(),
                        format!("route {name:?}: path is only for type = \"directory\""),
                    );
                }
                let mut hosts: Vec<String> = Vec::new();
                hosts.extend(r.host.clone());
                hosts.extend(r.hosts.clone().unwrap_or_default());
                hosts.retain(|h| !h.trim().is_empty());
                if hosts.is_empty() {
                    self.problem(here, format!("route {name:?}: host or hosts is required"));
                    return None;
                }
                let tls = match r.tls.as_deref().unwrap_or("starttls") {
                    "starttls" => TlsMode::StartTls,
                    "tls" => TlsMode::Implicit,
                    "none" => TlsMode::None,
                    other => {
                        self.problem(
                            here,
                            format!(
                                "route {name:?}: tls = {other:?}; use \"starttls\", \"tls\" or \"none\""
                            ),
                        );
                        return None;
                    }
                };
                let port = r.port.unwrap_or(match tls {
                    TlsMode::StartTls => 587,
                    TlsMode::Implicit => 465,
                    TlsMode::None => 25,
                });
                let credentials = self.credentials(&name, &r, here.clone(), base);
                if tls == TlsMode::None {
                    if credentials.is_some() || r.username.is_some() {
                        self.problem(
                            here.clone(),
                            format!(
                                "route {name:?}: tls = \"none\" with credentials would send the password in clear text"
                            ),
                        );
                    }
                    let all_loopback = hosts.iter().all(|h| is_loopback_host(h));
                    if !all_loopback && r.allow_plaintext != Some(true) {
                        self.problem(
                            here.clone(),
                            format!(
                                "route {name:?}: tls = \"none\" to a non-loopback host; set allow_plaintext = true if you really mean it"
                            ),
                        );
                    }
                }
                if let Some(ca) = &r.ca_file {
                    let ca = base.join(ca);
                    if let Err(e) = std::fs::metadata(&ca) {
                        self.problem(
                            here.clone(),
                            format!("route {name:?}: ca_file {}: {e}", ca.display()),
                        );
                    }
                }
                Transport::Smtp(SmtpRoute {
                    hosts,
                    port,
                    tls,
                    ca_file: r.ca_file.map(|p| base.join(p)),
                    credentials,
                })
            }
            other => {
                self.problem(
                    here,
                    format!("route {name:?}: type = {other:?}; use \"smtp\" or \"directory\""),
                );
                return None;
            }
        };
        Some(Route {
            name,
            transport,
            max_connections: max_connections.max(1),
        })
    }

    fn credentials(
        &mut self,
        name: &str,
        r: &RawRoute,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
    ) -> Option<Credentials> {
        let mechanism = match r.auth.as_deref() {
            None if r.username.is_none() && r.password_file.is_none() => return None,
            None | Some("plain") => AuthMechanism::Plain,
            Some("login") => AuthMechanism::Login,
            Some("none") => {
                if r.username.is_some() || r.password_file.is_some() {
                    self.problem(
                        here,
                        format!("route {name:?}: auth = \"none\" but username/password_file set"),
                    );
                }
                return None;
            }
            Some(other) => {
                self.problem(
                    here,
                    format!(
                        "route {name:?}: auth = {other:?}; use \"plain\", \"login\" or \"none\""
                    ),
                );
                return None;
            }
        };
        let (Some(username), Some(password_file)) = (&r.username, &r.password_file) else {
            self.problem(
                here,
                format!("route {name:?}: authentication needs both username and password_file"),
            );
            return None;
        };
        let path = base.join(password_file);
        match read_secret_file(&path) {
            Ok(password) => Some(Credentials {
                mechanism,
                username: username.clone(),
                password,
                password_file: path,
            }),
            Err(message) => {
                self.problem(here, format!("route {name:?}: {message}"));
                None
            }
        }
    }
}

/// Reads a secret file, refusing one that group or others can read: a password
/// that every local user can read is already leaked.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("password_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "password_file {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("password_file {}: {e}", path.display()))?;
    // A trailing newline is an editor artefact, never part of the password.
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("password_file {} is empty", path.display()));
    }
    Ok(Secret::new(secret))
}

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

/// The route table as `check` and `route` print it, without secrets.
pub fn describe(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut names: Vec<&String> = config.routes.keys().collect();
    names.sort();
    let _ = writeln!(out, "routes:");
    for name in names {
        let Some(route) = config.routes.get(name) else {
            continue;
        };
        match &route.transport {
            Transport::Smtp(s) => {
                let auth = match &s.credentials {
                    Some(c) => format!(
                        "auth={} user={} password_file={}",
                        c.mechanism,
                        c.username,
                        c.password_file.display()
                    ),
                    None => "auth=none".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  {name}: smtp {}:{} tls={} {auth} max_connections={}",
                    s.hosts.join(","),
                    s.port,
                    s.tls,
                    route.max_connections
                );
            }
            Transport::Directory(p) => {
                let _ = writeln!(out, "  {name}: directory {}", p.display());
            }
        }
    }
    let _ = writeln!(out, "senders:");
    for (pattern, route) in config.routing.entries() {
        let _ = writeln!(out, "  {pattern} -> {route}");
    }
    let _ = writeln!(out, "  (default) -> {}", config.routing.default_route());
    let _ = writeln!(out, "retry: {}", config.retry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/nonexistent"))
    }

    const MINIMAL: &str = r#"
[[route]]
name = "capture"
type = "directory"
path = "/tmp/out"

[routing]
default = "capture"
"#;

    #[test]
    fn minimal_config_has_safe_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(
            c.listen,
            vec![
                "127.0.0.1:25".parse::<SocketAddr>().unwrap(),
                "[::1]:25".parse().unwrap()
            ]
        );
        assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.is_trusted("::1".parse().unwrap()));
        assert!(c.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.is_trusted("192.0.2.1".parse().unwrap()));
        assert_eq!(c.retry.to_string(), crate::retry::DEFAULT_SCHEDULE);
        assert_eq!(c.limits.max_line_length, 998);
    }

    #[test]
    fn unknown_keys_are_errors_with_line() {
        let text = format!("{MINIMAL}\n[limits]\nmax_mesage_size = 5\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("max_mesage_size"), "{err}");
        assert!(err.contains("line 11"), "{err}");
    }

    #[test]
    fn unknown_route_reported_with_line() {
        let text = format!("{MINIMAL}[routing.senders]\n\"example.com\" = \"nope\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("test.toml:10:") && err.contains("unknown route \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn plaintext_rules() {
        let remote = r#"
[[route]]
name = "up"
host = "smtp.example.com"
tls = "none"
[routing]
default = "up"
"#;
        let err = parse(remote).unwrap_err().to_string();
        assert!(err.contains("allow_plaintext"), "{err}");
        let allowed = remote.replace("tls = \"none\"", "tls = \"none\"\nallow_plaintext = true");
        assert!(parse(&allowed).is_ok());
        let local = remote.replace("smtp.example.com", "127.0.0.1");
        assert!(parse(&local).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        let mut f = std::fs::File::create(&secret).unwrap();
        f.write_all(b"hunter2\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = local.replace(
            "tls = \"none\"",
            &format!(
                "tls = \"none\"\nusername = \"u\"\npassword_file = \"{}\"",
                secret.display()
            ),
        );
        let err = parse(&creds).unwrap_err().to_string();
        assert!(err.contains("clear text"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn secret_file_permissions_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret-value\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            r#"
[[route]]
name = "up"
host = "smtp.example.com"
username = "me@example.com"
password_file = "{}"
[routing]
default = "up"
"#,
            secret.display()
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("readable by group or others"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&text).expect("valid");
        let route = c.routes.get("up").unwrap();
        let Transport::Smtp(s) = &route.transport else {
            panic!("smtp route expected")
        };
        let creds = s.credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "s3cret-value");
        assert_eq!(s.port, 587);
        assert_eq!(s.tls, TlsMode::StartTls);
        let shown = format!("{c:?}\n{}", describe(&c));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("me@example.com"));
    }

    #[test]
    fn bad_values_are_reported_together() {
        let text = r#"
listen = ["localhost:25"]
trusted_networks = ["10.0.0.0/33"]
retry = "F,2h"
[timeouts]
command = "soon"
[[route]]
name = "up"
host = "h"
tls = "maybe"
[routing]
default = "up"
"#;
        let Err(ConfigError::Invalid(problems)) = parse(text) else {
            panic!("expected problems")
        };
        let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
        assert!(lines.contains(&Some(2)), "{problems:?}");
        assert!(lines.contains(&Some(3)), "{problems:?}");
        assert!(lines.contains(&Some(4)), "{problems:?}");
        assert!(lines.contains(&Some(6)), "{problems:?}");
        assert!(problems.iter().any(|p| p.message.contains("maybe")));
    }
}
