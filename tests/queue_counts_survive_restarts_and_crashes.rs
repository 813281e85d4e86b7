//! The queue gauges come from counts the spool keeps as it writes, not
//! from reading the queue: they are exact while messages come and go, the
//! same after a clean restart (kept in the clean close's marker, no count
//! needed), and after a SIGKILL the queue is counted again beside the
//! running daemon (`smarthost_queue_counted` 0 until it is done), ending at
//! the same numbers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{block_routes, http, metrics_addr, Relay, TWO_ROUTES};

const PATIENCE: Duration = Duration::from_secs(60);

/// The queue gauges: name{labels} -> value.
fn gauges(relay: &Relay) -> BTreeMap<String, f64> {
    let (status, _, text) = http(metrics_addr(relay), "GET", "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with("smarthost_queue") || l.starts_with("smarthost_route_queue"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn expect_counts(relay: &Relay, when: &str) {
    let mut last = BTreeMap::new();
    let exact = common::wait_for(PATIENCE, || {
        last = gauges(relay);
        last.get("smarthost_queue_counted") == Some(&1.0)
    });
    assert!(exact, "{when}: counted again:\n{last:#?}\n{}", relay.log());
    let want = [
        ("smarthost_queue_messages", 4.0),
        ("smarthost_queue_recipients", 5.0),
        ("smarthost_queue_held_messages", 1.0),
        ("smarthost_route_queue_messages{route=\"blocked\"}", 3.0),
        ("smarthost_route_queue_recipients{route=\"blocked\"}", 4.0),
        ("smarthost_route_queue_messages{route=\"other\"}", 1.0),
    ];
    for (name, value) in want {
        assert_eq!(last.get(name), Some(&value), "{when}: {name} in {last:#?}");
    }
    let age = last["smarthost_queue_oldest_message_age_seconds"];
    assert!((0.0..600.0).contains(&age), "{when}: oldest age {age}");
}

#[test]
fn queue_gauges_stay_exact_through_restarts_and_a_crash() {
    let config = format!("{TWO_ROUTES}[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut relay = Relay::start_with(&config, &[], block_routes);
    let body = b"Subject: counted\r\n\r\ncounted\r\n";
    let mut ids = Vec::new();
    for to in [
        &["a@example.net"][..],
        &["b@example.net", "c@example.net"],
        &["d@example.net"],
    ] {
        ids.push(relay.send("app@example.com", to, body).expect("queued"));
    }
    relay
        .send("app@other.example", &["e@example.net"], body)
        .expect("queued");
    let gone = relay
        .send("app@example.com", &["f@example.net"], body)
        .expect("queued");
    assert!(
        relay.wait_log("status=deferred", 6, PATIENCE),
        "{}",
        relay.log()
    );
    queue(&relay, &["hold", &ids[0]]);
    queue(&relay, &["delete", &gone]);
    expect_counts(&relay, "running");

    relay.signal("TERM");
    assert!(relay.wait_exit(PATIENCE).is_some_and(|s| s.success()));
    relay.spawn();
    expect_counts(&relay, "after a clean restart");
    assert!(
        !relay.log().contains("counting the queue"),
        "a clean close keeps the counts:\n{}",
        relay.log()
    );

    relay.restart();
    expect_counts(&relay, "after SIGKILL");
    assert!(relay.wait_log("queue: counted 4 message(s), 5 recipient(s)", 1, PATIENCE));
}

fn queue(relay: &Relay, args: &[&str]) {
    relay.queue_ok(args);
}
