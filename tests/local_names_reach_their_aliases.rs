//! Mail for local names goes where `/etc/aliases` says, as it did under
//! Postfix: cron's own `sendmail` call to `root` reaches every target of an
//! alias written with a list, a continuation line and an `:include:` file;
//! a name with no alias goes to `admin_address`; a loop or a pipe is refused
//! at RCPT with a clear reply; `newaliases` reports a loop (exit 65) and,
//! once the file is fixed, makes the running daemon use it at once. A file
//! the daemon cannot parse makes local names wait (451), never bounce.
//! Every message reaches the upstream (aiosmtpd) as the envelope shows.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Client, Relay};

const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

fn aliases(dir: &Path) -> String {
    format!(
        "# Debian's file, and ours\n\
         postmaster:    root\n\
         root: ops@example.net,\n  \
         oncall@example.net,\n\
         \tteam\n\
         team: :include:{}/team.list\n\
         cron: root\n\
         loopa: loopb\n\
         loopb: loopa\n\
         prog: \"|/usr/bin/procmail\"\n",
        dir.display()
    )
}

/// Debian cron's call (cron's do_command.c): `-FCronDaemon -i -B8BITMIME -oem`.
fn cron_mail(relay: &Relay, to: &str) {
    let mut child = Command::new(BIN)
        .args(["sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", to])
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"Subject: Cron <root@relay> backup\n\nall done\n")
        .expect("write");
    drop(stdin);
    assert!(child.wait().expect("sendmail").success(), "sendmail failed");
}

fn newaliases(relay: &Relay) -> Output {
    Command::new(BIN)
        .arg("newaliases")
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .output()
        .expect("newaliases")
}

/// The recipients of each message the upstream got, in arrival order.
fn delivered(peer: &aiosmtpd::Peer, count: usize) -> Vec<BTreeSet<String>> {
    assert!(
        common::wait_for(Duration::from_secs(30), || peer.messages().len() >= count),
        "{} of {count} messages arrived",
        peer.messages().len()
    );
    peer.messages()
        .iter()
        .map(|(meta, _)| {
            let tos = meta["rcpt_tos"].as_array().expect("rcpt_tos");
            tos.iter()
                .map(|t| t.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

/// RCPT replies for `names`, in one transaction, then the message sent.
fn rcpt_replies(relay: &Relay, names: &[&str]) -> Vec<String> {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    let replies = names
        .iter()
        .map(|n| c.cmd(&format!("RCPT TO:<{n}>")))
        .collect();
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: to local names\r\n\r\nhello\r\n.\r\n");
    c.expect(250);
    let _ = c.cmd("QUIT");
    replies
}

#[test]
fn local_names_reach_their_aliases() {
    let peer = aiosmtpd::Peer::start(Vec::<String>::new());
    let body = format!(
        "{}[local]\nadmin_address = \"admin@example.net\"\n",
        common::upstream_route(peer.port, "")
    );
    let relay = Relay::start_with(&body, &[], |dir| {
        std::fs::write(dir.join("aliases"), aliases(dir)).expect("aliases");
        std::fs::write(dir.join("team.list"), "alice@example.net\n# away\nbob\n").expect("list");
    });

    // root: the list, the continuation lines, the included file, and bob
    // (no alias of his own) through admin_address.
    cron_mail(&relay, "root");
    let root = set(&[
        "ops@example.net",
        "oncall@example.net",
        "alice@example.net",
        "admin@example.net",
    ]);
    assert_eq!(delivered(&peer, 1)[0], root);

    let replies = rcpt_replies(&relay, &["loopa", "prog@relay.test", "www-data@relay.test"]);
    assert!(replies[0].starts_with("550 5.1.1"), "{replies:?}");
    assert!(
        replies[0].contains("alias loop: loopa -> loopb -> loopa"),
        "{replies:?}"
    );
    assert!(replies[1].starts_with("550 5.1.1"), "{replies:?}");
    assert!(replies[1].contains("does not run programs"), "{replies:?}");
    assert!(replies[2].starts_with("250"), "{replies:?}");
    assert_eq!(delivered(&peer, 2)[1], set(&["admin@example.net"]));

    check_newaliases(&relay, &peer);
    broken_file_defers(&relay);
    assert!(relay.wait_queue_empty(Duration::from_secs(30)));
}

/// newaliases refuses a file with a loop, then reloads the daemon with the
/// fixed one: the new alias works on the next message, with no restart.
fn check_newaliases(relay: &Relay, peer: &aiosmtpd::Peer) {
    let out = newaliases(relay);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("alias loop"), "{stderr}");

    let fixed = aliases(relay.dir.path())
        .replace("loopb: loopa\n", "loopb: web\n")
        .replace(
            "prog: \"|/usr/bin/procmail\"\n",
            "web: web-team@example.net\n",
        );
    std::fs::write(relay.path("aliases"), fixed).expect("aliases");
    let out = newaliases(relay);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("7 aliases"), "{stdout}");
    assert!(
        relay.wait_log("reloaded:", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    cron_mail(relay, "loopa");
    assert_eq!(delivered(peer, 3)[2], set(&["web-team@example.net"]));
}

/// A file the daemon cannot parse: mail for local names waits (451) and
/// mail for real addresses still goes.
fn broken_file_defers(relay: &Relay) {
    std::fs::write(relay.path("aliases"), "root ops@example.net\n").expect("aliases");
    relay.signal("HUP");
    assert!(
        relay.wait_log("reloaded:", 2, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    let reply = c.cmd("RCPT TO:<root>");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    c.expect_cmd("RCPT TO:<someone@example.net>", 250);
    let _ = c.cmd("QUIT");
    let out = newaliases(relay);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("aliases:1:"),
        "{out:?}"
    );
}
