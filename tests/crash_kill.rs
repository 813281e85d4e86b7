//! Crash safety: the relay is SIGKILLed again and again while clients submit mail
//! over several connections (and, in the second test, while deliveries are in
//! flight). Every message that was acknowledged with a 250 must arrive at least
//! once; duplicates are allowed (and counted).

mod common;
#[path = "common/scripted.rs"]
mod scripted;
#[path = "common/stream.rs"]
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{captured, Relay};
use scripted::{standard, Action, Cmd, ScriptedServer};
use stream::{Record, Rng, Submission, Submitters};

const KILLS: usize = 10;
const SUBMITTERS: usize = 4;

fn submitters(relay: &Relay) -> Submitters {
    Submitters::start(
        relay.addr(),
        SUBMITTERS,
        Arc::new(|token: &str| Submission {
            from: "crash@src.test".into(),
            rcpts: vec!["sink@dst.test".into()],
            message: format!(
                "From: crash@src.test\r\nTo: sink@dst.test\r\nSubject: crash {token}\r\n\
                 Message-ID: <{token}@crash.test>\r\n\r\nbody of {token}\r\n.dot line\r\n"
            ),
        }),
    )
}

/// The token in a message's Message-ID.
fn token_of(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("Message-ID: <")? + "Message-ID: <".len();
    let end = text[start..].find("@crash.test>")?;
    Some(text[start..start + end].to_string())
}

/// token → number of copies.
fn count_tokens<'a>(messages: impl Iterator<Item = &'a [u8]>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        if let Some(t) = token_of(m) {
            *out.entry(t).or_insert(0) += 1;
        }
    }
    out
}

/// Restarts the relay until it reports an empty queue at start-up.
fn assert_drains(relay: &mut Relay) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        relay.restart();
        let log = relay.log();
        let ready = log
            .lines()
            .rfind(|l| l.contains("smarthost ready"))
            .unwrap_or_default()
            .to_string();
        if ready.contains("with 0 queued message(s)") {
            return;
        }
        assert!(Instant::now() < end, "queue never drained: {ready}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn report(what: &str, record: &Record, copies: &BTreeMap<String, usize>) {
    let duplicates: usize = copies.values().map(|&n| n.saturating_sub(1)).sum();
    let unacked_arrived = copies
        .keys()
        .filter(|t| !record.acked.contains_key(*t))
        .count();
    println!(
        "{what}: acked={} cut-off={} refused={} arrived={} duplicates={duplicates} \
         arrived-without-ack={unacked_arrived}",
        record.acked.len(),
        record.unknown,
        record.refused.len(),
        copies.len(),
    );
}

fn missing(record: &Record, copies: &BTreeMap<String, usize>) -> Vec<String> {
    record
        .acked
        .iter()
        .filter(|(t, _)| !copies.contains_key(*t))
        .map(|(t, id)| format!("{t} ({id})"))
        .collect()
}

#[test]
fn acknowledged_mail_survives_repeated_sigkill() {
    let mut relay = Relay::start(
        r#"retry = "F,1m,1s"
[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[routing]
default = "capture"
"#,
    );
    let out = relay.path("out");
    let seed = 0x5EED_0001_u64;
    let mut rng = Rng(seed);
    let subs = submitters(&relay);
    let mut acked_at_kill = Vec::new();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(150, 600)));
        acked_at_kill.push(subs.acked());
        relay.kill();
        std::thread::sleep(Duration::from_millis(rng.range(0, 100)));
        relay.spawn();
    }
    std::thread::sleep(Duration::from_millis(300));
    let record = subs.finish();
    println!("seed={seed:#x} acked before each kill: {acked_at_kill:?}");
    assert!(
        record.refused.is_empty(),
        "the relay refused messages: {:?}",
        &record.refused[..record.refused.len().min(5)]
    );
    // The test means something only if mail was acknowledged between kills.
    let grew = acked_at_kill.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        grew >= KILLS / 2 && record.acked.len() >= 50,
        "too little traffic: {acked_at_kill:?}, {} acked",
        record.acked.len()
    );

    let mut copies = BTreeMap::new();
    let all = common::wait_for(Duration::from_secs(30), || {
        let files = captured(&out);
        copies = count_tokens(files.iter().map(|(_, b)| b.as_slice()));
        record.acked.keys().all(|t| copies.contains_key(t))
    });
    report("capture", &record, &copies);
    assert!(
        all,
        "acknowledged but never delivered: {:?}",
        missing(&record, &copies)
    );
    assert_drains(&mut relay);
    // Nothing arrives that nobody sent.
    let files = captured(&out);
    for (meta, body) in &files {
        assert_eq!(meta["sender"], "crash@src.test");
        assert_eq!(meta["recipients"][0], "sink@dst.test");
        assert!(token_of(body).is_some(), "unknown message in capture dir");
    }
}

