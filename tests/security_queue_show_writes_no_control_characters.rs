//! A queued message's headers reach the operator's terminal through `queue
//! show`: a Subject with terminal escape sequences (a window title, a screen
//! clear, backspaces over the line, an 8-bit CSI; a bare CR is refused at DATA) is shown escaped, and
//! nothing that `queue show` or `mailq` prints holds a control character but
//! newlines and tabs.

mod common;

use std::time::Duration;

use common::{block_routes, Relay, TWO_ROUTES};

#[test]
fn queue_show_and_mailq_write_no_control_characters() {
    let relay = Relay::start_with(TWO_ROUTES, &[], block_routes);
    let subject = "Subject: hi\x1b]0;owned\x07\x1b[2J\x08\x08fake line \u{9b}31m\r\n";
    let body = format!("{subject}X-Other: a\tb\r\n\r\nbody\r\n");
    let id = relay
        .send("a@example.com", &["b@example.net"], body.as_bytes())
        .expect("queued");
    assert!(relay.wait_log("status=deferred", 1, Duration::from_secs(10)));
    let show = relay.queue_cmd(&["show", &id]).expect("queue show");
    let list = relay.queue_cmd(&["list"]).expect("queue list");
    for out in [&show, &list] {
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(bad.is_empty(), "{bad:?} in {text}");
    }
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(r"hi\u{1b}]0;owned\u{7}\u{1b}[2J\u{8}\u{8}fake line \u{9b}31m"),
        "the Subject, escaped: {text}"
    );
    assert!(text.contains("X-Other: a\tb"), "{text}");
}
