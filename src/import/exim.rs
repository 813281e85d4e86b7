//! `smarthost import exim FILE`: a smart-hosts lookup file as the
//! cloud_mdir_sync exim setup uses it, and optionally exim's retry rule.
//!
//! The file is an `lsearch` table keyed by the sender's domain; the router takes
//! `host` from each entry as its route list, the transport `helo`, and the
//! authenticators `user` with `password` (PLAIN) or `oauth`, a credential-server
//! socket (XOAUTH2):
//!
//! ```text
//! contoso.com: host=smtp.office365.com::587 helo=cms user=app@contoso.com oauth=/run/cms.sock
//! shop.example: host=smtp.mailgun.org::587 user=postmaster@mg.shop.example password=...
//! ```
//!
//! Keys follow lsearch: the first entry for a key wins, case does not matter, a
//! key may be quoted, and a line starting with white space continues the entry
//! before. Besides domains, the wildcard keys of `lsearch*`, `lsearch*@` and
//! `partial-lsearch` are taken: `*` (the default route), `*@domain` and
//! `*.domain`, as are full addresses (a lookup by `$sender_address`).
//!
//! That transport must require TLS (`hosts_require_tls = *`, as in the example
//! configuration), so routes use STARTTLS, or implicit TLS on port 465.
//!
//! Given the exim configuration (`--retry-file`), its `* *` retry rule becomes
//! the schedule, and its local names carry over too: `qualify_domain`, the
//! aliases router and the `begin rewrite` rules that change senders (see
//! `names.rs` and `rewrite.rs`).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use super::{read, valid_host, Auth, ImportError, Plan, Setting, Upstream};
use crate::config::{AuthMechanism, Secret, TlsMode};
use crate::retry::Schedule;

mod conf;
mod names;
mod rewrite;
#[cfg(test)]
mod tests;

/// Where the retry schedule comes from.
#[derive(Debug, Clone)]
pub enum RetryFrom {
    /// Rules as written in exim: `F,2h,15m; G,16h,1h,1.5; F,4d,6h`.
    Rules(String),
    /// The `* *` rule of an exim configuration's `begin retry` section.
    Config(PathBuf),
}

/// A file as reports name it: its name alone, which keeps report lines
/// short.
fn report_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Translates the smart-hosts file `file`.
pub fn import(file: &Path, retry: Option<&RetryFrom>) -> Result<Plan, ImportError> {
    let text = read(file)?;
    let shown = file.display().to_string();
    let mut command = format!("smarthost import exim {shown}");
    match retry {
        Some(RetryFrom::Rules(r)) => command.push_str(&format!(" --retry {r:?}")),
        Some(RetryFrom::Config(p)) => command.push_str(&format!(" --retry-file {}", p.display())),
        None => {}
    }
    let mut plan = Plan::new(format!("the exim smart-hosts file {shown}"), command);
    plan.note("routes use STARTTLS (implicit TLS on port 465), as an exim transport with hosts_require_tls = * did");
    let name = report_name(file);
    let (entries, orphans) = lsearch_entries(&text);
    for line in orphans {
        plan.untranslated(
            format!("{name}:{line}"),
            "continuation line",
            "nothing to continue; exim ignores it",
        );
    }
    for e in entries {
        entry(&mut plan, &name, &e);
    }
    if plan.routes.is_empty() {
        return Err(ImportError::Nothing(file.display().to_string()));
    }
    if !plan.has_default() {
        if let Some(r) = plan.busiest_route() {
            plan.untranslated(
                name,
                "no * entry",
                "exim could not route mail from senders of other domains; smarthost needs a default, so routing.default is the route most senders use",
            );
            plan.set_default(r, "no * entry: the route most senders use");
        }
    }
    match retry {
        None => {}
        Some(RetryFrom::Rules(r)) => {
            let schedule: Schedule = r.parse()?;
            plan.retry = Some(Setting {
                value: schedule.to_string(),
                comment: "--retry".into(),
            });
        }
        Some(RetryFrom::Config(path)) => {
            let text = read(path)?;
            let file = report_name(path);
            retry_from_config(&mut plan, &text, &file);
            names::local_names(&mut plan, &text, &file);
        }
    }
    Ok(plan)
}

// ---- the lookup file ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct LsearchEntry {
    line: usize,
    key: String,
    data: String,
}

