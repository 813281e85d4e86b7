//! A [`Plan`] as a commented smarthost configuration: route and token source
//! names, the TOML text, and the secret files it points to.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{provider_hint, Auth, Plan, PlannedRoute, SecretFile, Untranslated, Upstream};
use crate::config::{AuthMechanism, TlsMode};

/// The import as it will be written.
#[derive(Debug)]
pub struct Rendered {
    pub config: String,
    pub secrets: Vec<SecretFile>,
    pub notes: Vec<String>,
    pub untranslated: Vec<Untranslated>,
}

impl Plan {
    /// Names the routes, places their secrets under `secrets_dir` and writes
    /// the configuration text. `now` goes into the header.
    pub fn render(&self, secrets_dir: &Path, now: SystemTime) -> Rendered {
        let names = route_names(&self.routes.iter().map(|r| &r.upstream).collect::<Vec<_>>());
        let mut out = String::new();
        self.header(&mut out, now);
        self.globals(&mut out);
        self.local_names(&mut out);
        let sources = self.socket_sources();
        for (path, name) in &sources {
            token_source(&mut out, path, name);
        }
        let mut secrets = Vec::new();
        for (route, name) in self.routes.iter().zip(&names) {
            secrets.extend(route_table(&mut out, route, name, secrets_dir, &sources));
        }
        self.routing(&mut out, &names);
        Rendered {
            config: out,
            secrets,
            notes: self.notes.clone(),
            untranslated: self.sorted_untranslated(),
        }
    }

    /// One token source per socket, named after it: routes share it.
    fn socket_sources(&self) -> Vec<(PathBuf, String)> {
        let mut paths: Vec<PathBuf> = Vec::new();
        for route in &self.routes {
            if let Auth::Socket { path, .. } = &route.upstream.auth {
                if !paths.contains(path) {
                    paths.push(path.clone());
                }
            }
        }
        let names = numbered(
            paths
                .iter()
                .map(|p| {
                    let stem = p.file_stem().map(|s| slug(&s.to_string_lossy()));
                    stem.filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "socket".into())
                })
                .collect(),
        );
        paths.into_iter().zip(names).collect()
    }

    /// `[routing]`: the default route and the sender table, each entry with
    /// where it came from.
    fn routing(&self, out: &mut String, names: &[String]) {
        let _ = writeln!(out, "[routing]");
        match &self.default {
            Some(d) => {
                let name = names.get(d.value).map(String::as_str).unwrap_or("");
                let _ = writeln!(out, "default = {}  # {}", quote(name), one_line(&d.comment));
            }
            None => {
                let _ = writeln!(out, "# default = ?  (the source had no default smarthost)");
            }
        }
        if self.senders.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n[routing.senders]");
        for s in &self.senders {
            let name = names.get(s.route).map(String::as_str).unwrap_or("");
            let _ = writeln!(
                out,
                "{} = {}  # {} {}",
                quote(&s.pattern),
                quote(name),
                one_line(&s.origin),
                one_line(&s.key)
            );
        }
    }

    /// By file, in the order files were first reported, then by line.
    fn sorted_untranslated(&self) -> Vec<Untranslated> {
        let split = |origin: &str| match origin.rsplit_once(':') {
            Some((file, line)) if line.parse::<usize>().is_ok() => {
                (file.to_string(), line.parse::<usize>().unwrap_or(0))
            }
            _ => (origin.to_string(), 0),
        };
        let mut files: Vec<String> = Vec::new();
        for u in &self.untranslated {
            let (file, _) = split(&u.origin);
            if !files.contains(&file) {
                files.push(file);
            }
        }
        let mut sorted = self.untranslated.clone();
        sorted.sort_by_key(|u| {
            let (file, line) = split(&u.origin);
            (files.iter().position(|f| *f == file), line)
        });
        sorted
    }

    fn header(&self, out: &mut String, now: SystemTime) {
        let _ = writeln!(
            out,
            "# smarthost configuration imported from {}",
            one_line(&self.source)
        );
        let _ = writeln!(
            out,
            "# by `{}` on {}.",
            one_line(&self.command),
            humantime::format_rfc3339_seconds(now)
        );
        let _ = writeln!(
            out,
            "# Review it, then: smarthost check --config <this file>"
        );
        if !self.notes.is_empty() {
            let _ = writeln!(out, "#");
            for n in &self.notes {
                let _ = writeln!(out, "# Note: {}", one_line(n));
            }
        }
        let _ = writeln!(out, "#");
        if self.untranslated.is_empty() {
            let _ = writeln!(out, "# Everything relevant was translated.");
        }
        for u in &self.sorted_untranslated() {
            let _ = writeln!(out, "# NOT TRANSLATED: {}", one_line(&u.to_string()));
        }
        out.push('\n');
    }

    fn globals(&self, out: &mut String) {
        if let Some(h) = &self.hostname {
            let _ = writeln!(
                out,
                "hostname = {}  # {}",
                quote(&h.value),
                one_line(&h.comment)
            );
        }
        if let Some(r) = &self.retry {
            let _ = writeln!(
                out,
                "retry = {}  # {}",
                quote(&r.value),
                one_line(&r.comment)
            );
        }
        let _ = writeln!(
            out,
            "# Left at their defaults: local clients relay over loopback only.\n\
             # listen = [\"127.0.0.1:25\", \"[::1]:25\"]\n\
             # trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]\n\
             # queue_path = \"/var/lib/smarthost/queue\""
        );
        if let Some(m) = &self.max_message_size {
            let _ = writeln!(
                out,
                "\n[limits]\nmax_message_size = {}  # {}",
                m.value,
                one_line(&m.comment)
            );
        }
        out.push('\n');
    }
}

