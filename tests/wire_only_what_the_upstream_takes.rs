//! Only what the upstream takes (RFC 6152, 6531 3.2, 1870): to a Postfix that
//! offers neither 8BITMIME nor SMTPUTF8 and takes at most 20,000 bytes, an
//! 8-bit message arrives converted to 7 bit and reads back, by Python's email
//! package, as the original text; one that needs SMTPUTF8 bounces `5.6.7` and
//! one over its SIZE bounces `5.3.4`, neither sent. Inbound, a non-ASCII
//! recipient without SMTPUTF8 on MAIL gets `553 5.6.7`.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use common::{Client, Relay};
use postfix::{parse_report, Held, Postfix};

const LIMITS: &str = "smtpd_discard_ehlo_keywords = 8bitmime, smtputf8\nmessage_size_limit = 20000";

const TEXT: &str = "Gr\u{fc}\u{df}e aus K\u{f6}ln = 3 \u{20ac}\r\n";

fn send(relay: &Relay, mail: &str, rcpt: &str, message: &str) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd(mail, 250);
    c.expect_cmd(rcpt, 250);
    c.expect_cmd("DATA", 354);
    c.write(message.as_bytes());
    c.write(b".\r\n");
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
}

fn notice_status(held: &[Held], original_to: &str) -> String {
    for h in held.iter().filter(|h| h.is_notice()) {
        let r = parse_report(&h.body);
        let rcpt = &r["recipients"][0];
        if rcpt["Final-Recipient"]
            .as_str()
            .is_some_and(|f| f.ends_with(original_to))
        {
            return rcpt["Status"].as_str().unwrap_or_default().to_string();
        }
    }
    panic!("no notice about {original_to}");
}

#[test]
fn wire_only_what_the_upstream_takes() {
    let Some(pf) = Postfix::start(LIMITS) else {
        return;
    };
    let relay = Relay::start(&common::upstream_route(pf.port, ""));
    // Inbound: non-ASCII recipient without SMTPUTF8.
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    let r = c.cmd("RCPT TO:<j\u{f6}rg@example.net>");
    assert!(r.starts_with("553 5.6.7"), "{r}");
    drop(c);

    let eight = format!("Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}");
    send(
        &relay,
        "MAIL FROM:<a@example.com> BODY=8BITMIME",
        "RCPT TO:<eight@example.net>",
        &eight,
    );
    let utf8 = "Subject: utf8\r\n\r\nhi\r\n";
    send(
        &relay,
        "MAIL FROM:<b@example.com> SMTPUTF8",
        "RCPT TO:<j\u{f6}rg@example.net>",
        utf8,
    );
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(1500)
    );
    send(
        &relay,
        "MAIL FROM:<c@example.com>",
        "RCPT TO:<big@example.net>",
        &big,
    );
    relay.sentinel();
    let held = pf.settled(&relay, 4);

    let converted = held
        .iter()
        .find(|h| h.records("recipient") == ["eight@example.net"])
        .expect("the 8-bit message");
    assert!(
        converted.body.iter().all(|&b| b < 0x80),
        "8-bit octets went out"
    );
    let text = common::decoded_text(&converted.body);
    assert_eq!(text.replace("\r\n", "\n"), TEXT.replace("\r\n", "\n"));
    // "rg@example.net": the jörg recipient, whatever form its Final-Recipient takes.
    assert_eq!(notice_status(&held, "rg@example.net"), "5.6.7");
    assert_eq!(notice_status(&held, "big@example.net"), "5.3.4");
    assert!(
        !pf.log().contains("big@example.net"),
        "the big one was sent"
    );
}