/// lsearch's format: `key: data` or `key data`, the key optionally in double
/// quotes; `#` at the start of a line comments it out; a line starting with
/// white space continues the entry before. Returns the entries and the
/// continuation lines that had nothing to continue.
fn lsearch_entries(text: &str) -> (Vec<LsearchEntry>, Vec<usize>) {
    let mut entries: Vec<LsearchEntry> = Vec::new();
    let mut orphans = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            match entries.last_mut() {
                Some(e) => {
                    e.data.push(' ');
                    e.data.push_str(raw.trim());
                }
                None => orphans.push(i + 1),
            }
            continue;
        }
        let (key, rest) = match raw.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = raw
                    .find(|c: char| c == ':' || c.is_whitespace())
                    .unwrap_or(raw.len());
                (raw[..end].to_string(), &raw[end..])
            }
        };
        let rest = rest.trim_start();
        let data = rest.strip_prefix(':').unwrap_or(rest).trim();
        entries.push(LsearchEntry {
            line: i + 1,
            key,
            data: data.to_string(),
        });
    }
    (entries, orphans)
}

/// The text after an opening `"` up to the closing one, with `\"` and `\\`
/// escapes (and exim's `\n`, `\t`); the rest after it.
fn unquote(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => out.push(other),
                None => {}
            },
            c => out.push(c),
        }
    }
    (out, "")
}

/// `name=value` fields as `${extract{name}{...}}` reads them: separated by
/// white space, white space allowed around `=`, values optionally in double
/// quotes. Names are case-insensitive; the first of a name counts.
fn fields(data: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = data.trim_start();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value;
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(quoted) = after.strip_prefix('"') {
                let (v, r) = unquote(quoted);
                value = v;
                rest = r;
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                value = after[..end].to_string();
                rest = &after[end..];
            }
        } else {
            value = String::new();
        }
        if !name.is_empty() && !out.iter().any(|(n, _)| *n == name) {
            out.push((name, value));
        }
        rest = rest.trim_start();
    }
    out
}

// ---- host lists --------------------------------------------------------------

/// Why a `host=` list is not one; each names the item as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HostListError {
    #[error("{0:?}: missing `]`")]
    Unclosed(String),
    #[error("{item:?}: bad port {port:?}")]
    BadPort { item: String, port: String },
    #[error("{0:?} is not a host name or address")]
    BadHost(String),
    #[error("no host")]
    Empty,
}

/// An exim host list as `route_data` takes it: items separated by `:` (or
/// the character after a leading `<`), a doubled separator standing for
/// itself, so `host::587` is `host:587`. Colons inside `[...]` are taken as
/// part of an IPv6 address, which exim would want doubled; nobody writes them
/// so. Each item is `host`, `host:port`, `[address]` or `[address]:port`,
/// optionally with `/MX`. Returns (host, port, MX lookup) triples.
fn parse_hosts(list: &str) -> Result<Vec<(String, Option<u16>, bool)>, HostListError> {
    let hosts = host_list_items(list)
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty())
        .map(host_item)
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err(HostListError::Empty);
    }
    Ok(hosts)
}

/// The items of a host list, separators undoubled, not yet trimmed.
fn host_list_items(list: &str) -> Vec<String> {
    let (sep, body) = match list.strip_prefix('<') {
        Some(r) => match r.chars().next() {
            Some(c) if c.is_ascii_punctuation() => (c, &r[c.len_utf8()..]),
            _ => (':', list),
        },
        None => (':', list),
    };
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = body.chars().peekable();
    let mut in_brackets = false;
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                in_brackets = true;
                current.push(c);
            }
            ']' => {
                in_brackets = false;
                current.push(c);
            }
            c if c == sep && !in_brackets => {
                if chars.peek() == Some(&sep) {
                    chars.next();
                    current.push(sep);
                } else {
                    items.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    items.push(current);
    items
}

/// One item of a host list: `host`, `host:port`, `[address]`,
/// `[address]:port`, a bare IPv6 address, each optionally with `/MX`.
fn host_item(item: &str) -> Result<(String, Option<u16>, bool), HostListError> {
    let (item, mx) = match item
        .strip_suffix("/MX")
        .or_else(|| item.strip_suffix("/mx"))
    {
        Some(i) => (i, true),
        None => (item, false),
    };
    let (host, port) = if let Some(inner) = item.strip_prefix('[') {
        let (inside, after) = inner
            .split_once(']')
            .ok_or_else(|| HostListError::Unclosed(item.into()))?;
        let port = match after {
            "" => None,
            p => Some(port(p.strip_prefix(':').unwrap_or(p), item)?),
        };
        (inside.to_string(), port)
    } else if item.parse::<Ipv6Addr>().is_ok() {
        (item.to_string(), None)
    } else {
        match item.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(port(p, item)?)),
            None => (item.to_string(), None),
        }
    };
    if !valid_host(&host) {
        return Err(HostListError::BadHost(item.into()));
    }
    Ok((host, port, mx))
}

