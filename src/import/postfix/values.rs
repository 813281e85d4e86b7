//! The values main.cf and its tables hold: lookup tables, next-hops, booleans
//! and times.

use super::*;

// ---- tables ------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Lowercased, as postmap stores it.
    pub(super) key: String,
    pub(super) value: String,
    /// `file:line`.
    pub(super) origin: String,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) entries: Vec<Entry>,
    pub(super) index: HashMap<String, usize>,
}

impl Table {
    pub(super) fn get(&self, key: &str) -> Option<&Entry> {
        self.index
            .get(&key.to_lowercase())
            .and_then(|&i| self.entries.get(i))
    }

    /// Adds an entry unless the key is taken: postmap keeps the first of
    /// duplicate keys (with a warning), and of several maps the first answers.
    pub(super) fn add(&mut self, entry: Entry) -> bool {
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
pub(super) struct Nexthop {
    pub(super) written: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// Without brackets Postfix looks up the host's MX records first.
    pub(super) mx: bool,
}

pub(super) fn service_port(s: &str) -> Option<u16> {
    match s {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        _ => s.parse().ok().filter(|&p| p != 0),
    }
}

/// Why a next-hop is not one; each names the destination as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NexthopError {
    #[error("{0:?}: missing `]`")]
    Unclosed(String),
    #[error("{0:?}: bad port after `]`")]
    BadPortAfterBracket(String),
    #[error("{0:?}: an IPv6 address must be written [ipv6:address]")]
    BareIpv6(String),
    #[error("{written:?}: bad port {port:?}")]
    BadPort { written: String, port: String },
    #[error("{0:?}: not a host name or address")]
    BadHost(String),
    #[error("empty destination")]
    Empty,
}

/// `[host]:port`, `[host]`, `host:port`, `host`, `[ipv6:2001:db8::1]:587`;
/// the port may be a service name; the default is 25 (`smtp`).
pub(super) fn parse_nexthop(s: &str) -> Result<Nexthop, NexthopError> {
    let written = s.to_string();
    let (host, port, mx) = if let Some(inner) = s.strip_prefix('[') {
        let (inside, after) = inner
            .split_once(']')
            .ok_or_else(|| NexthopError::Unclosed(s.into()))?;
        let inside = inside
            .strip_prefix("ipv6:")
            .or_else(|| inside.strip_prefix("IPv6:"))
            .unwrap_or(inside);
        let port = match after {
            "" => 25,
            p => p
                .strip_prefix(':')
                .and_then(service_port)
                .ok_or_else(|| NexthopError::BadPortAfterBracket(s.into()))?,
        };
        (inside.to_string(), port, false)
    } else if s.matches(':').count() > 1 {
        return Err(NexthopError::BareIpv6(s.into()));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (
                h.to_string(),
                service_port(p).ok_or_else(|| NexthopError::BadPort {
                    written: s.into(),
                    port: p.into(),
                })?,
                true,
            ),
            None => (s.to_string(), 25, true),
        }
    };
    if !valid_host(&host) {
        return Err(NexthopError::BadHost(s.into()));
    }
    Ok(Nexthop {
        written,
        host,
        port,
        mx,
    })
}

/// Postfix 3.5 and later take several destinations, by comma or whitespace.
pub(super) fn parse_nexthops(s: &str) -> Result<Vec<Nexthop>, NexthopError> {
    let hops: Vec<Nexthop> = split_list(s)
        .into_iter()
        .map(parse_nexthop)
        .collect::<Result<_, _>>()?;
    if hops.is_empty() {
        return Err(NexthopError::Empty);
    }
    Ok(hops)
}

pub(super) fn split_list(s: &str) -> Vec<&str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect()
}

// ---- values ------------------------------------------------------------------

pub(super) fn boolean(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// Why a Postfix time value is not one; each names the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TimeError {
    #[error("{0:?} is not a number with a unit")]
    NotANumber(String),
    #[error("{value:?}: unknown time unit {unit:?}")]
    UnknownUnit { value: String, unit: String },
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// A Postfix time value: a number with an optional unit s, m, h, d or w
/// (default d, as for `maximal_queue_lifetime`).
pub(super) fn postfix_time(s: &str) -> Result<Duration, TimeError> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits_end);
    let n: u64 = n.parse().map_err(|_| TimeError::NotANumber(s.into()))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" | "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(TimeError::UnknownUnit {
                value: s.into(),
                unit: unit.into(),
            })
        }
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| TimeError::TooLong(s.into()))
}

/// The default retry schedule, ending at `lifetime` instead of its own final
/// cutoff: rules that start before it are kept, the rule it falls in ends at
/// it, and a lifetime past the schedule stretches the last rule.
pub(super) fn schedule_ending_at(lifetime: Duration) -> Result<Schedule, ScheduleError> {
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

pub(super) fn set_cutoff(rule: &mut Rule, to: Duration) {
    match rule {
        Rule::Fixed { cutoff, .. } | Rule::Geometric { cutoff, .. } => *cutoff = to,
    }
}
