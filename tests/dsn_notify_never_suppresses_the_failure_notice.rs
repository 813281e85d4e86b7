//! NOTIFY=NEVER (RFC 3461 4.1): a recipient the upstream (a private Postfix)
//! refuses with 550 is bounced without a notice, while the same refusal for a
//! recipient that left NOTIFY alone brings its sender a failure notice that
//! returns the whole message (RET=FULL). The proof of absence is positive: the
//! second message's notice and a sentinel both arrive after the first
//! message's refusal, and the queue is empty.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use std::time::Duration;

use common::{Client, Relay};
use postfix::{parse_report, Postfix};

const REFUSE: &str = "smtpd_recipient_restrictions = \
    check_recipient_access inline:{ {gone@example.net=REJECT no such user} }, \
    permit_mynetworks, reject";

/// One message from `from` to gone@example.net; `params` go on its RCPT.
fn send(relay: &Relay, from: &str, mail_params: &str, rcpt_params: &str, subject: &str) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd(&format!("MAIL FROM:<{from}>{mail_params}"), 250);
    c.expect_cmd(&format!("RCPT TO:<gone@example.net>{rcpt_params}"), 250);
    c.expect_cmd("DATA", 354);
    c.write(format!("Subject: {subject}\r\n\r\nthe body\r\n.\r\n").as_bytes());
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
}

#[test]
fn notify_never_suppresses_the_failure_notice() {
    let Some(pf) = Postfix::start(REFUSE) else {
        return;
    };
    let relay = Relay::start(&common::upstream_route(pf.port, ""));
    send(
        &relay,
        "quiet@example.com",
        "",
        " NOTIFY=NEVER",
        "never tell",
    );
    let refused = "to=<gone@example.net>";
    assert!(
        relay.wait_log(refused, 1, Duration::from_secs(30)),
        "{}",
        relay.log()
    );
    send(&relay, "loud@example.com", " RET=FULL", "", "tell me");
    assert!(
        relay.wait_log(refused, 2, Duration::from_secs(30)),
        "{}",
        relay.log()
    );
    relay.sentinel();
    let held = pf.settled(&relay, 2);

    let notices: Vec<_> = held.iter().filter(|h| h.is_notice()).collect();
    assert_eq!(notices.len(), 1, "one notice, for loud@");
    assert_eq!(notices[0].records("recipient"), ["loud@example.com"]);
    let r = parse_report(&notices[0].body);
    let rcpts = r["recipients"].as_array().expect("recipients");
    assert_eq!(rcpts.len(), 1, "{r}");
    assert_eq!(rcpts[0]["Action"], "failed");
    assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; gone@example.net");
    assert!(rcpts[0]["Status"]
        .as_str()
        .is_some_and(|s| s.starts_with("5.")));
    let diagnostic = rcpts[0]["Diagnostic-Code"].as_str().unwrap_or_default();
    assert!(diagnostic.contains("no such user"), "{r}");
    // RET=FULL: the whole message comes back.
    assert_eq!(r["returned"]["type"], "message/rfc822", "{r}");
    assert_eq!(r["returned"]["subject"], "tell me");
    assert!(r["returned"]["body"]
        .as_str()
        .is_some_and(|b| b.contains("the body")));
}
