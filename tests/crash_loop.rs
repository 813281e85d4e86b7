//! Crash loop: while submitters stream messages in, the relay is SIGKILLed at
//! random moments and restarted, again and again. Each kill is aimed at one of
//! four moments, chosen by a seeded generator: during submission (any time),
//! during delivery (the upstream holds a message it has not answered yet),
//! during bounce generation (right after the upstream refused a recipient with
//! 550, or accepted the message of a transaction that had one), and during
//! start-up (sled recovering its log and writing a snapshot).
//!
//! At the end the relay is restarted once more and must drain, and then:
//! every acknowledged message reached the sink at least once for its accepted
//! recipient and got a DSN for its refused one; no DSN names a recipient the
//! sink accepted, and no message whose recipients were all delivered got one;
//! the queue is empty. Duplicates (deliveries and DSNs) are allowed by the
//! at-least-once contract, and counted.
//!
//! CI runs 50 kills. `CRASH_KILLS` sets the number and `CRASH_SEED` the seed
//! (printed by every run; the kill moments repeat, thread timing does not).
//! A soak, as in the README:
//!
//!     CRASH_KILLS=2000 cargo test --release --test crash_loop -- --nocapture

mod common;
#[path = "common/scripted.rs"]
mod scripted;
#[path = "common/stream.rs"]
mod stream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Relay;
use scripted::{reply, standard, Action, Cmd, ScriptedServer, Transaction};
use stream::{Record, Rng, Submission, Submitters};

const SENDER: &str = "crash@src.test";
const GOOD: &str = "ok@dst.test";
const BAD: &str = "bad@dst.test";
const SUBMITTERS: usize = 3;
/// Acknowledged but not yet seen by the upstream, above which the stream pauses.
const MAX_BACKLOG: usize = 2000;

/// What a token's message asks of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One recipient, accepted: delivered, never bounced.
    Delivered,
    /// One accepted and one refused recipient: delivered and bounced.
    Partial,
    /// Only the refused recipient: bounced without DATA.
    Refused,
}

fn kind(token: &str) -> Kind {
    let seq: u64 = token
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match seq % 6 {
        2 => Kind::Partial,
        5 => Kind::Refused,
        _ => Kind::Delivered,
    }
}

fn submission(token: &str) -> Submission {
    let rcpts: Vec<String> = match kind(token) {
        Kind::Delivered => vec![GOOD.into()],
        Kind::Partial => vec![GOOD.into(), BAD.into()],
        Kind::Refused => vec![BAD.into()],
    };
    Submission {
        from: SENDER.into(),
        message: format!(
            "From: {SENDER}\r\nTo: {}\r\nSubject: crash loop {token}\r\nX-Crash-Token: {token}\r\n\
             Message-ID: <{token}.{}@crash.test>\r\n\r\nbody of {token}\r\n.dot line\r\n",
            rcpts.join(", "),
            std::process::id()
        ),
        rcpts,
    }
}

/// The token of a message, or of the message a DSN returns the header of.
fn token_of(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("X-Crash-Token: ")? + "X-Crash-Token: ".len();
    let end = text[start..].find(['\r', '\n'])?;
    Some(text[start..start + end].to_string())
}

