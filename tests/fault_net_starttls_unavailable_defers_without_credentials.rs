//! Fault: the route requires STARTTLS and the server does not offer it, or
//! offers it and then refuses it. The relay never falls back to clear text:
//! it sends no AUTH (although the server offers AUTH), no MAIL and no message,
//! ends the session with QUIT, and defers.
//! (Moved here from scripted_upstream.rs, and given credentials to withhold.)

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;
#[path = "common/scripted.rs"]
mod scripted;

use faults_net::{assert_fault_deferred, assert_no_password, send, Pki};
use scripted::{reply, standard, Cmd, ScriptedServer};

/// A STARTTLS route with credentials to `server`: deferred twice for
/// `reason`; every finished connection's verbs are `verbs`, and no password,
/// MAIL or message ever reached the server.
fn defers_in_clear_text(server: &ScriptedServer, tag: &str, reason: &str, verbs: &[&str]) {
    let pki = Pki::new();
    let relay = pki.starttls_relay(server.port());
    let id = send(&relay, &["frank@dst.test"], tag);

    let relay_name = format!("localhost[127.0.0.1]:{}", server.port());
    assert_fault_deferred(&relay, &id, "frank@dst.test", &relay_name, |r| r == reason);

    let conns = server.connections();
    assert!(
        conns.iter().filter(|c| c.closed).count() >= 2,
        "{}",
        server.dump()
    );
    for c in &conns {
        let got = c.verbs();
        if c.closed {
            assert_eq!(got, verbs, "{}", server.dump());
        } else {
            // A retry under way: a beginning of the same conversation.
            assert!(
                verbs[..got.len().min(verbs.len())] == got,
                "{}",
                server.dump()
            );
        }
    }
    assert!(server.transactions().is_empty(), "{}", server.dump());
    assert_no_password(&server.dump());
}

#[test]
fn starttls_not_offered_defers_without_credentials() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Ehlo(_) => reply("250-scripted.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"),
        _ => standard(cmd),
    });
    defers_in_clear_text(
        &server,
        "tls-missing",
        "STARTTLS required but not offered by the server",
        &["EHLO", "QUIT"],
    );
}

#[test]
fn starttls_refused_defers_without_credentials() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Ehlo(_) => {
            reply("250-scripted.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
        }
        Cmd::StartTls => reply("454 4.7.0 TLS not available due to local problem"),
        _ => standard(cmd),
    });
    defers_in_clear_text(
        &server,
        "tls-refused",
        "STARTTLS refused: 454 4.7.0 TLS not available due to local problem",
        &["EHLO", "STARTTLS", "QUIT"],
    );
}

/// RFC 3207 5: bytes behind the 220 to STARTTLS (a man in the middle's
/// injected reply, CVE-2011-0411's kind) are never taken as said under TLS.
/// One reader reads every reply of the connection, so it sees them, and the
/// relay gives the session up before the handshake: no password, no mail.
#[test]
fn starttls_reply_with_more_behind_it_is_not_trusted() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Ehlo(_) => {
            reply("250-scripted.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
        }
        Cmd::StartTls => reply("220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected"),
        _ => standard(cmd),
    });
    defers_in_clear_text(
        &server,
        "tls-injected",
        "STARTTLS: the server sent more after its 220; not trusting the session",
        &["EHLO", "STARTTLS"],
    );
}
