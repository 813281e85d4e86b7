//! `smarthost import postfix [DIR]`: `main.cf` and the postmap source files of
//! its relay maps.
//!
//! The translation follows what Postfix's SMTP client does for a sender:
//!
//! - relay: `sender_dependent_relayhost_maps` looked up with the full address,
//!   then `@domain` (Postfix's `mail_addr_find`; a `DUNNO` result ends the
//!   search), else `relayhost`;
//! - credentials: with `smtp_sender_dependent_authentication = yes` the
//!   `smtp_sasl_password_maps` entry for the address, then `@domain`; else (and
//!   after those) the entry for the relay's host name, then for the next-hop as
//!   written (`[smtp.example.com]:587`), as `smtp_sasl_glue.c` does.
//!
//! Every sender key of either map becomes a `[routing.senders]` entry whose
//! route has the relay and credentials Postfix would use for that sender, so
//! every sender leaves through the same host and port as before. A key without
//! `@` is no sender pattern for Postfix (it would match only a local user name)
//! and is reported, as is everything in main.cf that changes relaying but has
//! no smarthost counterpart.
//!
//! Paths under `/etc/postfix/` are read from DIR instead, so a copy of another
//! machine's configuration imports as it would there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{is_loopback, read, shown, Auth, ImportError, Plan, Setting, Upstream};
use crate::config::{AuthMechanism, Secret, TlsMode};
use crate::retry::{Rule, Schedule, ScheduleError};

#[cfg(test)]
mod tests;

/// Where Postfix keeps its configuration; paths below it are rebased onto the
/// imported directory.
const POSTFIX_DIR: &str = "/etc/postfix";

/// Postmap source formats: the indexed file is built from the source by
/// `postmap`, so the source holds the same entries.
const TABLE_TYPES: &[&str] = &["hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash"];

/// CA bundles that are the system's roots, which smarthost uses anyway.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
const SYSTEM_CA_DIRS: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// main.cf parameters that change how mail is relayed and have no smarthost
/// counterpart, reported when set to anything but their default.
const UNTRANSLATED: &[(&str, &str)] = &[
    ("transport_maps", "smarthost routes by sender only, never by recipient"),
    ("sender_dependent_default_transport_maps", "per-sender master.cf transports are not read; check which senders use them"),
    ("relay_domains", "smarthost relays for its trusted clients only and never receives mail for other domains"),
    ("relay_recipient_maps", "smarthost does not receive mail for other domains"),
    ("sender_canonical_maps", "smarthost does not rewrite addresses (only local names, with [local.rewrite])"),
    ("recipient_canonical_maps", "smarthost does not rewrite addresses (only local names, with [local.rewrite])"),
    ("canonical_maps", "smarthost does not rewrite addresses (only local names, with [local.rewrite])"),
    ("smtp_generic_maps", "smarthost does not rewrite addresses (only local names, with [local.rewrite])"),
    ("masquerade_domains", "smarthost does not masquerade addresses"),
    ("virtual_alias_maps", "smarthost does not rewrite recipients"),
    ("always_bcc", "smarthost adds no recipients"),
    ("sender_bcc_maps", "smarthost adds no recipients"),
    ("recipient_bcc_maps", "smarthost adds no recipients"),
    ("header_checks", "smarthost does not filter or change messages"),
    ("smtp_header_checks", "smarthost does not filter or change messages"),
    ("smtp_body_checks", "smarthost does not filter or change messages"),
    ("smtp_fallback_relay", "a relay tried when the others fail: add its host to the route's hosts if it takes the same port and credentials"),
    ("smtp_tls_policy_maps", "per-destination TLS policy is not read; each route's tls comes from smtp_tls_security_level"),
    ("smtp_tls_cert_file", "smarthost presents no client certificate"),
    ("smtp_tls_chain_files", "smarthost presents no client certificate"),
    ("smtp_tls_ciphers", "smarthost uses rustls's cipher suites"),
    ("smtp_tls_mandatory_ciphers", "smarthost uses rustls's cipher suites"),
    ("smtp_tls_exclude_ciphers", "smarthost uses rustls's cipher suites"),
    ("smtp_tls_fingerprint_cert_match", "certificate fingerprints are not supported; certificates are verified against CA roots"),
    ("smtp_bind_address", "the source address of upstream connections is not configurable"),
    ("smtp_bind_address6", "the source address of upstream connections is not configurable"),
    ("default_destination_concurrency_limit", "set max_connections per route (default 4)"),
    ("smtp_destination_concurrency_limit", "set max_connections per route (default 4)"),
    ("default_destination_rate_delay", "smarthost has no per-route rate limit yet"),
    ("smtp_destination_rate_delay", "smarthost has no per-route rate limit yet"),
    ("minimal_backoff_time", "smarthost retries on the exim schedule in retry"),
    ("maximal_backoff_time", "smarthost retries on the exim schedule in retry"),
    ("bounce_queue_lifetime", "bounces are retried on the same schedule as other mail"),
];

