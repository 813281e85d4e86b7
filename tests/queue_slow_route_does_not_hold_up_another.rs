//! A route that may send only one message an hour, with more of its mail
//! queued than the schedule keeps in memory (`queue_active_limit = 3`),
//! holds up no other route: a message for a second route, queued after all
//! of it, goes out at once. Each route has its own lane of the schedule,
//! read from its own part of the due index; one window for the whole queue
//! would be full of the slow route's messages, due earlier, and leave the
//! new one on disk for an hour.

mod common;

use std::time::Duration;

use common::{captured, Relay};

const PATIENCE: Duration = Duration::from_secs(60);
const SLOW_MESSAGES: usize = 8;

const CONFIG: &str = r#"queue_active_limit = 3
[[route]]
name = "slow"
type = "directory"
path = "{dir}/slow"
rate = "1/h"
[[route]]
name = "fast"
type = "directory"
path = "{dir}/fast"
[routing]
default = "slow"
[routing.senders]
"fast.example" = "fast"
"#;

fn message(n: usize) -> Vec<u8> {
    format!("Subject: lane {n}\r\n\r\nmessage {n}\r\n").into_bytes()
}

#[test]
fn a_rate_limited_route_holds_up_no_other() {
    let relay = Relay::start(CONFIG);
    for n in 0..SLOW_MESSAGES {
        relay
            .send("app@example.com", &["user@example.net"], &message(n))
            .expect("queued");
    }
    let slow = relay.path("slow");
    // The hour's one message is out: the rest wait for the rate limit.
    assert!(
        common::wait_for(PATIENCE, || captured(&slow).len() == 1),
        "the slow route's first message delivered:\n{}",
        relay.log()
    );
    let id = relay
        .send("app@fast.example", &["user@example.net"], &message(99))
        .expect("queued");
    let fast = relay.path("fast");
    assert!(
        common::wait_for(PATIENCE, || captured(&fast).len() == 1),
        "the other route's message delivered at once:\n{}",
        relay.log()
    );
    let (meta, _) = &captured(&fast)[0];
    assert_eq!(meta["queue_id"].as_str(), Some(id.as_str()));
    assert_eq!(captured(&slow).len(), 1, "the slow route kept to its rate");
    let queued = relay.queue_json().expect("queue list");
    assert_eq!(
        queued.len(),
        SLOW_MESSAGES - 1,
        "the slow route's rest queued"
    );
}
