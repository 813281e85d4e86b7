//! Provider presets: `preset = "office365"` on a route fills in what the
//! provider publishes (submission endpoint, port, TLS, sending limits) so the
//! operator writes only the account. Every key the operator sets wins, and
//! `smarthost check` prints the values in force.
//!
//! The limits are the providers' published ones, checked in 2026. Both count
//! over a rolling window, as the limiter does. Where a provider counts
//! recipients, the limiter still counts messages (one per transaction): the
//! preset is exact for one-recipient mail, and an operator who sends to many
//! recipients per message should lower the daily count.

use super::rate::{Rate, Unit};
use super::Validator;

#[derive(Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub host: &'static str,
    /// With `tls = "starttls"`; a route that sets its own `tls` gets that
    /// mode's default port instead.
    pub port: u16,
    pub rates: &'static [Rate],
    pub max_connections: usize,
}

/// Microsoft 365 / Exchange Online, SMTP AUTH client submission.
/// - Endpoint: smtp.office365.com, port 587, STARTTLS ("How to set up a
///   multifunction device or application to send email using Microsoft 365 or
///   Office 365", option 1, Microsoft Learn).
/// - "Message storage and concurrent connection throttling for SMTP
///   Authenticated Submission" (Microsoft Learn,
///   exchange/troubleshoot/send-emails/smtp-submission-improvements): at most
///   three concurrent connections per mailbox (more get `432 4.3.2`), 30
///   messages a minute, 10,000 recipients a day; the same two numbers are in
///   the Exchange Online limits service description ("Message rate limit (SMTP
///   client submission only)", "Recipient rate limit", a rolling 24 hours).
///
/// Microsoft refuses mail over the daily limit with a `554 5.2.0` reply, a
/// permanent code: without the limiter that mail would bounce.
const OFFICE365: Preset = Preset {
    name: "office365",
    host: "smtp.office365.com",
    port: 587,
    rates: &[Rate::new(30, Unit::Minute), Rate::new(10_000, Unit::Day)],
    max_connections: 3,
};

/// A personal Gmail account through smtp.gmail.com (port 587 with STARTTLS,
/// Gmail Help "Check Gmail through other email platforms").
/// - 500 a day: Gmail Help "Gmail sending limits" (support.google.com/mail,
///   answer 22839, and the guides quoting it) puts a personal account at 500
///   recipients a day; going over suspends sending for up to 24 hours, so the
///   smaller of Google's two published numbers is this preset's (Workspace
///   accounts take `google-workspace`).
/// - 20 a minute and 3 connections: Google publishes neither a per-minute nor
///   a concurrency limit for smtp.gmail.com. Both are our choice, so that a
///   backlog drains over many minutes rather than as one burst from one
///   account; 3 is Microsoft's published connection limit.
const GMAIL: Preset = Preset {
    name: "gmail",
    host: "smtp.gmail.com",
    port: 587,
    rates: &[Rate::new(20, Unit::Minute), Rate::new(500, Unit::Day)],
    max_connections: 3,
};

/// A Google Workspace account through smtp.gmail.com: "Gmail sending limits in
/// Google Workspace" (Google Workspace Admin Help, answer 166852) allows 2,000
/// messages a day per user (500 for trial accounts), over a rolling 24 hours,
/// and 10,000 recipients a day. Per minute and connections as for `gmail`.
const GOOGLE_WORKSPACE: Preset = Preset {
    name: "google-workspace",
    host: "smtp.gmail.com",
    port: 587,
    rates: &[Rate::new(20, Unit::Minute), Rate::new(2000, Unit::Day)],
    max_connections: 3,
};

pub const PRESETS: [&Preset; 3] = [&OFFICE365, &GMAIL, &GOOGLE_WORKSPACE];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.into_iter().find(|p| p.name == name)
}

