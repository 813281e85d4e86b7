//! exim's `begin rewrite` rules (spec chapter "Address rewriting"), as far
//! as they change sender addresses: into `[local.generic]`.
//!
//! exim scans every rule in order, and a later rule rewrites what an
//! earlier one made (unless `q` stops it, or a `*` replacement); smarthost
//! looks an address up once, exact address before domain. So the rules are
//! not copied one by one: the importer runs exim's scan on every address
//! that can come out differently (each `user@domain` pattern, each
//! `*@domain` for any other user, and each of those users in each of those
//! domains) and writes an entry wherever smarthost's one lookup would
//! otherwise give something else. Local parts compare without regard to
//! case, as smarthost's map does (exim's patterns are case-sensitive there).

use super::conf::Conf;
use super::unquote;
use crate::import::{is_domain, Plan};
use crate::smtp::address::validate_mailbox;

/// Stands for "any other user" in a run over a domain: no address pattern
/// and no valid replacement has it as its local part.
const ANY: &str = "\u{1}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `user@domain`, lower-cased.
    Address(String),
    /// `*@domain`, lower-cased.
    Domain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Replacement {
    /// `*`: not rewritten, and no later rule is looked at.
    Keep,
    Address(String),
    /// `$1@domain` or `$local_part@domain`.
    SameUser(String),
}

#[derive(Debug, Clone)]
struct Rule {
    /// `file:line`, and the pattern as written, for comments.
    origin: String,
    written: String,
    pattern: Pattern,
    replacement: Replacement,
    /// `q`: no further rules once this one rewrote.
    quit: bool,
}

/// Translates the `begin rewrite` section of `conf`.
pub(super) fn rewrite_rules(plan: &mut Plan, conf: &Conf, file: &str) {
    let mut rules = Vec::new();
    for l in conf.section("rewrite") {
        let origin = format!("{file}:{}", l.line);
        let (pattern, replacement, flags) = split_rule(&l.text);
        match rule(&pattern, &replacement, &flags) {
            Ok((r, caveats)) => {
                for c in caveats {
                    plan.note(format!("{origin}: rewrite rule {pattern}: {c}"));
                }
                rules.push(Rule {
                    origin,
                    written: pattern,
                    ..r
                });
            }
            Err(why) => plan.untranslated(origin, format!("rewrite rule {pattern}"), why),
        }
    }
    if !rules.is_empty() {
        entries(plan, &rules);
    }
}

/// Pattern, replacement and flags: each of the first two ends at white
/// space unless in double quotes; the flags may have spaces between them.
pub(super) fn split_rule(text: &str) -> (String, String, String) {
    let (pattern, rest) = word(text);
    let (replacement, rest) = word(rest);
    let flags = rest.chars().filter(|c| !c.is_whitespace()).collect();
    (pattern, replacement, flags)
}

fn word(s: &str) -> (String, &str) {
    let s = s.trim_start();
    match s.strip_prefix('"') {
        Some(quoted) => unquote(quoted),
        None => {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (s[..end].to_string(), &s[end..])
        }
    }
}

/// A rule smarthost can follow, with what it does differently; or why not.
fn rule(pattern: &str, replacement: &str, flags: &str) -> Result<(Rule, Vec<String>), String> {
    let (quit, caveats) = rule_flags(flags)?;
    let pattern = parse_pattern(pattern)?;
    let replacement = parse_replacement(replacement, &pattern)?;
    let rule = Rule {
        origin: String::new(),
        written: String::new(),
        pattern,
        replacement,
        quit,
    };
    Ok((rule, caveats))
}

/// Whether the rule stops the scan (`q`) and what smarthost's map does
/// beyond the fields exim rewrote; or why the rule is not translated.
fn rule_flags(flags: &str) -> Result<(bool, Vec<String>), String> {
    if let Some(c) = flags.chars().find(|c| !"EFTbcfhrstSQqRw".contains(*c)) {
        return Err(format!("unknown flag {c:?}"));
    }
    let has = |c: char| flags.contains(c);
    if has('S') {
        return Err("S: SMTP-time rewriting of malformed MAIL and RCPT arguments; smarthost takes valid addresses only".into());
    }
    if has('R') {
        return Err("R: rules applied repeatedly are not translated".into());
    }
    if has('w') {
        return Err("w: exim replaced the display name too; smarthost keeps it".into());
    }
    // No field flag at all: every header and the whole envelope.
    let all = !flags.chars().any(|c| "EFTbcfhrst".contains(c));
    let fields = [
        ("the envelope sender", all || has('E') || has('F')),
        ("From", all || has('h') || has('f')),
        ("Sender", all || has('h') || has('s')),
        ("Reply-To", all || has('h') || has('r')),
    ];
    let missing: Vec<&str> = fields.iter().filter(|f| !f.1).map(|f| f.0).collect();
    if missing.len() == fields.len() {
        return Err(
            "rewrites recipient addresses only; smarthost does not rewrite recipients".into(),
        );
    }
    let mut caveats = Vec::new();
    if !missing.is_empty() {
        caveats.push(format!(
            "exim left {} alone; smarthost maps it as the other sender addresses",
            missing.join(", ")
        ));
    }
    if "ETtcbh".chars().any(has) || all {
        caveats.push(
            "exim also rewrote recipient addresses; smarthost maps sender addresses only".into(),
        );
    }
    Ok((has('q'), caveats))
}

