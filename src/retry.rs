//! Exim-style retry schedules for deferred deliveries.
//!
//! Operators coming from exim already know how to read `F,2h,15m; G,16h,1h,1.5; F,4d,6h`,
//! so we accept exactly that notation (only the `F` and `G` rule types) rather than
//! inventing a new one. Everything here is pure arithmetic on seconds since the Unix
//! epoch so the queue runner can own the clock and the persistence of retry state.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The schedule used when the configuration does not name one.
pub const DEFAULT_SCHEDULE: &str = "F,2h,15m; G,16h,1h,1.5; F,4d,6h";

/// One retry rule. A rule applies while the time since the first failure is below its
/// `cutoff`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Retry every `interval`.
    Fixed {
        cutoff: Duration,
        interval: Duration,
    },
    /// Start at `first`, then multiply the previous interval by `multiplier`.
    Geometric {
        cutoff: Duration,
        first: Duration,
        multiplier: f64,
    },
}

impl Rule {
    pub fn cutoff(&self) -> Duration {
        match self {
            Rule::Fixed { cutoff, .. } | Rule::Geometric { cutoff, .. } => *cutoff,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Fixed { cutoff, interval } => {
                write!(f, "F,{},{}", EximDuration(*cutoff), EximDuration(*interval))
            }
            Rule::Geometric {
                cutoff,
                first,
                multiplier,
            } => write!(
                f,
                "G,{},{},{}",
                EximDuration(*cutoff),
                EximDuration(*first),
                multiplier
            ),
        }
    }
}

/// A validated, non-empty list of rules with strictly increasing cutoffs.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    rules: Vec<Rule>,
}

/// What the queue should do with an address after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    /// Try again at `time` (seconds since the Unix epoch), `interval` after the failure.
    At { time: u64, interval: Duration },
    /// The final cutoff has passed: the address should be bounced.
    GiveUp,
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retry::At { time, interval } => {
                write!(f, "retry at {time} (in {})", EximDuration(*interval))
            }
            Retry::GiveUp => f.write_str("retry timeout exceeded"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("retry schedule is empty")]
    Empty,
    #[error("retry rule {index} is empty (stray `;`?)")]
    EmptyRule { index: usize },
    #[error("retry rule `{rule}`: unknown rule type `{kind}` (expected F or G)")]
    UnknownKind { rule: String, kind: String },
    #[error("retry rule `{rule}`: expected {expected} comma-separated fields, found {found}")]
    FieldCount {
        rule: String,
        expected: usize,
        found: usize,
    },
    #[error("retry rule `{rule}`: invalid duration `{value}`: {reason}")]
    InvalidDuration {
        rule: String,
        value: String,
        reason: DurationError,
    },
    #[error("retry rule `{rule}`: {field} must be greater than zero")]
    ZeroDuration { rule: String, field: &'static str },
    #[error("retry rule `{rule}`: invalid multiplier `{value}` (must be a finite number >= 1.0)")]
    InvalidMultiplier { rule: String, value: String },
    #[error("retry rule `{rule}`: cutoff {cutoff} must be later than the previous rule's cutoff {previous}")]
    CutoffNotIncreasing {
        rule: String,
        cutoff: String,
        previous: String,
    },
}

impl Schedule {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How long after the first failure we stop retrying.
    pub fn final_cutoff(&self) -> Duration {
        // Construction guarantees at least one rule and increasing cutoffs.
        self.rules.last().map_or(Duration::ZERO, Rule::cutoff)
    }

    /// Decide what happens after a failed attempt at `now`, for an address whose first
    /// failure was at `first_failure` (both seconds since the Unix epoch) and whose
    /// previous retry interval was `previous_interval` (None if this is the first failure).
    ///
    /// For `G` rules we follow exim's retry.c: the previous interval is multiplied only
    /// if it is at least the rule's `first` interval, otherwise `first` is used. That makes
    /// the step from a short `F` interval into a `G` rule start at `first` rather than at
    /// a fraction of it, and also means a previous interval longer than `first` (e.g. from
    /// an `F` rule with a long interval) keeps growing instead of snapping back. Exim uses
    /// the smaller of the predicted and actual gap; we only know the predicted one, which
    /// is the same when the queue runner is punctual.
    pub fn next(&self, first_failure: u64, now: u64, previous_interval: Option<Duration>) -> Retry {
        let elapsed = Duration::from_secs(now.saturating_sub(first_failure));
        let Some(rule) = self.rules.iter().find(|rule| rule.cutoff() > elapsed) else {
            return Retry::GiveUp;
        };
        let interval = match rule {
            Rule::Fixed { interval, .. } => *interval,
            Rule::Geometric {
                first, multiplier, ..
            } => match previous_interval {
                Some(previous) if previous >= *first => {
                    grow(previous, *multiplier, self.final_cutoff()).max(*first)
                }
                _ => *first,
            },
        };
        Retry::At {
            time: now.saturating_add(interval.as_secs()),
            interval,
        }
    }
}

