//! The smarthost refuses the session in its greeting: `421` (busy, closing at
//! once) or `554` (RFC 5321 3.1: no SMTP service here; the server waits for
//! QUIT). Both defer every recipient, and the relay sends nothing but QUIT.
//!
//! Why a 554 greeting defers rather than bounces: it comes before any envelope,
//! so it says nothing about the sender or the recipients. It is the smarthost
//! refusing *us* (our address is not on its list, the account is suspended, it
//! is in maintenance), which the operator can fix; bouncing would throw away
//! mail that goes out once they have. Like any deferral, it bounces at the end
//! of the retry schedule if nobody does.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Action, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];

/// The greeting `greeting` (whose text is `text`) defers both recipients with
/// that text; the upstream sees `commands` on the refused connection and no
/// transaction; once it greets properly, a flush delivers the kept message.
fn refused_greeting_defers(tag: &str, greeting: Action, text: &str, commands: &[&str]) {
    let server = ScriptedServer::start(move |_, cmd| match cmd {
        Cmd::Greeting => greeting.clone(),
        Cmd::Quit => reply("221 2.0.0 Bye"),
        _ => reply("503 5.5.1 Bad sequence of commands"),
    });
    let relay = relay(&server, "");
    let (id, msg) = submit(&relay, &RCPTS, tag);

    // Deferred, kept, the greeting's text in the log and as the last error;
    // the upstream saw no EHLO and no envelope.
    assert_deferred(&relay, &server, &id, &RCPTS, &format!("greeting: {text}"));
    assert_only_commands(&server, commands);

    let delivered = recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
    assert_eq!(delivered.conn, 1, "a new connection");
    // Never a bounce.
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("non-delivery notification"), "{log}");
    assert!(server.transactions().iter().all(|t| !t.from.is_empty()));
}

#[test]
fn greeting_421_defers_and_the_mail_goes_out_later() {
    const TEXT: &str = "421 4.3.2 Service not available, closing transmission channel";
    // The server closes right after its 421 (RFC 5321 3.8): the relay's QUIT
    // finds nobody listening, and it does not wait for an answer.
    refused_greeting_defers(
        "greeting-421",
        Action::ReplyThenClose(TEXT.into()),
        TEXT,
        &[],
    );
}

#[test]
fn greeting_554_defers_and_the_relay_says_quit() {
    const TEXT: &str = "554 5.7.1 No SMTP service here for 127.0.0.1";
    // RFC 5321 3.1: after a 554 greeting the server waits for QUIT.
    refused_greeting_defers("greeting-554", reply(TEXT), TEXT, &["QUIT"]);
}
