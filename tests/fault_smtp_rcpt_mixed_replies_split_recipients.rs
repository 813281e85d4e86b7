//! RCPT replies differ across the recipients of one message: each recipient
//! goes its own way. `250` is delivered once; `5xx` bounces, with a DSN naming
//! only that recipient; `4xx` is deferred and retried later alone.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use common::Relay;
use faults_smtp::*;
use scripted::{reply, Cmd, ScriptedServer, Transaction};

const UNKNOWN: &str = "550 5.1.1 <bad@dst.test>: Recipient address rejected: User unknown";
const LATER: &str = "451 4.7.1 <later@dst.test>: Recipient address rejected: try again later";

/// 250, 550 and 451 in one transaction: delivered, bounced (one DSN) and
/// deferred, the last one delivered alone on the retry.
/// (Moved from scripted_upstream.rs.)
#[test]
fn mixed_rcpt_replies_deliver_bounce_and_retry_each_recipient() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == "bad@dst.test" => reply(UNKNOWN),
        Cmd::Rcpt { to, .. } if *to == "later@dst.test" => reply(LATER),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let rcpts = ["ok@dst.test", "bad@dst.test", "later@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "mixed");
    assert_first_attempt_split(&relay, &server, &id, &rcpts);

    // Exactly one DSN, to the sender, with a null reverse-path, about bad@ only.
    let dsns = wait_dsns(&server, 1);
    assert_eq!(dsns.len(), 1, "{}", server.dump());
    let text = assert_dsn(&dsns[0], &[("bad@dst.test", "5.1.1", UNKNOWN)], "mixed");
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1"), "{text}");
    assert!(!text.contains("rfc822; ok@dst.test"), "{text}");
    assert!(!text.contains("rfc822; later@dst.test"), "{text}");

    recover_and_deliver(&server, &relay, &id, &["later@dst.test"], 2, &msg);
    assert_retry_carried_only_later(&server, &rcpts, &msg);
    assert_log_line_per_attempt(&relay, &id);
}

/// The first attempt, in the log and in the queue: ok@ sent, bad@ bounced,
/// later@ deferred, each with the upstream's reply.
fn assert_first_attempt_split(relay: &Relay, server: &ScriptedServer, id: &str, rcpts: &[&str]) {
    let first = attempt_lines(relay, id, rcpts, 1);
    let port = server.port();
    assert!(
        first[0].contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")),
        "{first:?}"
    );
    assert!(first[0].contains("attempts=1 status=sent"), "{first:?}");
    assert!(
        first[1].contains(&format!("attempts=1 status=bounced ({UNKNOWN})")),
        "{first:?}"
    );
    assert!(
        first[2].contains(&format!("attempts=1 status=deferred ({LATER})")),
        "{first:?}"
    );
    let found = find(relay, id);
    assert!(found.queued, "{found:?}");
    assert_eq!(
        found.states(),
        [
            ("ok@dst.test", "delivered"),
            ("bad@dst.test", "bounced"),
            ("later@dst.test", "deferred")
        ]
    );
    assert_eq!(found.detail("later@dst.test"), LATER);
    assert_eq!(found.detail("bad@dst.test"), UNKNOWN);
}

/// The retry carried only the deferred recipient; ok@ was delivered exactly
/// once, `msg` both times, and one DSN went out.
fn assert_retry_carried_only_later(server: &ScriptedServer, rcpts: &[&str], msg: &[u8]) {
    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 2, "{}", server.dump());
    assert_eq!(mine[0].rcpt_addresses(), rcpts, "{}", server.dump());
    assert_eq!(mine[0].accepted(), ["ok@dst.test"]);
    assert!(mine[0].delivered());
    assert_eq!(mine[1].rcpt_addresses(), ["later@dst.test"]);
    assert!(mine[1].delivered());
    for t in &mine {
        assert!(is_message(t.data.as_deref(), msg));
    }
    let accepted_ok: usize = txs
        .iter()
        .filter(|t| t.delivered())
        .map(|t| t.accepted().iter().filter(|a| *a == "ok@dst.test").count())
        .sum();
    assert_eq!(accepted_ok, 1, "ok@ must be delivered exactly once");
    let dsns: Vec<&Transaction> = txs.iter().filter(|t| t.from.is_empty()).collect();
    assert_eq!(dsns.len(), 1, "{}", server.dump());
}

/// The log tells the same story, one line per attempt; the message ends
/// partly bounced.
fn assert_log_line_per_attempt(relay: &Relay, id: &str) {
    let ok = status_lines(relay, id, "ok@dst.test");
    assert_eq!(ok.len(), 1, "{ok:?}");
    let bad = status_lines(relay, id, "bad@dst.test");
    assert_eq!(bad.len(), 1, "{bad:?}");
    let later = status_lines(relay, id, "later@dst.test");
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(later[1].contains("attempts=2 status=sent"), "{later:?}");
    let log = relay.log();
    assert_eq!(
        log.matches(&format!("{id}: sender non-delivery notification"))
            .count(),
        1,
        "{log}"
    );
    let found = find(relay, id);
    assert_eq!(found.outcome.as_deref(), Some("partly bounced"));
}

/// Only the third of three RCPTs gets a 451: the first two are delivered by
/// the same transaction, the third is deferred, retried alone, and delivered;
/// nothing bounces.
#[test]
fn temporary_failure_on_the_third_rcpt_defers_only_that_recipient() {
    const BUSY: &str = "451 4.2.1 <third@dst.test>: Mailbox busy, try again later";
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Rcpt { index: 2, .. } => reply(BUSY),
        _ => healthy(cmd),
    });
    let relay = relay(&server, "");
    let rcpts = ["first@dst.test", "second@dst.test", "third@dst.test"];
    let (id, msg) = submit(&relay, &rcpts, "third-451");

    let first = attempt_lines(&relay, &id, &rcpts, 1);
    for line in &first {
        assert!(line.contains(&relay_field(&server)), "{line}");
    }
    assert!(first[0].contains("attempts=1 status=sent (250 2.0.0 Ok"));
    assert!(first[1].contains("attempts=1 status=sent (250 2.0.0 Ok"));
    assert!(
        first[2].contains(&format!("attempts=1 status=deferred ({BUSY})")),
        "{first:?}"
    );
    let found = find(&relay, &id);
    assert!(found.queued, "{found:?}");
    assert_eq!(
        found.states(),
        [
            (rcpts[0], "delivered"),
            (rcpts[1], "delivered"),
            (rcpts[2], "deferred")
        ]
    );
    assert_eq!(found.detail(rcpts[2]), BUSY);

    // All three named, the message sent to the first two.
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "{}", server.dump());
    assert_eq!(txs[0].rcpt_addresses(), rcpts);
    assert_eq!(txs[0].accepted(), rcpts[..2]);
    assert!(txs[0].delivered() && is_message(txs[0].data.as_deref(), &msg));

    recover_and_deliver(&server, &relay, &id, &rcpts[2..], 2, &msg);
    for r in &rcpts[..2] {
        assert_eq!(status_lines(&relay, &id, r).len(), 1, "delivered once: {r}");
    }
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(server.transactions().iter().all(|t| !t.from.is_empty()));
}