/// Parameters reported only when set to something other than these values,
/// which behave as smarthost does.
const DEFAULTS: &[(&str, &[&str])] = &[
    ("default_transport", &["smtp"]),
    ("relay_transport", &["relay"]),
    ("smtp_sasl_security_options", &["noanonymous"]),
    (
        "smtp_sasl_tls_security_options",
        &[
            "noanonymous",
            "$smtp_sasl_security_options",
            "${smtp_sasl_security_options}",
        ],
    ),
];

/// Translates the Postfix configuration in `dir`.
pub fn import(dir: &Path) -> Result<Plan, ImportError> {
    // $config_directory expands to it, and map paths are joined to it.
    let dir = &std::path::absolute(dir).map_err(|source| ImportError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let main_path = dir.join("main.cf");
    let text = read(&main_path)?;
    let mut p = Postfix {
        dir: dir.to_path_buf(),
        main: MainCf::parse(&text),
        helo: None,
        plan: Plan::new(
            format!("the Postfix configuration in {}", dir.display()),
            format!("smarthost import postfix {}", dir.display()),
        ),
    };
    for (line, why) in p.main.bad_lines.clone() {
        p.plan
            .untranslated(format!("main.cf:{line}"), "this line", why);
    }
    p.globals();
    p.routes();
    if p.plan.routes.is_empty() {
        return Err(ImportError::Nothing(main_path.display().to_string()));
    }
    Ok(p.plan)
}

// ---- main.cf ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Param {
    raw: String,
    line: usize,
}

#[derive(Debug, Default)]
struct MainCf {
    /// The last definition of a name wins, as in Postfix.
    params: HashMap<String, Param>,
    bad_lines: Vec<(usize, String)>,
}

/// Postfix's logical lines: a line starting with whitespace continues the one
/// before; blank lines and lines whose first non-blank is `#` are skipped
/// without ending a logical line. `#` elsewhere is text, not a comment.
/// Returns (first line number, text) pairs and the orphan continuation lines.
fn logical_lines(text: &str) -> (Vec<(usize, String)>, Vec<usize>) {
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut orphans = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            match lines.last_mut() {
                Some((_, l)) => {
                    l.push(' ');
                    l.push_str(trimmed);
                }
                None => orphans.push(i + 1),
            }
        } else {
            lines.push((i + 1, raw.trim_end().to_string()));
        }
    }
    (lines, orphans)
}

impl MainCf {
    fn parse(text: &str) -> MainCf {
        let mut m = MainCf::default();
        let (lines, orphans) = logical_lines(text);
        for line in orphans {
            m.bad_lines.push((
                line,
                "continuation line with nothing to continue; Postfix ignores it".into(),
            ));
        }
        for (line, l) in lines {
            match l.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    m.params.insert(
                        name.trim().to_string(),
                        Param {
                            raw: value.trim().to_string(),
                            line,
                        },
                    );
                }
                _ => m.bad_lines.push((
                    line,
                    "not `name = value`; Postfix refuses a main.cf with this line".into(),
                )),
            }
        }
        m
    }

    fn line(&self, name: &str) -> Option<usize> {
        self.params.get(name).map(|p| p.line)
    }

    /// Whether the parameter is set in main.cf at all.
    fn is_set(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }
}

// ---- expansion ---------------------------------------------------------------

/// `$name`, `${name}`, `$(name)`, `${name?text}` (text when name is not empty),
/// `${name:text}` (text when it is), `$$`. Parameters not in main.cf expand to
/// their Postfix default where that matters here, else to nothing, and are
/// collected in `undefined`.
struct Expander<'a> {
    main: &'a MainCf,
    config_directory: String,
    undefined: Vec<String>,
}

impl Expander<'_> {
    fn value_of(&mut self, name: &str, depth: usize) -> String {
        match self.main.params.get(name) {
            Some(p) => {
                let raw = p.raw.clone();
                self.expand(&raw, depth + 1)
            }
            None if name == "config_directory" => self.config_directory.clone(),
            None => {
                if !self.undefined.iter().any(|u| u == name) {
                    self.undefined.push(name.to_string());
                }
                String::new()
            }
        }
    }

    fn expand(&mut self, text: &str, depth: usize) -> String {
        // A parameter that refers to itself, directly or not: Postfix gives
        // up too ("recursion"); stop rather than loop.
        if depth > 20 {
            return String::new();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            }
            let close = match after.chars().next() {
                Some('{') => Some('}'),
                Some('(') => Some(')'),
                _ => None,
            };
            if let Some(close) = close {
                let inner_start = &after[1..];
                let Some(end) = matching(inner_start, close) else {
                    // Unbalanced: keep the text as it is.
                    out.push('$');
                    rest = after;
                    continue;
                };
                let inner = &inner_start[..end];
                rest = &inner_start[end + 1..];
                let name_end = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, op) = inner.split_at(name_end);
                let value = self.value_of(name, depth);
                let chosen = match op.chars().next() {
                    None => Some(value),
                    Some('?') => (!value.is_empty()).then(|| unbrace(&op[1..]).to_string()),
                    Some(':') => value.is_empty().then(|| unbrace(&op[1..]).to_string()),
                    Some(_) => Some(value),
                };
                if let Some(t) = chosen {
                    let t = if op.is_empty() {
                        t
                    } else {
                        self.expand(&t, depth + 1)
                    };
                    out.push_str(&t);
                }
            } else {
                let name_end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if name_end == 0 {
                    out.push('$');
                    rest = after;
                    continue;
                }
                let value = self.value_of(&after[..name_end], depth);
                out.push_str(&value);
                rest = &after[name_end..];
            }
        }
        out.push_str(rest);
        out
    }
}

