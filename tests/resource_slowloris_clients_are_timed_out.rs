//! Slowloris: clients that send one byte every half second, in a command line
//! they never finish, or in a DATA body they trickle for ever. Each byte arrives
//! well within the timeouts, so only deadlines on the whole line (the command
//! timeout) and on DATA as a whole (the data timeout plus a second per 500 bytes)
//! can end them. They must be cut off with a `421` close to those deadlines,
//! while a normal client is served meanwhile, and a slow but steady one (2 KB
//! a second) is not cut off.

mod common;
#[path = "common/stream.rs"]
mod stream;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Relay;
use stream::{Submission, Submit};

/// The configured command and data timeouts.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Give up on a slow client that was not cut off by then.
const GIVE_UP: Duration = Duration::from_secs(20);
const SLOW_CLIENTS: usize = 10;

/// What became of one slow client.
struct Cut {
    /// From the first trickled byte to the connection's end.
    after: Duration,
    bytes_sent: usize,
    /// Everything the relay sent after the setup.
    said: String,
}

/// Complete replies in `got`: lines whose code is followed by a space.
fn replies(got: &[u8]) -> usize {
    got.split(|&b| b == b'\n')
        .filter(|l| l.len() > 3 && l[3] == b' ' && l.ends_with(b"\r"))
        .count()
}

/// Sends `setup` a line at a time (waiting for each reply), then trickles
/// `trickle` a byte every 500 ms until the relay closes the connection.
fn slow_client(
    relay: &Relay,
    setup: &'static [&'static str],
    trickle: &'static [u8],
) -> JoinHandle<Cut> {
    let addr = relay.addr();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut wait_lines = |s: &mut TcpStream, got: &mut Vec<u8>, n: usize| {
            let end = Instant::now() + Duration::from_secs(10);
            while replies(got) < n && Instant::now() < end {
                if let Ok(k) = s.read(&mut buf) {
                    got.extend_from_slice(&buf[..k]);
                }
            }
        };
        wait_lines(&mut s, &mut got, 1);
        for (i, line) in setup.iter().enumerate() {
            s.write_all(line.as_bytes()).expect("setup");
            wait_lines(&mut s, &mut got, i + 2);
        }
        let before = got.len();
        let started = Instant::now();
        let mut sent = 0;
        loop {
            // The read waits up to 500 ms: that is the trickle's pace.
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(_) => {}
            }
            if started.elapsed() > GIVE_UP {
                break;
            }
            let byte = trickle[sent % trickle.len()];
            if s.write_all(&[byte]).is_err() {
                break;
            }
            sent += 1;
        }
        Cut {
            after: started.elapsed(),
            bytes_sent: sent,
            said: String::from_utf8_lossy(&got[before..])
                .trim_end()
                .to_string(),
        }
    })
}

#[test]
fn byte_at_a_time_clients_are_cut_off_by_the_deadlines_while_others_are_served() {
    let relay = Relay::start(&format!(
        r#"[timeouts]
command = "{0}s"
data = "{0}s"
{1}"#,
        TIMEOUT.as_secs(),
        common::CAPTURE_ROUTE
    ));
    let (command_line, data_body) = start_slow_clients(&relay);
    let honest = honest_client(&relay);

    // Meanwhile a normal client is served, promptly.
    std::thread::sleep(TIMEOUT / 2);
    serve_a_normal_client(&relay);

    let r = honest.join().expect("honest client");
    assert!(
        r.starts_with("250 2.0.0 Ok: queued as"),
        "honest slow client: {r}"
    );
    println!(
        "a client sending 2 KB/s for {}s: {r}",
        3 * TIMEOUT.as_secs()
    );

    for (what, clients) in [("command line", command_line), ("DATA body", data_body)] {
        assert_cut_off_by_the_deadline(what, clients);
    }
}

