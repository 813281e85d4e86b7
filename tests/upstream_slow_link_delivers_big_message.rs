//! A big message over a slow link to the smarthost: each write of the body
//! has its own timeout (RFC 5321 4.5.3.2.5, 3 minutes) and `upstream_data`
//! bounds only the wait for the reply after the final dot (4.5.3.2.6), so a
//! transfer that takes several times `upstream_data` must still deliver the
//! message, intact and exactly once, at the first attempt.
//!
//! The upstream is the real aiosmtpd (tests/peers/aiosmtpd_server.py, which
//! saves every message as received). Between it and the relay sits the one
//! thing no real peer provides: an in-process TCP proxy that forwards the
//! first `SLOW` bytes of each connection from the relay at `RATE` bytes a
//! second (24 s, `upstream_data` is 5 s), and the rest at full speed.
//!
//! Why the fast tail: whatever the relay has written but the proxy not yet
//! read sits in kernel buffers, and the relay's wait for the final reply
//! starts when its last write returns, so the reply can come no sooner than
//! those bytes drain. The proxy's listening socket advertises an MSS of 536
//! and a small receive buffer, which keeps that backlog to some 250 KB
//! (measured with `ss`: up to ~236 KB in the relay's send queue; without the
//! clamp, megabytes), but at `RATE` even that would take longer than
//! `upstream_data`. The tail after `SLOW` is larger than that backlog, so it
//! drains at once, as it would before a real server's reply; the slow part is
//! what a single timeout around the whole transfer cannot survive.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Relay;

/// Relay → upstream, bytes a second, for the first `SLOW` bytes of a connection.
const RATE: u64 = 16 * 1024;
/// 384 KiB at 16 KiB/s: 24 s, about 5 times `upstream_data`.
const SLOW: u64 = 384 * 1024;
/// The big message: the 640 KiB after `SLOW` are well over the ~250 KB the
/// kernel buffers between the relay and the proxy.
const BIG: usize = 1024 * 1024;
const UPSTREAM_DATA_SECS: u64 = 5;
const FROM: &str = "big@src.test";
const TO: &str = "sink@dst.test";

/// A TCP proxy on 127.0.0.1 to `upstream`, throttling the first [`SLOW`]
/// bytes of the client's direction to [`RATE`]; stops its threads when dropped.
struct SlowLink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The most bytes one connection has carried client → upstream.
    up: Arc<AtomicU64>,
    /// Joins the connections' threads before it ends.
    acceptor: Option<JoinHandle<()>>,
}

/// A listener on 127.0.0.1:0 whose connections have an MSS of 536 and a
/// small receive buffer (both inherited from the listening socket). Built
/// with tokio's socket (std cannot set options before listen), inside a
/// runtime only long enough to hand back a blocking std listener.
fn small_window_listener() -> TcpListener {
    use nix::sys::socket::{setsockopt, sockopt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let sock = tokio::net::TcpSocket::new_v4().expect("proxy socket");
    setsockopt(&sock, sockopt::TcpMaxSeg, &536).expect("TCP_MAXSEG");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind proxy");
    let listener = sock.listen(16).expect("listen");
    listener.into_std().expect("std listener")
}

impl SlowLink {
    fn start(upstream: SocketAddr) -> SlowLink {
        let listener = small_window_listener();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicU64::new(0));
        let (s, u) = (stop.clone(), up.clone());
        let acceptor = std::thread::spawn(move || accept_loop(&listener, upstream, &s, &u));
        SlowLink {
            addr,
            stop,
            up,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Accepts and connects each client to `upstream` until `stop`; then waits
/// for the connections' threads to end.
fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    stop: &Arc<AtomicBool>,
    up: &Arc<AtomicU64>,
) {
    let mut threads = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        threads.push(pipe(&client, &server, Some(up.clone()), stop.clone()));
        threads.push(pipe(&server, &client, None, stop.clone()));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Copies `from` to `to` in a thread until EOF or stop, then half-closes
/// `to`; with `count`, the first [`SLOW`] bytes at [`RATE`], and `count`
/// raised to the bytes this connection has carried.
fn pipe(
    from: &TcpStream,
    to: &TcpStream,
    count: Option<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
        let mut passed = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let n = match forward(&mut from, &mut to) {
                Some(0) => continue,
                Some(n) => n,
                None => break,
            };
            if let Some(count) = &count {
                count.fetch_max(passed + n, Ordering::SeqCst);
                if passed < SLOW {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / RATE as f64));
                }
            }
            passed += n;
        }
        let _ = to.shutdown(Shutdown::Write);
    })
}