#[test]
fn acknowledged_mail_survives_sigkill_during_delivery() {
    // Slow final-dot replies keep deliveries in flight when the kills come.
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Dot(_) => Action::DelayedReply(
            Duration::from_millis(300),
            "250 2.0.0 Ok: queued".to_string(),
        ),
        _ => standard(cmd),
    });
    let mut relay = Relay::start(&format!(
        r#"retry = "F,1m,1s"
[timeouts]
upstream_command = "2s"
upstream_data = "2s"
greeting = "2s"
connect = "2s"
idle = "1s"
{}"#,
        common::upstream_route(server.port(), "")
    ));
    let seed = 0x5EED_0002_u64;
    let subs = submitters(&relay);
    let in_flight_at_kill = kill_during_deliveries(&mut relay, &server, Rng(seed));
    // The upstream is fast again; let the submitters run a little longer.
    server.set_script(|_, cmd| standard(cmd));
    std::thread::sleep(Duration::from_millis(300));
    let record = subs.finish();
    println!("seed={seed:#x} deliveries in flight at each kill: {in_flight_at_kill:?}");
    assert!(
        record.refused.is_empty(),
        "the relay refused messages: {:?}",
        &record.refused[..record.refused.len().min(5)]
    );
    assert!(record.acked.len() >= 30, "{} acked", record.acked.len());
    let killed_in_flight = in_flight_at_kill.iter().filter(|&&n| n > 0).count();
    assert!(
        killed_in_flight >= KILLS - 2,
        "too few kills hit a delivery in flight: {in_flight_at_kill:?}"
    );

    let mut copies = BTreeMap::new();
    let all = common::wait_for(Duration::from_secs(30), || {
        let txs = server.delivered();
        copies = count_tokens(txs.iter().filter_map(|t| t.data.as_deref()));
        record.acked.keys().all(|t| copies.contains_key(t))
    });
    report("upstream", &record, &copies);
    assert!(
        all,
        "acknowledged but never delivered: {:?}",
        missing(&record, &copies)
    );
    assert_drains(&mut relay);
    let delivered = server.delivered();
    assert!(delivered
        .iter()
        .all(|t| t.from == "crash@src.test" && t.accepted() == ["sink@dst.test"]));
}

/// Kills and restarts the relay [`KILLS`] times, each time while the upstream
/// holds a message it has not answered yet (if one comes within 3 s); the
/// deliveries in flight at each kill.
fn kill_during_deliveries(relay: &mut Relay, server: &ScriptedServer, mut rng: Rng) -> Vec<usize> {
    let mut in_flight_at_kill = Vec::new();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(100, 500)));
        common::wait_for(Duration::from_secs(3), || server.in_flight() > 0);
        in_flight_at_kill.push(server.in_flight());
        relay.kill();
        std::thread::sleep(Duration::from_millis(rng.range(0, 100)));
        relay.spawn();
    }
    in_flight_at_kill
}
