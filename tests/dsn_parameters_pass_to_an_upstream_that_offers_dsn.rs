//! RFC 3461 end to end through an upstream that offers DSN (a private
//! Postfix): RET, ENVID, NOTIFY and ORCPT given over SMTP or to `sendmail
//! -N/-R/-V` (through the socket, or the drop directory while the daemon is
//! down) reach it exactly as given (read back with `postcat`), and the
//! relay sends no notice of its own for them. A malformed parameter gets
//! `501 5.5.4` naming it and nothing is stored.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Client, Relay, SENTINEL_TO};
use postfix::{Held, Postfix};

// Postfix's dsn_mask.h: NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8; RET FULL 1, HDRS 2.
const SUCCESS_DELAY: &str = "10";
const SUCCESS: &str = "2";
const NEVER: &str = "1";

fn by_recipient<'a>(held: &'a [Held], to: &str) -> &'a Held {
    let found = held
        .iter()
        .find(|h| h.records("recipient").iter().any(|r| r == to));
    found.unwrap_or_else(|| panic!("nothing held for {to}"))
}

/// Over SMTP: a message with every parameter, after two refused commands.
fn send_with_parameters(relay: &Relay) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    let ehlo = c.expect_cmd("EHLO client.test", 250);
    assert!(ehlo.contains("250-DSN"), "DSN not advertised: {ehlo}");
    let bad = c.cmd("MAIL FROM:<alice@example.com> RET=PART");
    assert!(bad.starts_with("501 5.5.4 Bad RET parameter"), "{bad}");
    c.expect_cmd("MAIL FROM:<alice@example.com> RET=HDRS ENVID=QQ+2B1", 250);
    let bad = c.cmd("RCPT TO:<bob@example.net> NOTIFY=SOMETIMES");
    assert!(bad.starts_with("501 5.5.4 Bad NOTIFY parameter"), "{bad}");
    c.expect_cmd(
        "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bob@example.net",
        250,
    );
    c.expect_cmd("RCPT TO:<carol@example.net>", 250);
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: with parameters\r\n\r\nhello\r\n.\r\n");
    let done = c.read_reply();
    assert!(done.starts_with("250 "), "{done}");
    c.expect_cmd("QUIT", 221);
}

/// Through `sendmail -N -R -V`: an ENVID with a space goes as xtext.
fn sendmail_with_parameters(relay: &Relay, args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["sendmail", "-f", "alice@example.com"])
        .args(args)
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"Subject: by sendmail\n\nhello\n")
        .expect("write");
    drop(stdin);
    assert!(child.wait().expect("sendmail").success());
}

#[test]
fn dsn_parameters_pass_to_an_upstream_that_offers_dsn() {
    let Some(pf) = Postfix::start("") else {
        return;
    };
    let mut relay = Relay::start(&common::upstream_route(pf.port, ""));
    send_with_parameters(&relay);
    let sendmail = [
        "-N",
        "success",
        "-R",
        "full",
        "-V",
        "env 1",
        "dave@example.net",
    ];
    sendmail_with_parameters(&relay, &sendmail);
    // With the daemon down, sendmail leaves the message in the drop directory.
    relay.kill();
    sendmail_with_parameters(
        &relay,
        &["-N", "never", "-V", "dropped", "erin@example.net"],
    );
    relay.restart();
    // The sentinel goes last: once it is held and the queue is empty, any
    // notice the relay made would be held or queued too.
    relay.sentinel();
    let held = pf.settled(&relay, 4);
    for h in &held {
        assert!(!h.is_notice(), "a notice: {}", h.envelope);
    }

    assert_exactly_as_given(&held);
}

/// Each message's DSN records, as Postfix parsed them.
fn assert_exactly_as_given(held: &[Held]) {
    let smtp = by_recipient(held, "bob@example.net");
    assert_eq!(smtp.record("envelope_id").as_deref(), Some("QQ+1"));
    assert_eq!(smtp.record("ret_flags").as_deref(), Some("2"));
    assert_eq!(smtp.records("notify_flags"), [SUCCESS_DELAY]);
    // Postfix records an ORCPT of its own making for a recipient given none.
    assert_eq!(
        smtp.records("dsn_orig_rcpt"),
        ["rfc822;b+ob@example.net", "rfc822;carol@example.net"]
    );
    assert_eq!(
        smtp.records("recipient"),
        ["bob@example.net", "carol@example.net"]
    );

    let sendmail = by_recipient(held, "dave@example.net");
    assert_eq!(sendmail.record("envelope_id").as_deref(), Some("env 1"));
    assert_eq!(sendmail.record("ret_flags").as_deref(), Some("1"));
    assert_eq!(sendmail.records("notify_flags"), [SUCCESS]);

    let dropped = by_recipient(held, "erin@example.net");
    assert_eq!(dropped.record("envelope_id").as_deref(), Some("dropped"));
    assert_eq!(dropped.records("notify_flags"), [NEVER]);
    assert!(
        dropped.record("ret_flags").is_none(),
        "{}",
        dropped.envelope
    );

    // Without parameters, none are invented.
    let sentinel = by_recipient(held, SENTINEL_TO);
    assert!(
        sentinel.record("envelope_id").is_none(),
        "{}",
        sentinel.envelope
    );
    assert!(
        sentinel.records("notify_flags").is_empty(),
        "{}",
        sentinel.envelope
    );
}
