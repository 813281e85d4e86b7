//! PIPELINING (RFC 2920) towards the smarthost, and a kept connection reused
//! without RSET. When the server's EHLO offers PIPELINING, MAIL, every RCPT
//! and DATA arrive in one read, and every combination of replies still gives
//! each recipient its own state and leaves the session in step for the next
//! message; without it each command waits for its reply. A transaction that
//! ended with the reply to its data is followed by the next MAIL at once;
//! only an abandoned one is followed by RSET. A kept connection the server
//! closed while it idled is replaced without costing the message anything.
//!
//! One worker, connections kept a minute: consecutive messages share a
//! connection unless the relay gives it up. Retries are an hour away, so
//! nothing is tried again behind a scenario's back.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use common::{upstream_route, wait_for, Relay};
use faults_smtp::*;
use scripted::{reply, standard, Action, Cmd, ScriptedServer};

/// What a DSN's failed recipients look like in a scenario: the sender is told.
const GONE: &str = "550 5.1.1 <gone@dst.test>: Recipient address rejected: User unknown";
const BUSY: &str = "451 4.2.1 <busy@dst.test>: Mailbox busy, try again later";

fn relay(server: &ScriptedServer) -> Relay {
    Relay::start(&format!(
        "retry = \"F,4d,1h\"\n[timeouts]\nupstream_command = \"30s\"\nupstream_data = \"30s\"\nidle = \"60s\"\n{}",
        upstream_route(server.port(), "max_connections = 1")
    ))
}

/// A well-behaved server without PIPELINING.
fn lock_step(cmd: &Cmd<'_>) -> Action {
    match cmd {
        Cmd::Ehlo(_) => reply("250-scripted.test\r\n250-SIZE 10240000\r\n250 8BITMIME"),
        _ => standard(cmd),
    }
}

/// Refuses gone@ (550) and busy@ (451); `base` answers the rest.
fn refusing(base: fn(&Cmd<'_>) -> Action) -> impl Fn(&scripted::Ctx, &Cmd<'_>) -> Action {
    move |_, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == "gone@dst.test" => reply(GONE),
        Cmd::Rcpt { to, .. } if *to == "busy@dst.test" => reply(BUSY),
        _ => base(cmd),
    }
}

fn batches(server: &ScriptedServer, conn: usize) -> Vec<Vec<String>> {
    server.connections()[conn].batches()
}

fn group(verbs: &[&str]) -> Vec<String> {
    verbs.iter().map(|v| v.to_string()).collect()
}

