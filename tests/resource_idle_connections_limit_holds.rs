//! 10,000 idle connections against `[limits] max_connections = 100`: the ones
//! over the limit are told `421 4.3.2` and closed at once, the relay never holds
//! more than the limit's worth of sessions, its memory stays bounded, the idle
//! sessions it did admit are closed by the command timeout (`421`), and a
//! legitimate client is served once they are gone.
//!
//! No per-address policy: a relay for local programs sees every client as
//! 127.0.0.1, so the connection limit and the timeouts are the defence.

mod common;
#[path = "common/stream.rs"]
mod stream;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Relay;
use stream::{Submission, Submit};

const LIMIT: usize = 100;
const WANTED: usize = 10_000;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The soft and hard RLIMIT_NOFILE of a process.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// Raises this process's descriptor limit to `want` if it can; what it got.
fn raise_nofile(want: u64) -> u64 {
    let me = std::process::id();
    let (soft, hard) = nofile(me);
    if soft >= want {
        return soft;
    }
    // Root may raise the hard limit too; others only the soft one up to it.
    for (s, h) in [(want, want.max(hard)), (want.min(hard), hard)] {
        let ok = Command::new("prlimit")
            .arg(format!("--pid={me}"))
            .arg(format!("--nofile={s}:{h}"))
            .status()
            .is_ok_and(|st| st.success());
        if ok {
            break;
        }
    }
    nofile(me).0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// The next line the relay sent, or what happened instead. Byte by byte, so
/// that nothing after the line is read away.
fn first_line(mut s: &TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) if line.is_empty() => return "(closed)".into(),
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return format!("(error: {e})"),
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

#[test]
fn ten_thousand_idle_connections_the_limit_holds_memory_stays_bounded_and_clients_are_served() {
    let count = descriptors_for_the_crowd();
    let mut relay = Relay::start(&format!(
        r#"[limits]
max_connections = {LIMIT}
[timeouts]
command = "{}s"
{}"#,
        COMMAND_TIMEOUT.as_secs(),
        common::CAPTURE_ROUTE
    ));
    let pid = relay.pid().expect("running");
    let before = Peaks {
        rss: rss_kib(pid),
        sockets: sockets(pid),
    };
    let (crowd, replies, opened_in, peaks) = open_crowd(&relay, count);
    assert_the_limit_held(&replies, opened_in, &before, &peaks);
    assert_idle_sessions_timed_out(&crowd, &replies);
    drop(crowd);
    serve_a_legitimate_client(&relay);
    assert_eq!(relay.pid(), Some(pid));
    relay.kill();
}

/// Raises this process's descriptor limit for [`WANTED`] client sockets and a
/// few spare (the relay inherits it); how many connections to open.
fn descriptors_for_the_crowd() -> usize {
    let got = raise_nofile(WANTED as u64 + 512);
    let count = WANTED.min(got.saturating_sub(512) as usize);
    if !common::require(
        &format!("{WANTED} descriptors and a few spare (root): the hard limit is {got}"),
        count >= WANTED,
    ) {
        eprintln!(
            "LIMITED: only {got} descriptors here (hard limit; run as root for more): \
             opening {count} connections instead of {WANTED}"
        );
    }
    assert!(
        count > 2 * LIMIT,
        "too few descriptors to test anything: {got}"
    );
    count
}

/// The relay's resident memory (KiB) and sockets, at rest or at their peak.
struct Peaks {
    rss: u64,
    sockets: usize,
}

/// Opens `count` connections and reads each one's first line, watching how
/// many sockets and how much memory the relay holds meanwhile: the
/// connections, their first lines, how long opening them took, the peaks.
fn open_crowd(relay: &Relay, count: usize) -> (Vec<TcpStream>, Vec<String>, Duration, Peaks) {
    let pid = relay.pid().expect("running");
    let stop = Arc::new(AtomicBool::new(false));
    let peak_sockets = Arc::new(AtomicUsize::new(0));
    let peak_rss = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, peak_sockets, peak_rss) = (stop.clone(), peak_sockets.clone(), peak_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak_sockets.fetch_max(sockets(pid), Ordering::SeqCst);
                peak_rss.fetch_max(rss_kib(pid) as usize, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let mut crowd = Vec::with_capacity(count);
    for i in 0..count {
        match TcpStream::connect(relay.addr()) {
            Ok(s) => crowd.push(s),
            Err(e) => panic!("connection {i} of {count} failed: {e}"),
        }
    }
    let opened_in = started.elapsed();
    let replies: Vec<String> = crowd.iter().map(first_line).collect();
    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let peaks = Peaks {
        rss: peak_rss.load(Ordering::SeqCst) as u64,
        sockets: peak_sockets.load(Ordering::SeqCst),
    };
    (crowd, replies, opened_in, peaks)
}

/// Every connection was greeted or refused with `421 4.3.2`, no more than the
/// limit's worth at a time greeted, and the relay's sockets and memory stayed
/// bounded.
fn assert_the_limit_held(replies: &[String], opened_in: Duration, before: &Peaks, peak: &Peaks) {
    let count = replies.len();
    let greeted = replies.iter().filter(|r| r.starts_with("220 ")).count();
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("421 4.3.2 Too many connections"))
        .count();
    let other: Vec<&String> = replies
        .iter()
        .filter(|r| !r.starts_with("220 ") && !r.starts_with("421 4.3.2"))
        .take(5)
        .collect();
    let (rss_before, sockets_before) = (before.rss, before.sockets);
    let (rss_peak, sockets_peak) = (peak.rss, peak.sockets);
    println!(
        "{count} connections opened in {:.1}s: {greeted} greeted, {refused} refused with 421 4.3.2; \
         relay sockets {sockets_before} -> peak {sockets_peak}; VmRSS {rss_before} KiB -> peak {rss_peak} KiB",
        opened_in.as_secs_f64()
    );
    assert!(other.is_empty(), "neither greeted nor refused: {other:?}");
    // Admitted sessions only leave by the command timeout: while the crowd
    // arrived, at most LIMIT at a time were greeted.
    let rounds = 1 + (opened_in.as_secs_f64() / COMMAND_TIMEOUT.as_secs_f64()) as usize;
    assert!(
        (LIMIT..=LIMIT * rounds).contains(&greeted),
        "{greeted} greeted in {:.1}s with a limit of {LIMIT}",
        opened_in.as_secs_f64()
    );
    assert_eq!(greeted + refused, count);
    // LIMIT sessions and the relay's own sockets; a refused connection is
    // closed as soon as it is accepted.
    assert!(
        sockets_peak <= sockets_before + LIMIT + 10,
        "the relay held {sockets_peak} sockets (limit {LIMIT}, {sockets_before} at rest)"
    );
    // A session costs its 16 KiB read buffer and a small task; 100 of them are a
    // few MiB. 32 MiB of growth is far below what keeping 10,000 connections
    // would cost (10,000 read buffers alone are 160 MiB).
    assert!(
        rss_peak < rss_before + 32 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
}

/// The admitted idle sessions are timed out and closed.
fn assert_idle_sessions_timed_out(crowd: &[TcpStream], replies: &[String]) {
    let idle: Vec<&TcpStream> = crowd
        .iter()
        .zip(replies)
        .filter(|(_, r)| r.starts_with("220 "))
        .map(|(s, _)| s)
        .collect();
    let mut timed_out = 0;
    for s in &idle {
        // Before EHLO a reply has no enhanced status code.
        let r = first_line(s);
        assert!(
            r.starts_with("421 ") && r.contains("timeout exceeded"),
            "an idle session got {r:?}"
        );
        assert_eq!(first_line(s), "(closed)");
        timed_out += 1;
    }
    println!("{timed_out} idle sessions closed by the command timeout");
}

/// A legitimate client is served (a closed session gives its slot back a
/// moment after its socket closes, so it may take a second try).
fn serve_a_legitimate_client(relay: &Relay) {
    let legit = Submission {
        from: "a@src.test".into(),
        rcpts: vec!["b@dst.test".into()],
        message: "Subject: served\r\n\r\nhi\r\n".into(),
    };
    let served = (0..20).find_map(|_| {
        let r = Submit::connect(relay.addr()).and_then(|mut c| c.send(&legit));
        if r.is_err() {
            std::thread::sleep(Duration::from_millis(100));
        }
        r.ok()
    });
    let r = served.expect("no client served after the idle sessions were closed");
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let pid = relay.pid().expect("running");
    println!("served: {r}; VmRSS now {} KiB", rss_kib(pid));
}