fn port(p: &str, item: &str) -> Result<u16, HostListError> {
    p.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| HostListError::BadPort {
            item: item.into(),
            port: p.into(),
        })
}

// ---- entries -----------------------------------------------------------------

fn entry(plan: &mut Plan, file: &str, e: &LsearchEntry) {
    let origin = format!("{file}:{}", e.line);
    let key = e.key.to_lowercase();
    let opts = fields(entry_data(plan, &origin, e));
    let get = |name: &str| {
        opts.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    unknown_fields(plan, &origin, &key, &opts);
    let Some(host_list) = get("host") else {
        plan.untranslated(origin, key, "no host=: exim could not route these senders");
        return;
    };
    let hosts = match parse_hosts(host_list) {
        Ok(h) => h,
        Err(why) => {
            plan.untranslated(origin, format!("{key}: host="), why.to_string());
            return;
        }
    };
    // exim's smtp transport connects to port 25 unless a host says otherwise.
    let port = hosts.first().and_then(|h| h.1).unwrap_or(25);
    let kept = same_port(plan, &origin, &key, &hosts, port);
    let helo = entry_helo(plan, &origin, &key, get("helo"));
    let auth = entry_auth(
        plan,
        &origin,
        &key,
        get("user"),
        get("oauth"),
        get("password"),
    );
    let tls = if port == 465 {
        plan.note("port 465 speaks only implicit TLS: routes to it use tls = \"tls\" (exim needs protocol = smtps for it)");
        TlsMode::Implicit
    } else {
        TlsMode::StartTls
    };
    let upstream = Upstream {
        hosts: kept,
        port,
        tls,
        ca_file: None,
        helo,
        auth,
    };
    let route = plan.route(upstream, "");
    route_senders(plan, route, &origin, &key, &e.key);
}

/// The entry's data; a `key = ...` line's is taken after the `=`.
fn entry_data<'e>(plan: &mut Plan, origin: &str, e: &'e LsearchEntry) -> &'e str {
    match e.data.strip_prefix('=') {
        // lsearch ends a key at a colon or white space only, so exim reads
        // `key = host=...` as data starting with "=" and finds no fields; the
        // intent is plain, so it is taken, and said.
        Some(rest) => {
            plan.note(format!(
                "{origin}: `{} = ...` read as `{}: ...` (exim's lsearch wants a colon or white space after the key)",
                e.key, e.key
            ));
            rest
        }
        None => e.data.as_str(),
    }
}

/// A `helo=` that is no host name is reported, and the route uses hostname.
fn entry_helo(plan: &mut Plan, origin: &str, key: &str, helo: Option<&str>) -> Option<String> {
    let h = helo?;
    if h.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(h.to_string());
    }
    plan.untranslated(
        origin,
        format!("{key}: helo="),
        "not a host name; the route uses hostname",
    );
    None
}

/// Reports fields the smart-hosts file does not have, by name only: an
/// unknown field may still hold a secret.
fn unknown_fields(plan: &mut Plan, origin: &str, key: &str, opts: &[(String, String)]) {
    for (name, _) in opts {
        if !matches!(
            name.as_str(),
            "host" | "helo" | "user" | "password" | "oauth"
        ) {
            plan.untranslated(
                origin,
                format!("{key}: {name}="),
                "not a field of the smart-hosts file (host, helo, user, password, oauth)",
            );
        }
    }
}

/// The hosts on `port`, the first host's: a route has one port, so the
/// others are reported.
fn same_port(
    plan: &mut Plan,
    origin: &str,
    key: &str,
    hosts: &[(String, Option<u16>, bool)],
    port: u16,
) -> Vec<String> {
    let mut kept = Vec::new();
    for (host, p, mx) in hosts {
        if p.unwrap_or(25) != port {
            plan.untranslated(
                origin,
                format!("{key}: host {host}"),
                "a route has one port: only the hosts with the first one's port are kept",
            );
            continue;
        }
        if *mx {
            plan.note(format!(
                "{origin}: {host}/MX: smarthost connects to {host} itself, not to its MX hosts"
            ));
        }
        kept.push(host.clone());
    }
    kept
}