/// (a) With PIPELINING, MAIL, the RCPTs and DATA come in one read, then the
/// message; it is delivered.
#[test]
fn envelope_arrives_in_one_read_and_is_delivered() {
    let server = ScriptedServer::accepting();
    let relay = relay(&server);
    let rcpts = ["a@dst.test", "b@dst.test", "c@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "group");

    assert_attempt(&relay, &server, &id, &rcpts, 1, "sent", QUEUED);
    wait_removed(&relay, &id);
    let b = batches(&server, 0);
    assert_eq!(b[0], group(&["EHLO"]), "{}", server.dump());
    assert_eq!(
        b[1],
        group(&["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]),
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "{}", server.dump());
    assert_eq!(txs[0].accepted(), rcpts);
    assert!(txs[0].delivered() && is_message(txs[0].data.as_deref(), &msg));
    assert!(txs[0].params.contains("SIZE="), "{}", server.dump());
}

/// (b) 250, 451 and 550 to the pipelined RCPTs: delivered, deferred and
/// bounced; the message goes to the accepted one only.
#[test]
fn mixed_rcpt_replies_split_the_recipients() {
    let server = ScriptedServer::start(refusing(standard));
    let relay = relay(&server);
    let rcpts = ["ok@dst.test", "busy@dst.test", "gone@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "mixed");

    let lines = attempt_lines(&relay, &id, &rcpts, 1);
    expect_line(&lines, 0, "attempts=1 status=sent", QUEUED);
    expect_line(&lines, 1, "attempts=1 status=deferred", BUSY);
    expect_line(&lines, 2, "attempts=1 status=bounced", GONE);
    let found = find(&relay, &id);
    assert!(found.queued, "{found:?}");
    assert_eq!(
        found.states(),
        [
            ("ok@dst.test", "delivered"),
            ("busy@dst.test", "deferred"),
            ("gone@dst.test", "bounced")
        ]
    );

    let dsns = wait_dsns(&server, 1);
    assert_dsn(&dsns[0], &[("gone@dst.test", "5.1.1", GONE)], "mixed");
    let b = batches(&server, 0);
    assert_eq!(
        b[1],
        group(&["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]),
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert_eq!(txs[0].accepted(), ["ok@dst.test"]);
    assert!(txs[0].delivered() && is_message(txs[0].data.as_deref(), &msg));
}

/// (c) MAIL refused with 451 under pipelining: the RCPTs and DATA sent with
/// it are answered 503 and change nothing; every recipient is deferred with
/// the 451. The session stays in step: RSET, and the next message goes out
/// on the same connection.
#[test]
fn refused_mail_defers_everyone_and_the_session_stays_in_step() {
    const GREYLISTED: &str = "451 4.7.1 <grey@src.test>: Sender address greylisted";
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Mail(from) if *from == "grey@src.test" => reply(GREYLISTED),
        _ => standard(cmd),
    });
    let relay = relay(&server);
    let rcpts = ["bob@dst.test", "carol@dst.test"];
    let first = relay
        .send("grey@src.test", &rcpts, &message("grey"))
        .expect("accepted");
    assert_attempt(&relay, &server, &first, &rcpts, 1, "deferred", GREYLISTED);
    assert_recipients(&relay, &first, &rcpts, "deferred", GREYLISTED);

    let (second, msg) = submit(&relay, &["dave@dst.test"], "after-grey");
    assert_attempt(
        &relay,
        &server,
        &second,
        &["dave@dst.test"],
        1,
        "sent",
        QUEUED,
    );
    assert_eq!(server.connections().len(), 1, "{}", server.dump());
    assert_eq!(
        batches(&server, 0)[1..4],
        [
            group(&["MAIL", "RCPT", "RCPT", "DATA"]),
            group(&["RSET"]),
            group(&["MAIL", "RCPT", "DATA"]),
        ],
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert_eq!(txs.len(), 2, "{}", server.dump());
    assert!(
        txs[0].rcpts.is_empty() && txs[0].data.is_none(),
        "{}",
        server.dump()
    );
    assert!(txs[1].delivered() && is_message(txs[1].data.as_deref(), &msg));
    assert!(!relay.log().contains("status=bounced"));
}

/// (d) Every RCPT refused, and DATA answered 354 all the same (RFC 2920 3.1
/// warns of such servers): the relay sends only the terminating dot, counts
/// nothing as delivered, and the session is ready for the next MAIL.
#[test]
fn all_rcpts_refused_but_data_accepted_sends_only_the_dot() {
    let server = ScriptedServer::start(refusing(standard));
    server.answer_data_without_recipients();
    let relay = relay(&server);
    let rcpts = ["busy@dst.test", "gone@dst.test"];
    let (id, _) = submit(&relay, &rcpts, "none-left");

    let lines = attempt_lines(&relay, &id, &rcpts, 1);
    expect_line(&lines, 0, "attempts=1 status=deferred", BUSY);
    expect_line(&lines, 1, "attempts=1 status=bounced", GONE);
    let found = find(&relay, &id);
    assert_eq!(
        found.states(),
        [("busy@dst.test", "deferred"), ("gone@dst.test", "bounced")]
    );
    for r in rcpts {
        let lines = status_lines(&relay, &id, r);
        assert!(
            lines.iter().all(|l| !l.contains("status=sent")),
            "{lines:?}"
        );
    }

    // The DSN follows on the same connection with no RSET: the dot's reply
    // ended the transaction.
    let dsns = wait_dsns(&server, 1);
    assert_dsn(&dsns[0], &[("gone@dst.test", "5.1.1", GONE)], "none-left");
    let txs = server.transactions();
    assert_eq!(txs[0].data_reply.as_deref().map(|r| &r[..3]), Some("354"));
    assert_eq!(txs[0].data.as_deref(), Some(&b""[..]), "only the dot");
    assert_eq!(server.connections().len(), 1, "{}", server.dump());
    assert!(
        !server.connections()[0]
            .verbs()
            .contains(&"RSET".to_string()),
        "{}",
        server.dump()
    );
}

/// (e) DATA refused with 554 under pipelining: both accepted recipients
/// bounce with that reply; no message byte is sent; RSET before the DSN.
#[test]
fn refused_data_bounces_the_accepted_recipients() {
    const REFUSED: &str = "554 5.7.1 Message refused by policy";
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Data if ctx.from.as_deref() != Some("") => reply(REFUSED),
        _ => standard(cmd),
    });
    let relay = relay(&server);
    let rcpts = ["bob@dst.test", "carol@dst.test"];
    let (id, _) = submit(&relay, &rcpts, "data-554");

    assert_bounced(&relay, &server, &id, &rcpts, REFUSED);
    let dsns = wait_dsns(&server, 1);
    assert_dsn(
        &dsns[0],
        &[
            ("bob@dst.test", "5.7.1", REFUSED),
            ("carol@dst.test", "5.7.1", REFUSED),
        ],
        "data-554",
    );
    let txs = server.transactions();
    assert_eq!(txs[0].accepted(), rcpts);
    assert!(txs[0].data.is_none(), "{}", server.dump());
    assert_eq!(
        batches(&server, 0)[1..4],
        [
            group(&["MAIL", "RCPT", "RCPT", "DATA"]),
            group(&["RSET"]),
            group(&["MAIL", "RCPT", "DATA"]),
        ],
        "{}",
        server.dump()
    );
}

/// (f) Two messages over one connection: the second MAIL follows the first
/// message's final reply directly, no RSET.
#[test]
fn consecutive_messages_share_a_connection_without_rset() {
    let server = ScriptedServer::accepting();
    let relay = relay(&server);
    let (first, m1) = submit(&relay, &["one@dst.test"], "first");
    assert_attempt(
        &relay,
        &server,
        &first,
        &["one@dst.test"],
        1,
        "sent",
        QUEUED,
    );
    let (second, m2) = submit(&relay, &["two@dst.test"], "second");
    assert_attempt(
        &relay,
        &server,
        &second,
        &["two@dst.test"],
        1,
        "sent",
        QUEUED,
    );

    let conns = server.connections();
    assert_eq!(conns.len(), 1, "{}", server.dump());
    assert_eq!(
        conns[0].verbs(),
        ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"],
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert!(txs[0].delivered() && is_message(txs[0].data.as_deref(), &m1));
    assert!(txs[1].delivered() && is_message(txs[1].data.as_deref(), &m2));
    assert_eq!(txs[1].conn, 0);
}

/// Delivers one message on connection 0, which `script` then closes; waits
/// until it is closed. Returns the relay.
fn deliver_then_lose_the_connection(server: &ScriptedServer) -> Relay {
    let relay = relay(server);
    let (first, _) = submit(&relay, &["one@dst.test"], "before-close");
    assert_attempt(&relay, server, &first, &["one@dst.test"], 1, "sent", QUEUED);
    relay
}

/// The next message after the kept connection died: sent at its first
/// attempt on a new connection, nothing deferred or bounced.
fn next_message_goes_out_on_a_new_connection(server: &ScriptedServer, relay: &Relay) {
    let (second, msg) = submit(relay, &["two@dst.test"], "after-close");
    assert_attempt(relay, server, &second, &["two@dst.test"], 1, "sent", QUEUED);
    let log = relay.log();
    assert!(
        log.contains("kept connection closed by the server"),
        "{log}"
    );
    assert!(
        !log.contains("status=deferred") && !log.contains("status=bounced"),
        "{log}"
    );
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 2, "{}", server.dump());
    assert_eq!(delivered[1].conn, 1, "{}", server.dump());
    assert!(is_message(delivered[1].data.as_deref(), &msg));
    assert_eq!(server.connections().len(), 2, "{}", server.dump());
}

/// (g) The server closed the kept connection while it idled, without a
/// word: the next message is still delivered at once, on a new connection.
#[test]
fn kept_connection_closed_while_idle_is_replaced() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.conn == 0 => Action::ReplyThenClose(QUEUED.to_string()),
        _ => standard(cmd),
    });
    let relay = deliver_then_lose_the_connection(&server);
    assert!(
        wait_for(PATIENCE, || server.connections()[0].closed),
        "{}",
        server.dump()
    );
    next_message_goes_out_on_a_new_connection(&server, &relay);
}

/// (g') The server answers the next MAIL on the kept connection with 421 (its
/// idle timeout) and closes: the same, a new connection and no deferral.
#[test]
fn kept_connection_answering_421_is_replaced() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Mail(_) if ctx.conn == 0 && ctx.tx_on_conn > 0 => {
            Action::ReplyThenClose("421 4.4.2 scripted.test Error: timeout exceeded".to_string())
        }
        _ => standard(cmd),
    });
    let relay = deliver_then_lose_the_connection(&server);
    next_message_goes_out_on_a_new_connection(&server, &relay);
}

