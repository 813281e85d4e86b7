//! `queue list` on a queue too long to read whole: the first line counts
//! the whole queue (from the daemon's counts, before a message is read),
//! and `--limit`, `--route`, `--state` and `--older-than` show the part
//! the operator asks for.

mod common;

use std::time::Duration;

use common::{block_routes, Relay, TWO_ROUTES};

const PATIENCE: Duration = Duration::from_secs(60);
const BLOCKED: usize = 30;

fn queue(relay: &Relay, args: &[&str]) -> String {
    relay.queue_ok(args)
}

/// The queue ids of the message lines of a listing.
fn listed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.len() > 14 && l.as_bytes()[..14].iter().all(u8::is_ascii_alphanumeric))
        .map(|l| l[..14].to_string())
        .collect()
}

#[test]
fn a_big_queue_lists_the_part_asked_for() {
    let relay = Relay::start_with(TWO_ROUTES, &[], block_routes);
    let body = b"Subject: listed\r\n\r\nlisted\r\n";
    let ids: Vec<String> = (0..BLOCKED)
        .map(|n| {
            let to = format!("user{n}@example.net");
            relay.send("app@example.com", &[&to], body).expect("queued")
        })
        .collect();
    let others: Vec<String> = (0..2)
        .map(|_| {
            relay
                .send("app@other.example", &["o@example.net"], body)
                .expect("queued")
        })
        .collect();
    assert!(
        relay.wait_log("status=deferred", BLOCKED + 2, PATIENCE),
        "{}",
        relay.log()
    );
    queue(&relay, &["hold", &ids[7]]);

    let all = queue(&relay, &["list"]);
    assert!(
        all.starts_with("Queue: 32 messages, 32 recipients to deliver, 1 held; oldest ")
            && all
                .lines()
                .next()
                .is_some_and(|l| l.ends_with("by route: blocked 30, other 2")),
        "the overview first:\n{all}"
    );
    assert_eq!(listed(&all).len(), 32, "{all}");

    let first = queue(&relay, &["list", "--limit", "5"]);
    assert!(first.starts_with("Queue: 32 messages"), "{first}");
    assert_eq!(
        listed(&first),
        ids[..5].to_vec(),
        "the oldest five:\n{first}"
    );
    assert!(first.contains("(the first 5 shown: --limit 5)"), "{first}");

    let other = queue(&relay, &["list", "--route", "other"]);
    assert_eq!(listed(&other), others, "{other}");

    let held = queue(&relay, &["list", "--state", "held"]);
    assert_eq!(listed(&held), vec![ids[7].clone()], "{held}");
    let deferred = queue(
        &relay,
        &["list", "--state", "deferred", "--route", "blocked"],
    );
    assert_eq!(listed(&deferred).len(), BLOCKED - 1, "{deferred}");

    let old = queue(&relay, &["list", "--older-than", "1h"]);
    assert!(listed(&old).is_empty(), "{old}");
    assert!(old.contains("-- no queued message shown"), "{old}");
    assert!(old.starts_with("Queue: 32 messages"), "{old}");

    let json = queue(&relay, &["list", "--json", "--limit", "3"]);
    assert_eq!(
        json.lines().count(),
        3,
        "JSON lines are messages alone:\n{json}"
    );
}