const ONLY: &str = "only user@domain and *@domain patterns are translated, not regular expressions, lists, lookups or other wildcards";

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    let (local, domain) = p.rsplit_once('@').ok_or(ONLY)?;
    let domain = domain.to_ascii_lowercase();
    if domain == "+local_domains" && !local.contains(['*', '^', '!']) {
        return Err(format!(
            "domain lists are not read; for mail from this machine's own names, [local.rewrite] {local} = \"<address>\" does this"
        ));
    }
    if p.starts_with('^') || domain.contains('*') || !is_domain(&domain) {
        return Err(ONLY.into());
    }
    if local == "*" {
        return Ok(Pattern::Domain(domain));
    }
    let address = format!("{local}@{domain}");
    if local.contains('*') || local.starts_with('!') || validate_mailbox(&address).is_err() {
        return Err(ONLY.into());
    }
    Ok(Pattern::Address(address.to_ascii_lowercase()))
}

fn parse_replacement(r: &str, pattern: &Pattern) -> Result<Replacement, String> {
    if r == "*" {
        return Ok(Replacement::Keep);
    }
    if let Some((user, domain)) = r.rsplit_once('@') {
        let domain = domain.to_ascii_lowercase();
        let literal_domain = !domain.contains('$') && is_domain(&domain);
        let local_part = matches!(user, "$local_part" | "${local_part}");
        let star = matches!(user, "$1" | "${1}");
        match pattern {
            Pattern::Domain(_) if literal_domain && (local_part || star) => {
                return Ok(Replacement::SameUser(domain));
            }
            Pattern::Address(a) if literal_domain && local_part => {
                let user = a.rsplit_once('@').map_or("", |(u, _)| u);
                return Ok(Replacement::Address(format!("{user}@{domain}")));
            }
            _ => {}
        }
        if !r.contains('$') && !r.starts_with('@') && validate_mailbox(r).is_ok() {
            return Ok(Replacement::Address(r.to_string()));
        }
    }
    if r.contains("/etc/email-addresses") {
        return Err("Debian's /etc/email-addresses lookup: put its entries in [local.rewrite] (user = address)".into());
    }
    Err("the replacement is not an address, $1@domain or $local_part@domain; expansions and lookups are not evaluated".into())
}

/// The address exim's scan makes of `address`, and the rules that acted.
fn run<'r>(rules: &'r [Rule], address: &str) -> (String, Vec<&'r Rule>) {
    let mut current = address.to_string();
    let mut acted = Vec::new();
    for r in rules {
        let (user, domain) = current.rsplit_once('@').unwrap_or(("", ""));
        let matches = match &r.pattern {
            Pattern::Address(a) => current.eq_ignore_ascii_case(a),
            Pattern::Domain(d) => domain.eq_ignore_ascii_case(d),
        };
        if !matches {
            continue;
        }
        acted.push(r);
        match &r.replacement {
            Replacement::Keep => break,
            Replacement::Address(a) => current = a.clone(),
            Replacement::SameUser(d) => current = format!("{user}@{d}"),
        }
        if r.quit {
            break;
        }
    }
    (current, acted)
}

/// The `[local.generic]` entries that give every address what exim's scan
/// gives it; rules that never act are said.
fn entries(plan: &mut Plan, rules: &[Rule]) {
    let mut domains: Vec<&str> = Vec::new();
    let mut users: Vec<&str> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for r in rules {
        match &r.pattern {
            Pattern::Domain(d) if !domains.contains(&d.as_str()) => domains.push(d),
            Pattern::Address(a) => {
                if !candidates.contains(a) {
                    candidates.push(a.clone());
                }
                let user = a.rsplit_once('@').map_or("", |(u, _)| u);
                if !users.contains(&user) {
                    users.push(user);
                }
            }
            Pattern::Domain(_) => {}
        }
    }
    let mut acted: Vec<&str> = Vec::new();
    let mut by_domain: Vec<(&str, String)> = Vec::new();
    for d in &domains {
        let (out, rs) = run(rules, &format!("{ANY}@{d}"));
        acted.extend(rs.iter().map(|r| r.origin.as_str()));
        let value = match out.rsplit_once('@') {
            Some((ANY, to)) if to == *d => continue,
            Some((ANY, to)) => format!("@{to}"),
            _ => out.clone(),
        };
        add(plan, &format!("@{d}"), &value, &rs);
        by_domain.push((d, value));
    }
    for d in &domains {
        for u in &users {
            let c = format!("{u}@{d}");
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
    }
    for c in &candidates {
        let (out, rs) = run(rules, c);
        acted.extend(rs.iter().map(|r| r.origin.as_str()));
        if !out.eq_ignore_ascii_case(&lookup(&by_domain, c)) && !plan.has_generic(c) {
            add(plan, c, &out, &rs);
        }
    }
    for r in rules.iter().filter(|r| !acted.contains(&r.origin.as_str())) {
        plan.note(format!(
            "{}: rewrite rule {} never acts: an earlier rule rewrites every address it matches first, in exim too",
            r.origin, r.written
        ));
    }
}

/// What smarthost's domain entries alone make of `address`.
fn lookup(by_domain: &[(&str, String)], address: &str) -> String {
    let (user, domain) = address.rsplit_once('@').unwrap_or(("", ""));
    match by_domain
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(domain))
    {
        Some((_, v)) => match v.strip_prefix('@') {
            Some(to) => format!("{user}@{to}"),
            None => v.clone(),
        },
        None => address.to_string(),
    }
}

fn add(plan: &mut Plan, key: &str, value: &str, rules: &[&Rule]) {
    let origin = rules.first().map_or("begin rewrite", |r| r.origin.as_str());
    let comment = rules
        .iter()
        .map(|r| format!("{} {}", r.origin, r.written))
        .collect::<Vec<_>>()
        .join(", then ");
    plan.generic(key, value, origin, &comment);
}
