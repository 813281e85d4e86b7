//! The Prometheus text exposition format (version 0.0.4), written by hand: a
//! dozen families do not justify a client library, and writing it here keeps
//! the escaping rules in one place with their tests. No I/O.
//!
//! Invariant: every family's `# HELP` and `# TYPE` lines come before its
//! samples, and each family is written once, so the output parses as a whole.

use std::fmt::Write;

use super::histogram::Snapshot;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: counts stay exact integers, times are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(n: u64) -> Num {
        Num::Int(n)
    }
}

impl From<f64> for Num {
    fn from(n: f64) -> Num {
        Num::Float(n)
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::Int(n) => write!(f, "{n}"),
            // Rust spells these "inf" and "NaN"; the format wants Go's spelling.
            Num::Float(x) if x.is_nan() => f.write_str("NaN"),
            Num::Float(x) if x == f64::INFINITY => f.write_str("+Inf"),
            Num::Float(x) if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.word());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Num>) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", value.into());
    }

    /// The samples of one histogram series: cumulative `_bucket`s ending with
    /// `+Inf`, then `_sum` and `_count` (equal to the `+Inf` bucket).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Snapshot) {
        let mut cumulative = 0u64;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative = cumulative.saturating_add(*n);
            self.bucket(name, labels, &Num::Float(*bound).to_string(), cumulative);
        }
        self.bucket(name, labels, "+Inf", h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count());
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], le: &str, n: u64) {
        self.out.push_str(name);
        self.out.push_str("_bucket");
        write_labels(&mut self.out, labels, Some(le));
        let _ = writeln!(self.out, " {n}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let le = le.map(|v| ("le", v));
    for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

/// Label values: backslash, double quote and line feed are escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and line feed are escaped (quotes are not).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "a \\ b\nc \"d\"");
        e.sample("x_total", &[("route", "a\"b\\c\nd"), ("k", "v")], 3u64);
        e.sample("x_total", &[], 0u64);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ b\\nc \"d\"\n\
             # TYPE x_total counter\n\
             x_total{route=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             x_total 0\n"
        );
    }

    #[test]
    fn floats_use_the_formats_spelling() {
        let cases = [
            (Num::Float(0.1), "0.1"),
            (Num::Float(86400.0), "86400"),
            (Num::Float(f64::INFINITY), "+Inf"),
            (Num::Float(f64::NEG_INFINITY), "-Inf"),
            (Num::Float(f64::NAN), "NaN"),
            (Num::Int(u64::MAX), "18446744073709551615"),
        ];
        for (n, text) in cases {
            assert_eq!(n.to_string(), text);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Snapshot {
            bounds: vec![0.5, 1.0, 60.0],
            counts: vec![2, 0, 3],
            overflow: 1,
            sum: 200.25,
        };
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "latency");
        e.histogram("lat_seconds", &[("route", "r")], &h);
        assert_eq!(
            e.finish(),
            "# HELP lat_seconds latency\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{route=\"r\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{route=\"r\",le=\"1\"} 2\n\
             lat_seconds_bucket{route=\"r\",le=\"60\"} 5\n\
             lat_seconds_bucket{route=\"r\",le=\"+Inf\"} 6\n\
             lat_seconds_sum{route=\"r\"} 200.25\n\
             lat_seconds_count{route=\"r\"} 6\n"
        );
    }
}
