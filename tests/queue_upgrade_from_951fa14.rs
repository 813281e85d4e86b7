//! A queue written by main 951fa14 (whole envelopes, one record each; made by
//! `tests/fixtures/queue-951fa14/make.sh`) is converted at the first start to
//! per-recipient records, and nothing is lost, also when the daemon is killed
//! in the middle of the conversion.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{captured, free_port, wait_for, Relay};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/queue-951fa14");

const CAPTURE: &str = r#"[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[routing]
default = "capture"
"#;

fn unpack_fixture(dir: &Path) {
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(Path::new(FIXTURE).join("queue.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar");
    assert!(status.success());
}

/// What 951fa14's `queue list --json` said of its queue.
fn expected() -> Vec<serde_json::Value> {
    std::fs::read_to_string(Path::new(FIXTURE).join("expected.jsonl"))
        .expect("expected.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn addresses(v: &serde_json::Value) -> Vec<String> {
    v["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            r["address"]
                .as_str()
                .unwrap_or(r.as_str().unwrap_or(""))
                .to_string()
        })
        .collect()
}

/// Every message of the fixture is either delivered (the six not held, with
/// every recipient) or still queued, held, as it was.
fn assert_fixture_intact(relay: &Relay) {
    let expected = expected();
    assert_eq!(expected.len(), 7);
    let out = relay.path("out");
    assert!(
        wait_for(Duration::from_secs(30), || captured(&out).len() >= 6),
        "six messages delivered; log:\n{}",
        relay.log()
    );
    let got = captured(&out);
    assert_eq!(got.len(), 6);
    for e in expected.iter().filter(|e| e["held"] != true) {
        let copy = got
            .iter()
            .find(|(meta, _)| meta["queue_id"] == e["id"])
            .unwrap_or_else(|| panic!("{} not delivered", e["id"]));
        assert_eq!(copy.0["sender"], e["sender"]);
        assert_eq!(addresses(&copy.0), addresses(e), "{}", e["id"]);
    }
    let list = expected
        .iter()
        .find(|e| e["sender"] == "list@shop.example")
        .expect("list");
    assert_eq!(addresses(list).len(), 100);

    // Delivered messages leave the queue once their outcome is recorded.
    let held: Vec<&serde_json::Value> = expected.iter().filter(|e| e["held"] == true).collect();
    assert_eq!(held.len(), 1);
    assert!(
        wait_for(Duration::from_secs(20), || relay
            .queue_json()
            .is_ok_and(|q| q.len() == 1)),
        "only the held message stays: {:?}",
        relay.queue_json()
    );
    let queue = relay.queue_json().expect("queue list");
    assert_eq!(queue[0]["id"], held[0]["id"]);
    assert_eq!(queue[0]["held"], true);
    assert_eq!(addresses(&queue[0]), addresses(held[0]));
    assert_eq!(
        queue[0]["recipients"][0]["attempts"],
        held[0]["recipients"][0]["attempts"]
    );
}

#[test]
fn a_951fa14_queue_is_converted_at_the_first_start() {
    let mut relay = Relay::start_with(CAPTURE, &[], unpack_fixture);
    assert!(
        relay
            .log()
            .contains("queue: 7 message(s) converted to per-recipient records"),
        "{}",
        relay.log()
    );
    relay
        .queue_json()
        .expect("listed")
        .iter()
        .for_each(|m| assert!(m.get("damaged").is_none(), "{m}"));
    flush(&relay);
    assert_fixture_intact(&relay);
    // A second start finds nothing left in the old form.
    relay.restart();
    assert_eq!(
        relay
            .log()
            .matches("converted to per-recipient records")
            .count(),
        1
    );
    assert_fixture_intact(&relay);
}

#[test]
fn a_kill_in_the_middle_of_the_upgrade_loses_nothing() {
    let relay = Relay::start_with(CAPTURE, &[], |dir| {
        unpack_fixture(dir);
        // Two starts, each killed after two more messages were converted.
        for round in 1..=2 {
            let log = kill_after_conversions(dir, 2 * round);
            assert!(log.contains("converted to per-recipient records"), "{log}");
        }
    });
    let log = relay.log();
    assert!(
        log.contains("queue: 3 message(s) converted"),
        "the third start converts the three left: {log}"
    );
    flush(&relay);
    assert_fixture_intact(&relay);
}

/// Starts the daemon on the queue in `dir`, slowed to one conversion per
/// 200 ms, and SIGKILLs it once its log shows `total` conversions in all.
fn kill_after_conversions(dir: &Path, total: usize) -> String {
    let config = dir.join("killed.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{}\"]\nqueue_path = \"{q}\"\n{}\n[local]\nsocket_dir = \"{d}/run\"\ndrop_dir = \"{d}/drop\"\n",
            free_port(),
            CAPTURE.replace("{dir}", &dir.display().to_string()),
            q = dir.join("queue").display(),
            d = dir.display(),
        ),
    )
    .expect("config");
    let log_path = dir.join("killed.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env("SMARTHOST_TEST_UPGRADE_PAUSE_MS", "200")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let converted = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("converted to per-recipient records")
            .count()
    };
    let reached = wait_for(Duration::from_secs(20), || converted() >= total);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(reached, "the upgrade did not get to {total}: {text}");
    assert!(
        !text.contains("smarthost ready"),
        "killed after the upgrade: {text}"
    );
    text
}

fn flush(relay: &Relay) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["queue", "--config"])
        .arg(&relay.config_path)
        .args(["flush", "--all"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
