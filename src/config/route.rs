//! Routes: how each `[[route]]` table is checked and what it becomes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::preset::Preset;
use super::rate::{Rate, RawRates};
use super::secret::{read_secret_file, Secret};
use super::{is_loopback_host, Config, TokenSource, Validator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
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
    token_source: Option<String>,
    max_connections: Option<usize>,
    helo: Option<String>,
    path: Option<PathBuf>,
    preset: Option<String>,
    rate: Option<RawRates>,
}

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
    /// Google's and Microsoft's bearer-token mechanism.
    XOAuth2,
    /// RFC 7628.
    OAuthBearer,
}

impl AuthMechanism {
    pub fn uses_token(self) -> bool {
        matches!(self, AuthMechanism::XOAuth2 | AuthMechanism::OAuthBearer)
    }
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMechanism::Plain => "plain",
            AuthMechanism::Login => "login",
            AuthMechanism::XOAuth2 => "xoauth2",
            AuthMechanism::OAuthBearer => "oauthbearer",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub mechanism: AuthMechanism,
    pub username: String,
    pub secret: AuthSecret,
}

#[derive(Debug, Clone)]
pub enum AuthSecret {
    /// PLAIN and LOGIN.
    Password { password: Secret, file: PathBuf },
    /// XOAUTH2 and OAUTHBEARER: the named `[[token_source]]`.
    Token { source: String },
}

#[derive(Debug, Clone)]
pub struct SmtpRoute {
    pub hosts: Vec<String>,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// The EHLO name for this upstream instead of `hostname`: some providers
    /// key policy on it, and an exim or Postfix setup being replaced may have
    /// set one per smarthost.
    pub helo: Option<String>,
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
    /// Every one holds at once: `["30/min", "10000/day"]`. Empty: no limit.
    pub rates: Vec<Rate>,
}

impl RawRoute {
    /// Fills in what the operator left out from the preset; a route that sets
    /// its own `tls` gets that mode's default port, not the preset's.
    fn fill_from(&mut self, p: &Preset) {
        if self.host.is_none() && self.hosts.is_none() {
            self.host = Some(p.host.to_string());
        }
        if self.tls.is_none() {
            self.tls = Some("starttls".to_string());
            self.port = self.port.or(Some(p.port));
        }
        self.max_connections = self.max_connections.or(Some(p.max_connections));
    }
}