/// The index of the `close` that ends a group whose opening was just passed.
fn matching(s: &str, close: char) -> Option<usize> {
    let open = if close == '}' { '{' } else { '(' };
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// `{text}` → `text` (Postfix 3.0 allows braces around conditional text).
fn unbrace(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(s)
}

// ---- tables ------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    /// Lowercased, as postmap stores it.
    key: String,
    value: String,
    /// `file:line`.
    origin: String,
}

#[derive(Debug, Default)]
struct Table {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Table {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.index
            .get(&key.to_lowercase())
            .and_then(|&i| self.entries.get(i))
    }

    /// Adds an entry unless the key is taken: postmap keeps the first of
    /// duplicate keys (with a warning), and of several maps the first answers.
    fn add(&mut self, entry: Entry) -> bool {
        if self.index.contains_key(&entry.key) {
            return false;
        }
        self.index.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
        true
    }
}

// ---- next-hops ---------------------------------------------------------------

/// One next-hop destination as relayhost and the relay maps write it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Nexthop {
    written: String,
    host: String,
    port: u16,
    /// Without brackets Postfix looks up the host's MX records first.
    mx: bool,
}

fn service_port(s: &str) -> Option<u16> {
    match s {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        _ => s.parse().ok().filter(|&p| p != 0),
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
}

/// `[host]:port`, `[host]`, `host:port`, `host`, `[ipv6:2001:db8::1]:587`;
/// the port may be a service name; the default is 25 (`smtp`).
fn parse_nexthop(s: &str) -> Result<Nexthop, String> {
    let written = s.to_string();
    let (host, port, mx) = if let Some(inner) = s.strip_prefix('[') {
        let (inside, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing `]`"))?;
        let inside = inside
            .strip_prefix("ipv6:")
            .or_else(|| inside.strip_prefix("IPv6:"))
            .unwrap_or(inside);
        let port = match after {
            "" => 25,
            p => p
                .strip_prefix(':')
                .and_then(service_port)
                .ok_or_else(|| format!("{s:?}: bad port after `]`"))?,
        };
        (inside.to_string(), port, false)
    } else if s.matches(':').count() > 1 {
        return Err(format!(
            "{s:?}: an IPv6 address must be written [ipv6:address]"
        ));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (
                h.to_string(),
                service_port(p).ok_or_else(|| format!("{s:?}: bad port {p:?}"))?,
                true,
            ),
            None => (s.to_string(), 25, true),
        }
    };
    if !valid_host(&host) {
        return Err(format!("{s:?}: not a host name or address"));
    }
    Ok(Nexthop {
        written,
        host,
        port,
        mx,
    })
}

/// Postfix 3.5 and later take several destinations, by comma or whitespace.
fn parse_nexthops(s: &str) -> Result<Vec<Nexthop>, String> {
    let hops: Vec<Nexthop> = split_list(s)
        .into_iter()
        .map(parse_nexthop)
        .collect::<Result<_, _>>()?;
    if hops.is_empty() {
        return Err("empty destination".into());
    }
    Ok(hops)
}

fn split_list(s: &str) -> Vec<&str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect()
}

// ---- values ------------------------------------------------------------------

fn boolean(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// A Postfix time value: a number with an optional unit s, m, h, d or w
/// (default d, as for `maximal_queue_lifetime`).
fn postfix_time(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits_end);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a number with a unit"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" | "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{s:?}: unknown time unit {unit:?}")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// The default retry schedule, ending at `lifetime` instead of its own final
/// cutoff: rules that start before it are kept, the rule it falls in ends at
/// it, and a lifetime past the schedule stretches the last rule.
fn schedule_ending_at(lifetime: Duration) -> Result<Schedule, ScheduleError> {
    let mut rules: Vec<Rule> = Vec::new();
    let base = Schedule::default();
    for rule in base.rules() {
        let ends_here = rule.cutoff() >= lifetime;
        let mut r = rule.clone();
        if ends_here {
            set_cutoff(&mut r, lifetime);
        }
        rules.push(r);
        if ends_here {
            break;
        }
    }
    if let Some(last) = rules.last_mut() {
        if last.cutoff() < lifetime {
            set_cutoff(last, lifetime);
        }
    }
    rules
        .iter()
        .map(Rule::to_string)
        .collect::<Vec<_>>()
        .join("; ")
        .parse()
}

fn set_cutoff(rule: &mut Rule, to: Duration) {
    match rule {
        Rule::Fixed { cutoff, .. } | Rule::Geometric { cutoff, .. } => *cutoff = to,
    }
}

