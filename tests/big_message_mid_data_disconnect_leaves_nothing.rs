//! A body over 64 KiB is written to `<queue>/bodies/<QUEUEID>` while DATA
//! arrives. A session that ends before the final dot must leave nothing:
//! when the client hangs up, the relay removes the partial file and logs
//! `partial message removed`, naming the queue id; when the relay itself is killed
//! (SIGKILL) mid-DATA, its next start removes the leftover and logs
//! `queue: removed N partial message body file(s)`. Either way nothing is
//! queued or delivered, and the relay goes on accepting big messages.
//!
//! The body file seen in `bodies/` while the client still holds the
//! connection is the positive sign that the partial message existed; the log
//! lines are the signs that it was removed.

#[path = "common/bodies.rs"]
mod bodies;
mod common;

use std::time::Duration;

use bodies::{
    assert_bodies_gone, assert_nothing_left, bodies, body_files, message, open_data, wait_captured,
    FROM, TO,
};
use common::{captured, Relay};

fn relay() -> Relay {
    Relay::start(&format!("retry = \"F,1m,1s\"\n{}", common::CAPTURE_ROUTE))
}

fn is_queue_id(s: &str) -> bool {
    s.len() == 14
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Waits until a body file appears in `bodies/` (the message is being
/// streamed to disk); its name, a queue id.
fn wait_body_file(relay: &Relay) -> String {
    let mut files = Vec::new();
    let seen = common::wait_for(Duration::from_secs(20), || {
        files = body_files(relay);
        !files.is_empty()
    });
    assert!(
        seen,
        "no file in {} while a body over 64 KiB arrived; log:\n{}",
        bodies(relay).display(),
        relay.log()
    );
    assert_eq!(files.len(), 1, "one session, one body file: {files:?}");
    let id = files.remove(0);
    assert!(
        is_queue_id(&id),
        "body file {id:?} is not named by a queue id"
    );
    id
}

/// Delivered queue ids, in the capture directory.
fn captured_ids(relay: &Relay) -> Vec<String> {
    let mut ids: Vec<String> = captured(&relay.path("out"))
        .iter()
        .map(|(meta, _)| meta["queue_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn client_hanging_up_mid_data_leaves_no_body_file_and_nothing_queued() {
    let relay = relay();
    let mut c = open_data(&relay);
    // ~1 MB of the message, never the final dot.
    c.write(&message("hangup", 1 << 20));
    let id = wait_body_file(&relay);
    drop(c);

    assert!(
        relay.wait_log("partial message removed", 1, Duration::from_secs(20)),
        "no 'partial message removed' after the client hung up; bodies/ holds {:?}; log:\n{}",
        body_files(&relay),
        relay.log()
    );
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("partial message removed"))
        .unwrap_or_default();
    // It names the message, as `<id>: ` (the relay's prefix for a message's
    // lines) or as an `id=` field.
    assert!(line.contains(&id), "the line does not name {id}: {line}");
    assert_nothing_left(&relay);

    // A small message still goes through, and it is the only one delivered.
    let sentinel = relay.sentinel();
    assert_eq!(captured_ids(&relay), [sentinel]);
    assert_nothing_left(&relay);
}

#[test]
fn partial_body_of_a_killed_relay_is_removed_at_the_next_start() {
    let mut relay = relay();
    let mut c = open_data(&relay);
    c.write(&message("killed", 600 * 1024));
    let id = wait_body_file(&relay);
    relay.kill();
    drop(c);
    assert!(
        bodies(&relay).join(&id).exists(),
        "the body file went with the killed relay"
    );

    let before = relay.log().len();
    relay.spawn();
    let started = relay.log()[before..].to_string();
    assert!(
        started.contains("queue: removed 1 partial message body file(s)"),
        "the start after the kill did not report removing the partial body:\n{started}"
    );
    assert_nothing_left(&relay);

    // A new big message is accepted and delivered intact; then a small one.
    let big = message("after", 1 << 20);
    let after = relay
        .send(FROM, &[TO], &big)
        .unwrap_or_else(|r| panic!("1 MB message after the restart: {r}"));
    assert!(
        wait_captured(&relay, &after) == big,
        "{after} arrived altered"
    );
    let sentinel = relay.sentinel();
    let mut expected = vec![after, sentinel];
    expected.sort();
    assert_eq!(captured_ids(&relay), expected);
    assert!(
        relay.wait_queue_empty(Duration::from_secs(10)),
        "{:?}",
        relay.queue_json()
    );
    // A delivered message's body file goes with it.
    assert_bodies_gone(&relay);
}
