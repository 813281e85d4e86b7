//! The inbound SMTP session against the real binary: replies for every refusal,
//! nothing stored for refused input, the open-relay rule and the smuggling rules.

mod common;

use std::time::Duration;

use common::{captured, Client, Relay};

const CAPTURE: &str = r#"
trusted_networks = ["127.0.0.1/32", "::1/128"]
[limits]
max_message_size = 2000
max_recipients = 3
max_line_length = 100
[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[routing]
default = "capture"
"#;

fn session(relay: &Relay) -> Client {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    let ehlo = c.expect_cmd("EHLO client.test", 250);
    for ext in [
        "PIPELINING",
        "SIZE 2000",
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    c
}

/// Nothing reached the queue or the capture directory: a sentinel message
/// submitted after the refused sessions is delivered, and it is the only
/// message queued and captured.
fn assert_nothing_stored(relay: &Relay) {
    let sentinel = relay.sentinel();
    common::assert_only_sentinel(relay, &relay.path("out"), &sentinel);
}

#[test]
fn accepts_and_delivers_with_received_header() {
    let relay = Relay::start(CAPTURE);
    let msg = b"Subject: hi\r\nMessage-ID: <m1@test>\r\n\r\n.leading dot\r\nbody\r\n";
    let id = relay
        .send("a@example.com", &["b@example.net"], msg)
        .expect("queued");
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let got = captured(&relay.path("out"));
    assert_eq!(got.len(), 1);
    let (meta, body) = &got[0];
    assert_eq!(meta["sender"], "a@example.com");
    assert_eq!(meta["recipients"][0], "b@example.net");
    assert!(body.starts_with(b"Received: from client.test ([127.0.0.1])"));
    assert!(String::from_utf8_lossy(body).contains(&format!("id {id}")));
    assert_eq!(common::strip_received(body), msg);
    assert!(relay
        .log()
        .contains(&format!("{id}: to=<b@example.net> relay=directory")));
}

/// An empty message, and one whose first segment keeps no byte (the dot
/// or CR of a line end), are messages like any other: queued with `250`.
#[test]
fn empty_and_split_first_segments_are_queued() {
    let relay = Relay::start(CAPTURE);
    let mut ids = Vec::new();
    for first in [&b".\r\n"[..], b".", b"\r"] {
        let mut c = session(&relay);
        c.expect_cmd("MAIL FROM:<a@example.com>", 250);
        c.expect_cmd("RCPT TO:<b@example.net>", 250);
        c.expect_cmd("DATA", 354);
        c.write(first);
        // Not a wait for anything: it makes the first bytes their own
        // segment, as a slow client's would be.
        std::thread::sleep(Duration::from_millis(50));
        let rest: &[u8] = match first {
            b".\r\n" => b"",
            b"." => b"x\r\n.\r\n",
            _ => b"\nafter a blank line\r\n.\r\n",
        };
        c.write(rest);
        let reply = c.read_reply();
        assert!(
            reply.starts_with("250 2.0.0 Ok: queued as "),
            "{first:?}: {reply}"
        );
        ids.push(reply.rsplit(' ').next().unwrap_or_default().to_string());
    }
    let got = common::wait_for(Duration::from_secs(10), || {
        captured(&relay.path("out")).len() == ids.len()
    });
    assert!(got, "{}", relay.log());
}

#[test]
fn commands_out_of_order_and_syntax() {
    let relay = Relay::start(CAPTURE);
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    // Before EHLO there are no enhanced status codes (RFC 2034).
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>"),
        "503 Error: send HELO/EHLO first"
    );
    c.expect_cmd("EHLO client.test", 250);
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("FROB").starts_with("500 5.5.1"));
    assert!(c.cmd("MAIL FROM:a@example.com").starts_with("501"));
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    assert!(c.cmd("MAIL FROM:<a@example.com>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("554 5.5.1"));
    assert!(c.cmd("VRFY root").starts_with("252"));
    c.expect_cmd("NOOP", 250);
    c.expect_cmd("RSET", 250);
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("503"));
    c.expect_cmd("QUIT", 221);
    assert_nothing_stored(&relay);
}

#[test]
fn dangerous_and_malformed_addresses() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(&relay);
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    for bad in [
        "|/bin/sh@example.net",
        "/etc/passwd@example.net",
        "user%other@example.net",
        "host!user@example.net",
        ".user@example.net",
        "a/../b@example.net",
        "|mail-program",
        "/dev/null",
        "a@@example.net",
        "a@exa mple.net",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{bad}>"));
        assert!(
            r.starts_with("553 5.1.3") || r.starts_with("501"),
            "{bad}: {r}"
        );
    }
    assert!(c.cmd("RCPT TO:<>").starts_with("501"));
    assert!(c.cmd("DATA").starts_with("554"));
    assert_nothing_stored(&relay);
}

