//! Delivery against a scripted upstream: what the relay does with each kind of
//! upstream reply or misbehaviour, seen from the upstream's side (what arrived,
//! on which connection) and from the relay's log.

mod common;
#[path = "common/scripted.rs"]
mod scripted;

use std::time::{Duration, Instant};

use common::{strip_received, Client, Relay};
use scripted::{reply, standard, Action, Cmd, ScriptedServer, Transaction};

const SENDER: &str = "alice@src.test";

/// A relay whose default route is the scripted server, with short retries and
/// timeouts. `route_extra` is added to the route table (e.g. `tls = ...`).
fn config(port: u16, route_extra: &str) -> String {
    let tls = if route_extra.contains("tls =") {
        ""
    } else {
        "tls = \"none\"\n"
    };
    format!(
        r#"retry = "F,1m,1s"
[timeouts]
upstream_command = "2s"
upstream_data = "2s"
greeting = "2s"
connect = "2s"
idle = "1s"
[[route]]
name = "up"
host = "127.0.0.1"
port = {port}
{tls}{route_extra}
[routing]
default = "up"
"#
    )
}

/// A CRLF message with dot-leading lines (to exercise transparency both ways)
/// and a recognisable header section.
fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: Alice <{SENDER}>\r\n\
         To: someone@dst.test\r\n\
         Subject: scripted {tag}\r\n\
         Message-ID: <{tag}@src.test>\r\n\
         X-Test-Tag: {tag}\r\n\
         \r\n\
         Body of {tag}.\r\n\
         .a line that starts with a dot\r\n\
         ..two dots\r\n\
         .\r\n\
         body-marker-{tag}\r\n"
    )
    .into_bytes()
}

/// The relay's per-recipient status lines for one message and recipient.
fn status_lines(relay: &Relay, id: &str, rcpt: &str) -> Vec<String> {
    let needle = format!("{id}: to=<{rcpt}>");
    relay
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn wait_status(relay: &Relay, id: &str, rcpt: &str, n: usize, timeout: Duration) -> Vec<String> {
    let needle = format!("{id}: to=<{rcpt}>");
    relay.wait_log(&needle, n, timeout);
    status_lines(relay, id, rcpt)
}

fn from_sender<'a>(txs: &'a [Transaction], sender: &str) -> Vec<&'a Transaction> {
    txs.iter().filter(|t| t.from == sender).collect()
}

/// RFC 5322 unfolding, for fields the DSN may have folded.
fn unfold(s: &str) -> String {
    s.replace("\r\n ", " ").replace("\r\n\t", " ")
}

fn received_headers(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let headers = text.split("\r\n\r\n").next().unwrap_or_default();
    headers
        .split("\r\n")
        .filter(|l| l.starts_with("Received:"))
        .count()
}