/// Multiplies in whole seconds, truncating like exim's integer arithmetic, and caps the
/// result because a large multiplier would otherwise overflow or yield an interval that
/// can only ever land past the final cutoff anyway.
fn grow(previous: Duration, multiplier: f64, cap: Duration) -> Duration {
    let secs = (previous.as_secs_f64() * multiplier).floor();
    if secs.is_finite() && secs < cap.as_secs_f64() {
        // In range for u64 because it is below `cap`.
        Duration::from_secs(secs as u64)
    } else {
        cap
    }
}

impl Default for Schedule {
    fn default() -> Self {
        // A constant, not input: `parses_default` proves it valid.
        DEFAULT_SCHEDULE
            .parse()
            .expect("DEFAULT_SCHEDULE is a valid schedule")
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(ScheduleError::Empty);
        }
        let mut rules = Vec::new();
        let mut previous = Duration::ZERO;
        for (index, rule_text) in text.split(';').enumerate() {
            let rule_text = rule_text.trim();
            if rule_text.is_empty() {
                return Err(ScheduleError::EmptyRule { index: index + 1 });
            }
            let rule = parse_rule(rule_text, previous)?;
            previous = rule.cutoff();
            rules.push(rule);
        }
        Ok(Schedule { rules })
    }
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> Self {
        schedule.to_string()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, rule) in self.rules.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

fn parse_rule(rule: &str, previous_cutoff: Duration) -> Result<Rule, ScheduleError> {
    let fields: Vec<&str> = rule.split(',').map(str::trim).collect();
    let duration = |value: &str, field: &'static str| {
        let parsed = parse_duration(value).map_err(|reason| ScheduleError::InvalidDuration {
            rule: rule.to_string(),
            value: value.to_string(),
            reason,
        })?;
        if parsed.is_zero() {
            let rule = rule.to_string();
            return Err(ScheduleError::ZeroDuration { rule, field });
        }
        Ok(parsed)
    };
    let field_count = |expected| ScheduleError::FieldCount {
        rule: rule.to_string(),
        expected,
        found: fields.len(),
    };
    let parsed = match fields.as_slice() {
        ["F", cutoff, interval] => Rule::Fixed {
            cutoff: duration(cutoff, "cutoff")?,
            interval: duration(interval, "interval")?,
        },
        ["G", cutoff, first, multiplier] => Rule::Geometric {
            cutoff: duration(cutoff, "cutoff")?,
            first: duration(first, "first interval")?,
            // Below 1.0 the intervals would shrink towards zero and hammer the remote host.
            multiplier: multiplier
                .parse::<f64>()
                .ok()
                .filter(|m| m.is_finite() && *m >= 1.0)
                .ok_or_else(|| ScheduleError::InvalidMultiplier {
                    rule: rule.to_string(),
                    value: multiplier.to_string(),
                })?,
        },
        ["F", ..] => return Err(field_count(3)),
        ["G", ..] => return Err(field_count(4)),
        [kind, ..] => {
            let (rule, kind) = (rule.to_string(), kind.to_string());
            return Err(ScheduleError::UnknownKind { rule, kind });
        }
        [] => return Err(ScheduleError::Empty),
    };
    // A rule whose cutoff is not later than its predecessor's could never apply.
    if parsed.cutoff() <= previous_cutoff {
        return Err(ScheduleError::CutoffNotIncreasing {
            rule: rule.to_string(),
            cutoff: EximDuration(parsed.cutoff()).to_string(),
            previous: EximDuration(previous_cutoff).to_string(),
        });
    }
    Ok(parsed)
}

/// Why a duration in exim's format does not parse.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("expected <number><unit> groups with units s, m, h, d or w")]
    Shape,
    #[error("number without a unit (s, m, h, d or w)")]
    NoUnit,
    #[error(transparent)]
    Value(#[from] humantime::DurationError),
}

