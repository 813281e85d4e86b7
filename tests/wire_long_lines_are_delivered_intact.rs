//! Long lines, better than Postfix: PHP `mail()` with a one-line HTML body of
//! 3,000 bytes and cron's own `sendmail` call with a 3,000-byte output line
//! are queued (not refused with "nothing was sent"), reach the upstream
//! (aiosmtpd) with no line over 998 octets, and decode, read by Python's email
//! package, to exactly the text that was written.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Relay;

const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

fn assert_short_lines(message: &[u8]) {
    for line in message.split(|&b| b == b'\n') {
        assert!(
            line.len() <= 999,
            "a line of {} octets went out",
            line.len()
        );
    }
}

fn php_mail(relay: &Relay, html: &str) {
    if !common::require("php (php-cli)", common::have("php")) {
        return;
    }
    let path = format!(
        "sendmail_path={BIN} sendmail -t -i -C {}",
        relay.config_path.display()
    );
    let script = format!(
        "var_dump(mail('web@example.net', 'html', '{html}', \
         'From: app@example.com\\r\\nContent-Type: text/html; charset=utf-8'));"
    );
    let out = Command::new("php")
        .args(["-n", "-d", &path, "-r", &script])
        .env_remove("SMARTHOST_CONFIG")
        .output()
        .expect("php");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bool(true)"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian cron's call (cron's do_command.c): `-FCronDaemon -i -B8BITMIME -oem`.
fn cron(relay: &Relay, output: &str) {
    let mut child = Command::new(BIN)
        .args([
            "sendmail",
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "cron@example.net",
        ])
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    let mut stdin = child.stdin.take().expect("stdin");
    let message = format!(
        "Subject: Cron <root@host> backup\nContent-Type: text/plain; charset=UTF-8\n\n{output}"
    );
    stdin.write_all(message.as_bytes()).expect("write");
    drop(stdin);
    assert!(
        child.wait().expect("sendmail").success(),
        "sendmail refused the long line"
    );
}

#[test]
fn wire_long_lines_are_delivered_intact() {
    let peer = aiosmtpd::Peer::start(Vec::<String>::new());
    let relay = Relay::start(&common::upstream_route(peer.port, ""));
    let html = format!("<p>{}</p>", "Hello, w\u{f6}rld = 1. ".repeat(200));
    assert!(html.len() > 3000);
    php_mail(&relay, &html);
    let output = format!(
        "rsync: {}\nend of output\n",
        "/var/backups/file ".repeat(170)
    );
    cron(&relay, &output);
    let want = if common::have("php") { 2 } else { 1 };
    assert!(common::wait_for(Duration::from_secs(30), || peer
        .messages()
        .len()
        >= want));
    assert!(relay.wait_queue_empty(Duration::from_secs(30)));
    for (meta, message) in peer.messages() {
        assert_short_lines(&message);
        let text = common::decoded_text(&message);
        if meta["rcpt_tos"][0] == "web@example.net" {
            assert_eq!(text.trim_end_matches(['\r', '\n']), html);
        } else {
            assert_eq!(text.replace("\r\n", "\n"), output);
        }
    }
}