/// (a) One transaction, three RCPT replies: 250, 550 and 451. Each recipient
/// goes its own way: delivered once, bounced (one DSN), deferred and retried alone.
#[test]
fn mixed_rcpt_replies_deliver_bounce_and_retry_each_recipient() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == "bad@dst.test" => {
            reply("550 5.1.1 <bad@dst.test>: Recipient address rejected: User unknown")
        }
        Cmd::Rcpt { to, .. } if *to == "later@dst.test" && ctx.earlier_rcpt == 0 => {
            reply("451 4.7.1 <later@dst.test>: Recipient address rejected: try again later")
        }
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let msg = message("mixed");
    let rcpts = ["ok@dst.test", "bad@dst.test", "later@dst.test"];
    let id = relay.send(SENDER, &rcpts, &msg).expect("accepted");

    let done = server.wait_until(Duration::from_secs(15), |txs| {
        let retried = txs
            .iter()
            .any(|t| t.from == SENDER && t.delivered() && t.accepted() == ["later@dst.test"]);
        let dsn = txs.iter().any(|t| t.from.is_empty() && t.delivered());
        retried && dsn
    });
    assert!(done, "retry and DSN expected\n{}", server.dump());
    assert!(
        relay.wait_log(&format!("{id}: removed"), 1, Duration::from_secs(5)),
        "message should be finished; log:\n{}",
        relay.log()
    );
    // Anything wrongly repeated would show up within a few retry intervals.
    std::thread::sleep(Duration::from_millis(2500));
    let txs = server.transactions();

    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 2, "{}", server.dump());
    assert_eq!(mine[0].rcpt_addresses(), rcpts, "{}", server.dump());
    assert_eq!(mine[0].accepted(), ["ok@dst.test"]);
    assert!(mine[0].delivered());
    // The retry carries only the deferred recipient.
    assert_eq!(mine[1].rcpt_addresses(), ["later@dst.test"]);
    assert!(mine[1].delivered());
    for t in &mine {
        assert_eq!(strip_received(t.data.as_deref().unwrap()), &msg[..]);
    }
    let accepted_ok: usize = txs
        .iter()
        .filter(|t| t.delivered())
        .map(|t| t.accepted().iter().filter(|a| *a == "ok@dst.test").count())
        .sum();
    assert_eq!(accepted_ok, 1, "ok@ must be delivered exactly once");

    // Exactly one DSN, to the sender, with a null reverse-path, about bad@ only.
    let dsns: Vec<&Transaction> = txs.iter().filter(|t| t.from.is_empty()).collect();
    assert_eq!(dsns.len(), 1, "{}", server.dump());
    let dsn = dsns[0];
    assert_eq!(dsn.rcpt_addresses(), [SENDER]);
    let text = unfold(&dsn.text());
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("message/delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; bad@dst.test"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1"), "{text}");
    assert!(!text.contains("rfc822; ok@dst.test"), "{text}");
    assert!(!text.contains("rfc822; later@dst.test"), "{text}");
    assert!(text.contains("Message-ID: <mixed@src.test>"), "{text}");

    // The log tells the same story.
    let ok = status_lines(&relay, &id, "ok@dst.test");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(ok[0].contains("attempts=1 status=sent"), "{ok:?}");
    let port = server.port();
    assert!(
        ok[0].contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")),
        "{ok:?}"
    );
    let bad = status_lines(&relay, &id, "bad@dst.test");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("attempts=1 status=bounced (550 5.1.1"),
        "{bad:?}"
    );
    let later = status_lines(&relay, &id, "later@dst.test");
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(
        later[0].contains("attempts=1 status=deferred (451 4.7.1"),
        "{later:?}"
    );
    assert!(later[1].contains("attempts=2 status=sent"), "{later:?}");
    let log = relay.log();
    assert_eq!(
        log.matches(&format!("{id}: sender non-delivery notification"))
            .count(),
        1,
        "{log}"
    );
}

/// (b) 451 after the final dot, then 250 on the retry: one delivery, attempts=2.
#[test]
fn temporary_failure_after_data_is_retried_and_sent() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.earlier_from == 0 => reply("451 4.3.0 Error: queue file write error"),
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let msg = message("retry");
    let id = relay
        .send(SENDER, &["bob@dst.test"], &msg)
        .expect("accepted");

    let lines = wait_status(&relay, &id, "bob@dst.test", 2, Duration::from_secs(15));
    assert_eq!(lines.len(), 2, "log:\n{}", relay.log());
    assert!(
        lines[0].contains("attempts=1 status=deferred (451 4.3.0 Error: queue file write error)"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("attempts=2 status=sent (250"),
        "{lines:?}"
    );
    assert!(relay.wait_log(&format!("{id}: removed"), 1, Duration::from_secs(5)));

    std::thread::sleep(Duration::from_millis(2000));
    let txs = server.transactions();
    let mine = from_sender(&txs, SENDER);
    assert_eq!(mine.len(), 2, "{}", server.dump());
    assert_eq!(
        mine[0].reply.as_deref(),
        Some("451 4.3.0 Error: queue file write error")
    );
    assert!(mine[1].delivered());
    assert_eq!(server.delivered().len(), 1, "{}", server.dump());
    for t in &mine {
        assert_eq!(t.rcpt_addresses(), ["bob@dst.test"]);
        assert_eq!(strip_received(t.data.as_deref().unwrap()), &msg[..]);
    }
    assert!(
        txs.iter().all(|t| !t.from.is_empty()),
        "no bounce expected\n{}",
        server.dump()
    );
}