/// One read of up to 1 KiB, written on; bytes moved (0 on a read timeout),
/// None at EOF or on an error.
fn forward(from: &mut TcpStream, to: &mut TcpStream) -> Option<u64> {
    let mut buf = [0u8; 1024];
    let n = match from.read(&mut buf) {
        Ok(0) => return None,
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Some(0)
        }
        Err(_) => return None,
    };
    to.write_all(&buf[..n]).ok()?;
    Some(n as u64)
}

/// Whether the Debian interpreter can import aiosmtpd.
fn have_aiosmtpd() -> bool {
    Command::new(aiosmtpd::PYTHON)
        .args(["-c", "import aiosmtpd.smtp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CRLF message of at least `size` bytes, ~76-octet lines, some starting
/// with a dot.
fn message(token: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {FROM}\r\nTo: {TO}\r\nSubject: slow {token}\r\nMessage-ID: <{token}@slow.test>\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0u64;
    while m.len() < size {
        let dot = if n.is_multiple_of(100) { "." } else { "" };
        m.extend_from_slice(
            format!(
                "{dot}{token} line {n:08} ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n"
            )
            .as_bytes(),
        );
        n += 1;
    }
    m
}

fn relay_config(proxy_port: u16) -> String {
    format!(
        "retry = \"F,10m,1s\"\n[timeouts]\nconnect = \"2s\"\ngreeting = \"5s\"\n\
         upstream_command = \"10s\"\nupstream_data = \"{UPSTREAM_DATA_SECS}s\"\n{}",
        common::upstream_route(proxy_port, "")
    )
}

/// Waits for `id`'s outcome for `TO` (sent, deferred or bounced); its log line.
fn wait_outcome(relay: &Relay, id: &str, timeout: Duration) -> String {
    let about = format!("{id}: to=<{TO}> ");
    let mut line = None;
    common::wait_for(timeout, || {
        line = relay
            .log()
            .lines()
            .find(|l| l.contains(&about) && l.contains(" status="))
            .map(str::to_string);
        line.is_some()
    });
    line.unwrap_or_else(|| panic!("no outcome for {id}; log:\n{}", relay.log()))
}

/// Exactly one of `got` is `sent` (modulo our Received header).
#[track_caller]
fn assert_arrived_once(got: &[(serde_json::Value, Vec<u8>)], sent: &[u8], what: &str) {
    let n = got
        .iter()
        .filter(|(_, m)| common::strip_received(m) == sent)
        .count();
    assert_eq!(
        n,
        1,
        "{what}: {n} intact copies among {} received",
        got.len()
    );
}

#[test]
fn big_message_over_a_slow_link_is_delivered_once_at_the_first_attempt() {
    if !common::require("python3-aiosmtpd", have_aiosmtpd()) {
        return;
    }
    let peer = aiosmtpd::Peer::start(Vec::<String>::new());
    let link = SlowLink::start(SocketAddr::from(([127, 0, 0, 1], peer.port)));
    let relay = Relay::start(&relay_config(link.addr.port()));

    let big = message("big", BIG);
    let start = Instant::now();
    let id = relay
        .send(FROM, &[TO], &big)
        .unwrap_or_else(|r| panic!("big message not queued: {r}"));
    let line = wait_outcome(&relay, &id, Duration::from_secs(90));
    let took = start.elapsed();
    println!(
        "{} bytes in {:.1}s through the link (upstream_data {UPSTREAM_DATA_SECS}s): {line}",
        big.len(),
        took.as_secs_f64()
    );
    assert!(
        line.contains("attempts=1 status=sent"),
        "{line}\naiosmtpd events: {:?}",
        peer.events()
    );
    assert!(
        took > Duration::from_secs(UPSTREAM_DATA_SECS * 4),
        "the transfer took {took:?}: too fast to mean anything"
    );
    let carried = link.up.load(Ordering::SeqCst);
    assert!(
        carried >= big.len() as u64,
        "one connection carried {carried} bytes"
    );
    assert_arrived_once(&peer.messages(), &big, "the big message");

    // A small message still goes through the same link, after it.
    let small = message("small", 200);
    let id = relay
        .send(FROM, &[TO], &small)
        .unwrap_or_else(|r| panic!("small message not queued: {r}"));
    let line = wait_outcome(&relay, &id, Duration::from_secs(20));
    assert!(line.contains("attempts=1 status=sent"), "{line}");
    let got = peer.messages();
    assert_eq!(got.len(), 2, "two messages sent, {} received", got.len());
    assert_arrived_once(&got, &small, "the small message");
    assert!(
        relay.wait_queue_empty(Duration::from_secs(10)),
        "{:?}",
        relay.queue_json()
    );
}
