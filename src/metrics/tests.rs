use std::collections::BTreeMap;

use super::*;
use crate::spool::tally::Counts;
use crate::spool::Recipient;

/// Checks the exposition's grammar as far as the relay uses it (every sample
/// under its family's HELP and TYPE, each family once) and returns the
/// samples as "name{labels}" → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut out = BTreeMap::new();
    let mut help: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(
                families.iter().all(|(f, _)| *f != name),
                "{name} written twice"
            );
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(help.as_deref(), Some(name), "TYPE without HELP: {line}");
            families.push((name.to_string(), kind.to_string()));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            let (family, kind) = families.last().expect("sample before any family");
            let ok = match kind.as_str() {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == family,
            };
            assert!(ok, "{name} under family {family}");
            let v = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            assert!(
                out.insert(series.to_string(), v).is_none(),
                "{series} twice"
            );
        }
    }
    out
}

fn env(id: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        id: id.into(),
        sender: "s@example.com".into(),
        route_sender: "s@example.com".into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r, 0)).collect(),
        arrived: 1,
        ..Default::default()
    }
}

/// After A's first attempt and the creation of a DSN.
const AFTER_THE_FIRST_ATTEMPT: &[(&str, f64)] = &[
    ("smarthost_up", 1.0),
    ("smarthost_messages_accepted_total{route=\"up\"}", 1.0),
    ("smarthost_messages_accepted_total{route=\"other\"}", 0.0),
    ("smarthost_recipients_accepted_total{route=\"up\"}", 3.0),
    ("smarthost_recipients_delivered_total{route=\"up\"}", 1.0),
    ("smarthost_recipients_bounced_total{route=\"up\"}", 1.0),
    ("smarthost_recipients_deferred_total{route=\"up\"}", 1.0),
    ("smarthost_notifications_created_total", 1.0),
    // The spool's counts: A still queued, with one recipient to go; the
    // DSN with its one.
    ("smarthost_queue_messages", 2.0),
    ("smarthost_queue_recipients", 2.0),
    ("smarthost_queue_held_messages", 0.0),
    ("smarthost_queue_counted", 1.0),
    ("smarthost_route_queue_messages{route=\"up\"}", 2.0),
    ("smarthost_route_queue_recipients{route=\"up\"}", 2.0),
    ("smarthost_route_queue_messages{route=\"other\"}", 0.0),
    (
        "smarthost_delivery_latency_seconds_count{route=\"up\"}",
        1.0,
    ),
    (
        "smarthost_delivery_latency_seconds_bucket{route=\"up\",le=\"+Inf\"}",
        1.0,
    ),
    ("smarthost_route_held{route=\"up\"}", 1.0),
    ("smarthost_route_held{route=\"other\"}", 0.0),
    (
        "smarthost_rate_limit_wait_seconds_total{route=\"up\"}",
        1.75,
    ),
    (
        "smarthost_rate_limit_wait_seconds_total{route=\"other\"}",
        0.0,
    ),
    (
        "smarthost_token_refresh_failures_total{source=\"google\"}",
        2.0,
    ),
];

/// Both gone: A partly bounced, the DSN deleted.
const AFTER_THE_LAST_ATTEMPT: &[(&str, f64)] = &[
    (
        "smarthost_messages_finished_total{route=\"up\",result=\"partly_bounced\"}",
        1.0,
    ),
    (
        "smarthost_messages_finished_total{route=\"up\",result=\"deleted\"}",
        1.0,
    ),
    ("smarthost_queue_messages", 0.0),
    ("smarthost_queue_oldest_message_age_seconds", 0.0),
    (
        "smarthost_delivery_latency_seconds_count{route=\"up\"}",
        2.0,
    ),
];

#[test]
fn counts_accepted_and_each_recipients_outcome_by_route() {
    let m = Metrics::new(&["up".to_string(), "other".to_string()]);
    let mut a = env("A", &["1@x", "2@x", "3@x"]);
    m.accepted("up", &a);
    a.recipients[0].state = State::Delivered;
    a.recipients[1].state = State::Bounced;
    a.recipients[2].state = State::Deferred;
    m.attempted("up", &a, &[0, 1, 2]);
    let mut dsn = env("D", &["s@example.com"]);
    dsn.sender = String::new();
    m.notification(&dsn);
    m.rate_limit_waited("up", std::time::Duration::from_millis(1500));
    m.rate_limit_waited("up", std::time::Duration::from_millis(250));
    let counts = Counts {
        messages: 2,
        recipients: 2,
        held: 0,
    };
    let queued = QueueGauges {
        tally: Tally {
            total: counts,
            routes: [("up".to_string(), counts)].into(),
            complete: true,
        },
        oldest: Some(1),
    };
    let s = samples(&m.render(&["up".to_string()], &[("google".to_string(), 2)], &queued));

    expect(&s, AFTER_THE_FIRST_ATTEMPT);
    // The envelopes arrived at Unix time 1.
    assert!(s["smarthost_queue_oldest_message_age_seconds"] > 1e9);

    a.recipients[2].state = State::Delivered;
    m.attempted("up", &a, &[2]);
    m.finished("up", &dsn, Finish::Deleted);
    let s = samples(&m.render(&[], &[], &empty()));
    expect(&s, AFTER_THE_LAST_ATTEMPT);
}

fn empty() -> QueueGauges {
    QueueGauges {
        tally: Tally {
            complete: true,
            ..Tally::default()
        },
        oldest: None,
    }
}

fn expect(samples: &BTreeMap<String, f64>, table: &[(&str, f64)]) {
    for (series, value) in table {
        assert_eq!(
            samples.get(*series),
            Some(value),
            "{series} in {samples:#?}"
        );
    }
}

#[test]
fn a_route_unknown_at_start_gets_its_series_on_first_use() {
    let m = Metrics::new(&[]);
    m.accepted("new\"route", &env("A", &["1@x"]));
    let s = samples(&m.render(&[], &[], &empty()));
    assert_eq!(
        s.get("smarthost_messages_accepted_total{route=\"new\\\"route\"}"),
        Some(&1.0)
    );
}

#[test]
fn finish_names_how_a_message_ended() {
    let mut e = env("A", &["1@x", "2@x"]);
    e.recipients[0].state = State::Delivered;
    e.recipients[1].state = State::Delivered;
    assert_eq!(Finish::of(&e), Finish::Delivered);
    e.recipients[1].state = State::Bounced;
    assert_eq!(Finish::of(&e), Finish::PartlyBounced);
    e.recipients[0].state = State::Bounced;
    assert_eq!(Finish::of(&e), Finish::Bounced);
}