/// A new connection that closes at MAIL is the server's trouble, not a stale
/// connection: deferred, and no second connection for it.
#[test]
fn new_connection_closing_at_mail_defers() {
    const CLOSING: &str = "421 4.3.2 scripted.test Service shutting down";
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Mail(_) => Action::ReplyThenClose(CLOSING.to_string()),
        _ => standard(cmd),
    });
    let relay = relay(&server);
    let rcpts = ["bob@dst.test", "carol@dst.test"];
    let (id, _) = submit(&relay, &rcpts, "closing");
    assert_deferred(&relay, &server, &id, &rcpts, CLOSING);
    assert!(wait_connections_closed(&server, 1), "{}", server.dump());
    assert_eq!(server.connections().len(), 1, "{}", server.dump());
}

/// Without PIPELINING each command waits for its reply, one per read, and
/// the replies mean the same.
#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    let server = ScriptedServer::start(refusing(lock_step));
    let relay = relay(&server);
    let rcpts = ["ok@dst.test", "busy@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "lock-step");

    let lines = attempt_lines(&relay, &id, &rcpts, 1);
    assert!(lines[0].contains("attempts=1 status=sent"), "{lines:?}");
    expect_line(&lines, 1, "attempts=1 status=deferred", BUSY);
    assert_eq!(
        batches(&server, 0)[..5],
        [
            group(&["EHLO"]),
            group(&["MAIL"]),
            group(&["RCPT"]),
            group(&["RCPT"]),
            group(&["DATA"]),
        ],
        "{}",
        server.dump()
    );
    let txs = server.transactions();
    assert!(txs[0].delivered() && is_message(txs[0].data.as_deref(), &msg));
}

/// Without PIPELINING, no recipient accepted: no DATA; the abandoned
/// transaction is reset before the next one (here the DSN) on the same
/// connection.
#[test]
fn without_pipelining_refused_recipients_skip_data_and_reset_before_the_next() {
    let server = ScriptedServer::start(refusing(lock_step));
    let relay = relay(&server);
    let (id, _) = submit(&relay, &["gone@dst.test"], "lock-step-gone");

    assert_bounced(&relay, &server, &id, &["gone@dst.test"], GONE);
    wait_dsns(&server, 1);
    assert_eq!(server.connections().len(), 1, "{}", server.dump());
    assert_eq!(
        server.connections()[0].verbs()[..7],
        ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA"],
        "{}",
        server.dump()
    );
}

/// The log line of recipient `i` says `what` (`attempts=1 status=sent`) with
/// the upstream's reply `detail`.
fn expect_line(lines: &[String], i: usize, what: &str, detail: &str) {
    assert!(
        lines[i].contains(&format!("{what} ({detail})")),
        "{lines:?}"
    );
}
