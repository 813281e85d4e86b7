//! A route's `rate`: how many messages it may send per second, minute, hour or
//! day, as the operator writes it (`"30/min"`) and as the limiter reads it.
//!
//! The unit table is fixed and tiny on purpose: providers publish their limits
//! in exactly these units, and a rate like "7/90s" would only invite
//! misreadings of what the provider allows.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::Validator;

/// The largest count accepted per rate. The limiter remembers each send of the
/// longest window (16 bytes apiece), so this bounds its memory per route; a
/// larger allowance is better written with a shorter unit.
pub const MAX_COUNT: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn window(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        })
    }

    fn parse(text: &str) -> Option<Unit> {
        Some(match text {
            "s" | "sec" => Unit::Second,
            "min" => Unit::Minute,
            "h" | "hour" => Unit::Hour,
            "day" => Unit::Day,
            _ => return None,
        })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Second => "s",
            Unit::Minute => "min",
            Unit::Hour => "h",
            Unit::Day => "day",
        })
    }
}

/// At most `count` messages in any window of one `unit` (a rolling window, as
/// Microsoft and Google count theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub unit: Unit,
}

impl Rate {
    pub const fn new(count: u32, unit: Unit) -> Rate {
        Rate { count, unit }
    }

    pub fn window(&self) -> Duration {
        self.unit.window()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("expected <count>/<unit>, e.g. \"30/min\"")]
    NoSlash,
    #[error("count {0:?} is not a whole number")]
    NotANumber(String),
    #[error("count must be at least 1")]
    Zero,
    #[error("count {0} is more than {MAX_COUNT}; use a shorter unit")]
    TooLarge(String),
    #[error("unknown unit {0:?} (use /s, /min, /h or /day)")]
    UnknownUnit(String),
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let (count, unit) = text.trim().split_once('/').ok_or(RateError::NoSlash)?;
        // Digits only: u64's own parser would take "+30".
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RateError::NotANumber(count.to_string()));
        }
        let too_large = || RateError::TooLarge(count.to_string());
        let n: u64 = count.parse().map_err(|_| too_large())?;
        let unit = Unit::parse(unit).ok_or_else(|| RateError::UnknownUnit(unit.to_string()))?;
        if n == 0 {
            return Err(RateError::Zero);
        }
        match u32::try_from(n) {
            Ok(count) if count <= MAX_COUNT => Ok(Rate { count, unit }),
            _ => Err(too_large()),
        }
    }
}

/// `rate` as written: one string or a list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RawRates(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for RawRates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawRates, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRates;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate like \"30/min\" or a list of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawRates, E> {
                Ok(RawRates(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRates, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    all.push(s);
                }
                Ok(RawRates(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl Validator<'_> {
    /// Every rate of a route, each problem reported with the route's name and
    /// the value as written. An empty list (`rate = []`) means no limit, which
    /// is how an operator turns off a preset's.
    pub(super) fn rates(
        &mut self,
        route: &str,
        raw: &RawRates,
        here: Option<std::ops::Range<usize>>,
    ) -> Vec<Rate> {
        let mut rates = Vec::new();
        for text in &raw.0 {
            match text.parse::<Rate>() {
                Ok(rate) => rates.push(rate),
                Err(e) => {
                    self.problem(here.clone(), format!("route {route:?}: rate {text:?}: {e}"))
                }
            }
        }
        rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_unit_table() {
        let table = [
            ("30/min", 30, Unit::Minute),
            ("2/s", 2, Unit::Second),
            ("2/sec", 2, Unit::Second),
            ("100/h", 100, Unit::Hour),
            ("100/hour", 100, Unit::Hour),
            ("2000/day", 2000, Unit::Day),
            (" 5/day ", 5, Unit::Day),
            ("1000000/day", MAX_COUNT, Unit::Day),
        ];
        for (text, count, unit) in table {
            assert_eq!(text.parse(), Ok(Rate { count, unit }), "{text}");
        }
        assert_eq!(Rate::new(30, Unit::Minute).to_string(), "30/min");
        assert_eq!(Unit::Day.window(), Duration::from_secs(86_400));
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        let table = [
            ("30/mn", RateError::UnknownUnit("mn".into())),
            ("30/Min", RateError::UnknownUnit("Min".into())),
            ("30/ min", RateError::UnknownUnit(" min".into())),
            ("30/", RateError::UnknownUnit(String::new())),
            ("30/2min", RateError::UnknownUnit("2min".into())),
            ("30", RateError::NoSlash),
            ("", RateError::NoSlash),
            ("/min", RateError::NotANumber(String::new())),
            ("+30/min", RateError::NotANumber("+30".into())),
            ("-1/min", RateError::NotANumber("-1".into())),
            ("1.5/s", RateError::NotANumber("1.5".into())),
            ("thirty/min", RateError::NotANumber("thirty".into())),
            ("0/min", RateError::Zero),
            ("000/day", RateError::Zero),
            ("1000001/day", RateError::TooLarge("1000001".into())),
            (
                "99999999999999999999999/s",
                RateError::TooLarge("99999999999999999999999".into()),
            ),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Rate>(), Err(want), "{text}");
        }
    }
}
