//! The smarthost accepts the recipients but answers DATA with a 4xx instead of
//! `354`: the message never leaves. Every accepted recipient is deferred with
//! the reply, the session is reset before its next use, and the message goes
//! out whole later.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];
const REPLY: &str = "451 4.3.0 Error: queue file write error";

#[test]
fn temporary_failure_to_data_defers_every_accepted_recipient() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Data => reply(REPLY),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let (id, msg) = submit(&relay, &RCPTS, "data-451");

    assert_deferred(&relay, &server, &id, &RCPTS, REPLY);

    // Both recipients accepted, DATA refused, no message bytes.
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "{}", server.dump());
    assert_eq!(txs[0].accepted(), RCPTS);
    assert_eq!(txs[0].data_reply.as_deref(), Some(REPLY));
    assert!(txs[0].data.is_none(), "{}", server.dump());
    let verbs = first_verbs(&server, 0, 5);
    assert_eq!(
        verbs,
        ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
        "{}",
        server.dump()
    );

    recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
    // The half-done session was reset before its next use, or closed.
    let verbs = server.wait_verbs(0, 6, PATIENCE);
    assert!(
        matches!(verbs.get(5).map(String::as_str), Some("RSET" | "QUIT")),
        "{}",
        server.dump()
    );
    assert!(!relay.log().contains("status=bounced"));
}
