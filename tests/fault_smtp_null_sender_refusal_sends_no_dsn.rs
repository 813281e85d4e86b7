//! A message with the null reverse-path (a bounce itself) that the smarthost
//! refuses for good is bounced without a DSN of its own: a bounce of a bounce
//! could loop. The recipient is recorded as bounced and the message leaves the
//! queue; nothing more reaches the upstream.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use common::Relay;
use faults_smtp::*;
use scripted::{reply, standard, Cmd, ScriptedServer};

/// The message bounced (`reply` in its status line), made no DSN, and the
/// upstream saw just the one transaction from `<>`.
fn bounced_without_dsn(relay: &Relay, server: &ScriptedServer, id: &str, rcpt: &str, reply: &str) {
    let lines = wait_status(relay, id, rcpt, 1, PATIENCE);
    assert_eq!(lines.len(), 1, "log:\n{}", relay.log());
    assert!(lines[0].contains(&relay_field(server)), "{lines:?}");
    assert!(
        lines[0].contains(&format!("attempts=1 status=bounced ({reply})")),
        "{lines:?}"
    );
    // The DSN would be logged before the message is removed.
    wait_removed(relay, id);
    let log = relay.log();
    assert!(!log.contains("non-delivery notification"), "{log}");
    assert!(!log.contains("cannot build bounce"), "{log}");
    let found = find(relay, id);
    assert!(!found.queued, "{found:?}");
    assert_eq!(found.states(), [(rcpt, "bounced")]);
    assert_eq!(found.detail(rcpt), reply);

    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "no further transaction\n{}", server.dump());
    assert_eq!(txs[0].from, "");
}

#[test]
fn null_sender_refused_at_mail_from_sends_no_dsn() {
    const REFUSED: &str = "553 5.7.1 <>: Sender address rejected: null sender not allowed";
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Mail("") => reply(REFUSED),
        _ => standard(cmd),
    });
    let relay = relay(&server, "");
    let id = submit_null_sender(&relay, "ghost@dst.test", "null-mail");
    bounced_without_dsn(&relay, &server, &id, "ghost@dst.test", REFUSED);
    assert!(server.transactions()[0].rcpts.is_empty());
}

/// (Moved from scripted_upstream.rs.)
#[test]
fn bounce_of_null_sender_message_is_not_bounced_again() {
    const REFUSED: &str = "550 5.1.1 <ghost@dst.test>: Recipient address rejected: User unknown";
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Rcpt { .. } if ctx.from.as_deref() == Some("") => reply(REFUSED),
        _ => standard(cmd),
    });
    let relay = relay(&server, "");
    let id = submit_null_sender(&relay, "ghost@dst.test", "null-sender");
    bounced_without_dsn(&relay, &server, &id, "ghost@dst.test", REFUSED);
    assert_eq!(
        server.transactions()[0].rcpt_addresses(),
        ["ghost@dst.test"]
    );
}
