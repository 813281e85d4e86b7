//! The smarthost takes the whole message and answers the final dot with a 4xx:
//! not delivered, not final. Every recipient of the transaction is deferred
//! with the reply, and the message is sent again later and delivered once.
//! (Moved from scripted_upstream.rs.)

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const REPLY: &str = "451 4.3.0 Error: queue file write error";

#[test]
fn temporary_failure_after_data_is_retried_and_sent() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Dot(_) => reply(REPLY),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let (id, msg) = submit(&relay, &["bob@dst.test"], "retry");

    assert_deferred(&relay, &server, &id, &["bob@dst.test"], REPLY);
    assert!(server.delivered().is_empty(), "{}", server.dump());

    recover_and_deliver(&server, &relay, &id, &["bob@dst.test"], 2, &msg);
    let lines = status_lines(&relay, &id, "bob@dst.test");
    assert_eq!(lines.len(), 2, "log:\n{}", relay.log());
    assert!(
        lines[1].contains("attempts=2 status=sent (250"),
        "{lines:?}"
    );

    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 2, "{}", server.dump());
    assert_eq!(mine[0].reply.as_deref(), Some(REPLY));
    assert!(mine[1].delivered());
    assert_eq!(server.delivered().len(), 1, "{}", server.dump());
    for t in &mine {
        assert_eq!(t.rcpt_addresses(), ["bob@dst.test"]);
        assert!(is_message(t.data.as_deref(), &msg));
    }
    assert!(
        txs.iter().all(|t| !t.from.is_empty()),
        "no bounce expected\n{}",
        server.dump()
    );
}