impl Plan {
    /// `[local]` and `[local.generic]`, when the source set any of it.
    fn local_names(&self, out: &mut String) {
        let l = &self.local;
        let settings = [
            ("sender_domain", &l.sender_domain),
            ("mailname", &l.mailname),
            ("aliases", &l.aliases),
        ];
        if settings.iter().any(|(_, s)| s.is_some()) {
            let _ = writeln!(out, "[local]");
            for (name, setting) in settings {
                if let Some(s) = setting {
                    let _ = writeln!(
                        out,
                        "{name} = {}  # {}",
                        quote(&s.value),
                        one_line(&s.comment)
                    );
                }
            }
            out.push('\n');
        }
        if l.generic.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# The envelope sender and From, Sender and Reply-To, as mail leaves."
        );
        let _ = writeln!(out, "[local.generic]");
        for e in &l.generic {
            let _ = writeln!(
                out,
                "{} = {}  # {}",
                quote(&e.key),
                quote(&e.value),
                one_line(&e.comment)
            );
        }
        out.push('\n');
    }
}

fn token_source(out: &mut String, path: &Path, name: &str) {
    let _ = writeln!(
        out,
        "# A credential-server socket (cloud_mdir_sync): XOAUTH2 strings for the user asked."
    );
    let _ = writeln!(out, "[[token_source]]");
    let _ = writeln!(out, "name = {}", quote(name));
    let _ = writeln!(out, "type = \"socket\"");
    let _ = writeln!(out, "path = {}\n", quote(&path.display().to_string()));
}

/// A `[[route]]` table, its notes as comments before it; returns the
/// password file it names, if any.
fn route_table(
    out: &mut String,
    route: &PlannedRoute,
    name: &str,
    secrets_dir: &Path,
    sources: &[(PathBuf, String)],
) -> Option<SecretFile> {
    let u = &route.upstream;
    for note in &route.notes {
        let _ = writeln!(out, "# {}", one_line(note));
    }
    if let Some(hint) = provider_hint(u) {
        let _ = writeln!(out, "# {hint}");
    }
    let _ = writeln!(out, "[[route]]");
    let _ = writeln!(out, "name = {}", quote(name));
    match u.hosts.as_slice() {
        [one] => {
            let _ = writeln!(out, "host = {}", quote(one));
        }
        many => {
            let list: Vec<String> = many.iter().map(|h| quote(h)).collect();
            let _ = writeln!(out, "hosts = [{}]", list.join(", "));
        }
    }
    let _ = writeln!(out, "port = {}", u.port);
    let _ = writeln!(out, "tls = {}", quote(&u.tls.to_string()));
    if u.tls == TlsMode::None {
        // Importers choose "none" only for loopback hosts.
        let _ = writeln!(out, "allow_plaintext = true");
    }
    if let Some(ca) = &u.ca_file {
        let _ = writeln!(out, "ca_file = {}", quote(&ca.display().to_string()));
    }
    if let Some(helo) = &u.helo {
        let _ = writeln!(out, "helo = {}", quote(helo));
    }
    let secret = route_auth(out, &u.auth, name, secrets_dir, sources);
    out.push('\n');
    secret
}

/// The route's authentication keys; a password goes to
/// `<secrets_dir>/<route>.password`, never into the text.
fn route_auth(
    out: &mut String,
    auth: &Auth,
    name: &str,
    secrets_dir: &Path,
    sources: &[(PathBuf, String)],
) -> Option<SecretFile> {
    match auth {
        Auth::None => None,
        Auth::Password {
            mechanism,
            username,
            password,
        } => {
            let file = secrets_dir.join(format!("{name}.password"));
            if *mechanism != AuthMechanism::Plain {
                let _ = writeln!(out, "auth = {}", quote(&mechanism.to_string()));
            }
            let _ = writeln!(out, "username = {}", quote(username));
            let _ = writeln!(
                out,
                "password_file = {}",
                quote(&file.display().to_string())
            );
            Some(SecretFile {
                path: file,
                value: password.clone(),
            })
        }
        Auth::Socket { username, path } => {
            let source = sources
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, n)| n.as_str())
                .unwrap_or(name);
            let _ = writeln!(out, "auth = \"xoauth2\"");
            let _ = writeln!(out, "username = {}", quote(username));
            let _ = writeln!(out, "token_source = {}", quote(source));
            None
        }
    }
}