// ---- the translation -----------------------------------------------------------

struct Postfix {
    dir: PathBuf,
    main: MainCf,
    plan: Plan,
    /// `smtp_helo_name` when it differs from the host name.
    helo: Option<String>,
}

/// What `smtp_tls_*` says for every route.
struct TlsPolicy {
    level: String,
    level_origin: String,
    wrapper: bool,
    ca_file: Option<PathBuf>,
}

/// How credentials are used.
struct Sasl {
    table: Table,
    sender_dependent: bool,
    mechanism: AuthMechanism,
    /// Set when the "passwords" are not passwords (an XOAUTH2 plugin's token
    /// files): why they are not used.
    unusable: Option<String>,
}

enum Relay<'a> {
    Map(&'a Entry),
    Default,
}

impl Postfix {
    fn origin(&self, name: &str) -> String {
        match self.main.line(name) {
            Some(l) => format!("main.cf:{l}"),
            None => "main.cf".into(),
        }
    }

    /// The expanded value of a parameter set in main.cf; undefined names it
    /// refers to are reported against it.
    fn get(&mut self, name: &str) -> Option<String> {
        let raw = self.main.params.get(name)?.raw.clone();
        let mut x = Expander {
            main: &self.main,
            config_directory: self.dir.display().to_string(),
            undefined: Vec::new(),
        };
        let value = x.expand(&raw, 0);
        let undefined = x.undefined;
        for u in undefined {
            let origin = self.origin(name);
            self.plan.untranslated(
                origin,
                name,
                format!("refers to ${u}, which main.cf does not set; taken as empty"),
            );
        }
        Some(value.trim().to_string())
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(v) => match boolean(&v) {
                Some(b) => b,
                None => {
                    let origin = self.origin(name);
                    self.plan.untranslated(
                        origin,
                        name,
                        format!("{v:?} is not yes or no; taken as no"),
                    );
                    false
                }
            },
        }
    }

    /// A path from main.cf or a map name, read from the imported directory.
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match p.strip_prefix(POSTFIX_DIR) {
            Ok(rest) => self.dir.join(rest),
            Err(_) => self.dir.join(p),
        }
    }

    fn globals(&mut self) {
        if let Some(h) = self.get("myhostname").filter(|h| !h.is_empty()) {
            self.plan.hostname = Some(Setting {
                value: h,
                comment: "myhostname".into(),
            });
        }
        if let Some(v) = self.get("maximal_queue_lifetime") {
            let origin = self.origin("maximal_queue_lifetime");
            match postfix_time(&v) {
                Ok(d) if d.is_zero() => self.plan.untranslated(
                    origin,
                    "maximal_queue_lifetime = 0",
                    "no retries at all is not possible; the default schedule is kept",
                ),
                Ok(d) => match schedule_ending_at(d) {
                    Ok(s) => {
                        self.plan.retry = Some(Setting {
                            value: s.to_string(),
                            comment: format!(
                                "maximal_queue_lifetime = {v}: the default schedule, giving up after that"
                            ),
                        })
                    }
                    Err(e) => self
                        .plan
                        .untranslated(origin, "maximal_queue_lifetime", e.to_string()),
                },
                Err(e) => self
                    .plan
                    .untranslated(origin, "maximal_queue_lifetime", e),
            }
        } else {
            self.plan.note("maximal_queue_lifetime was not set: Postfix gave up after 5 days, smarthost's default schedule gives up after 4");
        }
        if let Some(v) = self.get("message_size_limit") {
            let origin = self.origin("message_size_limit");
            match v.parse::<u64>() {
                Ok(0) => self.plan.untranslated(
                    origin,
                    "message_size_limit = 0",
                    "smarthost always has a limit (default 25 MiB)",
                ),
                Ok(n) => {
                    self.plan.max_message_size = Some(Setting {
                        value: n,
                        comment: "message_size_limit".into(),
                    })
                }
                Err(_) => self.plan.untranslated(
                    origin,
                    "message_size_limit",
                    format!("{v:?} is not a number of bytes"),
                ),
            }
        }
        self.listening();
        for name in ["smtp_tls_protocols", "smtp_tls_mandatory_protocols"] {
            if let Some(v) = self.get(name) {
                if !allows_tls12_and_13(&v) {
                    self.report(name, &v, "smarthost speaks TLS 1.2 and 1.3, nothing else");
                }
            }
        }
        for (name, why) in UNTRANSLATED {
            self.unless_default(name, &[], why);
        }
        for (name, defaults) in DEFAULTS {
            let why = match *name {
                "default_transport" | "relay_transport" => {
                    "master.cf transports are not read; smarthost sends all mail to its routes"
                }
                "smtp_sasl_security_options" => {
                    "smarthost offers the route's one mechanism (PLAIN by default), only over TLS"
                }
                _ => "smarthost sends credentials over TLS only, always",
            };
            self.unless_default(name, defaults, why);
        }
    }

    /// Reports a main.cf setting as not translated, with its line.
    fn report(&mut self, name: &str, value: &str, why: &str) {
        let origin = self.origin(name);
        self.plan
            .untranslated(origin, format!("{name} = {}", short(value)), why);
    }

    /// Reports `name` when main.cf sets it to something but empty or one of
    /// `defaults`.
    fn unless_default(&mut self, name: &str, defaults: &[&str], why: &str) {
        let Some(raw) = self.main.params.get(name).map(|p| p.raw.clone()) else {
            return;
        };
        if raw.is_empty() || defaults.contains(&raw.as_str()) {
            return;
        }
        self.report(name, &raw, why);
    }

    fn listening(&mut self) {
        if let Some(v) = self.get("inet_interfaces") {
            let local = split_list(&v).iter().all(|i| {
                matches!(*i, "loopback-only" | "localhost")
                    || is_loopback(i.trim_start_matches('[').trim_end_matches(']'))
            });
            if !local {
                self.report("inet_interfaces", &v, "smarthost listens on loopback by default; set listen (and trusted_networks) if other hosts relay through this one");
            }
        }
        if let Some(v) = self.get("mynetworks") {
            let remote: Vec<&str> = split_list(&v)
                .into_iter()
                .filter(|n| {
                    let ip = n.split('/').next().unwrap_or("");
                    !is_loopback(ip.trim_start_matches('[').trim_end_matches(']'))
                })
                .collect();
            if !remote.is_empty() {
                self.report("mynetworks", &v, "only loopback clients relay by default; add the others to trusted_networks (and listen) if they should");
            }
        }
        if let Some(v) = self.main.params.get("mydestination").map(|p| p.raw.clone()) {
            // The machine's own names: smarthost's sendmail handles mail to
            // local names ([local.rewrite]).
            let me = self.get("myhostname").unwrap_or_default();
            let short_name = me.split('.').next().unwrap_or("").to_string();
            let own = |t: &str| {
                t.starts_with("localhost")
                    || matches!(t, "$myhostname" | "${myhostname}" | "$(myhostname)")
                    || (!me.is_empty() && (t == me || t == short_name))
            };
            let others: Vec<&str> = split_list(&v).into_iter().filter(|t| !own(t)).collect();
            if !others.is_empty() {
                self.report("mydestination", &v, "Postfix delivered mail for these domains locally; smarthost sends it to the smarthost");
            }
        }
    }

    fn tls_policy(&mut self) -> TlsPolicy {
        let (level, level_origin) = match self.get("smtp_tls_security_level") {
            Some(l) if !l.is_empty() => (
                l.to_ascii_lowercase(),
                self.origin("smtp_tls_security_level"),
            ),
            // The settings Postfix 2.2 used before security levels.
            _ if self.flag("smtp_enforce_tls") => {
                ("encrypt".into(), self.origin("smtp_enforce_tls"))
            }
            _ if self.flag("smtp_use_tls") => ("may".into(), self.origin("smtp_use_tls")),
            _ => ("none".into(), self.origin("smtp_tls_security_level")),
        };
        let wrapper = self.flag("smtp_tls_wrappermode");
        let mut ca_file = None;
        if let Some(f) = self.get("smtp_tls_CAfile").filter(|f| !f.is_empty()) {
            if SYSTEM_CA_FILES.contains(&f.as_str()) {
                self.plan.note(format!(
                    "smtp_tls_CAfile = {f} is the system's CA bundle, which smarthost uses anyway: no ca_file"
                ));
            } else {
                ca_file = Some(self.resolve(&f));
            }
        }
        if let Some(d) = self.get("smtp_tls_CApath").filter(|d| !d.is_empty()) {
            let d = d.trim_end_matches('/').to_string();
            if !SYSTEM_CA_DIRS.contains(&d.as_str()) {
                let origin = self.origin("smtp_tls_CApath");
                self.plan.untranslated(
                    origin,
                    format!("smtp_tls_CApath = {d}"),
                    "CA directories are not supported: put the certificates in one PEM file and set ca_file",
                );
            }
        }
        TlsPolicy {
            level,
            level_origin,
            wrapper,
            ca_file,
        }
    }

    /// The TLS mode for a route to `hops`, reporting what changes.
    fn tls_for(&mut self, policy: &TlsPolicy, hops: &[Nexthop]) -> TlsMode {
        let port = hops.first().map_or(25, |h| h.port);
        if policy.wrapper {
            return TlsMode::Implicit;
        }
        if port == 465 {
            self.plan.note("port 465 speaks only implicit TLS: routes to it use tls = \"tls\" (Postfix needs smtp_tls_wrappermode = yes for it, perhaps set in master.cf)");
            return TlsMode::Implicit;
        }
        let origin = policy.level_origin.clone();
        match policy.level.as_str() {
            "none" => {
                if hops.iter().all(|h| is_loopback(&h.host)) {
                    return TlsMode::None;
                }
                self.plan.untranslated(
                    origin,
                    "smtp_tls_security_level = none",
                    "smarthost never sends mail in clear text to a remote host; routes use starttls",
                );
            }
            "may" => self.plan.note("smtp_tls_security_level = may: smarthost always requires STARTTLS and a valid certificate; it never falls back to clear text"),
            "encrypt" => self.plan.note("smtp_tls_security_level = encrypt: smarthost also verifies the server's certificate"),
            "verify" | "secure" => {}
            "dane" | "dane-only" => self.plan.note(format!(
                "smtp_tls_security_level = {}: TLSA records are not checked; certificates are verified against CA roots",
                policy.level
            )),
            other => self.plan.untranslated(
                origin,
                format!("smtp_tls_security_level = {other}"),
                "not supported; routes use starttls with verified certificates",
            ),
        }
        TlsMode::StartTls
    }

    fn sasl(&mut self) -> Option<Sasl> {
        let enabled = self.flag("smtp_sasl_auth_enable");
        if !enabled {
            if self.main.is_set("smtp_sasl_password_maps") {
                let origin = self.origin("smtp_sasl_password_maps");
                self.plan.note(format!(
                    "{origin}: smtp_sasl_password_maps is not used: smtp_sasl_auth_enable is not yes, so Postfix never authenticated, nor does the translation"
                ));
            }
            return None;
        }
        let sender_dependent = self.flag("smtp_sender_dependent_authentication");
        let table = self.table("smtp_sasl_password_maps");
        let mut mechanism = AuthMechanism::Plain;
        let mut unusable = None;
        if let Some(filter) = self.get("smtp_sasl_mechanism_filter") {
            let mechs: Vec<String> = split_list(&filter)
                .iter()
                .map(|m| m.to_ascii_lowercase())
                .collect();
            let origin = self.origin("smtp_sasl_mechanism_filter");
            let has = |name: &str| mechs.iter().any(|m| m == name);
            if mechs.is_empty() || has("plain") {
                // PLAIN is what routes use by default.
            } else if has("login") {
                mechanism = AuthMechanism::Login;
            } else if has("xoauth2") {
                unusable = Some(
                    "with smtp_sasl_mechanism_filter = xoauth2 the \"password\" is an XOAUTH2 plugin's token file: set up a [[token_source]] (README \"OAuth2\"), then smarthost oauth login"
                        .to_string(),
                );
            } else {
                self.plan.untranslated(
                    origin,
                    format!("smtp_sasl_mechanism_filter = {filter}"),
                    "smarthost authenticates with PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER; routes use PLAIN",
                );
            }
        }
        Some(Sasl {
            table,
            sender_dependent,
            mechanism,
            unusable,
        })
    }

    /// The entries of every map a parameter lists, first map first.
    fn table(&mut self, param: &str) -> Table {
        let mut table = Table::default();
        let Some(value) = self.get(param) else {
            return table;
        };
        let origin = self.origin(param);
        // The table itself is in the value: never show it, it may hold a
        // password.
        if value.contains('{') {
            self.plan.untranslated(
                origin,
                format!("{param} = inline:{{...}}"),
                "inline: tables are not read; put the entries in a postmap file",
            );
            return table;
        }
        for spec in split_list(&value) {
            let mut rest = spec;
            while let Some(r) = rest.strip_prefix("proxy:") {
                rest = r;
            }
            let Some((kind, name)) = rest.split_once(':') else {
                self.plan.untranslated(
                    origin.clone(),
                    format!("{param} = {spec}"),
                    "not a type:name table",
                );
                continue;
            };
            if !TABLE_TYPES.contains(&kind) {
                // static: holds its result, which may be user:password.
                let shown_spec = if kind == "static" { "static:..." } else { spec };
                self.plan.untranslated(
                    origin.clone(),
                    format!("{param} = {shown_spec}"),
                    format!(
                        "{kind}: tables are not read, only postmap files ({})",
                        TABLE_TYPES.join(":, ") + ":"
                    ),
                );
                continue;
            }
            let path = self.resolve(name);
            let file = shown(&path, &self.dir);
            match read(&path) {
                Ok(text) => self.load_table(&text, &file, &mut table),
                Err(e) => {
                    let why = match kind {
                        "texthash" => e.to_string(),
                        _ => format!(
                            "{e}; if only the indexed file is left, recreate the source with `postmap -s {kind}:{name} > {name}` and import again"
                        ),
                    };
                    self.plan
                        .untranslated(origin.clone(), format!("{param} = {spec}"), why);
                }
            }
        }
        table
    }

    fn load_table(&mut self, text: &str, file: &str, table: &mut Table) {
        let (lines, orphans) = logical_lines(text);
        for line in orphans {
            self.plan.untranslated(
                format!("{file}:{line}"),
                "continuation line",
                "nothing to continue; postmap ignores it",
            );
        }
        for (line, l) in lines {
            let origin = format!("{file}:{line}");
            // Never quote the line: its value may be a password.
            let (key, value) = match l.split_once(char::is_whitespace) {
                Some((k, v)) if !v.trim().is_empty() => (k, v.trim()),
                _ => {
                    let key: String = l.split_whitespace().next().unwrap_or("").into();
                    self.plan.untranslated(
                        origin,
                        key,
                        "no value; postmap expects `key whitespace value`",
                    );
                    continue;
                }
            };
            let entry = Entry {
                key: key.to_lowercase(),
                value: value.to_string(),
                origin: origin.clone(),
            };
            if !table.add(entry) {
                self.plan.untranslated(
                    origin,
                    key.to_lowercase(),
                    "duplicate key; postmap keeps the first",
                );
            }
        }
    }

    /// `user:password` from a password map entry.
    fn credentials(&mut self, sasl: &Sasl, entry: &Entry) -> Auth {
        if let Some(why) = &sasl.unusable {
            self.plan
                .untranslated(entry.origin.clone(), entry.key.clone(), why.clone());
            return Auth::None;
        }
        match entry.value.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Auth::Password {
                mechanism: sasl.mechanism,
                username: user.to_string(),
                password: Secret::new(password),
            },
            _ => {
                self.plan.untranslated(
                    entry.origin.clone(),
                    entry.key.clone(),
                    "not username:password with both parts; the route gets no credentials",
                );
                Auth::None
            }
        }
    }

    /// The credentials Postfix uses for a relay when no sender entry applies:
    /// the host's entry, then the next-hop's as written.
    fn host_credentials(&mut self, sasl: Option<&Sasl>, hops: &[Nexthop]) -> Auth {
        let (Some(sasl), Some(first)) = (sasl, hops.first()) else {
            return Auth::None;
        };
        let entry = sasl
            .table
            .get(&first.host)
            .or_else(|| sasl.table.get(&first.written))
            .cloned();
        match entry {
            Some(e) => self.credentials(sasl, &e),
            None => Auth::None,
        }
    }

    fn upstream(
        &mut self,
        policy: &TlsPolicy,
        hops: &[Nexthop],
        auth: Auth,
        origin: &str,
    ) -> Option<(Upstream, String)> {
        let first = hops.first()?;
        let mut kept: Vec<&Nexthop> = Vec::new();
        for h in hops {
            if h.port == first.port {
                kept.push(h);
            } else {
                self.plan.untranslated(
                    origin,
                    h.written.clone(),
                    "a route has one port: only the destinations with the first one's port are kept",
                );
            }
        }
        let tls = self.tls_for(policy, hops);
        let written: Vec<&str> = kept.iter().map(|h| h.written.as_str()).collect();
        let mut note = format!("Postfix next-hop {}", written.join(", "));
        let looked_up: Vec<&str> = kept
            .iter()
            .filter(|h| h.mx && h.host.parse::<std::net::IpAddr>().is_err())
            .map(|h| h.host.as_str())
            .collect();
        if !looked_up.is_empty() {
            note.push_str(&format!(
                " (without brackets Postfix tried MX records of {} first; smarthost connects to the host itself)",
                looked_up.join(", ")
            ));
        }
        let helo = self.helo.clone();
        Some((
            Upstream {
                hosts: kept.iter().map(|h| h.host.clone()).collect(),
                port: first.port,
                tls,
                ca_file: policy.ca_file.clone(),
                helo,
                auth,
            },
            note,
        ))
    }

    fn routes(&mut self) {
        let policy = self.tls_policy();
        let sasl = self.sasl();
        if let Some(h) = self.get("smtp_helo_name") {
            let own = self.get("myhostname");
            let raw = self
                .main
                .params
                .get("smtp_helo_name")
                .map(|p| p.raw.clone());
            let is_default = matches!(raw.as_deref(), Some("$myhostname" | "${myhostname}"))
                || own.as_deref() == Some(h.as_str());
            if !h.is_empty() && !is_default {
                if h.bytes().all(|b| b.is_ascii_graphic()) {
                    self.helo = Some(h);
                } else {
                    self.report("smtp_helo_name", &h, "not a host name; routes use hostname");
                }
            }
        }
        let relay_map = self.table("sender_dependent_relayhost_maps");

        let default_hops = match self.get("relayhost").filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => match parse_nexthops(&r) {
                Ok(h) => Some(h),
                Err(e) => {
                    let origin = self.origin("relayhost");
                    self.plan.untranslated(origin, "relayhost", e);
                    None
                }
            },
        };
        let relay_origin = self.origin("relayhost");
        if let Some(hops) = &default_hops {
            let auth = self.host_credentials(sasl.as_ref(), hops);
            if let Some((up, note)) = self.upstream(&policy, hops, auth, &relay_origin) {
                let r = self.plan.route(up, note);
                self.plan
                    .set_default(r, format!("relayhost ({relay_origin})"));
            }
        }

        // Sender keys in the order the files give them: relay map first.
        let mut keys: Vec<Entry> = Vec::new();
        for e in &relay_map.entries {
            if e.key.contains('@') {
                keys.push(e.clone());
            } else {
                self.plan.untranslated(
                    e.origin.clone(),
                    e.key.clone(),
                    format!("no @: Postfix matches it only as a local user name, not as a domain (for the domain write @{})", e.key),
                );
            }
        }
        if let Some(s) = &sasl {
            for e in s.table.entries.iter().filter(|e| e.key.contains('@')) {
                if !s.sender_dependent {
                    self.plan.note(format!(
                        "{}: {} is a sender entry, which Postfix used only with smtp_sender_dependent_authentication = yes; not used here either",
                        e.origin, e.key
                    ));
                } else if !keys.iter().any(|k| k.key == e.key) {
                    keys.push(e.clone());
                }
            }
        }
        if keys.iter().any(|k| !k.key.starts_with('@')) {
            if let Some(d) = self.get("recipient_delimiter").filter(|d| !d.is_empty()) {
                let origin = self.origin("recipient_delimiter");
                self.plan.untranslated(
                    origin,
                    format!("recipient_delimiter = {d}"),
                    "Postfix also matched user+extension@domain to a user@domain entry; smarthost matches addresses exactly",
                );
            }
        }
        for key in keys {
            self.sender(
                &key,
                &relay_map,
                sasl.as_ref(),
                default_hops.as_deref(),
                &policy,
            );
        }

        if !self.plan.has_default() {
            if let Some(r) = self.plan.busiest_route() {
                self.plan.untranslated(
                    relay_origin,
                    "relayhost",
                    "empty: Postfix sent other senders' mail straight to the recipients' MX hosts, which smarthost does not do; routing.default is the route most senders use",
                );
                self.plan
                    .set_default(r, "no relayhost: the route most senders use");
            }
        }
    }

    /// One sender key of either map, routed and authenticated as Postfix
    /// would for a sender it matches.
    fn sender(
        &mut self,
        key: &Entry,
        relay_map: &Table,
        sasl: Option<&Sasl>,
        default_hops: Option<&[Nexthop]>,
        policy: &TlsPolicy,
    ) {
        let (local, domain) = key.key.rsplit_once('@').unwrap_or(("", &key.key));
        if domain.is_empty() {
            self.plan
                .untranslated(key.origin.clone(), key.key.clone(), "no domain after @");
            return;
        }
        let at_domain = format!("@{domain}");
        let pattern = if local.is_empty() {
            domain.to_string()
        } else {
            key.key.clone()
        };
        let mut relay = Relay::Default;
        for k in [&key.key, &at_domain] {
            if let Some(e) = relay_map.get(k) {
                // DUNNO: stop looking and use relayhost.
                if !e.value.eq_ignore_ascii_case("dunno") {
                    relay = Relay::Map(e);
                }
                break;
            }
        }
        let (hops, via) = match relay {
            Relay::Map(e) => match parse_nexthops(&e.value) {
                Ok(h) => (h, e.origin.clone()),
                Err(why) => {
                    self.plan.untranslated(e.origin.clone(), e.key.clone(), why);
                    return;
                }
            },
            Relay::Default => match default_hops {
                Some(h) => (h.to_vec(), self.origin("relayhost")),
                None => {
                    self.plan.untranslated(
                        key.origin.clone(),
                        key.key.clone(),
                        "neither the relay map nor relayhost names a relay for this sender: Postfix sent its mail to the recipients' MX hosts; it takes routing.default",
                    );
                    return;
                }
            },
        };
        let sender_entry = sasl.filter(|s| s.sender_dependent).and_then(|s| {
            s.table
                .get(&key.key)
                .or_else(|| s.table.get(&at_domain))
                .cloned()
        });
        let (auth, login) = match (sasl, sender_entry) {
            (Some(s), Some(e)) => (
                self.credentials(s, &e),
                Some(format!("login from {} {}", e.origin, e.key)),
            ),
            _ => (self.host_credentials(sasl, &hops), None),
        };
        if let Some((up, note)) = self.upstream(policy, &hops, auth, &via) {
            let r = self.plan.route(up, note);
            if let Some(login) = login {
                self.plan.route_note(r, login);
            }
            self.plan.sender(&pattern, r, &key.origin, &key.key);
        }
    }
}

/// Whether a Postfix protocol list (`!SSLv2, !TLSv1`, `>=TLSv1.2`,
/// `TLSv1.2 TLSv1.3`) allows both TLS 1.2 and 1.3, smarthost's only two: then
/// smarthost is at least as strict and nothing needs saying.
fn allows_tls12_and_13(list: &str) -> bool {
    const ORDER: [&str; 6] = ["sslv2", "sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |v: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(v));
    let mut listed = Vec::new();
    let mut excluded = Vec::new();
    let (mut min, mut max) = (0, ORDER.len() - 1);
    for token in split_list(list) {
        if let Some(v) = token.strip_prefix(">=") {
            min = rank(v).unwrap_or(min);
        } else if let Some(v) = token.strip_prefix("<=") {
            max = rank(v).unwrap_or(max);
        } else if let Some(v) = token.strip_prefix('!') {
            excluded.extend(rank(v));
        } else {
            listed.extend(rank(token));
        }
    }
    let allowed = |r: usize| {
        (listed.is_empty() || listed.contains(&r))
            && !excluded.contains(&r)
            && (min..=max).contains(&r)
    };
    allowed(4) && allowed(5)
}

/// A setting's value for a report line: long values are cut.
fn short(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}
