//! The smarthost takes the whole message, then the connection drops before its
//! reply to the final dot. The relay cannot know whether the message was
//! taken, so it defers and sends it again: a duplicate is acceptable, a loss is
//! not. (Moved from scripted_upstream.rs, with the duplicate counted.)

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{Action, Cmd, ScriptedServer};

const LOST: &str = "after end of data: connection closed or unparseable reply";

#[test]
fn connection_dropped_after_final_dot_is_resent() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Dot(_) => Action::Drop,
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let rcpts = ["gina@dst.test", "hugo@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "lost-reply");

    // Deferred: kept, not lost.
    assert_deferred(&relay, &server, &id, &rcpts, LOST);
    // The upstream has the whole message, unanswered.
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "{}", server.dump());
    assert!(is_message(txs[0].data.as_deref(), &msg));
    assert!(txs[0].reply.is_none() && txs[0].aborted);

    recover_and_deliver(&server, &relay, &id, &rcpts, 2, &msg);
    let txs = server.transactions();
    assert_eq!(txs.len(), 2, "{}", server.dump());
    assert!(txs[1].delivered() && txs[1].conn != txs[0].conn);
    for t in &txs {
        assert_eq!(t.rcpt_addresses(), rcpts);
        assert!(is_message(t.data.as_deref(), &msg));
    }
    // The duplicate, counted: the upstream received the message twice and
    // acknowledged it once. Never a third copy, never a bounce.
    let received = txs.iter().filter(|t| t.data.is_some()).count();
    let acknowledged = server.delivered().len();
    assert_eq!((received, acknowledged), (2, 1), "{}", server.dump());
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
}