/// Parses exim's time format (`2h`, `1d12h`). humantime alone would also accept units
/// and forms exim rejects (`ms`, `y`, `1.5h`, spaces), which would not round-trip through
/// `Display` and would surprise anyone copying rules from an exim configuration, so the
/// shape is checked first and humantime does the arithmetic.
fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    if value.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut pending_number = false;
    for c in value.chars() {
        match c {
            '0'..='9' => pending_number = true,
            's' | 'm' | 'h' | 'd' | 'w' if pending_number => pending_number = false,
            _ => return Err(DurationError::Shape),
        }
    }
    if pending_number {
        return Err(DurationError::NoUnit);
    }
    Ok(humantime::parse_duration(value)?)
}

/// An age given on a command line, in the notation of the retry rules.
pub fn parse_age(value: &str) -> Result<Duration, DurationError> {
    parse_duration(value)
}

/// Formats a duration in exim's compact notation using the largest whole units, e.g.
/// 90 minutes as `1h30m`. Sub-second parts are dropped since exim cannot express them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EximDuration(pub Duration);

impl fmt::Display for EximDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, char); 5] = [
            (604_800, 'w'),
            (86400, 'd'),
            (3600, 'h'),
            (60, 'm'),
            (1, 's'),
        ];
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (size, unit) in UNITS {
            let count = secs / size;
            if count > 0 {
                write!(f, "{count}{unit}")?;
                secs %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn at(time: u64, interval: u64) -> Retry {
        Retry::At {
            time,
            interval: secs(interval),
        }
    }

    /// Replays failures from time 0 with every attempt made exactly when scheduled.
    fn simulate(schedule: &Schedule) -> (Vec<u64>, Vec<u64>) {
        let (mut now, mut previous) = (0, None);
        let (mut times, mut intervals) = (Vec::new(), Vec::new());
        while let Retry::At { time, interval } = schedule.next(0, now, previous) {
            assert!(times.len() < 1000, "schedule never gave up");
            times.push(time);
            intervals.push(interval.as_secs());
            (now, previous) = (time, Some(interval));
        }
        (times, intervals)
    }

    #[test]
    fn parses_default() {
        let parsed: Schedule = DEFAULT_SCHEDULE.parse().unwrap();
        assert_eq!(parsed, Schedule::default());
        assert_eq!(parsed.final_cutoff(), secs(345_600));
        assert_eq!(parsed.rules().len(), 3);
        let compound: Schedule = "F,1d12h,1h1s".parse().unwrap();
        let expected = Rule::Fixed {
            cutoff: secs(129_600),
            interval: secs(3601),
        };
        assert_eq!(compound.rules(), [expected]);
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(Schedule::default().to_string(), DEFAULT_SCHEDULE);
        for text in ["F,1m,1s", "F,1h30m,90s; G,1w1d,1d12h,2", "G,3d,1h,1.25"] {
            let schedule: Schedule = text.parse().unwrap();
            assert_eq!(schedule.to_string().parse(), Ok(schedule), "{text}");
        }
        let odd: Schedule = " F , 90m , 90s ;G,14d,1440m,2.0 ".parse().unwrap();
        assert_eq!(odd.to_string(), "F,1h30m,1m30s; G,2w,1d,2");
        assert_eq!(EximDuration(secs(0)).to_string(), "0s");
        assert_eq!(EximDuration(secs(694_861)).to_string(), "1w1d1h1m1s");
    }

    #[test]
    fn rejects_garbage_naming_the_rule() {
        let cases = [
            ("", "retry schedule is empty"),
            ("  ", "retry schedule is empty"),
            ("F,1h,1m;", "retry rule 2 is empty"),
            ("X,1h,1m", "unknown rule type `X`"),
            ("f,1h,1m", "unknown rule type `f`"),
            ("F,1h", "expected 3 comma-separated fields, found 2"),
            ("G,1h,1m", "expected 4 comma-separated fields, found 3"),
            ("F,2h,0s", "interval must be greater than zero"),
            ("F,0s,1m", "cutoff must be greater than zero"),
            ("G,1h,0m,2", "first interval must be greater than zero"),
            (
                "F,2h,15m; F,2h,1h",
                "cutoff 2h must be later than the previous rule's cutoff 2h",
            ),
            (
                "F,4d,6h; F, 2h ,15m",
                "cutoff 2h must be later than the previous rule's cutoff 4d",
            ),
            ("F,2h,15m; G,16h,1h,0.5", "invalid multiplier `0.5`"),
            ("G,1d,1h,abc", "invalid multiplier `abc`"),
            ("G,1d,1h,inf", "invalid multiplier `inf`"),
            ("G,1d,1h,NaN", "invalid multiplier `NaN`"),
            ("F,-1h,1m", "invalid duration `-1h`"),
            ("F,1h,", "invalid duration ``"),
            ("F,1h,15", "invalid duration `15`: number without a unit"),
            ("F,1h,1.5m", "invalid duration `1.5m`"),
            ("F,1y,1m", "invalid duration `1y`"),
            ("F,1h,5ms", "invalid duration `5ms`"),
            ("F,1 h,1m", "invalid duration `1 h`"),
            (
                "F,99999999999999999999s,1m",
                "invalid duration `99999999999999999999s`",
            ),
        ];
        for (text, expected) in cases {
            let message = text.parse::<Schedule>().unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            let offending = text.rsplit(';').next().map_or("", str::trim);
            let named = format!("retry rule `{offending}`:");
            assert!(
                offending.is_empty() || message.starts_with(&named),
                "{message}"
            );
        }
    }

    /// Expected values computed by hand, not by the code under test:
    /// F,2h,15m: every 900 s while elapsed < 7200, so up to and including 7200.
    /// G,16h,1h,1.5 from elapsed 7200: 3600, 5400, 8100, 12150, 18225, then
    ///   floor(18225 * 1.5) = 27337 from 54675 (still < 57600) to 82012.
    /// F,4d,6h: +21600 from 82012 to 362812, the first attempt past 345600.
    #[test]
    fn default_schedule_table() {
        let times = [
            900, 1800, 2700, 3600, 4500, 5400, 6300, 7200, // F,2h,15m
            10800, 16200, 24300, 36450, 54675, 82012, // G,16h,1h,1.5
            103612, 125212, 146812, 168412, 190012, 211612, 233212, // F,4d,6h
            254812, 276412, 298012, 319612, 341212, 362812,
        ];
        let intervals = [
            900, 900, 900, 900, 900, 900, 900, 900, // F,2h,15m
            3600, 5400, 8100, 12150, 18225, 27337, // G,16h,1h,1.5
            21600, 21600, 21600, 21600, 21600, 21600, 21600, // F,4d,6h
            21600, 21600, 21600, 21600, 21600, 21600,
        ];
        assert_eq!(
            simulate(&Schedule::default()),
            (times.to_vec(), intervals.to_vec())
        );
        let schedule = Schedule::default();
        assert_eq!(
            schedule.next(0, 345_599, Some(secs(21600))),
            at(367_199, 21600)
        );
        assert_eq!(schedule.next(0, 345_600, Some(secs(21600))), Retry::GiveUp);
    }

    #[test]
    fn short_schedule_gives_up_at_cutoff() {
        let schedule: Schedule = "F,1m,1s".parse().unwrap();
        let times: Vec<u64> = (1..=60).collect();
        assert_eq!(simulate(&schedule), (times, vec![1; 60]));
        assert_eq!(schedule.next(0, 59, None), at(60, 1));
        assert_eq!(schedule.next(0, 60, None), Retry::GiveUp);
        assert_eq!(schedule.next(100, 160, None), Retry::GiveUp);
    }

    #[test]
    fn geometric_start_and_growth() {
        let schedule: Schedule = "F,1h,2h; G,1d,30m,2".parse().unwrap();
        // Entering G with a previous interval longer than `first` keeps growing (exim).
        assert_eq!(schedule.next(0, 3600, Some(secs(7200))), at(18000, 14400));
        // Shorter than `first`, or unknown, starts at `first`.
        assert_eq!(schedule.next(0, 3600, Some(secs(60))), at(5400, 1800));
        assert_eq!(schedule.next(0, 3600, None), at(5400, 1800));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let schedule: Schedule = "G,4d,1h,1000000".parse().unwrap();
        assert_eq!(
            schedule.next(0, 7200, Some(secs(3600))),
            at(352_800, 345_600)
        );
        assert_eq!(
            schedule.next(0, 7200, Some(Duration::MAX)),
            at(352_800, 345_600)
        );
        let near_end = u64::MAX - 5;
        assert_eq!(schedule.next(near_end, near_end, None), at(u64::MAX, 3600));
        // A clock that went backwards counts as no time elapsed.
        assert_eq!(schedule.next(1000, 10, None), at(3610, 3600));
    }

    #[test]
    fn serde_and_display() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::Deserialize;
        let text = StrDeserializer::<Error>::new("F,1m,1s; F,2m,10s");
        let schedule = Schedule::deserialize(text).unwrap();
        assert_eq!(String::from(schedule), "F,1m,1s; F,2m,10s");
        assert!(Schedule::deserialize(StrDeserializer::<Error>::new("F,1h")).is_err());
        assert_eq!(Retry::GiveUp.to_string(), "retry timeout exceeded");
        assert_eq!(at(5400, 5400).to_string(), "retry at 5400 (in 1h30m)");
    }
}