impl Validator<'_> {
    pub(super) fn route(
        &mut self,
        mut r: RawRoute,
        span: std::ops::Range<usize>,
        base: &Path,
        sources: &BTreeMap<String, TokenSource>,
    ) -> Option<Route> {
        let name = r.name.trim().to_string();
        if name.is_empty() {
            self.problem(Some(span), "route name must not be empty");
            return None;
        }
        // The queue's due index keys a route's messages by its name, ended
        // by a NUL (see `spool::due`).
        if name.chars().any(char::is_control) {
            self.problem(
                Some(span),
                format!("route {name:?}: a control character in its name"),
            );
            return None;
        }
        let here = Some(span.clone());
        let preset = self.preset(&name, r.preset.as_deref(), here.clone()).ok()?;
        if let Some(p) = preset {
            if r.kind.as_deref() == Some("directory") {
                self.problem(here, format!("route {name:?}: a preset is for smtp routes"));
                return None;
            }
            r.fill_from(p);
        }
        let rates = match &r.rate {
            Some(raw) => self.rates(&name, raw, here.clone()),
            None => preset.map(|p| p.rates.to_vec()).unwrap_or_default(),
        };
        let max_connections = r.max_connections.unwrap_or(4);
        if max_connections == 0 {
            self.problem(
                here.clone(),
                format!("route {name:?}: max_connections must be at least 1"),
            );
        }
        let kind = r.kind.clone().unwrap_or_else(|| "smtp".to_string());
        let transport = match kind.as_str() {
            "directory" => Transport::Directory(self.directory_route(&name, r, here, base)?),
            "smtp" => Transport::Smtp(self.smtp_route(&name, r, here, base, sources)?),
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
            rates,
        })
    }

    /// The directory a `type = "directory"` route writes to.
    fn directory_route(
        &mut self,
        name: &str,
        r: RawRoute,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
    ) -> Option<PathBuf> {
        let Some(path) = r.path else {
            self.problem(
                here,
                format!("route {name:?}: type = \"directory\" needs path"),
            );
            return None;
        };
        if r.host.is_some()
            || r.hosts.is_some()
            || r.username.is_some()
            || r.token_source.is_some()
            || r.helo.is_some()
        {
            self.problem(
                here,
                format!("route {name:?}: a directory route takes only path"),
            );
            return None;
        }
        Some(base.join(path))
    }

    fn smtp_route(
        &mut self,
        name: &str,
        r: RawRoute,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
        sources: &BTreeMap<String, TokenSource>,
    ) -> Option<SmtpRoute> {
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
        let tls = self.tls_mode(name, r.tls.as_deref(), here.clone())?;
        let port = r.port.unwrap_or(match tls {
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        });
        let credentials = self.credentials(name, &r, here.clone(), base, sources);
        if tls == TlsMode::None {
            let sends_credentials = credentials.is_some() || r.username.is_some();
            self.plaintext(
                name,
                &hosts,
                sends_credentials,
                r.allow_plaintext,
                here.clone(),
            );
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
        let helo = self.helo(name, r.helo.as_deref(), here);
        Some(SmtpRoute {
            hosts,
            port,
            tls,
            ca_file: r.ca_file.map(|p| base.join(p)),
            credentials,
            helo,
        })
    }

    fn tls_mode(
        &mut self,
        name: &str,
        written: Option<&str>,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<TlsMode> {
        match written.unwrap_or("starttls") {
            "starttls" => Some(TlsMode::StartTls),
            "tls" => Some(TlsMode::Implicit),
            "none" => Some(TlsMode::None),
            other => {
                self.problem(
                    here,
                    format!(
                        "route {name:?}: tls = {other:?}; use \"starttls\", \"tls\" or \"none\""
                    ),
                );
                None
            }
        }
    }

    /// Reports a `tls = "none"` route that would send mail or credentials in
    /// clear text where others could read them.
    fn plaintext(
        &mut self,
        name: &str,
        hosts: &[String],
        sends_credentials: bool,
        allow_plaintext: Option<bool>,
        here: Option<std::ops::Range<usize>>,
    ) {
        let all_loopback = hosts.iter().all(|h| is_loopback_host(h));
        // Over loopback nobody but root can listen in; a local stunnel or a
        // test peer may take credentials in clear, but only when the
        // operator says so.
        let local_ok = all_loopback && allow_plaintext == Some(true);
        if sends_credentials && !local_ok {
            self.problem(
                here.clone(),
                format!(
                    "route {name:?}: tls = \"none\" with credentials would send them in clear text (allowed only to loopback hosts with allow_plaintext = true)"
                ),
            );
        }
        if !all_loopback && allow_plaintext != Some(true) {
            self.problem(
                here,
                format!(
                    "route {name:?}: tls = \"none\" to a non-loopback host; set allow_plaintext = true if you really mean it"
                ),
            );
        }
    }

    /// A bad `helo` is reported and the route falls back to `hostname`.
    fn helo(
        &mut self,
        name: &str,
        written: Option<&str>,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<String> {
        let h = written.map(str::trim)?;
        if is_helo_name(h) {
            return Some(h.to_string());
        }
        self.problem(
            here,
            format!("route {name:?}: helo = {h:?} is not a host name or address literal"),
        );
        None
    }

    fn credentials(
        &mut self,
        name: &str,
        r: &RawRoute,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
        sources: &BTreeMap<String, TokenSource>,
    ) -> Option<Credentials> {
        let mechanism = self.auth_mechanism(name, r, here.clone())?;
        if mechanism.uses_token() {
            return self.token_credentials(name, mechanism, r, here, sources);
        }
        if r.token_source.is_some() {
            self.problem(
                here.clone(),
                format!("route {name:?}: token_source needs auth = \"xoauth2\" or \"oauthbearer\""),
            );
        }
        self.password_credentials(name, mechanism, r, here, base)
    }

    /// The mechanism `auth` names, or the one the other keys imply; None for
    /// a route that does not authenticate (or names no known mechanism, which
    /// is reported).
    fn auth_mechanism(
        &mut self,
        name: &str,
        r: &RawRoute,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<AuthMechanism> {
        let mechanism = match r.auth.as_deref() {
            None if r.username.is_none()
                && r.password_file.is_none()
                && r.token_source.is_none() =>
            {
                return None
            }
            None if r.token_source.is_some() => AuthMechanism::XOAuth2,
            None | Some("plain") => AuthMechanism::Plain,
            Some("login") => AuthMechanism::Login,
            Some("xoauth2") => AuthMechanism::XOAuth2,
            Some("oauthbearer") => AuthMechanism::OAuthBearer,
            Some("none") => {
                if r.username.is_some() || r.password_file.is_some() || r.token_source.is_some() {
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
                        "route {name:?}: auth = {other:?}; use \"plain\", \"login\", \"xoauth2\", \"oauthbearer\" or \"none\""
                    ),
                );
                return None;
            }
        };
        Some(mechanism)
    }

    /// XOAUTH2 and OAUTHBEARER: a user name and a defined token source.
    fn token_credentials(
        &mut self,
        name: &str,
        mechanism: AuthMechanism,
        r: &RawRoute,
        here: Option<std::ops::Range<usize>>,
        sources: &BTreeMap<String, TokenSource>,
    ) -> Option<Credentials> {
        if r.password_file.is_some() {
            self.problem(
                here.clone(),
                format!(
                    "route {name:?}: auth = \"{mechanism}\" takes token_source, not password_file"
                ),
            );
        }
        let (Some(username), Some(source)) = (&r.username, &r.token_source) else {
            self.problem(
                here,
                format!("route {name:?}: auth = \"{mechanism}\" needs username and token_source"),
            );
            return None;
        };
        if !sources.contains_key(source) {
            self.problem(
                here,
                format!("route {name:?}: token_source {source:?} is not defined ([[token_source]] name = ...)"),
            );
            return None;
        }
        Some(Credentials {
            mechanism,
            username: username.clone(),
            secret: AuthSecret::Token {
                source: source.clone(),
            },
        })
    }

    /// PLAIN and LOGIN: a user name and the password in its file.
    fn password_credentials(
        &mut self,
        name: &str,
        mechanism: AuthMechanism,
        r: &RawRoute,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
    ) -> Option<Credentials> {
        let (Some(username), Some(password_file)) = (&r.username, &r.password_file) else {
            self.problem(
                here,
                format!("route {name:?}: authentication needs both username and password_file"),
            );
            return None;
        };
        let path = super::secret::secret_path(base, password_file);
        let password = if self.read_secrets {
            match read_secret_file(&path) {
                Ok(password) => password,
                Err(e) => {
                    self.problem(here, format!("route {name:?}: {e}"));
                    return None;
                }
            }
        } else {
            // Client commands (sendmail, queue) run as any user and never need the
            // upstream password: leave it unread rather than fail on its permissions.
            Secret::new("")
        };
        Some(Credentials {
            mechanism,
            username: username.clone(),
            secret: AuthSecret::Password {
                password,
                file: path,
            },
        })
    }
}

/// What RFC 5321 allows after EHLO: a domain or an address literal. Checked
/// loosely (no spaces or controls, printable ASCII) because the upstream is the
/// judge; this only stops a typo from breaking the command line.
fn is_helo_name(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic())
}

impl Route {
    /// The route in one line, without secrets: `smtp host:port tls=... auth=...`.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(s) => {
                let auth = match &s.credentials {
                    Some(c) => match &c.secret {
                        AuthSecret::Password { file, .. } => format!(
                            "auth={} user={} password_file={}",
                            c.mechanism,
                            c.username,
                            file.display()
                        ),
                        AuthSecret::Token { source } => format!(
                            "auth={} user={} token_source={source}",
                            c.mechanism, c.username
                        ),
                    },
                    None => "auth=none".to_string(),
                };
                let helo = s
                    .helo
                    .as_deref()
                    .map(|h| format!(" helo={h}"))
                    .unwrap_or_default();
                let hosts: Vec<String> = s.hosts.iter().map(|h| bracketed(h)).collect();
                format!(
                    "smtp {}:{} tls={} {auth} max_connections={}{}{helo}",
                    hosts.join(","),
                    s.port,
                    s.tls,
                    self.max_connections,
                    self.describe_rates()
                )
            }
            Transport::Directory(p) => {
                format!("directory {}{}", p.display(), self.describe_rates())
            }
        }
    }

    /// ` rate=30/min,10000/day`, or nothing for an unlimited route.
    fn describe_rates(&self) -> String {
        if self.rates.is_empty() {
            return String::new();
        }
        let rates: Vec<String> = self.rates.iter().map(Rate::to_string).collect();
        format!(" rate={}", rates.join(","))
    }
}

