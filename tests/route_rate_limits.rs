//! A route's `rate` seen from the upstream: a burst of queued mail leaves at
//! the configured pace and no faster, workers do not hold idle connections
//! through the wait, the daemon sleeps (no CPU) while it waits, and a reload
//! does not hand out a fresh allowance.

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

fn delivered(server: &ScriptedServer) -> usize {
    server.delivered().len()
}

/// Waits until the upstream has accepted `n` messages.
fn wait_delivered(server: &ScriptedServer, n: usize) -> bool {
    server.wait_until(PATIENCE, |txs| {
        txs.iter().filter(|t| t.delivered()).count() >= n
    })
}

/// The process's user + system CPU time so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after "(comm)", which may itself hold spaces: state is the first,
    // utime and stime (fields 14 and 15 of proc(5)) the 12th and 13th.
    let after = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_millis(ticks * 1000 / per_second)
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
        wait_for(PATIENCE, || server.connections().iter().all(|c| c
            .verbs()
            .last()
            .map(String::as_str)
            == Some("QUIT"))),
        "{}",
        server.dump()
    );
}

#[test]
fn the_relay_sleeps_while_it_waits_and_a_reload_keeps_the_count() {
    let (server, _) = counting_upstream();
    let relay = Relay::start(&config(server.port(), "2/min"));
    let started = Instant::now();
    submit(&relay, "a");
    submit(&relay, "b");
    assert!(wait_delivered(&server, 2), "{}", server.dump());
    submit(&relay, "c");
    submit(&relay, "d");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(delivered(&server), 2, "{}", server.dump());
    assert_eq!(relay.queue_json().unwrap().len(), 2, "c and d stay queued");

    // Four workers wait for the minute to pass: asleep, not spinning.
    let pid = relay.pid().expect("running");
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(pid) - before;
    assert!(
        used <= Duration::from_millis(100),
        "{used:?} of CPU in 2 s of waiting"
    );

    // The same limits after a reload: still used up.
    relay.signal("HUP");
    assert!(relay.wait_log("reloaded:", 1, PATIENCE), "{}", relay.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered(&server), 2, "{}", server.dump());

    // Raised to 3/min: the two already sent count, so one more goes, not three.
    let text = std::fs::read_to_string(&relay.config_path).unwrap();
    std::fs::write(&relay.config_path, text.replace("2/min", "3/min")).unwrap();
    relay.signal("HUP");
    assert!(relay.wait_log("reloaded:", 2, PATIENCE), "{}", relay.log());
    assert!(wait_delivered(&server, 3), "{}", server.dump());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered(&server), 3, "{}", server.dump());
    assert_eq!(relay.queue_json().unwrap().len(), 1);
    // All of it inside the first minute, or the last assertions proved nothing.
    assert!(started.elapsed() < Duration::from_secs(55));
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