/// What the authenticators did with `user`, `oauth` and `password`.
fn entry_auth(
    plan: &mut Plan,
    origin: &str,
    key: &str,
    user: Option<&str>,
    oauth: Option<&str>,
    password: Option<&str>,
) -> Auth {
    match (user, oauth, password) {
        (Some(user), Some(socket), password) => {
            if password.is_some() {
                plan.note(format!(
                    "{origin}: {key} has oauth= and password=: exim tried XOAUTH2 first, so does the route; the password is not used"
                ));
            }
            Auth::Socket {
                username: user.to_string(),
                path: PathBuf::from(socket),
            }
        }
        (Some(user), None, Some(password)) => Auth::Password {
            mechanism: AuthMechanism::Plain,
            username: user.to_string(),
            password: Secret::new(password),
        },
        (Some(_), None, None) => {
            plan.untranslated(
                origin,
                format!("{key}: user="),
                "neither password= nor oauth=: exim required authentication and had nothing to send; the route has no credentials",
            );
            Auth::None
        }
        (None, oauth, password) => {
            if oauth.is_some() || password.is_some() {
                plan.untranslated(
                    origin,
                    format!("{key}: password=/oauth="),
                    "no user=: exim sent no credentials, nor does the route",
                );
            }
            Auth::None
        }
    }
}

/// The senders an lsearch key stands for: `*` the default, `*@domain` the
/// domain, `*.domain` the domain and below, anything else itself.
fn route_senders(plan: &mut Plan, route: usize, origin: &str, key: &str, written: &str) {
    if key == "*" {
        if plan.has_default() {
            plan.untranslated(
                origin,
                "*",
                "repeats an earlier * entry; the first one is used, as before",
            );
        } else {
            plan.set_default(route, format!("{origin} *"));
        }
    } else if let Some(domain) = key.strip_prefix("*@") {
        plan.sender(domain, route, origin, written);
    } else if let Some(parent) = key.strip_prefix("*.") {
        // partial-lsearch: *.example.com matches example.com and below.
        plan.sender(parent, route, origin, written);
        plan.sender(&format!(".{parent}"), route, origin, written);
    } else {
        plan.sender(key, route, origin, written);
    }
}

// ---- retry -------------------------------------------------------------------

/// exim configuration lines: `#` comments, a trailing `\` joining the next
/// line (its leading white space dropped). Returns (first line, text).
fn exim_config_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        let (start, mut line) = match pending.take() {
            Some((n, mut acc)) => {
                acc.push_str(trimmed);
                (n, acc)
            }
            None => {
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                (i + 1, trimmed.to_string())
            }
        };
        if let Some(joined) = line.strip_suffix('\\') {
            line = joined.to_string();
            pending = Some((start, line));
        } else {
            out.push((start, line));
        }
    }
    out.extend(pending);
    out
}

/// The first white-space separated word and the rest.
fn token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    s.split_at(end)
}

fn retry_from_config(plan: &mut Plan, text: &str, file: &str) {
    let mut in_retry = false;
    let mut found = false;
    for (line, l) in exim_config_lines(text) {
        if let Some(section) = l.strip_prefix("begin ") {
            in_retry = section.trim() == "retry";
            continue;
        }
        if !in_retry {
            continue;
        }
        let origin = format!("{file}:{line}");
        let (pattern, rest) = token(&l);
        let (error, rules) = token(rest);
        if found || pattern != "*" || error != "*" {
            let why = if found {
                "after the * * rule, which matches everything first"
            } else {
                "smarthost has one schedule for all mail: only the * * rule is used"
            };
            plan.untranslated(origin, format!("retry rule {pattern} {error}"), why);
            continue;
        }
        found = true;
        catch_all_rule(plan, origin, rules.trim());
    }
    if !found {
        plan.untranslated(
            file,
            "begin retry",
            "no * * rule found; the default schedule is kept",
        );
    }
}

/// The times of the `* * ...` rule become the schedule, when smarthost can
/// follow them.
fn catch_all_rule(plan: &mut Plan, origin: String, rules: &str) {
    if rules.starts_with("senders=") {
        plan.untranslated(
            origin,
            "retry rule * * senders=",
            "schedules per sender are not supported",
        );
        return;
    }
    if rules.is_empty() {
        plan.untranslated(
            origin,
            "retry rule * * without times",
            "no retries at all is not possible; the default schedule is kept",
        );
        return;
    }
    match rules.parse::<Schedule>() {
        Ok(s) => {
            plan.retry = Some(Setting {
                value: s.to_string(),
                comment: format!("the * * retry rule of {origin}"),
            })
        }
        Err(e) => plan.untranslated(origin, "retry rule * *", e.to_string()),
    }
}