/// Route names from the upstreams: the provider's name from its host
/// (`smtp.mailgun.org` → `mailgun`); routes that share one are told apart by
/// their user's domain, then by the whole user name, then by number.
fn route_names(upstreams: &[&Upstream]) -> Vec<String> {
    let mut names: Vec<String> = upstreams.iter().map(|u| provider(u)).collect();
    let qualifiers: [fn(&str) -> &str; 2] = [
        |user| user.rsplit_once('@').map_or(user, |(_, domain)| domain),
        |user| user,
    ];
    for qualify in qualifiers {
        let shared: Vec<bool> = names
            .iter()
            .map(|n| names.iter().filter(|m| *m == n).count() > 1)
            .collect();
        for (i, u) in upstreams.iter().enumerate() {
            let who = username(u).map(|user| slug(qualify(user)));
            if let (true, Some(who)) = (shared[i], who.filter(|w| !w.is_empty())) {
                names[i] = format!("{}-{who}", provider(u));
            }
        }
    }
    numbered(names)
}

/// Later repeats of a name get -2, -3, ...
fn numbered(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let mut candidate = name.clone();
        let mut n = 2;
        while out.contains(&candidate) {
            candidate = format!("{name}-{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

fn username(u: &Upstream) -> Option<&str> {
    match &u.auth {
        Auth::None => None,
        Auth::Password { username, .. } | Auth::Socket { username, .. } => Some(username),
    }
}

fn provider(u: &Upstream) -> String {
    let host = u.hosts.first().map(String::as_str).unwrap_or("relay");
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return format!("relay-{}", slug(&host));
    }
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    // SES hosts are all email-smtp.<region>.amazonaws.com.
    if host.ends_with(".amazonaws.com") {
        return "ses".into();
    }
    let pick = match labels.as_slice() {
        [] => "relay",
        [one] => one,
        [.., sld, "co" | "com" | "net" | "org" | "ac" | "gov" | "edu", _tld]
            if labels.len() >= 3 =>
        {
            sld
        }
        [.., sld, _tld] => sld,
    };
    let s = slug(pick);
    if s.is_empty() {
        "relay".into()
    } else {
        s
    }
}

/// Lowercase letters, digits and single dashes.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Comment text from the sources: a stray control character must not end the
/// comment and turn the rest into configuration.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(host: &str, user: Option<&str>) -> Upstream {
        crate::import::test_upstream(host, user)
    }

    #[test]
    fn names_from_providers() {
        let ups = [
            up("smtp.mailgun.org", Some("postmaster@mg.shop.example")),
            up("smtp.mailgun.org", Some("postmaster@mg.blog.example")),
            up("smtp.office365.com", None),
            up("email-smtp.eu-west-1.amazonaws.com", None),
            up("relay.example.co.uk", None),
            up("192.0.2.7", None),
            up("smtp.office365.com", Some("x@example.org")),
            up("smtp.office365.com", Some("y@example.org")),
        ];
        let refs: Vec<&Upstream> = ups.iter().collect();
        assert_eq!(
            route_names(&refs),
            [
                "mailgun-mg-shop-example",
                "mailgun-mg-blog-example",
                "office365",
                "ses",
                "example",
                "relay-192-0-2-7",
                "office365-x-example-org",
                "office365-y-example-org",
            ]
        );
        let same = [up("a.example", None), up("a.example", None)];
        let refs: Vec<&Upstream> = same.iter().collect();
        assert_eq!(route_names(&refs), ["a", "a-2"]);
    }

    #[test]
    fn quoting_survives_toml() {
        let tricky = "a \"quoted\" \\ path\twith\u{1}control";
        let text = format!("k = {}\n", quote(tricky));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["k"].as_str(), Some(tricky));
    }

    #[test]
    fn rendered_config_never_holds_the_password() {
        let mut p = Plan::new("test source", "smarthost import test");
        let r = p.route(up("smtp.mailgun.org", Some("u@example.com")), "from test");
        p.set_default(r, "the only route");
        p.sender("example.com", r, "test:1", "\nsneaky = 1");
        p.untranslated("test:2", "thing", "why");
        let out = p.render(Path::new("/s"), SystemTime::UNIX_EPOCH);
        assert!(!out.config.contains("Zq9"), "{}", out.config);
        assert_eq!(out.secrets.len(), 1);
        assert_eq!(out.secrets[0].path, Path::new("/s/mailgun.password"));
        assert_eq!(out.secrets[0].value.expose(), "Zq9-secret");
        assert!(out.config.contains("# NOT TRANSLATED: test:2: thing: why"));
        assert!(out.config.contains("1970-01-01T00:00:00Z"));
        let v: toml::Table = toml::from_str(&out.config).expect(&out.config);
        assert!(v.get("sneaky").is_none());
        assert_eq!(v["routing"]["default"].as_str(), Some("mailgun"));
        assert_eq!(
            v["routing"]["senders"]["example.com"].as_str(),
            Some("mailgun")
        );
    }
}
