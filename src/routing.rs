//! Choosing a named route (upstream smarthost) from the envelope sender.
//!
//! Patterns are normalised once, at insert time, to lowercase IDNA ASCII so that a lookup
//! is a handful of hash probes: one for the address, one for the domain and one per
//! parent label. Local parts are compared case-insensitively too. RFC 5321 allows them
//! to be case-sensitive, but no mainstream mailbox treats them so and operators expect
//! `John@example.com` to follow the same route as `john@example.com` (Postfix lookup
//! tables behave the same way).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// The longest domain name DNS can carry, in its dotted form without the trailing dot.
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A route-table key, stored normalised (lowercase, IDNA ASCII domains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `user@example.com`: exactly this sender.
    Address { local: String, domain: String },
    /// `example.com`: senders at exactly this domain.
    Domain(String),
    /// `.example.com`: senders at any subdomain of `example.com`, but not at the domain
    /// itself. Stored without the leading dot.
    Parent(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteTableError {
    #[error("invalid route pattern `{pattern}`: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("duplicate route pattern `{pattern}` (patterns are compared case-insensitively and in IDNA form)")]
    Duplicate { pattern: String },
    #[error("route pattern `{pattern}` has an empty route name")]
    EmptyRoute { pattern: String },
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, RouteTableError> {
        let invalid = |reason: &str| RouteTableError::InvalidPattern {
            pattern: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("pattern is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("pattern contains whitespace or control characters"));
        }
        if let Some((local, domain)) = s.split_once('@') {
            if domain.contains('@') {
                return Err(invalid("pattern contains more than one `@`"));
            }
            if local.is_empty() {
                return Err(invalid("address pattern has an empty local part"));
            }
            if domain.is_empty() {
                return Err(invalid("address pattern has an empty domain"));
            }
            return Ok(Pattern::Address {
                local: local.to_lowercase(),
                domain: normalize_pattern_domain(domain).map_err(invalid)?,
            });
        }
        if let Some(parent) = s.strip_prefix('.') {
            if parent.is_empty() {
                return Err(invalid("a bare `.` is not a parent domain"));
            }
            return Ok(Pattern::Parent(
                normalize_pattern_domain(parent).map_err(invalid)?,
            ));
        }
        Ok(Pattern::Domain(
            normalize_pattern_domain(s).map_err(invalid)?,
        ))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Address { local, domain } => write!(f, "{local}@{domain}"),
            Pattern::Domain(domain) => f.write_str(domain),
            Pattern::Parent(domain) => write!(f, ".{domain}"),
        }
    }
}

/// Which entry decided a lookup, so logs can explain why mail took a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Address(Pattern),
    Domain(Pattern),
    Parent(Pattern),
    Default,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Address(pattern) => write!(f, "address {pattern}"),
            Decision::Domain(pattern) => write!(f, "domain {pattern}"),
            Decision::Parent(pattern) => write!(f, "parent domain {pattern}"),
            Decision::Default => f.write_str("default"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub route: &'a str,
    pub decided_by: Decision,
}

/// Maps envelope senders to route names. Precedence: exact address, then domain, then
/// the most specific parent domain, then the default route.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Keyed by (lowercased local part, normalised domain).
    addresses: HashMap<(String, String), String>,
    domains: HashMap<String, String>,
    /// Keyed by the domain without its leading dot.
    parents: HashMap<String, String>,
    default: String,
}

impl RouteTable {
    pub fn new(default_route: impl Into<String>) -> Self {
        RouteTable {
            addresses: HashMap::new(),
            domains: HashMap::new(),
            parents: HashMap::new(),
            default: default_route.into(),
        }
    }

    /// Adds an entry. Patterns that normalise to the same key are rejected rather than
    /// silently overwritten, because in a config file that is almost always a mistake.
    pub fn insert(
        &mut self,
        pattern: &str,
        route: impl Into<String>,
    ) -> Result<(), RouteTableError> {
        let parsed = Pattern::parse(pattern)?;
        let route = route.into();
        if route.is_empty() {
            return Err(RouteTableError::EmptyRoute {
                pattern: pattern.to_string(),
            });
        }
        let duplicate = RouteTableError::Duplicate {
            pattern: parsed.to_string(),
        };
        let inserted = match parsed {
            Pattern::Address { local, domain } => {
                insert_new(&mut self.addresses, (local, domain), route)
            }
            Pattern::Domain(domain) => insert_new(&mut self.domains, domain, route),
            Pattern::Parent(domain) => insert_new(&mut self.parents, domain, route),
        };
        if inserted {
            Ok(())
        } else {
            Err(duplicate)
        }
    }

    /// Never fails: a sender we cannot make sense of (the null sender `<>`, a bare
    /// `root`, an empty local part or domain) simply takes the default route.
    pub fn lookup(&self, sender: &str) -> RouteMatch<'_> {
        self.lookup_entry(sender).unwrap_or(RouteMatch {
            route: &self.default,
            decided_by: Decision::Default,
        })
    }

    pub fn default_route(&self) -> &str {
        &self.default
    }

    /// All entries in display order: addresses, then domains, then parent domains, each
    /// sorted alphabetically by their normalised form.
    pub fn entries(&self) -> Vec<(Pattern, &str)> {
        let addresses = self.addresses.iter().map(|((local, domain), route)| {
            let (local, domain) = (local.clone(), domain.clone());
            (Pattern::Address { local, domain }, route)
        });
        let domains = self
            .domains
            .iter()
            .map(|(d, route)| (Pattern::Domain(d.clone()), route));
        let parents = self
            .parents
            .iter()
            .map(|(d, route)| (Pattern::Parent(d.clone()), route));
        let mut entries: Vec<(Pattern, &str)> = addresses
            .chain(domains)
            .chain(parents)
            .map(|(pattern, route)| (pattern, route.as_str()))
            .collect();
        entries.sort_by_cached_key(|(pattern, _)| {
            let group = match pattern {
                Pattern::Address { .. } => 0,
                Pattern::Domain(_) => 1,
                Pattern::Parent(_) => 2,
            };
            (group, pattern.to_string())
        });
        entries
    }

    fn lookup_entry(&self, sender: &str) -> Option<RouteMatch<'_>> {
        // Callers may hand us the SMTP form `<user@example.com>`.
        let sender = sender
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(sender);
        // The last `@` separates the domain; a quoted local part may contain `@`.
        let (local, domain) = sender.rsplit_once('@')?;
        if local.is_empty() {
            return None;
        }
        let domain = normalize_sender_domain(domain)?;

        let domain = if self.addresses.is_empty() {
            domain
        } else {
            let key = (local.to_lowercase(), domain);
            if let Some(route) = self.addresses.get(&key) {
                let (local, domain) = key;
                return Some(RouteMatch {
                    route,
                    decided_by: Decision::Address(Pattern::Address { local, domain }),
                });
            }
            key.1
        };

        if let Some(route) = self.domains.get(&domain) {
            return Some(RouteMatch {
                route,
                decided_by: Decision::Domain(Pattern::Domain(domain)),
            });
        }

        // Strip one label at a time so the first hit is the most specific parent.
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(route) = self.parents.get(parent) {
                return Some(RouteMatch {
                    route,
                    decided_by: Decision::Parent(Pattern::Parent(parent.to_string())),
                });
            }
            rest = parent;
        }
        None
    }
}

