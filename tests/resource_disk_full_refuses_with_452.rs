//! The queue's disk fills up: the queue lives on its own small tmpfs, which the
//! test fills to the last byte while the relay runs. Clients must get
//! `452 4.3.1` after DATA (never a `250` for mail that is not on disk), mail
//! acknowledged before must survive and be delivered, and once space returns
//! the same process must accept mail again, without a restart. Then the disk
//! fills and empties three times under concurrent submissions and deliveries,
//! and every message acknowledged meanwhile must be delivered.
//!
//! Mounting a tmpfs needs root (CI runs as root). Elsewhere the test says so
//! and skips, except under `CI=true`, where that is a failure.

mod common;
#[path = "common/scripted.rs"]
mod scripted;
#[path = "common/stream.rs"]
mod stream;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Relay;
use scripted::{reply, standard, Cmd, ScriptedServer};
use stream::{Record, Submission, Submitters};
use tmpfs::Tmpfs;

fn message(token: &str) -> Vec<u8> {
    // ~40 KiB of base64-like text: more than sled has room for in a full disk.
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    format!(
        "From: a@src.test\r\nTo: b@dst.test\r\nSubject: disk full {token}\r\nX-Token: {token}\r\n\r\n{}",
        line.repeat(560)
    )
    .into_bytes()
}

fn token_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let start = text.find("X-Token: ")? + "X-Token: ".len();
    let end = text[start..].find('\r')?;
    Some(text[start..start + end].to_string())
}

fn submit(relay: &Relay, token: &str) -> Result<String, String> {
    relay.send("a@src.test", &["b@dst.test"], &message(token))
}

#[test]
fn full_queue_disk_refuses_with_452_keeps_acknowledged_mail_and_recovers_without_restart() {
    // Well above what sled holds under this churn (its log grows by 8 MiB
    // segments and is reused only after cleaning, see the store's churn test):
    // on a tmpfs of 64 MiB sled fills the space by itself, and then cannot
    // even reopen until someone else frees some.
    let Some(fs) = Tmpfs::mount_or_skip("256m") else {
        return;
    };
    let (server, accepting) = gated_upstream();
    let mut relay = fs.start_relay(&format!(
        "retry = \"F,10m,1s\"\n{}",
        common::upstream_route(server.port(), "")
    ));
    let pid = relay.pid().expect("relay runs");

    let mut acked = Vec::new();
    let mut before_ids = Vec::new();
    for i in 0..3 {
        let token = format!("before-{i}");
        before_ids.push(submit(&relay, &token).unwrap_or_else(|r| panic!("{token}: {r}")));
        acked.push(token);
    }

    let (refusals, full_from) = fill_and_submit(&fs, &relay, &mut acked);
    assert_tried_while_full(&relay, &before_ids, full_from);
    assert_eq!(relay.pid(), Some(pid));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the relay died on a full disk:\n{}",
        relay.log()
    );

    std::fs::remove_file(fs.mnt.join("filler")).expect("free the space");
    accept_again(&relay, &mut acked);
    assert_eq!(relay.pid(), Some(pid), "the relay was restarted");

    accepting.store(true, Ordering::SeqCst);
    assert_every_acked_delivered(&relay, &server, &acked, refusals.len());

    // The disk fills and empties again three times under a stream of
    // concurrent submissions (and deliveries): no acknowledged message may be
    // one whose write was lost when the queue reopened.
    let (record, acked_at) = churn(&fs, &relay);
    assert_churn_refused_only_for_space(&record, &acked_at);
    assert_churn_delivered(&relay, &server, &record);
    assert_eq!(relay.pid(), Some(pid), "the relay was restarted");
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
    relay.kill();
    drop(relay);
    drop(fs);
}

