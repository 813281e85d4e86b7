//! The smarthost refuses the sender at MAIL FROM with a 5xx (it is not allowed
//! to send as that address). Every recipient bounces with the reply, and one
//! DSN naming them all goes to the sender, with the null reverse-path, through
//! the same route. The RCPTs pipelined after the refused MAIL name no
//! recipient, and the message is not tried again.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];
const REFUSED: &str =
    "550 5.7.1 <alice@src.test>: Sender address rejected: not owned by user relay@src.test";

#[test]
fn refused_sender_bounces_every_recipient_with_one_dsn() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Mail(from) if *from == SENDER => reply(REFUSED),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let (id, _) = submit(&relay, &RCPTS, "mail-550");

    assert_bounced(&relay, &server, &id, &RCPTS, REFUSED);

    let dsns = wait_dsns(&server, 1);
    assert_eq!(dsns.len(), 1, "{}", server.dump());
    assert_dsn(
        &dsns[0],
        &[(RCPTS[0], "5.7.1", REFUSED), (RCPTS[1], "5.7.1", REFUSED)],
        "mail-550",
    );

    // One MAIL from the sender, refused; no recipient named, nothing sent;
    // the session reset before its next use (the DSN), or closed.
    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 1, "a 5xx is not retried\n{}", server.dump());
    assert!(mine[0].rcpts.is_empty() && mine[0].data.is_none());
    let verbs = server.wait_verbs(mine[0].conn, 6, PATIENCE);
    assert_eq!(
        verbs[..5],
        ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
        "{}",
        server.dump()
    );
    assert!(
        matches!(verbs.get(5).map(String::as_str), Some("RSET" | "QUIT")),
        "{}",
        server.dump()
    );
}
