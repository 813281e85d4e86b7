//! `smarthost import`: translate an existing Postfix or exim smarthost setup into
//! a smarthost configuration.
//!
//! Each importer reads its sources into a [`Plan`]: upstreams (deduplicated, so
//! every distinct host, port, TLS mode and credential becomes one route), the
//! sender table, a few global settings, and everything it could not carry over
//! with the reason why. The plan is then rendered as commented TOML plus the
//! secret files it refers to, and written by [`write`]. Nothing is written until
//! the whole plan stands, so a bad source never leaves half an import behind.
//!
//! An import never guesses silently: whatever behaves differently in smarthost,
//! or is not translated at all, is said in the config's header and on stderr.

use std::path::{Path, PathBuf};

use crate::config::{AuthMechanism, Secret, TlsMode};
use crate::routing::{RouteTable, RouteTableError};
use crate::smtp::address::validate_mailbox;

pub mod cli;
pub mod exim;
pub mod postfix;
mod render;
mod write;

pub use render::Rendered;
pub use write::{write, SecretFile};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// A link or someone else's file where the import writes.
    #[error("cannot write: {0}")]
    Unsafe(#[from] crate::safe_fs::SafeFsError),
    #[error("{}: already exist{} (use --force to replace)", .0.join(", "), if .0.len() == 1 { "s" } else { "" })]
    Exists(Vec<String>),
    #[error("{0}: found no smarthost to import")]
    Nothing(String),
    #[error("retry schedule: {0}")]
    Retry(#[from] crate::retry::ScheduleError),
}

/// What `[local]` gets: how local names and this machine's own addresses
/// become addresses the world accepts.
#[derive(Debug, Default)]
pub struct LocalNames {
    /// `sender_domain`: the domain for unqualified local names.
    pub sender_domain: Option<Setting<String>>,
    /// `mailname`: the file that holds that domain, as the target machine
    /// names it.
    pub mailname: Option<Setting<String>>,
    /// `aliases`: the aliases(5) file, as the target machine names it.
    pub aliases: Option<Setting<String>>,
    /// `[local.generic]`, in the order the sources gave the entries.
    generic: Vec<GenericEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GenericEntry {
    /// `user@domain` or `@domain`, lower-cased as smarthost matches it.
    key: String,
    /// An address or `@domain`.
    value: String,
    comment: String,
}

/// A setting with the comment that says where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub comment: String,
}

/// One thing the importer could not carry over. `what` names the setting or
/// table key, never a value that could be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    /// `file:line`, or the file alone.
    pub origin: String,
    pub what: String,
    pub why: String,
}

impl std::fmt::Display for Untranslated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.what, self.why)
    }
}

/// How a route authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// PLAIN or LOGIN; the password goes into a 0600 file.
    Password {
        mechanism: AuthMechanism,
        username: String,
        password: Secret,
    },
    /// XOAUTH2 with a token from a credential-server socket (cloud_mdir_sync).
    Socket {
        username: String,
        path: PathBuf,
    },
}

/// Everything that makes one route different from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub hosts: Vec<String>,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub helo: Option<String>,
    pub auth: Auth,
}

#[derive(Debug, Clone)]
struct PlannedRoute {
    upstream: Upstream,
    notes: Vec<String>,
}

#[derive(Debug, Clone)]
struct SenderEntry {
    pattern: String,
    route: usize,
    /// `file:line` and the key as the source wrote it, for the comment.
    origin: String,
    key: String,
}

/// What an importer found, before names are chosen and text is written.
#[derive(Debug)]
pub struct Plan {
    /// "Postfix configuration in /etc/postfix", for the header.
    pub source: String,
    /// The command line that made it, for the header.
    pub command: String,
    pub hostname: Option<Setting<String>>,
    pub retry: Option<Setting<String>>,
    pub max_message_size: Option<Setting<u64>>,
    /// `[local]`: the local domain, aliases and the outbound address map.
    pub local: LocalNames,
    /// Header comments: behaviour that changes in translation.
    pub notes: Vec<String>,
    pub untranslated: Vec<Untranslated>,
    routes: Vec<PlannedRoute>,
    senders: Vec<SenderEntry>,
    /// Route table built alongside, so invalid or colliding patterns are found
    /// here, with their origin, rather than by `smarthost check` later.
    table: RouteTable,
    default: Option<Setting<usize>>,
}