/// The upstream defers everything until the flag it returns is set, so
/// acknowledged mail stays queued on the full disk.
fn gated_upstream() -> (ScriptedServer, Arc<AtomicBool>) {
    let accepting = Arc::new(AtomicBool::new(false));
    let gate = accepting.clone();
    let server = ScriptedServer::start(move |_, cmd| match cmd {
        Cmd::Rcpt { .. } if !gate.load(Ordering::SeqCst) => reply("451 4.3.0 try again later"),
        _ => standard(cmd),
    });
    (server, accepting)
}

/// Fills the tmpfs, then submits until three messages are refused (adding
/// those acknowledged meanwhile to `acked`), which must be temporary failures,
/// one at least a 452 4.3.1; the refusals, and the number of log lines before
/// the fill.
fn fill_and_submit(fs: &Tmpfs, relay: &Relay, acked: &mut Vec<String>) -> (Vec<String>, usize) {
    let filled = fs.fill("filler");
    let full_from = relay.log().lines().count();
    println!("filler: {filled} bytes; the tmpfs is full");
    // sled may still have room in blocks it already holds: those messages are
    // on disk and acknowledged; the first one that needs a block is refused.
    let mut refusals = Vec::new();
    for i in 0..20 {
        let token = format!("full-{i}");
        match submit(relay, &token) {
            Ok(_) => acked.push(token),
            Err(r) => refusals.push(r),
        }
        if refusals.len() >= 3 {
            break;
        }
    }
    println!(
        "while full: {} acknowledged in all, refusals {refusals:?}",
        acked.len()
    );
    assert!(
        refusals.len() >= 3,
        "a full disk never refused a message: {} acknowledged",
        acked.len()
    );
    for r in &refusals {
        assert!(
            r.starts_with("452 4.3.1") || r.starts_with("451 4.3.0"),
            "a full disk must be a temporary failure: {r}"
        );
    }
    assert!(
        refusals.iter().any(|r| r.starts_with("452 4.3.1")),
        "no 452 4.3.1 among {refusals:?}"
    );
    (refusals, full_from)
}

/// Deliveries are tried (and deferred) while the disk is full: each message
/// queued before (`before_ids`) has an attempt logged after line `full_from`
/// (its retry slot is a second after its first).
fn assert_tried_while_full(relay: &Relay, before_ids: &[String], full_from: usize) {
    let tried_while_full = common::wait_for(Duration::from_secs(30), || {
        let log = relay.log();
        let since: Vec<&str> = log.lines().skip(full_from).collect();
        before_ids.iter().all(|id| {
            let about = format!("{id}: ");
            since
                .iter()
                .any(|l| l.contains(&about) && !l.contains(&format!("{about}from=<")))
        })
    });
    assert!(
        tried_while_full,
        "no attempt while the disk was full:\n{}",
        relay.log()
    );
}

/// Space has returned: within 15 s a message is accepted again, then three
/// more, all added to `acked`.
fn accept_again(relay: &Relay, acked: &mut Vec<String>) {
    let freed = Instant::now();
    let mut resumed = None;
    while freed.elapsed() < Duration::from_secs(15) {
        let token = format!("after-{}", acked.len());
        if submit(relay, &token).is_ok() {
            acked.push(token);
            resumed = Some(freed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no mail accepted 15 s after space returned; log:\n{}",
            relay.log()
        )
    });
    println!(
        "accepting again {:.1}s after space returned",
        resumed.as_secs_f64()
    );
    for i in 0..3 {
        let token = format!("after-more-{i}");
        submit(relay, &token).unwrap_or_else(|r| panic!("{token}: {r}"));
        acked.push(token);
    }
}

