//! The smarthost accepts the recipients but answers DATA with a 5xx instead of
//! `354`: the transaction is refused for good. Every accepted recipient
//! bounces with the reply, one DSN names them, and the message is not sent.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];
const REFUSED: &str = "554 5.7.0 Transaction refused: daily sending quota exceeded";

#[test]
fn permanent_failure_to_data_bounces_every_accepted_recipient() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Data if ctx.from.as_deref() == Some(SENDER) => reply(REFUSED),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let (id, _) = submit(&relay, &RCPTS, "data-554");

    assert_bounced(&relay, &server, &id, &RCPTS, REFUSED);

    let dsns = wait_dsns(&server, 1);
    assert_eq!(dsns.len(), 1, "{}", server.dump());
    assert_dsn(
        &dsns[0],
        &[(RCPTS[0], "5.7.0", REFUSED), (RCPTS[1], "5.7.0", REFUSED)],
        "data-554",
    );

    // Recipients accepted, DATA refused, not a byte of the message sent, and
    // not tried again.
    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 1, "{}", server.dump());
    assert_eq!(mine[0].accepted(), RCPTS);
    assert_eq!(mine[0].data_reply.as_deref(), Some(REFUSED));
    assert!(mine[0].data.is_none());
}