/// The addresses in a DSN's `Final-Recipient: rfc822; ...` fields.
fn final_recipients(dsn: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(dsn)
        .lines()
        .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822;"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// Moments the upstream script reports, for aiming kills.
#[derive(Default)]
struct Events {
    /// A RCPT was refused with 550.
    refused: AtomicUsize,
    /// The final dot of a transaction with a refused recipient was answered.
    partial_done: AtomicUsize,
    /// Final dots received (deliveries and DSNs, duplicates included).
    dots: AtomicUsize,
}

/// The upstream: refuses BAD, answers some final dots late so that kills find
/// deliveries in flight, and reports the moments bounces are decided.
fn upstream(events: Arc<Events>) -> ScriptedServer {
    let partial_txs = std::sync::Mutex::new(std::collections::HashSet::new());
    ScriptedServer::start(move |ctx, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == BAD => {
            if let Some(tx) = ctx.tx {
                partial_txs.lock().unwrap().insert(tx);
            }
            events.refused.fetch_add(1, Ordering::SeqCst);
            reply("550 5.1.1 <bad@dst.test>: Recipient address rejected")
        }
        Cmd::Dot(message) => {
            events.dots.fetch_add(1, Ordering::SeqCst);
            if ctx
                .tx
                .is_some_and(|tx| partial_txs.lock().unwrap().contains(&tx))
            {
                events.partial_done.fetch_add(1, Ordering::SeqCst);
                return reply("250 2.0.0 Ok: queued");
            }
            // Half the messages are answered after 10-70 ms.
            let h = message
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31) + u64::from(b));
            match h % 14 {
                0..=6 => reply("250 2.0.0 Ok: queued"),
                n => Action::DelayedReply(
                    Duration::from_millis(10 * (n - 6)),
                    "250 2.0.0 Ok: queued".into(),
                ),
            }
        }
        _ => standard(cmd),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    Submission,
    Delivery,
    BounceAtRcpt,
    BounceAfterData,
    /// Killed once more, 0-150 ms into the next start.
    Startup,
}

/// Waits for the moment `m` (up to a few seconds); whether it was seen.
fn aim(m: Moment, rng: &mut Rng, server: &ScriptedServer, events: &Events) -> bool {
    let counter = match m {
        Moment::Submission | Moment::Startup => {
            std::thread::sleep(Duration::from_millis(rng.range(30, 400)));
            return true;
        }
        Moment::Delivery => {
            std::thread::sleep(Duration::from_millis(rng.range(10, 150)));
            return common::wait_for(Duration::from_secs(5), || server.in_flight() > 0);
        }
        Moment::BounceAtRcpt => &events.refused,
        Moment::BounceAfterData => &events.partial_done,
    };
    let before = counter.load(Ordering::SeqCst);
    let seen = common::wait_for(Duration::from_secs(5), || {
        counter.load(Ordering::SeqCst) > before
    });
    // Kill while the relay records the outcome and builds the DSN (0-10 ms on).
    std::thread::sleep(Duration::from_micros(rng.range(0, 10_000)));
    seen
}

