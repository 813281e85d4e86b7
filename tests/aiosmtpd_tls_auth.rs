//! An aiosmtpd upstream (Debian package `python3-aiosmtpd`, run with
//! /usr/bin/python3; the script is tests/peers/aiosmtpd_server.py) that requires
//! STARTTLS with a certificate for `localhost` from a test CA, and AUTH (PLAIN or
//! LOGIN, over TLS only) for one account. The relay must verify the certificate
//! against the route's `ca_file`, authenticate, and never give its password to a
//! server it could not verify or that does not offer TLS.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::path::Path;
use std::time::Duration;

use aiosmtpd::{assert_no_password, password_peer, Files, USER};
use common::Relay;

/// The relay config for one route to the peer. `ca_file`: None means system roots.
fn config(port: u16, auth: &str, password_file: &Path, ca_file: Option<&Path>) -> String {
    let ca = ca_file
        .map(|p| format!("ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"
retry = "F,1m,1s"
[timeouts]
connect = "2s"
greeting = "5s"
upstream_command = "5s"
upstream_data = "5s"
[[route]]
name = "up"
host = "localhost"
port = {port}
tls = "starttls"
{ca}auth = "{auth}"
username = "{USER}"
password_file = "{}"
[routing]
default = "up"
"#,
        password_file.display()
    )
}

/// The first `attempts` occurrences of `event` (one per finished attempt) are
/// each directly followed by the client's QUIT. A later attempt may still be
/// under way when the events are read, so only finished ones are checked: the
/// relay logs an attempt only after its QUIT was answered, and the server
/// records a command before answering it.
fn assert_quit_after(events: &[String], event: &str, attempts: usize) {
    assert!(attempts > 0);
    let at: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with(event))
        .map(|(i, _)| i)
        .take(attempts)
        .collect();
    assert_eq!(
        at.len(),
        attempts,
        "{event} x{attempts} expected: {events:?}"
    );
    for (n, i) in at.into_iter().enumerate() {
        assert_eq!(
            events.get(i + 1).map(String::as_str),
            Some("QUIT"),
            "no QUIT after {event} #{}: {events:?}",
            n + 1
        );
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: app@example.com\r\nTo: user@example.net\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\n.dot line\r\nbody of {subject}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// The first delivery log line for `id`.
fn delivery_line(relay: &Relay, id: &str, status: &str) -> String {
    let needle = format!("{id}: to=<user@example.net> ");
    assert!(
        relay.wait_log(&format!("status={status}"), 1, Duration::from_secs(15)),
        "no status={status}; log:\n{}",
        relay.log()
    );
    relay
        .log()
        .lines()
        .find(|l| l.contains(&needle) && l.contains(&format!("status={status}")))
        .unwrap_or_else(|| panic!("no {needle:?} with status={status}:\n{}", relay.log()))
        .to_string()
}

fn delivered_with(auth: &str, mechanism: &str) {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    let relay = Relay::start(&config(
        peer.port,
        auth,
        &files.path("pw"),
        Some(&files.path("ca.pem")),
    ));
    let msg = message(&format!("via {mechanism}"));
    let id = relay
        .send("app@example.com", &["user@example.net"], &msg)
        .expect("queued");
    let line = delivery_line(&relay, &id, "sent");
    assert!(
        line.contains(&format!("relay=localhost[127.0.0.1]:{} delay=", peer.port)),
        "{line}"
    );
    assert!(
        line.contains("attempts=1 status=sent (250 2.0.0 Ok: saved as msg0001)"),
        "{line}"
    );

    let messages = peer.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (meta, content) = &messages[0];
    assert_eq!(meta["mail_from"], "app@example.com");
    assert_eq!(meta["rcpt_tos"], serde_json::json!(["user@example.net"]));
    assert_eq!(meta["login"], USER);
    assert_eq!(meta["tls"], true);
    assert_eq!(
        common::strip_received(content),
        msg.as_slice(),
        "received:\n{}",
        String::from_utf8_lossy(content)
    );
    assert!(
        content.starts_with(
            b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost)"
        ),
        "{}",
        String::from_utf8_lossy(content)
    );

    // STARTTLS, then (only then) AUTH with the configured mechanism.
    let events = peer.events();
    let pos = |e: &str| events.iter().position(|x| x == e);
    let tls_ok = pos("TLS-OK").unwrap_or_else(|| panic!("{events:?}"));
    let auth_cmd = pos("AUTH").unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        pos("STARTTLS").unwrap() < tls_ok && tls_ok < auth_cmd,
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("AUTH-"))
            .collect::<Vec<_>>(),
        vec![&format!("AUTH-OK {mechanism} {USER}")],
        "{events:?}"
    );
    assert_no_password(&relay.log());
    assert_tls_line(&relay.log());
}