impl Plan {
    pub fn new(source: impl Into<String>, command: impl Into<String>) -> Plan {
        Plan {
            source: source.into(),
            command: command.into(),
            hostname: None,
            retry: None,
            max_message_size: None,
            local: LocalNames::default(),
            notes: Vec::new(),
            untranslated: Vec::new(),
            routes: Vec::new(),
            senders: Vec::new(),
            table: RouteTable::new(""),
            default: None,
        }
    }

    /// The route for `upstream`, added if no route has exactly these settings;
    /// `note` (where it came from) is kept once per route.
    pub fn route(&mut self, upstream: Upstream, note: impl Into<String>) -> usize {
        let note = note.into();
        let index = match self.routes.iter().position(|r| r.upstream == upstream) {
            Some(i) => i,
            None => {
                self.routes.push(PlannedRoute {
                    upstream,
                    notes: Vec::new(),
                });
                self.routes.len() - 1
            }
        };
        let notes = &mut self.routes[index].notes;
        if !note.is_empty() && !notes.contains(&note) {
            notes.push(note);
        }
        index
    }

    pub fn route_note(&mut self, route: usize, note: impl Into<String>) {
        let note = note.into();
        if let Some(r) = self.routes.get_mut(route) {
            if !r.notes.contains(&note) {
                r.notes.push(note);
            }
        }
    }

    /// Adds a sender pattern (smarthost syntax: `user@domain`, `domain`,
    /// `.domain`). One that smarthost would refuse or that repeats an earlier
    /// one is reported instead: the first entry wins, as in both sources.
    /// `origin` is `file:line`, `key` the source's key for it.
    pub fn sender(&mut self, pattern: &str, route: usize, origin: &str, key: &str) {
        let origin = origin.to_string();
        match self.table.insert(pattern, route.to_string()) {
            Ok(()) => self.senders.push(SenderEntry {
                pattern: pattern.to_string(),
                route,
                origin,
                key: key.to_string(),
            }),
            Err(RouteTableError::Duplicate { .. }) => self.untranslated(
                origin,
                pattern,
                "repeats an earlier entry for the same sender; the first one is used, as before",
            ),
            Err(e) => self.untranslated(origin, pattern, e.to_string()),
        }
    }

    pub fn set_default(&mut self, route: usize, comment: impl Into<String>) {
        self.default = Some(Setting {
            value: route,
            comment: comment.into(),
        });
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The route most senders use: the least surprising default when the
    /// source had none.
    pub fn busiest_route(&self) -> Option<usize> {
        (0..self.routes.len()).max_by_key(|&r| {
            let uses = self.senders.iter().filter(|s| s.route == r).count();
            // Earlier routes win ties: max_by_key keeps the last maximum.
            (uses, std::cmp::Reverse(r))
        })
    }

    pub fn untranslated(
        &mut self,
        origin: impl Into<String>,
        what: impl Into<String>,
        why: impl Into<String>,
    ) {
        let item = Untranslated {
            origin: origin.into(),
            what: what.into(),
            why: why.into(),
        };
        if !self.untranslated.contains(&item) {
            self.untranslated.push(item);
        }
    }

    /// Adds a `[local.generic]` entry: `key` is `user@domain` or `@domain`,
    /// `value` an address or `@domain`, both as smarthost would accept them.
    /// Anything else, or a key already taken, is reported against `origin`
    /// instead (the first entry wins, as in both sources); returns whether
    /// the entry was added.
    pub fn generic(&mut self, key: &str, value: &str, origin: &str, comment: &str) -> bool {
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let why = if !generic_form(&key) {
            Some("smarthost maps only user@domain and @domain".to_string())
        } else if !generic_form(value) {
            Some(format!("{value:?} is not an address or @domain"))
        } else if self.local.generic.iter().any(|e| e.key == key) {
            Some(
                "repeats an earlier entry for the same address; the first one is used, as before"
                    .into(),
            )
        } else {
            None
        };
        if let Some(why) = why {
            self.untranslated(origin, key, why);
            return false;
        }
        self.local.generic.push(GenericEntry {
            key,
            value: value.to_string(),
            comment: comment.to_string(),
        });
        true
    }

    /// Whether `[local.generic]` holds `key` already (lower-cased).
    pub fn has_generic(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.local.generic.iter().any(|e| e.key == key)
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

/// A host smarthost may talk to in clear text (with `allow_plaintext`).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        Ok(ip) => ip,
        Err(_) => return h.eq_ignore_ascii_case("localhost"),
    };
    ip.is_loopback()
}

/// `user@domain`, or `@domain`, as `[local.generic]` takes keys and values:
/// checked here so an import never writes what `smarthost check` refuses.
fn generic_form(s: &str) -> bool {
    match s.strip_prefix('@') {
        Some(domain) => is_domain(domain),
        None => s.contains('@') && validate_mailbox(s).is_ok(),
    }
}

/// A mail domain, as smarthost accepts one in an address.
fn is_domain(domain: &str) -> bool {
    !domain.is_empty() && validate_mailbox(&format!("postmaster@{domain}")).is_ok()
}

/// A host name or IP address, as both importers accept one: the same
/// characters whichever source a host comes from.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
}