/// (c) 554 after the final dot: every recipient bounces, one DSN carries the
/// upstream's text and the original header section (not the body).
#[test]
fn permanent_failure_after_data_bounces_all_recipients() {
    const REJECT: &str = "554 5.7.1 Message rejected: looks like spam to us";
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.from.as_deref() != Some("") => reply(REJECT),
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let msg = message("rejected");
    let rcpts = ["one@dst.test", "two@dst.test"];
    let id = relay.send(SENDER, &rcpts, &msg).expect("accepted");

    let got = server.wait_until(Duration::from_secs(10), |txs| {
        txs.iter().any(|t| t.from.is_empty() && t.delivered())
    });
    assert!(got, "DSN expected\n{}", server.dump());
    for r in rcpts {
        let lines = wait_status(&relay, &id, r, 1, Duration::from_secs(5));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&format!("attempts=1 status=bounced ({REJECT})")),
            "{lines:?}"
        );
    }
    assert!(relay.wait_log(&format!("{id}: removed"), 1, Duration::from_secs(5)));

    std::thread::sleep(Duration::from_millis(2000));
    let txs = server.transactions();
    assert_eq!(
        from_sender(&txs, SENDER).len(),
        1,
        "a 5xx must not be retried\n{}",
        server.dump()
    );
    let dsns: Vec<&Transaction> = txs.iter().filter(|t| t.from.is_empty()).collect();
    assert_eq!(
        dsns.len(),
        1,
        "one DSN for both recipients\n{}",
        server.dump()
    );
    let dsn = dsns[0];
    assert_eq!(dsn.rcpt_addresses(), [SENDER]);
    let text = unfold(&dsn.text());
    assert!(text.contains("multipart/report"), "{text}");
    for r in rcpts {
        assert!(
            text.contains(&format!("Final-Recipient: rfc822; {r}")),
            "{text}"
        );
    }
    assert_eq!(
        text.matches(&format!("Diagnostic-Code: smtp; {REJECT}"))
            .count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("Status: 5.7.1").count(), 2, "{text}");
    assert!(text.contains("Remote-MTA: dns; 127.0.0.1"), "{text}");
    // The original header section, our Received header included, but not the body.
    assert!(text.contains("text/rfc822-headers"), "{text}");
    for h in [
        "Subject: scripted rejected",
        "Message-ID: <rejected@src.test>",
        "X-Test-Tag: rejected",
        "Received: from client.test",
    ] {
        assert!(text.contains(h), "missing {h:?} in\n{text}");
    }
    assert!(!text.contains("body-marker-rejected"), "{text}");
    let dsn_headers = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        dsn_headers.contains("Auto-Submitted: auto-replied"),
        "{text}"
    );
    assert!(dsn_headers.contains(&format!("To: {SENDER}")), "{text}");
}

/// (d) The upstream drops the connection in the middle of the message: deferred,
/// then delivered intact on the retry (new connection).
#[test]
fn connection_dropped_mid_data_is_retried_intact() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Data if ctx.conn == 0 => Action::DropAfterDataBytes(100),
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    // Big enough that 100 bytes are really the middle, with dot lines throughout.
    let mut msg = message("dropped");
    for i in 0..2000 {
        msg.extend_from_slice(format!(".line {i} with a leading dot\r\nline {i}\r\n").as_bytes());
    }
    let id = relay
        .send(SENDER, &["carol@dst.test"], &msg)
        .expect("accepted");

    let lines = wait_status(&relay, &id, "carol@dst.test", 2, Duration::from_secs(15));
    assert_eq!(lines.len(), 2, "log:\n{}\n{}", relay.log(), server.dump());
    assert!(lines[0].contains("attempts=1 status=deferred"), "{lines:?}");
    assert!(lines[1].contains("attempts=2 status=sent"), "{lines:?}");

    let txs = server.transactions();
    assert_eq!(txs.len(), 2, "{}", server.dump());
    assert!(
        txs[0].data.is_none() && txs[0].reply.is_none(),
        "{}",
        server.dump()
    );
    assert!(txs[0].aborted);
    assert_ne!(
        txs[1].conn, txs[0].conn,
        "a broken connection is not reused"
    );
    let data = txs[1].data.as_deref().expect("data on retry");
    assert!(txs[1].delivered());
    assert_eq!(received_headers(data), 1);
    assert!(data.starts_with(b"Received: from client.test ([127.0.0.1])"));
    assert!(
        strip_received(data) == &msg[..],
        "delivered bytes differ from the submitted message"
    );
}

