//! The smarthost stops answering at one phase of the conversation: the
//! greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, or after the final dot.
//! Each phase has its timeout (`greeting`, `upstream_command`,
//! `upstream_data`; the stalled one is set short here, the rest long); when it
//! fires, the log names the phase, every recipient is deferred, the relay
//! gives up the connection, and the kept message is delivered once the
//! smarthost answers again.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use std::time::{Duration, Instant};

use common::Relay;
use faults_smtp::*;
use scripted::{reply, Action, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["dave@dst.test", "erin@dst.test"];

/// A stalled attempt, for the phase-specific checks after the common ones.
struct Stalled {
    server: ScriptedServer,
    relay: Relay,
    id: String,
    msg: Vec<u8>,
}

/// Runs a scenario: `script` stalls one phase (its first connection only
/// matters: recovery replaces the script), `timeout` names the timeout that
/// ends the stall, `reason` is what the log and the queue must say, `verbs`
/// the commands the stalled connection carried.
fn stall(
    tag: &str,
    script: impl Fn(&Cmd<'_>) -> Action + Send + Sync + 'static,
    timeout: &str,
    route_extra: &str,
    reason: &str,
    verbs: &[&str],
) -> Stalled {
    let server = ScriptedServer::start(move |_, cmd| script(cmd));
    let relay = relay_with_short_timeout(&server, route_extra, timeout);
    let t0 = Instant::now();
    let (id, msg) = submit(&relay, &RCPTS, tag);

    attempt_lines(&relay, &id, &RCPTS, 1);
    // The relay waited the configured time before giving up, not less.
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "deferred after {elapsed:?}, before the {SHORT} timeout"
    );
    assert_deferred(&relay, &server, &id, &RCPTS, reason);

    // The relay gives up the silent connection.
    assert!(wait_connections_closed(&server, 1), "{}", server.dump());
    let conns = server.connections();
    assert_eq!(conns.len(), 1, "{}", server.dump());
    assert_eq!(conns[0].verbs(), verbs, "{}", server.dump());
    assert!(server.delivered().is_empty(), "{}", server.dump());
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
    Stalled {
        server,
        relay,
        id,
        msg,
    }
}

impl Stalled {
    /// The smarthost answers again: a flush delivers the message on a new
    /// connection.
    fn recovers(&self) {
        let tx = recover_and_deliver(&self.server, &self.relay, &self.id, &RCPTS, 2, &self.msg);
        assert_eq!(tx.conn, 1, "{}", self.server.dump());
    }
}

fn stall_at(at: fn(&Cmd<'_>) -> bool) -> impl Fn(&Cmd<'_>) -> Action + Send + Sync {
    move |cmd| if at(cmd) { Action::Stall } else { healthy(cmd) }
}

#[test]
fn stall_before_greeting_times_out() {
    let s = stall(
        "stall-greeting",
        stall_at(|c| matches!(c, Cmd::Greeting)),
        "greeting",
        "",
        "greeting: timed out after 2s",
        &[],
    );
    s.recovers();
}

/// (Moved from scripted_upstream.rs: silent upstream after greeting.)
#[test]
fn stall_after_ehlo_times_out() {
    let s = stall(
        "stall-ehlo",
        stall_at(|c| matches!(c, Cmd::Ehlo(_))),
        "upstream_command",
        "",
        "EHLO: timed out after 2s",
        &["EHLO"],
    );
    assert_eq!(s.server.connections()[0].commands, ["EHLO relay.test"]);
    s.recovers();
    assert_eq!(s.server.delivered().len(), 1, "{}", s.server.dump());
    assert_eq!(s.server.delivered()[0].conn, 1);
}

/// STARTTLS offered, then never answered. (No recovery here: the scripted
/// server cannot speak TLS.)
#[test]
fn stall_after_starttls_times_out() {
    let s = stall(
        "stall-starttls",
        |cmd| match cmd {
            Cmd::Ehlo(_) => reply("250-scripted.test\r\n250-STARTTLS\r\n250 8BITMIME"),
            Cmd::StartTls => Action::Stall,
            _ => healthy(cmd),
        },
        "upstream_command",
        "tls = \"starttls\"",
        "STARTTLS: timed out after 2s",
        &["EHLO", "STARTTLS"],
    );
    assert!(s.server.transactions().is_empty());
}

/// A silent AUTH is not a refused password: no configuration error.
#[test]
fn stall_after_auth_times_out() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let s = stall(
        "stall-auth",
        stall_at(is_auth),
        "upstream_command",
        &password_route(secrets.path()),
        "AUTH PLAIN: timed out after 2s",
        &["EHLO", "AUTH"],
    );
    assert!(!s.relay.log().contains("configuration error"));
    s.recovers();
}

#[test]
fn stall_after_mail_from_times_out() {
    let s = stall(
        "stall-mail",
        stall_at(|c| matches!(c, Cmd::Mail(_))),
        "upstream_command",
        "",
        "MAIL FROM: timed out after 2s",
        &["EHLO", "MAIL"],
    );
    s.recovers();
}

/// The first recipient was accepted, but its transaction never finished: it
/// is deferred too.
#[test]
fn stall_after_second_rcpt_times_out() {
    let s = stall(
        "stall-rcpt",
        stall_at(|c| matches!(c, Cmd::Rcpt { index: 1, .. })),
        "upstream_command",
        "",
        "RCPT TO: timed out after 2s",
        &["EHLO", "MAIL", "RCPT", "RCPT"],
    );
    s.recovers();
}

#[test]
fn stall_after_data_times_out() {
    let s = stall(
        "stall-data",
        stall_at(|c| matches!(c, Cmd::Data)),
        "upstream_command",
        "",
        "DATA: timed out after 2s",
        &["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
    );
    assert!(s.server.transactions()[0].data.is_none());
    s.recovers();
}

/// The whole message arrived and was never answered: deferred after
/// `upstream_data`, then delivered on the retry (the upstream may now hold it
/// twice, which is the accepted risk). (Moved from scripted_upstream.rs.)
#[test]
fn stall_after_final_dot_times_out() {
    let s = stall(
        "stall-dot",
        stall_at(|c| matches!(c, Cmd::Dot(_))),
        "upstream_data",
        "",
        "after end of data: timed out after 2s",
        &["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
    );
    s.recovers();
    let txs = s.server.transactions();
    assert_eq!(txs.len(), 2, "{}", s.server.dump());
    assert_eq!(txs[0].conn, 0);
    assert!(is_message(txs[0].data.as_deref(), &s.msg));
    assert!(txs[0].reply.is_none() && txs[0].aborted);
    assert!(txs[1].delivered() && txs[1].conn != 0);
    assert!(is_message(txs[1].data.as_deref(), &s.msg));
}