/// The comment a password route to a provider that is retiring passwords gets.
fn provider_hint(upstream: &Upstream) -> Option<&'static str> {
    let Auth::Password { .. } = upstream.auth else {
        return None;
    };
    let host = upstream.hosts.first()?.to_ascii_lowercase();
    if host.ends_with("office365.com") || host.ends_with("outlook.com") {
        Some("Microsoft is retiring passwords for SMTP AUTH: see README \"OAuth2\" for auth = \"xoauth2\" with a token_source")
    } else if host.ends_with("gmail.com") || host.ends_with("googlemail.com") {
        Some("Google takes only app passwords here: see README \"OAuth2\" for auth = \"xoauth2\" with a token_source")
    } else {
        None
    }
}

/// The path an importer reads, as its messages name it: relative to the
/// imported directory when inside it, so reports stay short.
fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Reads a source file; the error names the path only.
fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| ImportError::Read {
            path: path.display().to_string(),
            source,
        })
}

/// Helpers for the importers' tests.
#[cfg(test)]
impl Plan {
    /// Every report, one a line.
    fn report_text(&self) -> String {
        self.untranslated
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The upstream of the route a sender pattern was given.
    fn upstream_of(&self, pattern: &str) -> &Upstream {
        let s = self
            .senders
            .iter()
            .find(|s| s.pattern == pattern)
            .unwrap_or_else(|| panic!("no sender {pattern}: {:?}", self.senders));
        &self.routes[s.route].upstream
    }

    /// The `[local.generic]` value for a key.
    fn generic_value(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.local
            .generic
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    fn default_upstream(&self) -> &Upstream {
        let d = self.default.as_ref().expect("a default route");
        &self.routes[d.value].upstream
    }
}

/// A STARTTLS upstream on 587, with a password when `user` is given.
#[cfg(test)]
fn test_upstream(host: &str, user: Option<&str>) -> Upstream {
    Upstream {
        hosts: vec![host.into()],
        port: 587,
        tls: TlsMode::StartTls,
        ca_file: None,
        helo: None,
        auth: match user {
            None => Auth::None,
            Some(u) => Auth::Password {
                mechanism: AuthMechanism::Plain,
                username: u.into(),
                password: Secret::new("Zq9-secret"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(host: &str) -> Upstream {
        test_upstream(host, None)
    }

    #[test]
    fn routes_are_shared_by_identical_upstreams() {
        let mut p = Plan::new("test", "test");
        let a = p.route(upstream("a.example"), "one");
        let b = p.route(upstream("b.example"), "two");
        let a2 = p.route(upstream("a.example"), "three");
        assert_eq!((a, b, a2), (0, 1, 0));
        assert_eq!(p.routes[0].notes, ["one", "three"]);
        let mut with_password = upstream("a.example");
        with_password.auth = Auth::Password {
            mechanism: AuthMechanism::Plain,
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert_eq!(p.route(with_password, ""), 2);
    }

    #[test]
    fn senders_report_duplicates_and_invalid_patterns() {
        let mut p = Plan::new("test", "test");
        let r = p.route(upstream("a.example"), "");
        p.sender("example.com", r, "f:1", "@example.com");
        p.sender("EXAMPLE.com", r, "f:2", "@EXAMPLE.com");
        p.sender("bad domain", r, "f:3", "bad domain");
        assert_eq!(p.senders.len(), 1);
        let origins: Vec<&str> = p.untranslated.iter().map(|u| u.origin.as_str()).collect();
        assert_eq!(origins, ["f:2", "f:3"]);
        assert!(p.untranslated[0].why.contains("first one is used"));
    }

    #[test]
    fn busiest_route_prefers_the_first_on_ties() {
        let mut p = Plan::new("test", "test");
        let a = p.route(upstream("a.example"), "");
        let b = p.route(upstream("b.example"), "");
        assert_eq!(p.busiest_route(), Some(a));
        p.sender("b.example", b, "", "");
        assert_eq!(p.busiest_route(), Some(b));
    }
}
