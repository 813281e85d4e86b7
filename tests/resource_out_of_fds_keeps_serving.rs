//! The relay runs out of file descriptors: its `RLIMIT_NOFILE` is lowered
//! (prlimit) to a few above what it uses at rest, then connections are opened
//! until accept fails with EMFILE. The relay must keep running, log the error
//! without spinning (it backs off 100 ms per failed accept), finish the session
//! it already had with a `250`, and serve new clients once the crowd leaves.
//! Nothing acknowledged is lost.

mod common;
#[path = "common/stream.rs"]
mod stream;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{captured, Client, Relay};
use stream::{Submission, Submit};

/// The daemon's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn message(token: &str) -> Vec<u8> {
    format!(
        "From: a@src.test\r\nTo: b@dst.test\r\nSubject: {token}\r\nX-Token: {token}\r\n\r\nhi\r\n"
    )
    .into_bytes()
}

/// Sends one message on an open session; the final reply.
fn send_on(c: &mut Client, token: &str) -> String {
    c.expect_cmd("MAIL FROM:<a@src.test>", 250);
    c.expect_cmd("RCPT TO:<b@dst.test>", 250);
    c.expect_cmd("DATA", 354);
    c.write(&common::dot_stuff(&message(token)));
    c.read_reply()
}

#[test]
fn out_of_file_descriptors_the_relay_backs_off_keeps_its_sessions_and_recovers() {
    if !common::require("prlimit (util-linux)", common::have("prlimit")) {
        return;
    }
    let relay = Relay::start(&format!("retry = \"F,10m,1s\"\n{}", common::CAPTURE_ROUTE));
    let pid = relay.pid().expect("running");
    relay
        .send("a@src.test", &["b@dst.test"], &message("before"))
        .expect("before");

    // The session that is open when the descriptors run out.
    let mut open = Client::connect(relay.addr());
    open.expect(220);
    open.expect_cmd("EHLO open.test", 250);

    let limit = lower_descriptor_limit(pid);
    let crowd = exhaust_descriptors(&relay, limit);

    // Out of descriptors, the open session still queues mail (sled's files are
    // open already).
    let r = send_on(&mut open, "during");
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");

    assert_accept_backs_off(&relay, pid);

    // The crowd leaves; the relay drains its backlog and serves a new client.
    drop(crowd);
    let _ = open.cmd("QUIT");
    drop(open);
    serve_a_new_client(&relay);
    assert_eq!(relay.pid(), Some(pid));

    // Everything acknowledged arrives (deliveries that hit EMFILE are retried).
    let out = relay.path("out");
    let arrived = common::wait_for(Duration::from_secs(20), || {
        let got: Vec<String> = captured(&out)
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        ["before", "during", "after"]
            .iter()
            .all(|t| got.iter().any(|m| m.contains(&format!("X-Token: {t}\r"))))
    });
    assert!(arrived, "acknowledged mail missing; log:\n{}", relay.log());
}

fn accept_failed(relay: &Relay) -> usize {
    relay.log().matches("accept failed").count()
}

/// Lowers the daemon's descriptor limit to 16 above what it uses at rest; the
/// new limit.
fn lower_descriptor_limit(pid: u32) -> usize {
    let at_rest = open_fds(pid);
    let limit = at_rest + 16;
    let set = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit");
    assert!(set.success(), "prlimit --nofile={limit} failed");
    println!("relay uses {at_rest} descriptors at rest; limit now {limit}");
    limit
}

/// Opens connections until the relay's accept fails with EMFILE; the crowd.
fn exhaust_descriptors(relay: &Relay, limit: usize) -> Vec<TcpStream> {
    // The kernel completes handshakes into the listen backlog whether or not
    // the relay can accept them: every connect succeeds.
    let mut crowd = Vec::new();
    let exhausted = common::wait_for(Duration::from_secs(10), || {
        if crowd.len() < 4 * limit {
            for _ in 0..8 {
                crowd.push(TcpStream::connect(relay.addr()).expect("connect"));
            }
        }
        accept_failed(relay) > 0
    });
    assert!(
        exhausted,
        "accept never failed with {} connections open; log:\n{}",
        crowd.len(),
        relay.log()
    );
    assert!(
        relay.log().contains("Too many open files"),
        "{}",
        relay.log()
    );
    println!("accept fails with {} connections open", crowd.len());
    crowd
}

/// The accept loop backs off instead of spinning on EMFILE.
fn assert_accept_backs_off(relay: &Relay, pid: u32) {
    let (ticks0, logged0, t0) = (cpu_ticks(pid), accept_failed(relay), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - ticks0) as f64 / 100.0;
    let logged = accept_failed(relay) - logged0;
    println!("out of descriptors for {secs:.1}s: {cpu:.2}s CPU, {logged} 'accept failed' lines");
    // A spinning loop burns a whole core and logs thousands of lines a second.
    assert!(cpu < 0.25 * secs, "{cpu:.2}s CPU in {secs:.1}s");
    assert!(
        (logged as f64) < 15.0 * secs,
        "{logged} lines in {secs:.1}s"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// Within 20 s a new client gets its message ("after") queued.
fn serve_a_new_client(relay: &Relay) {
    let back = Instant::now();
    let mut served = None;
    while back.elapsed() < Duration::from_secs(20) {
        let after = Submission {
            from: "a@src.test".into(),
            rcpts: vec!["b@dst.test".into()],
            message: String::from_utf8_lossy(&message("after")).into_owned(),
        };
        if let Ok(r) = Submit::connect(relay.addr()).and_then(|mut c| c.send(&after)) {
            served = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = served.expect("no client served within 20 s after the crowd left");
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "after: {r}");
    println!(
        "served again {:.1}s after the crowd left",
        back.elapsed().as_secs_f64()
    );
}
