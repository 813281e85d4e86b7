//! A restart under a routing table without the route some messages were
//! queued for (the operator removed it and restarted rather than reloaded):
//! the queue's due index still has them under the old route, and the new
//! start moves each to the route it has now, where it is delivered when
//! due. Without that, no lane would ever read the old route's entries and
//! the messages would sit in the queue until they expired.

mod common;

use std::time::Duration;

use common::{captured, Relay};

const PATIENCE: Duration = Duration::from_secs(60);
const MESSAGES: usize = 3;

#[test]
fn messages_of_a_removed_route_go_out_through_their_new_one() {
    let mut relay = Relay::start_with(
        r#"retry = "F,1h,2s"
[[route]]
name = "old"
type = "directory"
path = "{dir}/old"
[routing]
default = "old"
"#,
        &[],
        // A file where the capture directory goes: every attempt defers.
        |dir| std::fs::write(dir.join("old"), b"blocked").expect("block the route"),
    );
    let ids: Vec<String> = (0..MESSAGES)
        .map(|n| {
            let body = format!("Subject: moved {n}\r\n\r\nmoved\r\n");
            relay
                .send("app@example.com", &["user@example.net"], body.as_bytes())
                .expect("queued")
        })
        .collect();
    assert!(
        relay.wait_log("status=deferred", MESSAGES, PATIENCE),
        "{}",
        relay.log()
    );
    relay.signal("TERM");
    assert!(relay.wait_exit(PATIENCE).is_some_and(|s| s.success()));

    // The route is gone; another takes its mail.
    let config = std::fs::read_to_string(&relay.config_path).expect("config");
    let old_route = format!(
        "[[route]]\nname = \"old\"\ntype = \"directory\"\npath = \"{}\"\n[routing]\ndefault = \"old\"\n",
        relay.path("old").display()
    );
    assert!(config.contains(&old_route), "{config}");
    let new_route = format!(
        "[[route]]\nname = \"new\"\ntype = \"directory\"\npath = \"{}\"\n[routing]\ndefault = \"new\"\n",
        relay.path("new").display()
    );
    std::fs::write(&relay.config_path, config.replace(&old_route, &new_route)).expect("config");
    relay.spawn();

    let out = relay.path("new");
    assert!(
        common::wait_for(PATIENCE, || captured(&out).len() == MESSAGES),
        "every message delivered through the new route:\n{}",
        relay.log()
    );
    let mut got: Vec<String> = captured(&out)
        .iter()
        .map(|(meta, _)| meta["queue_id"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ids);
    assert!(relay.wait_queue_empty(PATIENCE));
}
