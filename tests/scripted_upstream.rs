//! Delivery against a scripted upstream: what the relay does with each kind of
//! upstream reply or misbehaviour, seen from the upstream's side (what arrived,
//! on which connection) and from the relay's log, with retries every second.
//! The SMTP fault matrix (one refusal or stall per phase) is in the
//! `fault_smtp_*` files.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use std::time::Duration;

use common::{strip_received, Relay};
use faults_smtp::{from_sender, message, status_lines, unfold, wait_status, SENDER};
use scripted::{reply, standard, Action, Cmd, ScriptedServer};

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

fn received_headers(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let headers = text.split("\r\n\r\n").next().unwrap_or_default();
    headers
        .split("\r\n")
        .filter(|l| l.starts_with("Received:"))
        .count()
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

/// (h) Messages queued while a delivery is under way go out over the same
/// connection, each MAIL right after the previous message's final reply (no
/// RSET: that reply ended the transaction); an idle connection is closed with
/// QUIT.
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
    let ids: Vec<String> = (0..n)
        .map(|i| {
            relay
                .send(
                    SENDER,
                    &[&format!("r{i}@dst.test")],
                    &message(&format!("reuse{i}")),
                )
                .expect("accepted")
        })
        .collect();
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
    assert_transactions_follow_each_other(&server, n);
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

/// The `n` messages went over at most 2 (and fewer than `n`) connections, one
/// EHLO each; every transaction after the first on a connection follows the
/// last one's DATA directly, without RSET; all `n` were delivered.
fn assert_transactions_follow_each_other(server: &ScriptedServer, n: usize) {
    let conns = server.connections();
    assert!(
        conns.len() < n && conns.len() <= 2,
        "{} connections for {n} messages (max_connections = 2)\n{}",
        conns.len(),
        server.dump()
    );
    for c in &conns {
        let verbs = c.verbs();
        assert!(!verbs.contains(&"RSET".to_string()), "{verbs:?}");
        let mails: Vec<usize> = (0..verbs.len()).filter(|&i| verbs[i] == "MAIL").collect();
        for &m in mails.iter().skip(1) {
            assert_eq!(verbs[m - 1], "DATA", "{verbs:?}");
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
        Cmd::Mail(_) if ctx.conn == 0 && ctx.tx_on_conn > 0 => Action::Drop,
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
        ["EHLO", "MAIL", "RCPT", "DATA", "MAIL"],
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