/// A host as it stands before `:port`: an IPv6 address in brackets
/// (`[2001:db8::25]:587`, not `2001:db8::25:587`), whether or not the
/// configuration bracketed it.
fn bracketed(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') {
        format!("[{bare}]")
    } else {
        host.to_string()
    }
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
        let _ = writeln!(out, "  {name}: {}", route.describe());
    }
    if !config.token_sources.is_empty() {
        let _ = writeln!(out, "token sources:");
        for source in config.token_sources.values() {
            let shared = if source.share_as.is_empty() {
                String::new()
            } else {
                format!(" shared as {}", source.share_as.join(","))
            };
            let _ = writeln!(out, "  {}: {}{shared}", source.name, source.describe());
        }
    }
    let _ = writeln!(out, "senders:");
    for (pattern, route) in config.routing.entries() {
        let _ = writeln!(out, "  {pattern} -> {route}");
    }
    let _ = writeln!(out, "  (default) -> {}", config.routing.default_route());
    let _ = writeln!(out, "retry: {}", config.retry);
    let l = &config.local;
    let _ = writeln!(
        out,
        "local: submit={} control={}{} admin={}{} drop={} sender_domain={}",
        l.submit_socket().display(),
        l.control_socket().display(),
        group(&l.control_group),
        l.admin_socket().display(),
        group(&l.admin_group),
        l.drop_dir.display(),
        l.sender_domain
    );
    for (user, address) in &l.rewrite {
        let _ = writeln!(out, "  {user} -> {address}");
    }
    out
}

#[cfg(test)]
mod tests;

fn group(g: &Option<String>) -> String {
    g.as_deref()
        .map(|g| format!(" (group {g})"))
        .unwrap_or_default()
}