#[test]
fn too_many_recipients() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(&relay);
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    for i in 0..3 {
        c.expect_cmd(&format!("RCPT TO:<r{i}@example.net>"), 250);
    }
    assert!(c.cmd("RCPT TO:<r3@example.net>").starts_with("452 4.5.3"));
}

#[test]
fn oversized_message_refused_and_not_stored() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(&relay);
    assert!(c
        .cmd("MAIL FROM:<a@example.com> SIZE=5000")
        .starts_with("552 5.3.4"));
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    c.expect_cmd("RCPT TO:<b@example.net>", 250);
    c.expect_cmd("DATA", 354);
    let line = "x".repeat(80);
    let mut big = String::from("Subject: big\r\n\r\n");
    while big.len() < 3000 {
        big.push_str(&line);
        big.push_str("\r\n");
    }
    c.write(big.as_bytes());
    c.write(b".\r\n");
    assert!(c.read_reply().starts_with("552 5.3.4"));
    // The session goes on.
    c.expect_cmd("NOOP", 250);
    assert_nothing_stored(&relay);
}

#[test]
fn long_lines_and_nul_refused() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(&relay);
    for body in [
        format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(101)),
        "Subject: nul\r\n\r\nbad\0byte\r\n".to_string(),
    ] {
        c.expect_cmd("MAIL FROM:<a@example.com>", 250);
        c.expect_cmd("RCPT TO:<b@example.net>", 250);
        c.expect_cmd("DATA", 354);
        c.write(body.as_bytes());
        c.write(b".\r\n");
        let r = c.read_reply();
        assert!(r.starts_with("554 5.6.0"), "{r}");
    }
    let long_cmd = format!("NOOP {}", "z".repeat(5000));
    assert!(c.cmd(&long_cmd).starts_with("500 5.5.2"));
    c.expect_cmd("NOOP", 250);
    assert_nothing_stored(&relay);
}

#[test]
fn pipelined_transaction() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(&relay);
    c.write(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
    );
    for code in ["250", "250", "250", "354"] {
        let r = c.read_reply();
        assert!(r.starts_with(code), "{r}");
    }
    c.write(b"Subject: p\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    assert!(c.read_reply().starts_with("250 2.0.0 Ok: queued as "));
    assert!(c.read_reply().starts_with("221"));
    assert!(relay.wait_log("status=sent", 2, Duration::from_secs(10)));
}

#[test]
fn open_relay_refused_for_untrusted_peer() {
    let relay = Relay::start(CAPTURE);
    // Trusted is 127.0.0.1/32 only: 127.0.0.2 is a stranger.
    let mut c = Client::connect_from(Some("127.0.0.2".parse().unwrap()), relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO stranger.test", 250);
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    for rcpt in [
        "b@example.net",
        "postmaster",
        "@hop.example:b@example.net",
        "b%example.net@relay.test",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(
            r.starts_with("554 5.7.1") || r.starts_with("553"),
            "{rcpt}: {r}"
        );
    }
    assert!(c.cmd("DATA").starts_with("554"));
    assert_nothing_stored(&relay);
}

#[test]
fn smuggling_probes_never_end_data_early() {
    let relay = Relay::start(CAPTURE);
    for probe in [
        &b"\n.\n"[..],
        b"\r.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r\n.\r\r\n",
    ] {
        let mut c = session(&relay);
        c.expect_cmd("MAIL FROM:<a@example.com>", 250);
        c.expect_cmd("RCPT TO:<b@example.net>", 250);
        c.expect_cmd("DATA", 354);
        let mut data = b"Subject: outer\r\n\r\nfirst".to_vec();
        data.extend_from_slice(probe);
        data.extend_from_slice(
            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n",
        );
        c.write(&data);
        let r = c.read_reply();
        assert!(r.starts_with("521 5.5.2"), "probe {probe:?}: {r}");
        assert!(c.closed(), "connection must close after a bare line ending");
    }
    assert_nothing_stored(&relay);
}

#[test]
fn connection_limit_refuses_extra_clients() {
    let relay = Relay::start(&CAPTURE.replace(
        "max_line_length = 100",
        "max_line_length = 100\nmax_connections = 2",
    ));
    let mut a = Client::connect(relay.addr());
    a.expect(220);
    let mut b = Client::connect(relay.addr());
    b.expect(220);
    let mut c = Client::connect(relay.addr());
    assert!(c.read_reply().starts_with("421 4.3.2"));
    drop(a);
    // Refused (421) until the relay has seen `a` go; then a client is served.
    let mut greeting = String::new();
    let served = common::wait_for(Duration::from_secs(10), || {
        greeting = Client::connect(relay.addr()).read_reply();
        assert!(
            greeting.starts_with("220") || greeting.starts_with("421 4.3.2"),
            "{greeting}"
        );
        greeting.starts_with("220")
    });
    assert!(served, "no slot freed after a client left: {greeting}");
    b.expect_cmd("QUIT", 221);
}
