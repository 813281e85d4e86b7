//! An over-long command line is an error like a bad command: a client that
//! sends nothing else is told 500 for each and cut off with 421 at the error
//! limit, instead of holding its session (and a connection slot) forever.

mod common;

use common::{Relay, CAPTURE};

#[test]
fn endless_long_lines_end_the_session() {
    let relay = Relay::start(CAPTURE);
    let mut c = common::Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    let long = format!("NOOP {}\r\n", "x".repeat(4000));
    let mut replies = Vec::new();
    for _ in 0..25 {
        c.write(long.as_bytes());
        let reply = c.read_reply();
        let last = reply.starts_with("421");
        replies.push(reply);
        if last {
            break;
        }
    }
    let last = replies.last().cloned().unwrap_or_default();
    assert!(last.starts_with("421 4.7.0"), "{replies:#?}");
    // The 20th error's 500 comes with the 421.
    assert!(replies.len() <= 21, "cut off at the limit: {replies:#?}");
    assert!(replies[..replies.len() - 1]
        .iter()
        .all(|r| r.starts_with("500 5.5.2")));
}
