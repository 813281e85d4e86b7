//! Fault: the TLS handshake itself fails. After STARTTLS the server answers
//! the ClientHello with text, or hangs up; or a route configured for implicit
//! TLS (port 465 style) reaches a server that speaks plain SMTP. Each time the
//! attempt is deferred with the handshake's error, and nothing else (no AUTH,
//! no MAIL, no message) is sent.

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;
#[path = "common/scripted.rs"]
mod scripted;

use faults_net::{
    assert_fault_deferred, send, start_relay, AfterStartTls, Handshake, Pki, TlsUpstream,
};
use scripted::ScriptedServer;

/// A STARTTLS route to a server that sabotages the handshake as `after` says:
/// deferred twice for `reason`, and the server saw EHLO and STARTTLS only.
fn sabotaged_handshake_defers(after: AfterStartTls, tag: &str, reason: &str) {
    let pki = Pki::new();
    let upstream = TlsUpstream::start(after);
    let relay = pki.starttls_relay(upstream.port());
    let id = send(&relay, &["bob@dst.test"], tag);

    let relay_name = format!("localhost[127.0.0.1]:{}", upstream.port());
    assert_fault_deferred(&relay, &id, "bob@dst.test", &relay_name, |r| r == reason);
    upstream.assert_stopped_at_starttls(|h| *h == Handshake::Sabotaged);
}

#[test]
fn garbage_instead_of_a_server_hello_defers() {
    sabotaged_handshake_defers(
        AfterStartTls::Garbage,
        "tls-garbage",
        "TLS handshake failed: received corrupt message of type InvalidContentType",
    );
}

#[test]
fn server_hanging_up_in_the_handshake_defers() {
    sabotaged_handshake_defers(
        AfterStartTls::Abort,
        "tls-abort",
        "TLS handshake failed: tls handshake eof",
    );
}

/// `tls = "tls"` to a server that greets in plain text: the relay's
/// ClientHello gets "220 ..." back, which is no TLS record.
#[test]
fn implicit_tls_to_a_plain_server_defers() {
    let pki = Pki::new();
    let plain = ScriptedServer::accepting();
    let route = pki
        .starttls_route("up", plain.port())
        .replace("tls = \"starttls\"", "tls = \"tls\"");
    let relay = start_relay(&format!("{route}[routing]\ndefault = \"up\"\n"));
    let id = send(&relay, &["bob@dst.test"], "implicit-plain");

    let relay_name = format!("localhost[127.0.0.1]:{}", plain.port());
    assert_fault_deferred(&relay, &id, "bob@dst.test", &relay_name, |r| {
        r == "TLS handshake failed: received corrupt message of type InvalidContentType"
    });

    // The server got at most the bytes of a ClientHello, which hold no line
    // of SMTP; no transaction, no password.
    let conns = plain.connections();
    assert!(conns.len() >= 2, "{}", plain.dump());
    for c in &conns {
        for verb in c.verbs() {
            assert!(
                !["EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA"].contains(&verb.as_str()),
                "{}",
                plain.dump()
            );
        }
    }
    assert!(plain.transactions().is_empty(), "{}", plain.dump());
    faults_net::assert_no_password(&plain.dump());
}
