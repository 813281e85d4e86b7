//! Delay warnings: a message an upstream (a private Postfix) keeps deferring
//! brings its sender one `Action: delayed` notice once it has waited
//! `delay_warning`, listing every still-deferred recipient whose NOTIFY allows
//! DELAY, and no second one however many attempts follow. A message from the
//! null sender is never warned about.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use std::time::Duration;

use common::{Client, Relay};
use postfix::{parse_report, Postfix};

const DEFER: &str = "smtpd_recipient_restrictions = \
    check_recipient_access inline:{ {slow@example.net=450 4.2.0 try later} \
    {slower@example.net=450 4.2.0 try later} }, permit_mynetworks, reject";

fn send(relay: &Relay, from: &str, rcpts: &[&str]) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd(&format!("MAIL FROM:<{from}>"), 250);
    for r in rcpts {
        c.expect_cmd(&format!("RCPT TO:<{r}>"), 250);
    }
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: running late\r\n\r\nhello\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
}

/// How many attempts the queue shows for the message from `sender`.
fn attempts(relay: &Relay, sender: &str) -> u64 {
    let queue = relay.queue_json().unwrap_or_default();
    let m = queue.iter().find(|m| m["sender"] == sender);
    let rcpts = m
        .and_then(|m| m["recipients"].as_array().cloned())
        .unwrap_or_default();
    rcpts
        .iter()
        .filter_map(|r| r["attempts"].as_u64())
        .min()
        .unwrap_or(0)
}

#[test]
fn delay_warning_is_sent_once() {
    let Some(pf) = Postfix::start(DEFER) else {
        return;
    };
    let route = common::upstream_route(pf.port, "");
    let relay = Relay::start(&format!(
        "retry = \"F,1h,1s\"\ndelay_warning = \"2s\"\n{route}"
    ));
    send(&relay, "alice@example.com", &["slow@example.net"]);
    // NOTIFY=FAILURE leaves DELAY out: slower@ is not listed.
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<bert@example.com>", 250);
    c.expect_cmd("RCPT TO:<slow@example.net> NOTIFY=DELAY,FAILURE", 250);
    c.expect_cmd("RCPT TO:<slower@example.net> NOTIFY=FAILURE", 250);
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: two late\r\n\r\nhello\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 "));
    drop(c);
    send(&relay, "", &["slow@example.net"]);

    // Both senders warned; then at least three more attempts each, and
    // still one warning per message.
    let held = pf.wait_held(2);
    let after: Vec<u64> = ["alice@example.com", "bert@example.com", ""]
        .iter()
        .map(|s| attempts(&relay, s))
        .collect();
    let more = common::wait_for(Duration::from_secs(60), || {
        ["alice@example.com", "bert@example.com", ""]
            .iter()
            .zip(&after)
            .all(|(s, a)| attempts(&relay, s) >= a + 3)
    });
    assert!(more, "no further attempts: {}", relay.log());
    assert_eq!(pf.held_ids().len(), 2, "{}", pf.log());

    for h in &held {
        assert!(h.is_notice(), "{}", h.envelope);
        let to = h.records("recipient");
        let r = parse_report(&h.body);
        assert_eq!(r["subject"], "Delayed Mail (still being retried)", "{r}");
        let rcpts = r["recipients"].as_array().expect("recipients");
        assert_eq!(rcpts.len(), 1, "{to:?}: {r}");
        assert_eq!(rcpts[0]["Action"], "delayed");
        assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; slow@example.net");
        assert_eq!(rcpts[0]["Status"], "4.2.0");
        assert!(rcpts[0]["Will-Retry-Until"].is_string(), "{r}");
        assert_eq!(r["returned"]["type"], "text/rfc822-headers");
    }
    let mut warned: Vec<String> = held.iter().flat_map(|h| h.records("recipient")).collect();
    warned.sort();
    assert_eq!(warned, ["alice@example.com", "bert@example.com"]);
}