/// (e) An upstream that stops answering after its greeting: deferred with a
/// timeout after about `upstream_command`, delivered once it answers again.
#[test]
fn silent_upstream_after_greeting_times_out_then_delivers() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Ehlo(_) if ctx.conn == 0 => Action::Stall,
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let t0 = Instant::now();
    let id = relay
        .send(SENDER, &["dave@dst.test"], &message("silent"))
        .expect("accepted");
    let lines = wait_status(&relay, &id, "dave@dst.test", 1, Duration::from_secs(10));
    let elapsed = t0.elapsed();
    // The retry may follow at once (due times are whole seconds): look at the first.
    assert!(!lines.is_empty(), "log:\n{}", relay.log());
    assert!(
        lines[0].contains("attempts=1 status=deferred") && lines[0].contains("timed out"),
        "{lines:?}"
    );
    assert!(lines[0].contains("EHLO"), "{lines:?}");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "deferred after {elapsed:?}"
    );

    let lines = wait_status(&relay, &id, "dave@dst.test", 2, Duration::from_secs(10));
    assert!(
        lines.len() == 2 && lines[1].contains("attempts=2 status=sent"),
        "{lines:?}"
    );
    let conns = server.connections();
    assert_eq!(conns[0].commands, ["EHLO relay.test"], "{}", server.dump());
    assert!(conns[0].closed, "the relay gives up the silent connection");
    assert_eq!(server.delivered().len(), 1, "{}", server.dump());
    assert_eq!(server.delivered()[0].conn, 1);
}

/// (e) An upstream that takes the whole message and never answers the final dot:
/// deferred with a timeout after about `upstream_data`, then delivered on the
/// retry (the upstream may now hold it twice, which is the accepted risk).
#[test]
fn silent_upstream_after_final_dot_times_out_then_delivers() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.conn == 0 => Action::Stall,
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let msg = message("stalled");
    let t0 = Instant::now();
    let id = relay
        .send(SENDER, &["erin@dst.test"], &msg)
        .expect("accepted");
    let lines = wait_status(&relay, &id, "erin@dst.test", 1, Duration::from_secs(10));
    let elapsed = t0.elapsed();
    // The retry may follow at once (due times are whole seconds): look at the first.
    assert!(!lines.is_empty(), "log:\n{}", relay.log());
    assert!(
        lines[0].contains("attempts=1 status=deferred (after end of data: timed out"),
        "{lines:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "deferred after {elapsed:?}"
    );

    let lines = wait_status(&relay, &id, "erin@dst.test", 2, Duration::from_secs(10));
    assert!(
        lines.len() == 2 && lines[1].contains("attempts=2 status=sent"),
        "{lines:?}"
    );
    let txs = server.transactions();
    assert_eq!(txs.len(), 2, "{}", server.dump());
    assert_eq!(txs[0].conn, 0);
    assert_eq!(strip_received(txs[0].data.as_deref().unwrap()), &msg[..]);
    assert!(txs[0].reply.is_none() && txs[0].aborted);
    assert!(txs[1].delivered() && txs[1].conn != 0);
    assert_eq!(strip_received(txs[1].data.as_deref().unwrap()), &msg[..]);
}

/// (g) A message with the null sender that bounces produces no bounce of its own.
#[test]
fn bounce_of_null_sender_message_is_not_bounced_again() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Rcpt { .. } if ctx.from.as_deref() == Some("") => {
            reply("550 5.1.1 <ghost@dst.test>: Recipient address rejected: User unknown")
        }
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));

    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<>", 250);
    c.expect_cmd("RCPT TO:<ghost@dst.test>", 250);
    c.expect_cmd("DATA", 354);
    c.write(&common::dot_stuff(&message("null-sender")));
    let r = c.read_reply();
    let id = r
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {r:?}"))
        .trim()
        .to_string();
    c.expect_cmd("QUIT", 221);

    let lines = wait_status(&relay, &id, "ghost@dst.test", 1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1, "log:\n{}", relay.log());
    assert!(
        lines[0].contains("attempts=1 status=bounced (550 5.1.1"),
        "{lines:?}"
    );
    assert!(relay.wait_log(&format!("{id}: removed"), 1, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(2500));
    let txs = server.transactions();
    assert_eq!(txs.len(), 1, "no further transaction\n{}", server.dump());
    assert_eq!(txs[0].from, "");
    assert_eq!(txs[0].rcpt_addresses(), ["ghost@dst.test"]);
    let log = relay.log();
    assert!(!log.contains("non-delivery notification"), "{log}");
    assert!(!log.contains("cannot build bounce"), "{log}");
}

