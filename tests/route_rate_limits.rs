//! A route's `rate` seen from the upstream: a burst of queued mail leaves at
//! the configured pace and no faster, workers do not hold idle connections
//! through the wait, the daemon sleeps (wakes no more than when idle) while it
//! waits, and a reload does not hand out a fresh allowance. Paces are read
//! from the upstream's clock, each message when it arrived.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{upstream_route, wait_for, Relay};
use faults_smtp::{message, PATIENCE, SENDER};
use scripted::{standard, Cmd, ScriptedServer};

/// An upstream that accepts everything and notes when each final dot arrived:
/// the instant the upstream "counts" a message.
fn counting_upstream() -> (ScriptedServer, Arc<Mutex<Vec<Instant>>>) {
    let dots = Arc::new(Mutex::new(Vec::new()));
    let seen = dots.clone();
    let server = ScriptedServer::start(move |_, cmd| {
        if let Cmd::Dot(_) = cmd {
            seen.lock().unwrap().push(Instant::now());
        }
        standard(cmd)
    });
    (server, dots)
}

fn config(port: u16, rate: &str) -> String {
    let route = upstream_route(port, &format!("max_connections = 4\nrate = \"{rate}\""));
    format!("retry = \"F,1h,1m\"\n[timeouts]\nidle = \"300ms\"\n{route}")
}

fn submit(relay: &Relay, tag: &str) -> String {
    let to = format!("{tag}@dst.test");
    relay.send(SENDER, &[&to], &message(tag)).expect("accepted")
}

/// Waits until the upstream has accepted `n` messages.
fn wait_delivered(server: &ScriptedServer, n: usize) -> bool {
    server.wait_until(PATIENCE, |txs| {
        txs.iter().filter(|t| t.delivered()).count() >= n
    })
}

/// How long [`activity`] watches the daemon.
const WINDOW: Duration = Duration::from_secs(2);

/// How busy the daemon was while [`activity`] watched it: how often its
/// threads went to sleep (voluntary context switches, summed over them; each
/// is a wakeup after it), and in how many of the samples (one every 10 ms)
/// one of its threads was running or waiting for a CPU. Both are counts of
/// the daemon's own doings: a machine under load slows it, it does not make
/// it wake more often, and a sleeping thread is never found running.
#[derive(Debug)]
struct Activity {
    wakeups: u64,
    running: usize,
    samples: usize,
}

/// Each thread's voluntary context switches, by thread id, and whether one
/// of them is running (state R).
fn threads(pid: u32) -> (std::collections::HashMap<String, u64>, bool) {
    let mut switches = std::collections::HashMap::new();
    let mut running = false;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (switches, running);
    };
    for task in tasks.flatten() {
        let dir = task.path();
        // Fields after "(comm)", which may itself hold spaces: the state first.
        if let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            running |= after.split_whitespace().next() == Some("R");
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok());
        if let Some(n) = n {
            switches.insert(task.file_name().to_string_lossy().into_owned(), n);
        }
    }
    (switches, running)
}

/// Watches the daemon for [`WINDOW`].
fn activity(pid: u32) -> Activity {
    let (before, _) = threads(pid);
    let end = Instant::now() + WINDOW;
    let (mut running, mut samples) = (0, 0);
    let mut after = before.clone();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        let (now, r) = threads(pid);
        samples += 1;
        running += usize::from(r);
        after = now;
    }
    // Threads started meanwhile count from zero; ended ones are not seen.
    let wakeups = after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Activity {
        wakeups,
        running,
        samples,
    }
}

/// Every connection the upstream saw has ended with QUIT.
fn all_quit(server: &ScriptedServer) -> bool {
    server
        .connections()
        .iter()
        .all(|c| c.verbs().last().map(String::as_str) == Some("QUIT"))
}

#[test]
fn a_burst_leaves_at_the_configured_pace() {
    let (server, dots) = counting_upstream();
    let relay = Relay::start(&config(server.port(), "2/s"));
    let n = 8;
    let ids: Vec<String> = (0..n).map(|i| submit(&relay, &format!("m{i}"))).collect();

    assert!(
        wait_delivered(&server, n),
        "{}\n{}",
        server.dump(),
        relay.log()
    );
    for id in &ids {
        assert!(
            relay.wait_log(&format!("{id}: to=<"), 1, PATIENCE),
            "{id} not logged"
        );
    }
    assert_eq!(relay.log().matches("status=sent").count(), n);

    let mut at = dots.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), n);
    let offsets: Vec<Duration> = at.iter().map(|t| *t - at[0]).collect();
    // "2/s": any three arrivals span at least a second. Exact, without slack:
    // the relay counts a send until a second after it read the reply, which
    // the upstream wrote after noting the time.
    for three in at.windows(3) {
        assert!(
            three[2] - three[0] >= Duration::from_secs(1),
            "three messages within a second: {offsets:?}"
        );
    }
    // Shaped (eight at two a second, the first two at once) but not starved.
    let span = at[n - 1] - at[0];
    assert!(span >= Duration::from_secs(3), "{offsets:?}");
    assert!(span < Duration::from_secs(10), "{offsets:?}");

    // Each wait (about a second) outlasts `idle` (300 ms): the worker closes its
    // connection instead of holding it, so there are more connections than the
    // route's four workers, each closed with QUIT.
    let conns = server.connections();
    assert!(
        conns.len() > 4,
        "{} connections: idle ones held through the wait\n{}",
        conns.len(),
        server.dump()
    );
    assert!(
        wait_for(PATIENCE, || all_quit(&server)),
        "{}",
        server.dump()
    );
}

