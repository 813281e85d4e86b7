//! Outbound address mapping (`[local.generic]`, Postfix's
//! `smtp_generic_maps`): with `/etc/mailname` saying `host.lan`, a PHP app
//! sending as `www-data` and cron sending as `root` are queued as
//! `www-data@host.lan` and `root@host.lan`, and reach the upstream (aiosmtpd)
//! as `noreply@example.com` (an exact entry) and `root@example.com` (the
//! domain entry), in the envelope and in From. A sender no entry matches
//! leaves as it came.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Relay;

const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

fn sendmail(relay: &Relay, args: &[&str], message: &str) {
    let mut child = Command::new(BIN)
        .arg("sendmail")
        .args(args)
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(message.as_bytes()).expect("write");
    drop(stdin);
    assert!(child.wait().expect("sendmail").success(), "sendmail failed");
}

fn header(message: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(message);
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Each message's envelope sender and From, as the upstream got them.
fn envelope_and_from(peer: &aiosmtpd::Peer) -> Vec<(String, String)> {
    peer.messages()
        .iter()
        .map(|(meta, message)| {
            let from = meta["mail_from"].as_str().unwrap_or_default().to_string();
            (from, header(message, "From"))
        })
        .collect()
}

#[test]
fn local_generic_maps_the_sender() {
    let peer = aiosmtpd::Peer::start(Vec::<String>::new());
    let body = format!(
        "{}[local.generic]\n\"www-data@host.lan\" = \"noreply@example.com\"\n\"@host.lan\" = \"@example.com\"\n",
        common::upstream_route(peer.port, "")
    );
    let relay = Relay::start_with(&body, &[], |dir| {
        std::fs::write(dir.join("mailname"), "host.lan\n").expect("mailname");
    });
    // PHP's mail(): sendmail -t -i, with the From the app wrote.
    sendmail(
        &relay,
        &["-t", "-i", "-f", "www-data"],
        "From: Shop <www-data>\nTo: buyer@example.net\nSubject: order\n\nthanks\n",
    );
    // Debian cron's call (cron's do_command.c), as root.
    sendmail(
        &relay,
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "-f",
            "root",
            "ops@example.net",
        ],
        "Subject: Cron <root@host> backup\n\ndone\n",
    );
    relay
        .send(
            "app@example.org",
            &["ops@example.net"],
            b"From: app@example.org\r\nSubject: app\r\n\r\nhi\r\n",
        )
        .expect("smtp");
    assert!(common::wait_for(Duration::from_secs(30), || peer
        .messages()
        .len()
        >= 3));
    assert!(relay.wait_queue_empty(Duration::from_secs(30)));

    let log = relay.log();
    for queued in ["from=<www-data@host.lan>", "from=<root@host.lan>"] {
        assert!(log.contains(queued), "queued as {queued}? {log}");
    }
    let mut seen = envelope_and_from(&peer);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("app@example.org".to_string(), "app@example.org".to_string()),
            (
                "noreply@example.com".to_string(),
                "Shop <noreply@example.com>".to_string()
            ),
            (
                "root@example.com".to_string(),
                "CronDaemon <root@example.com>".to_string()
            ),
        ]
    );
}
