//! RFC 3461 5.2.2: a recipient sent with NOTIFY=SUCCESS to an upstream that
//! does not offer DSN (Postfix told to hide it; aiosmtpd, which has none) gets
//! exactly one "relayed" notice from the relay, which Python's email package
//! reads as a delivery-status report naming that recipient, its ORCPT and the
//! ENVID. A recipient without NOTIFY=SUCCESS gets none.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/postfix.rs"]
mod postfix;

use std::time::Duration;

use common::{Client, Relay};
use postfix::{parse_report, Postfix};

/// alice sends to bob (NOTIFY=SUCCESS, ORCPT) and carol (no NOTIFY).
fn send(relay: &Relay) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<alice@example.com> ENVID=QQ+2B1", 250);
    c.expect_cmd(
        "RCPT TO:<bob@example.net> NOTIFY=SUCCESS ORCPT=rfc822;b+2Bob@example.net",
        250,
    );
    c.expect_cmd("RCPT TO:<carol@example.net>", 250);
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: tell me\r\n\r\nhello\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
}

/// The one relayed notice, as Python reads it.
fn assert_relayed(notice: &[u8]) {
    let r = parse_report(notice);
    assert_eq!(r["report_type"], "delivery-status", "{r}");
    assert_eq!(r["to"], "alice@example.com");
    assert_eq!(r["auto_submitted"], "auto-replied");
    assert_eq!(r["message"]["Original-Envelope-Id"], "QQ+1", "{r}");
    let rcpts = r["recipients"].as_array().expect("recipients");
    assert_eq!(rcpts.len(), 1, "only bob asked: {r}");
    assert_eq!(rcpts[0]["Action"], "relayed");
    assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; bob@example.net");
    assert_eq!(rcpts[0]["Original-Recipient"], "rfc822; b+ob@example.net");
    assert!(rcpts[0]["Status"]
        .as_str()
        .is_some_and(|s| s.starts_with("2.")));
    assert_eq!(r["returned"]["type"], "text/rfc822-headers");
    let headers = r["returned"]["body"].as_str().unwrap_or_default();
    assert!(headers.contains("Subject: tell me"), "{r}");
}

#[test]
fn postfix_without_dsn() {
    let Some(pf) = Postfix::start("smtpd_discard_ehlo_keywords = dsn") else {
        return;
    };
    let relay = Relay::start(&common::upstream_route(pf.port, ""));
    send(&relay);
    relay.sentinel();
    let held = pf.settled(&relay, 3);
    let notices: Vec<_> = held.iter().filter(|h| h.is_notice()).collect();
    assert_eq!(notices.len(), 1, "one relayed notice");
    assert_eq!(notices[0].records("recipient"), ["alice@example.com"]);
    // Postfix never heard NOTIFY: it was hidden from the relay.
    let original = held
        .iter()
        .find(|h| h.record("sender").as_deref() == Some("alice@example.com"));
    let original = original.expect("the original");
    assert!(
        original.records("notify_flags").is_empty(),
        "{}",
        original.envelope
    );
    assert_relayed(&notices[0].body);
}

#[test]
fn aiosmtpd_without_dsn() {
    let peer = aiosmtpd::Peer::start(Vec::<String>::new());
    let relay = Relay::start(&common::upstream_route(peer.port, ""));
    send(&relay);
    relay.sentinel();
    assert!(common::wait_for(Duration::from_secs(30), || peer
        .messages()
        .len()
        >= 3));
    assert!(relay.wait_queue_empty(Duration::from_secs(30)));
    let messages = peer.messages();
    assert_eq!(messages.len(), 3);
    let notices: Vec<_> = messages
        .iter()
        .filter(|(m, _)| m["mail_from"] == "<>" || m["mail_from"] == "")
        .collect();
    assert_eq!(notices.len(), 1, "one relayed notice: {messages:?}");
    assert_eq!(
        notices[0].0["rcpt_tos"],
        serde_json::json!(["alice@example.com"])
    );
    assert_relayed(&notices[0].1);
}
