//! The smarthost takes the whole message and answers the final dot with a 5xx:
//! every recipient of the transaction bounces, and one DSN carries the
//! upstream's reply for each and the original header section (not the body).
//! The message is not tried again. (Moved from scripted_upstream.rs.)

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer};

const REJECT: &str = "554 5.7.1 Message rejected: looks like spam to us";

#[test]
fn permanent_failure_after_data_bounces_all_recipients() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.from.as_deref() != Some("") => reply(REJECT),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let rcpts = ["one@dst.test", "two@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "rejected");

    assert_bounced(&relay, &server, &id, &rcpts, REJECT);

    let dsns = wait_dsns(&server, 1);
    assert_eq!(
        dsns.len(),
        1,
        "one DSN for both recipients\n{}",
        server.dump()
    );
    let text = assert_dsn(
        &dsns[0],
        &[(rcpts[0], "5.7.1", REJECT), (rcpts[1], "5.7.1", REJECT)],
        "rejected",
    );
    assert_eq!(
        text.matches(&format!("Diagnostic-Code: smtp; {REJECT}"))
            .count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("Status: 5.7.1").count(), 2, "{text}");
    assert!(text.contains("Remote-MTA: dns; 127.0.0.1"), "{text}");
    // The original header section, our Received header included.
    for h in [
        "Subject: scripted rejected",
        "Message-ID: <rejected@src.test>",
        "X-Test-Tag: rejected",
        "Received: from client.test",
    ] {
        assert!(text.contains(h), "missing {h:?} in\n{text}");
    }
    assert!(!text.contains("body-marker-rejected"), "{text}");

    // The whole message reached the upstream once; it is not sent again.
    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(
        mine.len(),
        1,
        "a 5xx must not be retried\n{}",
        server.dump()
    );
    assert_eq!(mine[0].accepted(), rcpts);
    assert!(is_message(mine[0].data.as_deref(), &msg));
    assert_eq!(mine[0].reply.as_deref(), Some(REJECT));
}