fn insert_new<K: Eq + Hash>(map: &mut HashMap<K, String>, key: K, route: String) -> bool {
    match map.entry(key) {
        Entry::Occupied(_) => false,
        Entry::Vacant(slot) => {
            slot.insert(route);
            true
        }
    }
}

/// Normalises a pattern's domain strictly: a pattern that can never match is a config
/// error the operator should hear about at startup.
fn normalize_pattern_domain(domain: &str) -> Result<String, &'static str> {
    // A fully-qualified `example.com.` names the same domain.
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err("domain is empty");
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| "domain is not a valid internationalized domain name")?;
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err("domain is longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("domain has a label longer than 63 characters");
        }
    }
    Ok(ascii)
}

/// Normalises a sender's domain leniently: senders come from the network, and a domain
/// that fails IDNA processing can still match a parent pattern by its lowercase form.
fn normalize_sender_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let normalized = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase());
    // Empty labels would let `a..example.com` reach `.example.com` by a malformed path.
    if normalized.split('.').any(str::is_empty) {
        return None;
    }
    Some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> RouteTable {
        let mut table = RouteTable::new("default");
        for (pattern, route) in entries {
            table.insert(pattern, *route).unwrap();
        }
        table
    }

    fn route<'a>(table: &'a RouteTable, sender: &str) -> &'a str {
        table.lookup(sender).route
    }

    #[test]
    fn precedence_across_all_levels() {
        let t = table(&[
            ("ceo@corp.example.com", "address"),
            ("corp.example.com", "domain"),
            (".example.com", "parent"),
        ]);
        let m = t.lookup("ceo@corp.example.com");
        assert_eq!(m.route, "address");
        assert_eq!(m.decided_by.to_string(), "address ceo@corp.example.com");
        let m = t.lookup("intern@corp.example.com");
        assert_eq!(m.route, "domain");
        assert_eq!(m.decided_by.to_string(), "domain corp.example.com");
        let m = t.lookup("ceo@hr.example.com");
        assert_eq!(m.route, "parent");
        assert_eq!(m.decided_by.to_string(), "parent domain .example.com");
        let m = t.lookup("ceo@example.org");
        assert_eq!(m.route, "default");
        assert_eq!(m.decided_by, Decision::Default);
        assert_eq!(m.decided_by.to_string(), "default");
    }

    #[test]
    fn case_insensitive() {
        let t = table(&[("John.Smith@Example.COM", "a"), ("EXAMPLE.org", "b")]);
        assert_eq!(route(&t, "john.smith@example.com"), "a");
        assert_eq!(route(&t, "JOHN.SMITH@EXAMPLE.COM"), "a");
        assert_eq!(route(&t, "anyone@Example.Org"), "b");
        assert_eq!(
            t.lookup("JOHN.smith@example.COM").decided_by,
            Decision::Address(Pattern::Address {
                local: "john.smith".into(),
                domain: "example.com".into()
            })
        );
    }

    #[test]
    fn idna_equivalence_both_directions() {
        let unicode_pattern = table(&[("bücher.example", "books"), (".mañana.example", "es")]);
        assert_eq!(route(&unicode_pattern, "a@xn--bcher-kva.example"), "books");
        assert_eq!(route(&unicode_pattern, "a@BÜCHER.example"), "books");
        assert_eq!(route(&unicode_pattern, "a@mx.xn--maana-pta.example"), "es");

        let ascii_pattern = table(&[
            ("xn--bcher-kva.example", "books"),
            ("u@XN--BCHER-KVA.example", "u"),
        ]);
        assert_eq!(route(&ascii_pattern, "a@bücher.example"), "books");
        assert_eq!(route(&ascii_pattern, "U@bücher.example"), "u");
        assert_eq!(
            Pattern::parse("Bücher.Example").unwrap().to_string(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn parent_matches_subdomains_only() {
        let t = table(&[(".example.com", "parent")]);
        assert_eq!(route(&t, "a@x.example.com"), "parent");
        assert_eq!(route(&t, "a@x.y.z.example.com"), "parent");
        assert_eq!(route(&t, "a@example.com"), "default");
        assert_eq!(route(&t, "a@notexample.com"), "default");
        assert_eq!(route(&t, "a@x.example.com."), "parent");
    }

    #[test]
    fn most_specific_parent_wins() {
        let t = table(&[
            (".com", "tld"),
            (".example.com", "mid"),
            (".b.example.com", "deep"),
        ]);
        assert_eq!(route(&t, "u@a.b.example.com"), "deep");
        assert_eq!(route(&t, "u@b.example.com"), "mid");
        assert_eq!(route(&t, "u@c.example.com"), "mid");
        assert_eq!(route(&t, "u@example.com"), "tld");
        assert_eq!(
            t.lookup("u@x.a.b.example.com").decided_by,
            Decision::Parent(Pattern::Parent("b.example.com".into()))
        );
    }

    #[test]
    fn malformed_senders_take_default() {
        let t = table(&[("example.com", "d"), (".example.com", "p")]);
        let malformed = [
            "",
            "<>",
            "root",
            "@example.com",
            "user@",
            "user@.",
            "u@a..example.com",
        ];
        for sender in malformed {
            let m = t.lookup(sender);
            assert_eq!(
                (m.route, m.decided_by),
                ("default", Decision::Default),
                "{sender:?}"
            );
        }
        assert_eq!(route(&t, "<user@example.com>"), "d");
        assert_eq!(route(&t, "\"odd@local\"@example.com"), "d");
        // A domain IDNA rejects still reaches parent patterns by its lowercase form.
        assert_eq!(route(&t, "u@XN--ZZ.Example.com"), "p");
    }

    #[test]
    fn duplicates_are_detected_after_normalization() {
        let mut t = table(&[
            ("example.com", "a"),
            ("u@example.com", "b"),
            (".example.com", "c"),
        ]);
        let duplicates = [
            "Example.COM",
            "example.com.",
            "U@EXAMPLE.com",
            ".EXAMPLE.com",
        ];
        for (pattern, normalized) in duplicates.into_iter().zip([
            "example.com",
            "example.com",
            "u@example.com",
            ".example.com",
        ]) {
            let error = RouteTableError::Duplicate {
                pattern: normalized.into(),
            };
            assert_eq!(t.insert(pattern, "z"), Err(error));
        }
        assert_eq!(route(&t, "x@example.com"), "a");
        let mut idna = table(&[("bücher.example", "a")]);
        assert!(idna.insert("xn--bcher-kva.example", "b").is_err());
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        let longest = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(longest.len(), 253);
        assert!(Pattern::parse(&longest).is_ok());
        let too_long = format!("{longest}b");
        let long_label = format!("{}.com", "a".repeat(64));
        let cases = [
            ("", "pattern is empty"),
            (" ", "whitespace"),
            ("exa mple.com", "whitespace"),
            ("example.com\n", "whitespace"),
            ("@example.com", "empty local part"),
            ("user@", "empty domain"),
            ("a@b@example.com", "more than one `@`"),
            ("a..b", "empty label"),
            (".", "bare `.`"),
            ("..", "domain is empty"),
            (".a..b", "empty label"),
            ("example.com..", "empty label"),
            ("user@.example.com", "empty label"),
            ("xn--zz.com", "not a valid internationalized domain name"),
            (&long_label, "label longer than 63 characters"),
            (&too_long, "longer than 253 characters"),
        ];
        for (pattern, reason) in cases {
            let message = Pattern::parse(pattern).unwrap_err().to_string();
            let prefix = format!("invalid route pattern `{pattern}`: ");
            assert!(
                message.starts_with(&prefix) && message.contains(reason),
                "{message}"
            );
        }
        let mut t = RouteTable::new("default");
        assert!(t.insert("a..b", "x").is_err());
        let error = RouteTableError::EmptyRoute {
            pattern: "example.com".into(),
        };
        assert_eq!(t.insert("example.com", ""), Err(error));
        assert!(t.entries().is_empty());
    }

    #[test]
    fn entries_are_grouped_and_sorted() {
        let t = table(&[
            (".zeta.example", "p2"),
            ("zeta.example", "d2"),
            ("b@alpha.example", "a2"),
            (".alpha.example", "p1"),
            ("alpha.example", "d1"),
            ("a@zeta.example", "a1"),
        ]);
        let listed: Vec<String> = t
            .entries()
            .iter()
            .map(|(p, r)| format!("{p}={r}"))
            .collect();
        let expected = "a@zeta.example=a1 b@alpha.example=a2 alpha.example=d1 zeta.example=d2 \
                        .alpha.example=p1 .zeta.example=p2";
        assert_eq!(listed.join(" "), expected);
        assert_eq!(t.default_route(), "default");
    }
}