#[test]
fn the_relay_sleeps_while_it_waits_and_a_reload_keeps_the_count() {
    let (server, dots) = counting_upstream();
    let relay = Relay::start(&config(server.port(), "2/min"));
    let pid = relay.pid().expect("running");
    // The yardstick: the same daemon with nothing to do.
    let idle = activity(pid);
    submit(&relay, "a");
    submit(&relay, "b");
    assert!(wait_delivered(&server, 2), "{}", server.dump());
    submit(&relay, "c");
    submit(&relay, "d");
    assert_asleep_while_waiting(&server, pid, &idle);
    assert_eq!(relay.queue_json().unwrap().len(), 2, "c and d stay queued");

    // The same limits after a reload: still used up (the upstream's clock
    // shows it below: nothing arrives until the limit is raised).
    relay.signal("HUP");
    assert!(relay.wait_log("reloaded:", 1, PATIENCE), "{}", relay.log());

    // Raised to 3/min: the two already sent count, so one more goes, not three.
    let raised = Instant::now();
    let text = std::fs::read_to_string(&relay.config_path).unwrap();
    std::fs::write(&relay.config_path, text.replace("2/min", "3/min")).unwrap();
    relay.signal("HUP");
    assert!(relay.wait_log("reloaded:", 2, PATIENCE), "{}", relay.log());
    assert!(wait_delivered(&server, 3), "{}", server.dump());
    assert!(
        wait_for(PATIENCE, || relay.queue_json().is_ok_and(|q| q.len() == 1)),
        "{:?}",
        relay.queue_json()
    );
    // The last one goes when the first send leaves the minute.
    assert!(
        server.wait_until(Duration::from_secs(120), |txs| txs
            .iter()
            .filter(|t| t.delivered())
            .count()
            >= 4),
        "{}\n{}",
        server.dump(),
        relay.log()
    );
    assert!(relay.wait_queue_empty(PATIENCE), "{:?}", relay.queue_json());
    let mut at = dots.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), 4, "{}", server.dump());
    assert_paced_across_the_reloads(&at, raised);
}

/// Four workers wait for the minute to pass, their connections closed:
/// asleep, waking no more often and found running no more often than the
/// `idle` daemon (a worker polling every 50 ms would wake 160 times more; one
/// spinning would be found running all along).
fn assert_asleep_while_waiting(server: &ScriptedServer, pid: u32, idle: &Activity) {
    assert!(wait_for(PATIENCE, || all_quit(server)), "{}", server.dump());
    let waiting = activity(pid);
    println!("idle: {idle:?}; waiting for the rate limit: {waiting:?}");
    assert!(
        waiting.wakeups <= 2 * idle.wakeups + 20,
        "woke {} times waiting, {} idle",
        waiting.wakeups,
        idle.wakeups
    );
    assert!(
        waiting.running <= 2 * idle.running + waiting.samples / 10,
        "found running in {} of {} samples waiting, {} of {} idle",
        waiting.running,
        waiting.samples,
        idle.running,
        idle.samples
    );
}

/// The upstream's times of arrival `at` (sorted) against the moment the limit
/// was `raised` to 3/min.
fn assert_paced_across_the_reloads(at: &[Instant], raised: Instant) {
    // All of the above inside the first minute, or the limit had run out.
    assert!(
        raised < at[0] + Duration::from_secs(55),
        "too slow to prove anything: the limit was raised {:?} after the first send",
        raised - at[0]
    );
    // Nothing went at 2/min, before or after the first reload: the third
    // arrived after the raise.
    assert!(
        at[2] > raised,
        "a third message {:?} before the limit was raised",
        raised - at[2]
    );
    // And at 3/min no fourth within the minute of the first (exact, as in
    // a_burst_leaves_at_the_configured_pace).
    assert!(
        at[3] - at[0] >= Duration::from_secs(60),
        "four messages within {:?}",
        at[3] - at[0]
    );
}

#[test]
fn check_prints_a_presets_effective_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("smarthost.toml");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    std::fs::write(
        &cfg,
        "[[route]]\nname = \"o365\"\npreset = \"office365\"\n\
         [[route]]\nname = \"gw\"\npreset = \"google-workspace\"\nmax_connections = 1\nrate = [\"10/min\", \"1500/day\"]\n\
         [routing]\ndefault = \"o365\"\n",
    )
    .unwrap();
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("o365: smtp smtp.office365.com:587 tls=starttls auth=none max_connections=3 rate=30/min,10000/day"),
        "{text}"
    );
    assert!(
        text.contains("gw: smtp smtp.gmail.com:587 tls=starttls auth=none max_connections=1 rate=10/min,1500/day"),
        "{text}"
    );

    std::fs::write(
        &cfg,
        "[[route]]\nname = \"o365\"\npreset = \"office365\"\nrate = \"30/mn\"\n[routing]\ndefault = \"o365\"\n",
    )
    .unwrap();
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(
            ":1: route \"o365\": rate \"30/mn\": unknown unit \"mn\" (use /s, /min, /h or /day)"
        ),
        "{err}"
    );
}