/// Once the upstream accepts, every `acked` token is delivered and the queue
/// drains; the queue was reopened after the I/O error.
fn assert_every_acked_delivered(
    relay: &Relay,
    server: &ScriptedServer,
    acked: &[String],
    refused: usize,
) {
    let all = server.wait_until(Duration::from_secs(30), |txs| {
        acked.iter().all(|t| {
            txs.iter().any(|x| {
                x.delivered() && token_of(x.data.as_deref().unwrap_or_default()).as_ref() == Some(t)
            })
        })
    });
    let delivered: Vec<String> = server
        .delivered()
        .iter()
        .filter_map(|t| token_of(t.data.as_deref().unwrap_or_default()))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|t| !delivered.contains(t)).collect();
    assert!(
        all,
        "acknowledged but not delivered: {missing:?}\n{}",
        relay.log()
    );
    assert!(
        relay.wait_queue_empty(Duration::from_secs(10)),
        "the queue did not drain: {:?}",
        relay.queue_json()
    );
    println!(
        "{} acknowledged, {} deliveries ({} duplicates), {refused} refused while full",
        acked.len(),
        delivered.len(),
        delivered.len() - acked.len(),
    );
    assert!(relay.log().contains("reopened after an I/O error"));
}

/// Three submitters stream messages in while the disk fills and empties three
/// times; their record, and how many were acknowledged at each (fill, free,
/// 2.5 s after the free).
fn churn(fs: &Tmpfs, relay: &Relay) -> (Record, Vec<(usize, usize, usize)>) {
    let subs = Submitters::start(
        relay.addr(),
        3,
        Arc::new(|token: &str| Submission {
            from: "a@src.test".into(),
            rcpts: vec!["b@dst.test".into()],
            message: String::from_utf8_lossy(&message(token)).into_owned(),
        }),
    );
    let mut acked_at = Vec::new();
    std::thread::sleep(Duration::from_millis(700));
    for _ in 0..3 {
        let filled = subs.acked();
        fs.fill("filler");
        std::thread::sleep(Duration::from_millis(1500));
        let freed = subs.acked();
        std::fs::remove_file(fs.mnt.join("filler")).expect("free the space");
        std::thread::sleep(Duration::from_millis(2500));
        acked_at.push((filled, freed, subs.acked()));
    }
    (subs.finish(), acked_at)
}

/// The churn's refusals were all 452/451 (and there were some), and mail was
/// accepted again after each free.
fn assert_churn_refused_only_for_space(record: &Record, acked_at: &[(usize, usize, usize)]) {
    let odd: Vec<&(String, String)> = record
        .refused
        .iter()
        .filter(|(_, r)| !r.starts_with("452 4.3.1") && !r.starts_with("451 4.3.0"))
        .collect();
    println!(
        "churn: {} acknowledged, {} refused ({} with 452), {} cut off; \
         acknowledged at each (fill, free, free + 2.5 s): {acked_at:?}",
        record.acked.len(),
        record.refused.len(),
        record
            .refused
            .iter()
            .filter(|(_, r)| r.starts_with("452"))
            .count(),
        record.unknown
    );
    assert!(odd.is_empty(), "refused otherwise than 452/451: {odd:?}");
    assert!(
        !record.refused.is_empty(),
        "the fills never refused a message"
    );
    assert!(
        acked_at.iter().all(|(_, freed, later)| later > freed),
        "no mail accepted after space returned: {acked_at:?}"
    );
}

/// Every message acknowledged during the churn is delivered, and the queue
/// drains.
fn assert_churn_delivered(relay: &Relay, server: &ScriptedServer, record: &Record) {
    let delivered_tokens = || -> std::collections::HashSet<String> {
        server
            .delivered()
            .iter()
            .filter_map(|x| token_of(x.data.as_deref().unwrap_or_default()))
            .collect()
    };
    let all = common::wait_for(Duration::from_secs(30), || {
        let got = delivered_tokens();
        record.acked.keys().all(|t| got.contains(t))
    });
    let got = delivered_tokens();
    let missing: Vec<String> = record
        .acked
        .iter()
        .filter(|(t, _)| !got.contains(*t))
        .map(|(t, id)| format!("{t} ({id})"))
        .collect();
    assert!(
        all,
        "acknowledged during the churn but not delivered: {missing:?}; queue: {:?}; log:\n{}",
        relay.queue_json(),
        relay.log()
    );
    assert!(
        relay.wait_queue_empty(Duration::from_secs(10)),
        "the queue did not drain after the churn: {:?}",
        relay.queue_json()
    );
}
