//! Never an open relay. The classic relay tests (the forms abuse.net's and
//! Postfix's own checks try: plain, percent hack, bang path, source route,
//! quoted local part holding an '@', a domain in the local part, address
//! literals) from an untrusted client over IPv4 and IPv6, and from a trusted
//! one; and the ways a client might try to become trusted (AUTH, XCLIENT, a
//! PROXY header, a HELO claiming to be local).
//!
//! smarthost has no inbound AUTH: the only way to relay is to connect from a
//! trusted network or through the local submission socket. Refused forms get an
//! exact reply and nothing is ever queued for them.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{captured, Client, Relay};

const ONLY_V4: &str = r#"["127.0.0.1/32"]"#;

/// Trusted: `{trusted}`; with only 127.0.0.1, 127.0.0.2 and ::1 are strangers.
const CONFIG: &str = r#"
trusted_networks = {trusted}
[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[[route]]
name = "up"
host = "smtp.example.net"
username = "relay@example.org"
password_file = "{password_file}"
[routing]
default = "capture"
"#;

/// Each recipient form and the reply every untrusted client must get: 554
/// 5.7.1 when the form is well-formed, 553 5.1.3 (or 501) when the grammar
/// already refuses it. Nothing may be 250.
const UNTRUSTED_PROBES: &[(&str, &str)] = &[
    (
        "<victim@example.net>",
        "554 5.7.1 <victim@example.net>: Relay access denied",
    ),
    ("<VICTIM@EXAMPLE.NET>", "554 5.7.1"),
    ("<victim@relay.test>", "554 5.7.1"),
    ("<postmaster@relay.test>", "554 5.7.1"),
    ("<postmaster>", "554 5.7.1"),
    ("<abuse>", "554 5.7.1"),
    ("<victim@[127.0.0.1]>", "554 5.7.1"),
    ("<victim@[IPv6:::1]>", "554 5.7.1"),
    ("<victim%example.net@relay.test>", "553 5.1.3"),
    ("<victim%example.net@[127.0.0.1]>", "553 5.1.3"),
    ("<example.net!victim@relay.test>", "553 5.1.3"),
    ("<relay.test!example.net!victim>", "553 5.1.3"),
    ("<@relay.test:victim@example.net>", "554 5.7.1"),
    ("<@relay.test,@[127.0.0.1]:victim@example.net>", "554 5.7.1"),
    ("<@relay.test:victim%example.net@relay.test>", "553 5.1.3"),
    ("<\"victim@example.net\">", "553 5.1.3"),
    ("<\"victim@example.net\"@relay.test>", "554 5.7.1"),
    ("<\"victim%example.net\"@relay.test>", "553 5.1.3"),
    ("<victim@example.net@relay.test>", "553 5.1.3"),
    ("<victim@example.net.>", "553 5.1.3"),
    ("victim@example.net", "501 5.5.4"),
    ("<victim@example.net", "501 5.5.4"),
];

/// A session from `local` that has said EHLO (or HELO) and MAIL FROM.
fn stranger(local: IpAddr, relay: SocketAddr, ehlo: &str, from: &str) -> Client {
    let mut c = Client::connect_from(Some(local), relay);
    c.expect(220);
    c.expect_cmd(ehlo, 250);
    c.expect_cmd(&format!("MAIL FROM:{from}"), 250);
    c
}

fn assert_untrusted_refused(c: &mut Client, enhanced: bool) {
    for (rcpt, want) in UNTRUSTED_PROBES {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        let want = match enhanced {
            true => want.to_string(),
            // After HELO there are no enhanced status codes (RFC 2034).
            false => format!("{} ", &want[..3]),
        };
        assert!(
            r.starts_with(&want),
            "RCPT TO:{rcpt}: want {want:?}, got {r:?}"
        );
    }
    assert!(c.cmd("DATA").starts_with("554"), "DATA without recipients");
}

/// Nothing was queued or delivered: a sentinel message submitted after the
/// refused sessions ended is delivered, and it is the only message the relay
/// queued and the capture route wrote.
fn assert_nothing_queued(relay: &Relay) {
    let sentinel = relay.sentinel();
    common::assert_only_sentinel(relay, &relay.path("out"), &sentinel);
}

/// The route's password must exist before the daemon checks its config, so it
/// lives in a directory of its own, kept as long as the relay.
struct Setup {
    relay: Relay,
    _secrets: tempfile::TempDir,
}

const PASSWORD: &str = "relay-pw-5c1e0b77";

fn start(host: &str, trusted: &str) -> Setup {
    use std::os::unix::fs::PermissionsExt;
    let secrets = tempfile::tempdir().expect("tempdir");
    let pw = secrets.path().join("up.password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let body = CONFIG
        .replace("{trusted}", trusted)
        .replace("{password_file}", &pw.display().to_string());
    Setup {
        relay: Relay::start_on(host, &body),
        _secrets: secrets,
    }
}

fn have_ipv6(test: &str) -> bool {
    let ok = std::net::TcpListener::bind("[::1]:0").is_ok();
    common::require(&format!("an IPv6 loopback ({test})"), ok)
}

#[test]
fn untrusted_ipv4_client_relays_nothing() {
    let setup = start("127.0.0.1", ONLY_V4);
    let relay = &setup.relay;
    let stranger_ip: IpAddr = "127.0.0.2".parse().unwrap();
    for from in ["<someone@example.com>", "<>", "<postmaster@relay.test>"] {
        let mut c = stranger(stranger_ip, relay.addr(), "EHLO stranger.test", from);
        assert_untrusted_refused(&mut c, true);
        c.expect_cmd("QUIT", 221);
    }
    // Without ESMTP, and claiming to be the relay itself.
    let mut c = stranger(
        stranger_ip,
        relay.addr(),
        "HELO localhost",
        "<a@example.com>",
    );
    assert_untrusted_refused(&mut c, false);
    let mut c = stranger(
        stranger_ip,
        relay.addr(),
        "EHLO [127.0.0.1]",
        "<a@example.com>",
    );
    assert_untrusted_refused(&mut c, true);
    assert_nothing_queued(relay);
}

/// A pipelining stranger that sends its whole message without waiting: the
/// refused DATA turns the message into refused commands, never a transaction.
#[test]
fn untrusted_pipelined_message_is_not_queued() {
    let setup = start("127.0.0.1", ONLY_V4);
    let relay = &setup.relay;
    let mut c = Client::connect_from(Some("127.0.0.2".parse().unwrap()), relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO stranger.test", 250);
    c.write(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n\
          Subject: spam\r\n\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<victim@example.net>\r\n\
          DATA\r\nbuy now\r\n.\r\nQUIT\r\n",
    );
    let replies: Vec<String> = (0..11).map(|_| c.read_reply()).collect();
    let codes: Vec<&str> = replies.iter().map(|r| r.get(..3).unwrap_or(r)).collect();
    assert_eq!(
        codes,
        ["250", "554", "554", "500", "500", "503", "554", "554", "500", "500", "221"],
        "{replies:#?}"
    );
    assert_nothing_queued(relay);
}

/// There is no inbound AUTH, and nothing a client says makes it trusted.
#[test]
fn no_way_to_become_trusted() {
    let setup = start("127.0.0.1", ONLY_V4);
    let relay = &setup.relay;
    let stranger_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = Client::connect_from(Some(stranger_ip), relay.addr());
    c.expect(220);
    // A PROXY protocol header is just an unknown command.
    assert!(c
        .cmd("PROXY TCP4 127.0.0.1 127.0.0.1 25000 25")
        .starts_with("500 "));
    let ehlo = c.expect_cmd("EHLO stranger.test", 250);
    for ext in ["AUTH", "XCLIENT", "XFORWARD", "CHUNKING", "STARTTLS"] {
        assert!(!ehlo.contains(ext), "EHLO offers {ext}: {ehlo}");
    }
    // The relay's own upstream credentials, as a client would try them.
    let plain = "AHJlbGF5QGV4YW1wbGUub3JnAHJlbGF5LXB3LTVjMWUwYjc3";
    for cmd in [
        format!("AUTH PLAIN {plain}"),
        "AUTH LOGIN".to_string(),
        "AUTH XOAUTH2 dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ==".to_string(),
    ] {
        assert_eq!(c.cmd(&cmd), "502 5.5.1 AUTH not available", "{cmd}");
    }
    assert!(c
        .cmd("XCLIENT ADDR=127.0.0.1 NAME=localhost")
        .starts_with("500 5.5.1"));
    assert!(c.cmd("XFORWARD ADDR=127.0.0.1").starts_with("500 5.5.1"));
    assert!(c.cmd("STARTTLS").starts_with("502 5.5.1"));
    c.expect_cmd("MAIL FROM:<relay@example.org>", 250);
    assert!(c
        .cmd("RCPT TO:<victim@example.net>")
        .starts_with("554 5.7.1"));
    c.expect_cmd("QUIT", 221);
    assert_nothing_queued(relay);
    let log = relay.log();
    assert!(!log.contains(PASSWORD) && !log.contains(plain), "{log}");
}

#[test]
fn untrusted_ipv6_client_relays_nothing() {
    if !have_ipv6("untrusted_ipv6_client_relays_nothing") {
        return;
    }
    let setup = start("[::1]", ONLY_V4);
    let relay = &setup.relay;
    let addr = SocketAddr::new("::1".parse().unwrap(), relay.port);
    let mut c = stranger(
        "::1".parse().unwrap(),
        addr,
        "EHLO v6.test",
        "<a@example.com>",
    );
    assert_untrusted_refused(&mut c, true);
    c.expect_cmd("QUIT", 221);
    assert_nothing_queued(relay);
}

/// RCPT TO forms a trusted client may send: Ok(the recipient queued), or
/// Err(the reply code it is refused with).
const ODD_FORMS: &[(&str, Result<&str, &str>)] = &[
    ("<victim@example.net>", Ok("victim@example.net")),
    ("<@relay.test:victim@example.net>", Ok("victim@example.net")),
    (
        "<@a.example,@[192.0.2.1]:victim@example.net>",
        Ok("victim@example.net"),
    ),
    // Quoted: one mailbox at relay.test, passed on exactly as written.
    (
        "<\"victim@example.net\"@relay.test>",
        Ok("\"victim@example.net\"@relay.test"),
    ),
    ("<victim@[IPv6:::1]>", Ok("victim@[IPv6:::1]")),
    ("<postmaster>", Ok("postmaster@relay.test")),
    ("<victim%example.net@relay.test>", Err("553 5.1.3")),
    ("<example.net!victim@relay.test>", Err("553 5.1.3")),
    ("<\"victim!x\"@relay.test>", Err("553 5.1.3")),
    ("<\"|/bin/sh -c evil\"@relay.test>", Err("553 5.1.3")),
    ("<victim@example.net@relay.test>", Err("553 5.1.3")),
    ("<@relay.test:>", Err("553 5.1.3")),
    ("<@:victim@example.net>", Err("553 5.1.3")),
    ("<\"victim@example.net\">", Err("553 5.1.3")),
];

/// The positive control, and what a trusted client's odd forms become: refused
/// with the same codes, or queued as exactly one recipient with any source
/// route dropped (RFC 5321 C: a relay may ignore it), never sent elsewhere.
#[test]
fn trusted_clients_relay_odd_forms_safely() {
    if !have_ipv6("trusted_clients_relay_odd_forms_safely") {
        return;
    }
    let setup = start("[::1]", r#"["127.0.0.1/32", "::1/128"]"#);
    let relay = &setup.relay;
    let addr = SocketAddr::new("::1".parse().unwrap(), relay.port);
    let mut c = Client::connect(addr);
    c.expect(220);
    c.expect_cmd("EHLO trusted.test", 250);
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    let mut want = Vec::new();
    for (rcpt, expect) in ODD_FORMS {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        match expect {
            Ok(stored) => {
                assert!(r.starts_with("250 2.1.5"), "RCPT TO:{rcpt}: {r}");
                // One recipient however many forms name it, as Postfix keeps it.
                if !want.iter().any(|w| w == stored) {
                    want.push(stored.to_string());
                }
            }
            Err(code) => assert!(r.starts_with(code), "RCPT TO:{rcpt}: want {code}, got {r}"),
        }
    }
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: odd forms\r\n\r\nbody\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 2.0.0 Ok: queued as "));
    c.expect_cmd("QUIT", 221);
    assert!(
        relay.wait_log("status=sent", want.len(), Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let got = captured(&relay.path("out"));
    assert_eq!(got.len(), 1, "one message, one envelope");
    let rcpts: Vec<String> = got[0].0["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(rcpts, want);
    assert!(
        String::from_utf8_lossy(&got[0].1).starts_with("Received: from trusted.test ([IPv6:::1])")
    );
}
