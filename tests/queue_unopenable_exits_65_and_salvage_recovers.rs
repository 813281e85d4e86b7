//! A queue sled cannot open (here: a damaged snapshot, sled issue #1527) stops
//! the daemon with a reason and exit code 65, never a panic or a silent
//! empty queue; `smarthost queue salvage` copies every message into a fresh
//! queue that the daemon then serves.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, Relay};

#[test]
fn an_unopenable_queue_exits_65_and_salvage_recovers_every_message() {
    let mut relay = Relay::start(&format!(
        "retry = \"F,1h,1h\"\n[[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[routing]\ndefault = \"up\"\n",
        free_port()
    ));
    let ids = queue_three_and_stop(&mut relay);

    let queue = relay.path("queue");
    std::fs::write(queue.join("snap.00000000000F0000"), [0xA5u8; 300]).expect("snapshot");
    relay.spawn_unready();
    let status = relay
        .wait_exit(Duration::from_secs(20))
        .expect("exits by itself");
    assert_eq!(status.code(), Some(65), "{}", relay.log());
    assert!(
        relay
            .log()
            .contains("cannot be opened: sled reports the database corrupt"),
        "{}",
        relay.log()
    );
    assert!(!relay.log().contains("panicked"), "{}", relay.log());

    let fresh = relay.path("queue.salvaged");
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["queue", "--config"])
        .arg(&relay.config_path)
        .args(["salvage", "--to"])
        .arg(&fresh)
        .output()
        .expect("salvage");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 message(s), 0 of them damaged"), "{said}");
    assert!(
        queue.join("snap.00000000000F0000").exists(),
        "the damaged queue is left as it was"
    );

    std::fs::rename(&queue, relay.path("queue.damaged")).expect("aside");
    std::fs::rename(&fresh, &queue).expect("in place");
    relay.spawn();
    assert_serves_every_message(&relay, &ids);
}

/// Queues three messages whose bodies are one to several chunks (0, 21 and 42
/// KiB), waits until each was deferred, then stops the relay cleanly; their
/// ids, sorted.
fn queue_three_and_stop(relay: &mut Relay) -> Vec<String> {
    let mut ids: Vec<String> = (0..3)
        .map(|i| {
            let body = format!("{}\r\n", "z".repeat(70)).repeat(300 * i);
            let msg = format!("Subject: keep {i}\r\n\r\n{body}");
            relay
                .send("s@src.test", &["r@dst.test"], msg.as_bytes())
                .expect("queued")
        })
        .collect();
    ids.sort();
    assert!(relay.wait_log("status=deferred", 3, Duration::from_secs(20)));
    relay.signal("TERM");
    assert!(relay
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    ids
}

/// The running relay lists exactly `ids` (sorted), and shows each in full.
fn assert_serves_every_message(relay: &Relay, ids: &[String]) {
    let mut listed: Vec<String> = relay
        .queue_json()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, ids);
    for id in ids {
        let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .args(["queue", "--config"])
            .arg(&relay.config_path)
            .args(["show", id])
            .output()
            .expect("show");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Subject: keep"));
    }
}