fn kills_wanted() -> usize {
    std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Per token: (copies delivered to GOOD, DSNs and the recipients they name).
#[derive(Default, Debug)]
struct Seen {
    delivered: usize,
    dsns: usize,
    dsn_recipients: Vec<String>,
}

fn tally(txs: &[Transaction]) -> (BTreeMap<String, Seen>, Vec<String>) {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut strays = Vec::new();
    for t in txs.iter().filter(|t| t.delivered()) {
        let data = t.data.as_deref().unwrap_or_default();
        let Some(token) = token_of(data) else {
            strays.push(format!("from=<{}> {:?}", t.from, t.rcpt_addresses()));
            continue;
        };
        let s = seen.entry(token).or_default();
        if t.from.is_empty() {
            assert_eq!(t.accepted(), [SENDER], "a DSN goes to the sender");
            s.dsns += 1;
            s.dsn_recipients.extend(final_recipients(data));
        } else {
            assert_eq!(t.accepted(), [GOOD], "only the good recipient is accepted");
            s.delivered += 1;
        }
    }
    (seen, strays)
}

/// Restarts the relay once more and waits until every acknowledged message has
/// reached the sink (and its DSN) and the queue is empty.
fn drain(relay: &mut Relay, server: &ScriptedServer, acked: &[String], limit: Duration) -> bool {
    relay.restart();
    let end = Instant::now() + limit;
    loop {
        let (seen, _) = tally(&server.transactions());
        let complete = acked.iter().all(|t| {
            let s = seen.get(t);
            let delivered = s.is_some_and(|s| s.delivered > 0);
            let bounced = s.is_some_and(|s| s.dsns > 0);
            match kind(t) {
                Kind::Delivered => delivered,
                Kind::Partial => delivered && bounced,
                Kind::Refused => bounced,
            }
        });
        if complete && relay.queue_json().is_ok_and(|q| q.is_empty()) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn acknowledged_mail_survives_a_loop_of_aimed_sigkills() {
    let kills = kills_wanted();
    let seed = Rng::seed_from_env("CRASH_SEED");
    println!("crash loop: CRASH_KILLS={kills} CRASH_SEED={seed:#x}");
    let started = Instant::now();
    let events = Arc::new(Events::default());
    let server = upstream(events.clone());
    let mut relay = Relay::start(&format!(
        r#"retry = "F,10m,1s"
[timeouts]
upstream_command = "5s"
upstream_data = "5s"
greeting = "5s"
connect = "2s"
idle = "1s"
{}"#,
        common::upstream_route(server.port(), "max_connections = 6")
    ));
    let mut rng = Rng(seed);
    let subs = Submitters::start(relay.addr(), SUBMITTERS, Arc::new(submission));
    let looped = kill_loop(&mut relay, &server, &events, &subs, &mut rng, kills);
    // The stream goes on briefly against the last start, then stops.
    std::thread::sleep(Duration::from_millis(300));
    let record = subs.finish();
    let acked: Vec<String> = record.acked.keys().cloned().collect();
    let loop_time = started.elapsed();

    let drained = drain(&mut relay, &server, &acked, Duration::from_secs(120));
    let (seen, strays) = tally(&server.transactions());
    print_summary(seed, &looped, &record, &seen, loop_time, started);

    assert!(
        record.refused.is_empty(),
        "the relay refused messages: {:?}",
        &record.refused[..record.refused.len().min(5)]
    );
    assert!(strays.is_empty(), "messages nobody sent: {strays:?}");
    assert_the_loop_meant_something(&looped, acked.len());
    assert_every_acked_message_arrived(&acked, &seen);
    assert!(drained, "the queue did not drain: {:?}", relay.queue_json());
}

/// What the kill loop did.
#[derive(Default)]
struct Looped {
    kills: usize,
    /// moment → (kills, kills that found it)
    aimed: BTreeMap<Moment, (usize, usize)>,
    /// How many messages were acknowledged at each kill.
    acked_at_kill: Vec<usize>,
    sigkills: usize,
    /// Kills after which the stream was paused.
    paused: usize,
    max_backlog: usize,
}

/// Kills the relay `kills` times, each time at a moment drawn from `rng` and
/// aimed at, and restarts it, while `subs` stream messages in.
fn kill_loop(
    relay: &mut Relay,
    server: &ScriptedServer,
    events: &Events,
    subs: &Submitters,
    rng: &mut Rng,
    kills: usize,
) -> Looped {
    let moments = [
        Moment::Submission,
        Moment::Delivery,
        Moment::BounceAtRcpt,
        Moment::BounceAfterData,
        Moment::Startup,
    ];
    let mut l = Looped {
        kills,
        acked_at_kill: Vec::with_capacity(kills),
        ..Looped::default()
    };
    for _ in 0..kills {
        let m = moments[(rng.next() % moments.len() as u64) as usize];
        let mut hit = aim(m, rng, server, events);
        l.acked_at_kill.push(subs.acked());
        relay.kill();
        std::thread::sleep(Duration::from_millis(rng.range(0, 50)));
        l.sigkills += 1;
        if m == Moment::Startup {
            // A second kill while the relay opens its queue: found if it was
            // not ready yet.
            let ready = relay.ready_count();
            relay.spawn_unready();
            std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
            relay.kill();
            l.sigkills += 1;
            hit = relay.ready_count() == ready;
        }
        let e = l.aimed.entry(m).or_default();
        e.0 += 1;
        e.1 += usize::from(hit);
        relay.spawn();
        // A long run keeps the backlog bounded, so it measures the loop and
        // not a queue growing by what a debug build delivers more slowly.
        let backlog = subs
            .acked()
            .saturating_sub(events.dots.load(Ordering::SeqCst));
        subs.pause(backlog > MAX_BACKLOG);
        l.paused += usize::from(backlog > MAX_BACKLOG);
        l.max_backlog = l.max_backlog.max(backlog);
    }
    l
}

/// The run's numbers, with its seed: what the kills found, the traffic, the
/// duplicates.
fn print_summary(
    seed: u64,
    l: &Looped,
    record: &Record,
    seen: &BTreeMap<String, Seen>,
    loop_time: Duration,
    started: Instant,
) {
    let copies = |k: &[Kind], f: fn(&Seen) -> usize| -> (usize, usize) {
        let counts: Vec<usize> = record
            .acked
            .keys()
            .filter(|t| k.contains(&kind(t)))
            .map(|t| seen.get(t).map_or(0, f))
            .collect();
        let extra = counts.iter().map(|n| n.saturating_sub(1)).sum();
        (counts.iter().sum(), extra)
    };
    let (deliveries, dup_deliveries) = copies(&[Kind::Delivered, Kind::Partial], |s| s.delivered);
    let (dsns, dup_dsns) = copies(&[Kind::Partial, Kind::Refused], |s| s.dsns);
    let Looped {
        kills,
        aimed,
        sigkills,
        paused,
        max_backlog,
        ..
    } = l;
    println!(
        "crash loop: seed={seed:#x} kills={kills} ({sigkills} SIGKILLs) {aimed:?} \
         (moment: (kills, found)) in {:.1}s; \
         acked={} cut-off={} refused={}; deliveries={deliveries} (duplicates {dup_deliveries}), \
         dsns={dsns} (duplicates {dup_dsns}); unacknowledged but arrived={}; \
         backlog at most {max_backlog} (paused after {paused} kills); total {:.1}s",
        loop_time.as_secs_f64(),
        record.acked.len(),
        record.unknown,
        record.refused.len(),
        seen.keys()
            .filter(|t| !record.acked.contains_key(*t))
            .count(),
        started.elapsed().as_secs_f64(),
    );
}

/// The loop means something only if mail flowed between the kills (unless
/// the stream was paused) and the kills found what they were aimed at.
fn assert_the_loop_meant_something(l: &Looped, acked: usize) {
    let kills = l.kills;
    let grew = l.acked_at_kill.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        grew >= kills.saturating_sub(l.paused) / 2 && acked >= 2 * kills,
        "too little traffic: {acked} acked, grew between {grew} of {kills} kills",
    );
    let aimed = &l.aimed;
    let (n, found): (usize, usize) = aimed
        .iter()
        .filter(|(m, _)| !matches!(m, Moment::Submission | Moment::Startup))
        .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
    assert!(found * 10 >= n * 8, "kills missed their moment: {aimed:?}");
}

/// Every acknowledged message reached the sink for its accepted recipient
/// and got a DSN for its refused one, and no DSN names another recipient.
fn assert_every_acked_message_arrived(acked: &[String], seen: &BTreeMap<String, Seen>) {
    let mut missing = Vec::new();
    let mut wrongly_bounced = Vec::new();
    for t in acked {
        let s = seen.get(t);
        let delivered = s.map_or(0, |s| s.delivered);
        let dsns = s.map_or(0, |s| s.dsns);
        let named: Vec<&String> = s
            .map(|s| s.dsn_recipients.iter().collect())
            .unwrap_or_default();
        match kind(t) {
            Kind::Delivered if delivered == 0 => missing.push(format!("{t}: not delivered")),
            Kind::Delivered if dsns > 0 => wrongly_bounced.push(format!("{t}: {named:?}")),
            Kind::Partial | Kind::Refused if dsns == 0 => missing.push(format!("{t}: no DSN")),
            Kind::Partial if delivered == 0 => missing.push(format!("{t}: not delivered")),
            _ => {}
        }
        if named.iter().any(|a| *a != BAD) {
            wrongly_bounced.push(format!("{t}: DSN names {named:?}"));
        }
    }
    assert!(
        wrongly_bounced.is_empty(),
        "bounced though delivered: {wrongly_bounced:?}"
    );
    assert!(
        missing.is_empty(),
        "acknowledged, never seen at the sink ({} of {}): {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(20)]
    );
}