impl Validator<'_> {
    /// The route's preset; Err(()) when it names none (the problem is reported).
    pub(super) fn preset(
        &mut self,
        route: &str,
        name: Option<&str>,
        here: Option<std::ops::Range<usize>>,
    ) -> Result<Option<&'static Preset>, ()> {
        let Some(name) = name else {
            return Ok(None);
        };
        match find(name) {
            Some(p) => Ok(Some(p)),
            None => {
                let known: Vec<String> = PRESETS.iter().map(|p| format!("{:?}", p.name)).collect();
                self.problem(
                    here,
                    format!(
                        "route {route:?}: unknown preset {name:?} (use {})",
                        known.join(", ")
                    ),
                );
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{describe, Config, ConfigError, Transport};

    fn parse(route: &str) -> Result<Config, ConfigError> {
        let text = format!("[[route]]\nname = \"o365\"\n{route}\n[routing]\ndefault = \"o365\"\n");
        Config::parse(&text, "test.toml", Path::new("/nonexistent"))
    }

    fn summary(c: &Config) -> (String, u16, String, Vec<String>, usize) {
        let r = &c.routes["o365"];
        let Transport::Smtp(s) = &r.transport else {
            panic!("smtp route expected")
        };
        (
            s.hosts.join(","),
            s.port,
            s.tls.to_string(),
            r.rates.iter().map(|r| r.to_string()).collect(),
            r.max_connections,
        )
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn presets_fill_in_the_providers_settings() {
        let table = [
            (
                "office365",
                "smtp.office365.com",
                &["30/min", "10000/day"][..],
            ),
            ("gmail", "smtp.gmail.com", &["20/min", "500/day"][..]),
            (
                "google-workspace",
                "smtp.gmail.com",
                &["20/min", "2000/day"][..],
            ),
        ];
        for (preset, host, rates) in table {
            let c = parse(&format!("preset = \"{preset}\"")).expect(preset);
            assert_eq!(
                summary(&c),
                (host.into(), 587, "starttls".into(), strings(rates), 3),
                "{preset}"
            );
        }
        let shown = describe(&parse("preset = \"office365\"").unwrap());
        assert!(
            shown.contains(
                "o365: smtp smtp.office365.com:587 tls=starttls auth=none max_connections=3 rate=30/min,10000/day"
            ),
            "{shown}"
        );
    }

    #[test]
    fn the_operators_settings_win() {
        let c = parse(
            "preset = \"office365\"\nhost = \"smtp-eu.example.net\"\nmax_connections = 1\nrate = \"10/min\"",
        )
        .unwrap();
        assert_eq!(
            summary(&c),
            (
                "smtp-eu.example.net".into(),
                587,
                "starttls".into(),
                strings(&["10/min"]),
                1
            )
        );
        // Implicit TLS takes its own default port, not the preset's 587.
        let c = parse("preset = \"gmail\"\ntls = \"tls\"").unwrap();
        assert_eq!(summary(&c).1, 465);
        let c = parse("preset = \"gmail\"\nport = 2525").unwrap();
        assert_eq!(summary(&c).1, 2525);
        // An empty list turns the preset's limits off.
        let c = parse("preset = \"gmail\"\nrate = []").unwrap();
        assert!(summary(&c).3.is_empty());
        assert!(!describe(&c).contains("rate="));
    }

    #[test]
    fn bad_presets_and_rates_name_the_route_and_the_value() {
        let err = parse("preset = \"outlook\"").unwrap_err().to_string();
        assert!(
            err.contains(
                "test.toml:1: route \"o365\": unknown preset \"outlook\" (use \"office365\", \"gmail\", \"google-workspace\")"
            ),
            "{err}"
        );
        let err = parse("preset = \"office365\"\nrate = [\"30/mn\", \"0/day\"]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "route \"o365\": rate \"30/mn\": unknown unit \"mn\" (use /s, /min, /h or /day)"
            ),
            "{err}"
        );
        assert!(
            err.contains("route \"o365\": rate \"0/day\": count must be at least 1"),
            "{err}"
        );
        let err = parse("host = \"h\"\nrate = 30").unwrap_err().to_string();
        assert!(
            err.contains("a rate like \"30/min\" or a list of them"),
            "{err}"
        );
        let err = parse("type = \"directory\"\npath = \"/tmp/x\"\npreset = \"gmail\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("preset is for smtp routes"), "{err}");
    }

    #[test]
    fn rates_without_a_preset() {
        let c = parse("host = \"h\"\nrate = \"2/s\"").unwrap();
        assert_eq!(summary(&c).3, strings(&["2/s"]));
        assert_eq!(summary(&c).4, 4);
        let c = parse("host = \"h\"").unwrap();
        assert!(summary(&c).3.is_empty());
        // A directory route may be limited too (a slow consumer of the files).
        let c = parse("type = \"directory\"\npath = \"/tmp/x\"\nrate = \"1/s\"").unwrap();
        assert_eq!(c.routes["o365"].rates.len(), 1);
    }
}