/// [`SLOW_CLIENTS`] clients trickling a command line that never ends, and as
/// many trickling a message body.
fn start_slow_clients(relay: &Relay) -> (Vec<JoinHandle<Cut>>, Vec<JoinHandle<Cut>>) {
    let mut command_line = Vec::new();
    let mut data_body = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        // A command line that never ends (no LF ever comes).
        command_line.push(slow_client(
            relay,
            &["EHLO slow.test\r\n"],
            b"MAIL FROM:<slowly-slowly-slowly@src.test> SIZE=1000000000000000000",
        ));
        // A message body trickled a byte at a time, lines and all.
        data_body.push(slow_client(
            relay,
            &[
                "EHLO slow.test\r\n",
                "MAIL FROM:<a@src.test>\r\n",
                "RCPT TO:<b@dst.test>\r\n",
                "DATA\r\n",
            ],
            b"Subject: slow\r\n\r\nThis message never ends.\r\n",
        ));
    }
    (command_line, data_body)
}

/// A slow but honest client: 2 KB a second (above 500 bytes a second) for
/// three times the data timeout must be let through; the last line the relay
/// said to it.
fn honest_client(relay: &Relay) -> JoinHandle<String> {
    let addr = relay.addr();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut say = |s: &mut TcpStream, line: &[u8], n: usize| {
            s.write_all(line).expect("write");
            while replies(&got) < n {
                match s.read(&mut buf) {
                    Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
                    _ => break,
                }
            }
        };
        say(&mut s, b"", 1);
        say(&mut s, b"EHLO honest.test\r\n", 2);
        say(
            &mut s,
            b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@dst.test>\r\nDATA\r\n",
            5,
        );
        let line = format!("{}\r\n", "x".repeat(98));
        let started = Instant::now();
        s.write_all(b"Subject: honest\r\n\r\n").expect("write");
        while started.elapsed() < 3 * TIMEOUT {
            s.write_all(line.repeat(20).as_bytes())
                .expect("the honest client was cut off");
            std::thread::sleep(Duration::from_secs(1));
        }
        say(&mut s, b".\r\n", 6);
        let text = String::from_utf8_lossy(&got).into_owned();
        text.lines().last().unwrap_or_default().to_string()
    })
}

/// A normal client's message is queued while the slow ones trickle.
fn serve_a_normal_client(relay: &Relay) {
    let normal = Submission {
        from: "a@src.test".into(),
        rcpts: vec!["b@dst.test".into()],
        message: "Subject: normal\r\n\r\nhi\r\n".into(),
    };
    let t = Instant::now();
    let r = Submit::connect(relay.addr())
        .and_then(|mut c| c.send(&normal))
        .expect("a normal client while the slow ones trickle");
    let normal_took = t.elapsed();
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    println!(
        "normal client served in {:.2}s during the trickle",
        normal_took.as_secs_f64()
    );
}

/// Every one of `clients` was told `421 ... timeout exceeded`, none later than
/// a few seconds after the deadline.
fn assert_cut_off_by_the_deadline(what: &str, clients: Vec<JoinHandle<Cut>>) {
    let cuts: Vec<Cut> = clients
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let longest = cuts.iter().map(|c| c.after).max().unwrap_or_default();
    println!(
        "{what}: {} slow clients cut off after {:.1}-{:.1}s, {}-{} bytes trickled; relay said {:?}",
        cuts.len(),
        cuts.iter()
            .map(|c| c.after)
            .min()
            .unwrap_or_default()
            .as_secs_f64(),
        longest.as_secs_f64(),
        cuts.iter().map(|c| c.bytes_sent).min().unwrap_or(0),
        cuts.iter().map(|c| c.bytes_sent).max().unwrap_or(0),
        cuts[0].said
    );
    for c in &cuts {
        assert!(
            c.said.starts_with("421 ") && c.said.contains("timeout exceeded"),
            "{what}: the relay said {:?} after {:.1}s and {} bytes",
            c.said,
            c.after.as_secs_f64(),
            c.bytes_sent
        );
    }
    // The deadline is TIMEOUT (DATA earns a second per 500 bytes: none
    // here); a loaded machine may take a few seconds more.
    assert!(
        longest < TIMEOUT + Duration::from_secs(6),
        "{what}: a slow client lasted {:.1}s with a {}s timeout",
        longest.as_secs_f64(),
        TIMEOUT.as_secs()
    );
}