/// (h) Messages queued while a delivery is under way go out over the same
/// connection, RSET between them; an idle connection is closed with QUIT.
#[test]
fn connection_is_reused_for_queued_messages() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        // Slow first answer on each connection so the rest queue up meanwhile.
        Cmd::Dot(_) if ctx.tx_on_conn == 0 => Action::DelayedReply(
            Duration::from_millis(400),
            "250 2.0.0 Ok: queued".to_string(),
        ),
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), "max_connections = 2"));
    let n = 5;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = relay
            .send(
                SENDER,
                &[&format!("r{i}@dst.test")],
                &message(&format!("reuse{i}")),
            )
            .expect("accepted");
        ids.push(id);
    }
    let all = server.wait_until(Duration::from_secs(15), |txs| {
        txs.iter().filter(|t| t.delivered()).count() >= n
    });
    assert!(all, "{}", server.dump());
    for (i, id) in ids.iter().enumerate() {
        let lines = wait_status(
            &relay,
            id,
            &format!("r{i}@dst.test"),
            1,
            Duration::from_secs(5),
        );
        assert!(
            lines.len() == 1 && lines[0].contains("attempts=1 status=sent"),
            "{lines:?}"
        );
    }
    let conns = server.connections();
    assert!(
        conns.len() < n && conns.len() <= 2,
        "{} connections for {n} messages (max_connections = 2)\n{}",
        conns.len(),
        server.dump()
    );
    // Every transaction after the first on a connection is preceded by RSET.
    for c in &conns {
        let verbs = c.verbs();
        let mails: Vec<usize> = (0..verbs.len()).filter(|&i| verbs[i] == "MAIL").collect();
        for &m in mails.iter().skip(1) {
            assert_eq!(verbs[m - 1], "RSET", "{verbs:?}");
        }
        assert_eq!(
            verbs.iter().filter(|v| *v == "EHLO").count(),
            1,
            "{verbs:?}"
        );
    }
    let txs = server.transactions();
    assert_eq!(txs.len(), n, "{}", server.dump());
    assert!(txs.iter().all(|t| t.delivered()), "{}", server.dump());
    // Idle for `idle` (1s): the relay says goodbye.
    let closed = common::wait_for(Duration::from_secs(6), || {
        server
            .connections()
            .iter()
            .all(|c| c.closed && c.verbs().last().map(String::as_str) == Some("QUIT"))
    });
    assert!(
        closed,
        "idle connections should end with QUIT\n{}",
        server.dump()
    );
}

/// (d') The upstream drops the connection right after the final dot, before its
/// reply: the relay cannot know whether the message was taken, so it defers and
/// sends it again (a possible duplicate, never a loss).
#[test]
fn connection_dropped_after_final_dot_is_resent() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Dot(_) if ctx.conn == 0 => Action::Drop,
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), ""));
    let msg = message("lost-reply");
    let id = relay
        .send(SENDER, &["gina@dst.test"], &msg)
        .expect("accepted");
    let lines = wait_status(&relay, &id, "gina@dst.test", 2, Duration::from_secs(15));
    assert_eq!(lines.len(), 2, "log:\n{}", relay.log());
    assert!(
        lines[0].contains("attempts=1 status=deferred (after end of data:"),
        "{lines:?}"
    );
    assert!(lines[1].contains("attempts=2 status=sent"), "{lines:?}");
    let txs = server.transactions();
    assert_eq!(txs.len(), 2, "{}", server.dump());
    assert!(txs[0].reply.is_none() && txs[0].aborted);
    assert!(txs[1].delivered() && txs[1].conn != txs[0].conn);
    for t in &txs {
        assert_eq!(strip_received(t.data.as_deref().unwrap()), &msg[..]);
    }
}

