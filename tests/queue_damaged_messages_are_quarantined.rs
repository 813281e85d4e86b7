//! A message whose records are damaged on disk (an envelope that no longer
//! decodes, a lost body part) is quarantined: `queue list` shows it with the
//! reason, it is never retried, the metric counts it, `/healthz` says
//! degraded, and `queue delete` / `queue bounce` take it out by id while the
//! rest of the queue goes on.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use common::{free_port, http, metrics_addr, Relay};

fn config() -> String {
    // The route points at a closed port: every attempt defers, so the
    // messages stay queued for the test to damage.
    format!(
        r#"retry = "F,1h,1h"
[[route]]
name = "up"
host = "127.0.0.1"
port = {}
tls = "none"
[routing]
default = "up"
[metrics]
listen = "127.0.0.1:0"
"#,
        free_port()
    )
}

fn queue(relay: &Relay, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["queue", "--config"])
        .arg(&relay.config_path)
        .args(args)
        .output()
        .expect("queue command")
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http(addr, "GET", path);
    (status, body)
}

fn damaged_gauge(relay: &Relay) -> String {
    let (_, text) = http_get(metrics_addr(relay), "/metrics");
    text.lines()
        .find(|l| l.starts_with("smarthost_queue_damaged_messages "))
        .expect("gauge")
        .to_string()
}

/// Damages the stopped relay's queue the way a disk does, below the relay:
/// one message's envelope is overwritten, another's first body part removed.
fn damage(relay: &Relay, garbled: &str, bodiless: &str) {
    // Text lines, then a CRC.
    let conf = std::fs::read(relay.path("queue/conf")).expect("conf");
    let conf = String::from_utf8_lossy(&conf);
    let segment: usize = conf
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("segment size");
    let db = sled::Config::new()
        .path(relay.path("queue"))
        .segment_size(segment)
        .open()
        .expect("open queue");
    let mut meta = b"m".to_vec();
    meta.extend_from_slice(garbled.as_bytes());
    assert!(db
        .insert(meta, &b"{\"sender\": 17"[..])
        .expect("insert")
        .is_some());
    let mut chunk = b"b".to_vec();
    chunk.extend_from_slice(bodiless.as_bytes());
    chunk.extend_from_slice(b"/\0\0\0\0");
    assert!(db.remove(chunk).expect("remove").is_some());
    db.flush().expect("flush");
}

#[test]
fn damaged_messages_are_listed_never_retried_and_removable() {
    let mut relay = Relay::start(&config());
    let ids = queue_three_and_stop(&mut relay);
    let (garbled, bodiless, healthy) = (&ids[0], &ids[1], &ids[2]);
    damage(&relay, garbled, bodiless);
    relay.spawn();

    assert_listed_as_damaged(&relay, garbled);
    assert_found_damaged_by_a_flush(&relay, bodiless, healthy);
    assert_removed_by_id(&relay, garbled, bodiless, healthy);

    // Nothing of them comes back at the next start.
    relay.restart();
    assert!(relay
        .queue_json()
        .expect("list")
        .iter()
        .all(|m| m.get("damaged").is_none()));
}

/// Queues three messages, waits until each was deferred, then stops the relay
/// cleanly; their ids.
fn queue_three_and_stop(relay: &mut Relay) -> Vec<String> {
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let msg = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
            relay
                .send(
                    &format!("s{i}@src.test"),
                    &[&format!("r{i}@dst.test")],
                    msg.as_bytes(),
                )
                .expect("queued")
        })
        .collect();
    assert!(
        relay.wait_log("status=deferred", 3, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    relay.signal("TERM");
    assert!(relay
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    ids
}

/// The message whose envelope no longer decodes is listed with its reason
/// (the others as they were), logged as quarantined, counted, and makes
/// `/healthz` say degraded.
fn assert_listed_as_damaged(relay: &Relay, garbled: &str) {
    let listed = relay.queue_json().expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let entry = listed.iter().find(|m| m["id"] == garbled).expect("listed");
    assert!(
        entry["damaged"]
            .as_str()
            .expect("reason")
            .contains("does not decode"),
        "{entry}"
    );
    let text = String::from_utf8_lossy(&queue(relay, &["list"]).stdout).into_owned();
    assert!(
        text.contains(&format!("{garbled}  DAMAGED, never tried")),
        "{text}"
    );
    assert!(
        relay.log().contains(&format!("{garbled}: quarantined")),
        "{}",
        relay.log()
    );
    assert_eq!(damaged_gauge(relay), "smarthost_queue_damaged_messages 1");
    let (status, body) = http_get(metrics_addr(relay), "/healthz");
    assert_eq!((status, body.as_str()), (200, "degraded: 1 damaged message(s) quarantined in the queue (see `smarthost queue list`)\n"));
}

/// The lost body is found by the attempt a flush starts: quarantined, never
/// tried again; a flush of everything skips the damaged and tries `healthy`.
fn assert_found_damaged_by_a_flush(relay: &Relay, bodiless: &str, healthy: &str) {
    let out = queue(relay, &["flush", bodiless]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        relay.wait_log("body part 0 of 1 is missing", 1, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    assert_eq!(damaged_gauge(relay), "smarthost_queue_damaged_messages 2");
    let listed = relay.queue_json().expect("list");
    let entry = listed.iter().find(|m| m["id"] == bodiless).expect("listed");
    assert!(
        entry["damaged"]
            .as_str()
            .expect("reason")
            .contains("missing"),
        "{entry}"
    );
    let out = queue(relay, &["flush", bodiless]);
    assert!(!out.status.success(), "a damaged message is not flushed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("damaged"));
    let tried_before = relay.log().matches(&format!("{healthy}: to=")).count();
    assert!(queue(relay, &["flush", "--all"]).status.success());
    assert!(relay.wait_log(
        &format!("{healthy}: to="),
        tried_before + 1,
        Duration::from_secs(20)
    ));
}

/// Removed by id: the unreadable one silently, the bodiless one with a notice
/// to its sender; `healthy` stays, and the relay is healthy again.
fn assert_removed_by_id(relay: &Relay, garbled: &str, bodiless: &str, healthy: &str) {
    let out = queue(relay, &["delete", garbled]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = queue(relay, &["bounce", bodiless]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bounced (damaged"));
    assert!(relay
        .log()
        .contains(&format!("{bodiless}: sender non-delivery notification")));
    assert_eq!(damaged_gauge(relay), "smarthost_queue_damaged_messages 0");
    let (status, body) = http_get(metrics_addr(relay), "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let listed = relay.queue_json().expect("list");
    let left: Vec<&str> = listed.iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(left.contains(&healthy));
    assert!(!left.contains(&garbled) && !left.contains(&bodiless));
    assert!(listed.iter().all(|m| m.get("damaged").is_none()));
}
