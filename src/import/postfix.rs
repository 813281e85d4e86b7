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
//! Local names follow too: `myorigin` becomes `sender_domain` (or `mailname`
//! when it names a file, as Debian's Postfix allows), the first file of
//! `alias_maps` becomes `aliases`, and `smtp_generic_maps` becomes
//! `[local.generic]` (see `local.rs`).
//!
//! Paths under `/etc/postfix/` are read from DIR instead, so a copy of another
//! machine's configuration imports as it would there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{is_loopback, read, shown, valid_host, Auth, ImportError, Plan, Setting, Upstream};
use crate::config::{AuthMechanism, Secret, TlsMode};
use crate::retry::{Rule, Schedule, ScheduleError};

mod auth;
mod local;
mod main_cf;
mod routes;
mod values;

use auth::*;
use main_cf::*;
use values::*;

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
    ("sender_canonical_maps", "smarthost rewrites only local names ([local.rewrite]) and, as mail leaves, senders ([local.generic], like smtp_generic_maps)"),
    ("recipient_canonical_maps", "smarthost does not rewrite recipients"),
    ("canonical_maps", "smarthost rewrites only local names ([local.rewrite]) and, as mail leaves, senders ([local.generic], like smtp_generic_maps)"),
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
    p.local_names();
    p.routes();
    if p.plan.routes.is_empty() {
        return Err(ImportError::Nothing(main_path.display().to_string()));
    }
    Ok(p.plan)
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
        self.queue_lifetime();
        self.message_size_limit();
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

    /// `maximal_queue_lifetime` ends the default retry schedule.
    fn queue_lifetime(&mut self) {
        let Some(v) = self.get("maximal_queue_lifetime") else {
            self.plan.note("maximal_queue_lifetime was not set: Postfix gave up after 5 days, smarthost's default schedule gives up after 4");
            return;
        };
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
                .untranslated(origin, "maximal_queue_lifetime", e.to_string()),
        }
    }

    fn message_size_limit(&mut self) {
        let Some(v) = self.get("message_size_limit") else {
            return;
        };
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
