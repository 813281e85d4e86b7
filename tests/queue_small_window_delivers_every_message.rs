//! A schedule window far smaller than the queue (`queue_active_limit = 3`,
//! 24 messages queued): every message is still delivered, each exactly once,
//! once it is due, through a reload, an operator's hold, flush and release,
//! and a restart after a kill. The route fails until the test repairs it:
//! its capture directory is a file at first, so every attempt defers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{captured, Relay};

const MESSAGES: usize = 24;
const PATIENCE: Duration = Duration::from_secs(60);

fn queue(relay: &Relay, args: &[&str]) {
    relay.queue_ok(args);
}

/// The queue ids of the captured messages, in capture order.
fn delivered(out: &Path) -> Vec<String> {
    captured(out)
        .into_iter()
        .map(|(meta, _)| meta["queue_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn start() -> Relay {
    let config = format!(
        "retry = \"F,1h,2s\"\nqueue_active_limit = 3\n{}",
        common::CAPTURE_ROUTE
    );
    // A file where the capture directory goes: every attempt defers.
    Relay::start_with(&config, &[], |dir| {
        std::fs::write(dir.join("out"), b"not a directory").expect("block the route")
    })
}

fn queue_all(relay: &Relay) -> Vec<String> {
    let ids: Vec<String> = (0..MESSAGES)
        .map(|n| {
            let body = format!("Subject: window {n}\r\n\r\nmessage {n}\r\n");
            relay
                .send(
                    "app@example.com",
                    &[&format!("user{n}@example.net")],
                    body.as_bytes(),
                )
                .expect("queued")
        })
        .collect();
    assert!(
        relay.wait_log("status=deferred", MESSAGES, PATIENCE),
        "every message tried once and deferred:\n{}",
        relay.log()
    );
    ids
}

#[test]
fn a_small_window_delivers_every_message_once_when_due() {
    let mut relay = start();
    let ids = queue_all(&relay);
    // A reload forgets the window and reads the index from the start.
    relay.signal("HUP");
    assert!(relay.wait_log("reloaded", 1, PATIENCE), "{}", relay.log());
    let (held, flushed) = (&ids[5], &ids[17]);
    queue(&relay, &["hold", held]);
    queue(&relay, &["flush", flushed]);
    // A crash and a start: the window comes back from the index alone.
    relay.restart();

    let out = relay.path("out");
    std::fs::remove_file(&out).expect("unblock the route");
    std::fs::create_dir(&out).expect("capture directory");
    assert!(
        common::wait_for(PATIENCE, || delivered(&out).len() == MESSAGES - 1),
        "all but the held message delivered; got {} of {}:\n{}",
        delivered(&out).len(),
        MESSAGES - 1,
        relay.log()
    );
    assert!(!delivered(&out).contains(held), "a held message stays");

    queue(&relay, &["release", held]);
    assert!(
        common::wait_for(PATIENCE, || delivered(&out).len() == MESSAGES),
        "the released message delivered:\n{}",
        relay.log()
    );
    let mut got = delivered(&out);
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "each message exactly once");
    assert!(relay.wait_queue_empty(PATIENCE));
}