/// (i) A recipient deferred until the schedule's last cutoff is bounced with
/// 5.4.7 and the last upstream error; the others are unaffected.
#[test]
fn retry_schedule_exhaustion_bounces_with_last_error() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == "never@dst.test" && ctx.from.as_deref() != Some("") => {
            reply("451 4.2.0 <never@dst.test>: mailbox busy")
        }
        _ => standard(cmd),
    });
    let body = config(server.port(), "").replace("F,1m,1s", "F,3s,1s");
    let relay = Relay::start(&body);
    let id = relay
        .send(
            SENDER,
            &["never@dst.test", "fine@dst.test"],
            &message("expire"),
        )
        .expect("accepted");
    let got = server.wait_until(Duration::from_secs(15), |txs| {
        txs.iter().any(|t| t.from.is_empty() && t.delivered())
    });
    assert!(got, "DSN expected\n{}", server.dump());
    let lines = status_lines(&relay, &id, "never@dst.test");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.contains("status=bounced (retry timeout exceeded (last error: 451 4.2.0"),
        "{lines:?}"
    );
    assert!(
        lines.len() >= 3,
        "retried every second until the cutoff: {lines:?}"
    );
    for l in &lines[..lines.len() - 1] {
        assert!(l.contains("status=deferred (451 4.2.0"), "{lines:?}");
    }
    let fine = status_lines(&relay, &id, "fine@dst.test");
    assert!(
        fine.len() == 1 && fine[0].contains("attempts=1 status=sent"),
        "{fine:?}"
    );

    let txs = server.transactions();
    let dsn = txs.iter().find(|t| t.from.is_empty()).unwrap();
    assert_eq!(dsn.rcpt_addresses(), [SENDER]);
    let text = unfold(&dsn.text());
    assert!(
        text.contains("Final-Recipient: rfc822; never@dst.test"),
        "{text}"
    );
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert!(!text.contains("rfc822; fine@dst.test"), "{text}");
    assert!(text.contains("retry timeout exceeded"), "{text}");
    // Every retry after the first asked for never@ alone.
    let mine = from_sender(&txs, SENDER);
    assert!(mine.len() >= 3, "{}", server.dump());
    for t in &mine[1..] {
        assert_eq!(t.rcpt_addresses(), ["never@dst.test"], "{}", server.dump());
    }
}

/// (h') A kept connection that the upstream has closed meanwhile is replaced
/// without costing the next message an attempt.
#[test]
fn stale_reused_connection_is_replaced_transparently() {
    let server = ScriptedServer::start(|ctx, cmd| match cmd {
        // The upstream has given up on the first connection by the time it is reused.
        Cmd::Rset if ctx.conn == 0 => Action::Drop,
        _ => standard(cmd),
    });
    let relay = Relay::start(&config(server.port(), "max_connections = 1"));
    let first = relay
        .send(SENDER, &["ivy@dst.test"], &message("stale1"))
        .expect("accepted");
    assert!(server.wait_until(Duration::from_secs(10), |txs| txs
        .iter()
        .any(|t| t.delivered())));
    // Within the idle time (1s), so the worker still holds the connection.
    let second = relay
        .send(SENDER, &["jay@dst.test"], &message("stale2"))
        .expect("accepted");
    let l1 = wait_status(&relay, &first, "ivy@dst.test", 1, Duration::from_secs(5));
    let l2 = wait_status(&relay, &second, "jay@dst.test", 1, Duration::from_secs(10));
    assert!(
        l1.len() == 1 && l1[0].contains("attempts=1 status=sent"),
        "{l1:?}"
    );
    assert!(
        l2.len() == 1 && l2[0].contains("attempts=1 status=sent"),
        "{l2:?}\n{}",
        server.dump()
    );
    let conns = server.connections();
    assert_eq!(conns.len(), 2, "{}", server.dump());
    assert_eq!(
        conns[0].verbs(),
        ["EHLO", "MAIL", "RCPT", "DATA", "RSET"],
        "{}",
        server.dump()
    );
    let txs = server.delivered();
    assert_eq!(txs.len(), 2);
    assert_eq!((txs[0].conn, txs[1].conn), (0, 1));
}

/// A route's `helo` replaces `hostname` in the EHLO it sends; other routes keep
/// `hostname` (the base config's `relay.test`, seen in the tests above).
#[test]
fn route_helo_is_sent_in_ehlo() {
    let server = ScriptedServer::start(|_, cmd| standard(cmd));
    let relay = Relay::start(&config(server.port(), "helo = \"cms.example.org\""));
    let id = relay
        .send(SENDER, &["erin@dst.test"], &message("helo"))
        .expect("accepted");
    let lines = wait_status(&relay, &id, "erin@dst.test", 1, Duration::from_secs(10));
    assert!(
        lines.len() == 1 && lines[0].contains("status=sent"),
        "{lines:?}"
    );
    let conns = server.connections();
    assert_eq!(
        conns[0].commands.first().map(String::as_str),
        Some("EHLO cms.example.org"),
        "{}",
        server.dump()
    );
}