/// One line per connection says how it is secured; the delivery line keeps
/// pflogsumm's `delay=` … `status=` order and carries no TLS field.
fn assert_tls_line(log: &str) {
    let tls = log
        .lines()
        .find(|l| l.contains("Verified TLS connection established to localhost[127.0.0.1]:"))
        .unwrap_or_else(|| panic!("no TLS line:\n{log}"));
    assert!(
        tls.contains(": TLSv1.") && tls.contains(" with cipher TLS"),
        "{tls}"
    );
    let sent = log
        .lines()
        .find(|l| l.contains("status=sent"))
        .expect("a delivery line");
    let (delay, status) = (
        sent.find(" delay=").unwrap(),
        sent.find(" status=").unwrap(),
    );
    assert!(delay < status && !sent.contains("tls="), "{sent}");
}

#[test]
fn auth_plain_over_verified_starttls() {
    delivered_with("plain", "PLAIN");
}

#[test]
fn auth_login_over_verified_starttls() {
    delivered_with("login", "LOGIN");
}

#[test]
fn wrong_password_defers_and_never_leaks() {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    let relay = Relay::start(&config(
        peer.port,
        "plain",
        &files.path("wrong-pw"),
        Some(&files.path("ca.pem")),
    ));
    let id = relay
        .send(
            "app@example.com",
            &["user@example.net"],
            &message("wrong password"),
        )
        .expect("queued");
    let line = delivery_line(&relay, &id, "deferred");
    assert!(
        line.contains(&format!("relay=localhost[127.0.0.1]:{}", peer.port)),
        "{line}"
    );
    assert!(line.contains("535 5.7.8"), "{line}");
    // The schedule retries every second: a second refusal is still a deferral.
    assert!(
        relay.wait_log("status=deferred", 2, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let attempts = log.matches("status=deferred").count();
    assert!(log.contains("configuration error"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("status=sent"), "{log}");
    assert_no_password(&log);

    assert!(peer.messages().is_empty());
    let events = peer.events();
    assert!(events.iter().any(|e| e == "TLS-OK"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e == &format!("AUTH-FAIL PLAIN {USER}")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.starts_with("AUTH-OK")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e == "MAIL"), "{events:?}");
    // The refused session is closed with QUIT (RFC 5321 4.1.1.10), not dropped.
    assert_quit_after(&events, "AUTH-FAIL", attempts);
}

#[test]
fn unverifiable_certificate_defers_before_auth() {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    // No ca_file: the system roots do not know the test CA.
    let relay = Relay::start(&config(peer.port, "plain", &files.path("pw"), None));
    let id = relay
        .send("app@example.com", &["user@example.net"], &message("no ca"))
        .expect("queued");
    let line = delivery_line(&relay, &id, "deferred");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(
        line.contains(&format!("relay=localhost[127.0.0.1]:{}", peer.port)),
        "{line}"
    );
    assert!(
        relay.wait_log("status=deferred", 2, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    assert!(
        !log.contains("status=bounced") && !log.contains("status=sent"),
        "{log}"
    );
    assert_no_password(&log);

    assert!(peer.messages().is_empty());
    let events = peer.events();
    assert!(events.iter().any(|e| e == "STARTTLS"), "{events:?}");
    assert!(!events.iter().any(|e| e == "TLS-OK"), "{events:?}");
    assert!(
        !events.iter().any(|e| e.starts_with("AUTH")),
        "the password went to an unverified server: {events:?}"
    );
    assert!(!log.contains("Verified TLS connection"), "{log}");
}

#[test]
fn missing_starttls_defers_without_auth() {
    let files = Files::with_passwords();
    let peer = password_peer(None);
    let relay = Relay::start(&config(
        peer.port,
        "plain",
        &files.path("pw"),
        Some(&files.path("ca.pem")),
    ));
    let id = relay
        .send(
            "app@example.com",
            &["user@example.net"],
            &message("no starttls"),
        )
        .expect("queued");
    let line = delivery_line(&relay, &id, "deferred");
    assert!(line.contains("STARTTLS"), "{line}");
    assert!(
        line.contains(&format!("relay=localhost[127.0.0.1]:{}", peer.port)),
        "{line}"
    );
    assert!(
        relay.wait_log("status=deferred", 2, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let attempts = log.matches("status=deferred").count();
    assert!(
        !log.contains("status=bounced") && !log.contains("status=sent"),
        "{log}"
    );
    assert_no_password(&log);

    assert!(peer.messages().is_empty());
    let events = peer.events();
    assert!(events.iter().any(|e| e == "EHLO"), "{events:?}");
    for never in ["STARTTLS", "AUTH", "MAIL"] {
        assert!(!events.iter().any(|e| e == never), "{never}: {events:?}");
    }
    assert!(!events.iter().any(|e| e.starts_with("AUTH-")), "{events:?}");
    assert_quit_after(&events, "EHLO", attempts);
}
