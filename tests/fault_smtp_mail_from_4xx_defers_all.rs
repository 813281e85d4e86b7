//! The smarthost answers MAIL FROM with a 4xx (its queue is full, the sender is
//! greylisted). Every recipient is deferred with that reply; the RCPTs and
//! DATA pipelined with it are refused too and name no recipient; the relay
//! resets the session with RSET before using it again. Later the message goes
//! out whole, in one transaction.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];
const REPLY: &str = "451 4.3.0 <alice@src.test>: Sender address temporarily rejected";

#[test]
fn temporary_mail_from_failure_defers_every_recipient() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Mail(_) => reply(REPLY),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let (id, msg) = submit(&relay, &RCPTS, "mail-451");

    assert_deferred(&relay, &server, &id, &RCPTS, REPLY);

    // MAIL, refused, with the RCPTs and DATA pipelined after it (answered 503
    // by a server without a transaction): no recipient taken, nothing sent.
    let conns = server.connections();
    assert_eq!(conns.len(), 1, "{}", server.dump());
    assert_eq!(
        conns[0].batches()[..2],
        [vec!["EHLO"], vec!["MAIL", "RCPT", "RCPT", "DATA"]],
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "{}", server.dump());
    assert_eq!(txs[0].from, SENDER);
    assert!(txs[0].rcpts.is_empty() && txs[0].data.is_none());

    recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
    // The half-done session was reset before its next use, or closed.
    let verbs = server.wait_verbs(0, 6, PATIENCE);
    assert!(
        matches!(verbs.get(5).map(String::as_str), Some("RSET" | "QUIT")),
        "{}",
        server.dump()
    );
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(server.transactions().iter().all(|t| !t.from.is_empty()));
}
