//! The smarthost refuses EHLO with a 5xx. The relay does not fall back to
//! HELO: it says QUIT and defers every recipient.
//!
//! Why no HELO: RFC 5321 2.2.1 says servers MUST support EHLO, so a refused
//! EHLO (4.1.4 lists 500, 501, 502 and 550) comes from a broken or refusing
//! smarthost, not a legacy one; HELO would be refused by the same policy, and a
//! HELO session could carry neither STARTTLS nor AUTH nor the SIZE and
//! SMTPUTF8 checks. The server stays in its state after refusing (4.1.4), so
//! the client ends the session with QUIT (4.1.1.10; RFC 1869 4.5: "HELO or
//! QUIT"). The recipients are not at fault: defer, and let the operator see the
//! reply in the log. The route here is clear text without credentials, the one
//! case where HELO could have worked, to show it is not tried even then.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, standard, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];

fn refused_ehlo_defers(tag: &str, text: &'static str) {
    let server = ScriptedServer::start(move |_, cmd| match cmd {
        Cmd::Ehlo(_) => reply(text),
        // HELO would be accepted: the relay must not use it.
        _ => standard(cmd),
    });
    let relay = relay(&server, "");
    let (id, msg) = submit(&relay, &RCPTS, tag);

    assert_deferred(&relay, &server, &id, &RCPTS, &format!("EHLO: {text}"));
    // EHLO, then QUIT: no HELO, no envelope.
    assert_only_commands(&server, &["EHLO relay.test", "QUIT"]);

    recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
    assert!(!relay.log().contains("status=bounced"));
}

#[test]
fn ehlo_550_defers_with_quit_and_no_helo() {
    refused_ehlo_defers(
        "ehlo-550",
        "550 5.7.1 Client host rejected: relay.test is not allowed",
    );
}

#[test]
fn ehlo_502_defers_with_quit_and_no_helo() {
    refused_ehlo_defers("ehlo-502", "502 5.5.2 Error: command not recognized");
}
