//! SMTP smuggling probes in the style of SEC Consult's published tests
//! (Longin, "SMTP Smuggling", 2023): an end-of-data sequence other than
//! `CRLF.CRLF` followed by a second, forged transaction. Inbound, the relay
//! must never take anything but `CRLF.CRLF` as the end of data, whatever the
//! TCP segmentation, and never turn smuggled text into a transaction; outbound,
//! what it sends its smarthost must hold no bare CR or LF and exactly one
//! terminator, so that no lenient upstream can split it either.
//!
//! `inbound_protocol.rs` has the five basic probes in one write; here are the
//! rest, the segmented forms, the probes that are legitimate data, the local
//! submission socket, BDAT, and the outbound side.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{captured, strip_received, Client, Relay, CAPTURE};

const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

/// The forged second transaction every probe carries after its fake end.
const SMUGGLED: &[u8] = b"MAIL FROM:<admin@victim.example>\r\n\
RCPT TO:<user@victim.example>\r\n\
DATA\r\n\
From: admin@victim.example\r\n\
Subject: smuggled\r\n\
\r\n\
forged\r\n\
.\r\n";

/// End-of-data sequences that some MTA somewhere accepts; each holds a bare CR
/// or LF, so the relay must answer 521 and close.
const BARE: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CR.CR", b"\r.\r"),
    ("CR.CRLF", b"\r.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("CRLF.CR", b"\r\n.\r"),
    ("LF.CR", b"\n.\r"),
    ("CRLF.CRCRLF", b"\r\n.\r\r\n"),
    ("CRLF.LFCRLF", b"\r\n.\n\r\n"),
];

fn session(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    c.expect_cmd("RCPT TO:<user@example.net>", 250);
    c.expect_cmd("DATA", 354);
    c
}

/// Sends `parts` as separate TCP writes, pausing between them so that each
/// arrives as its own read on the relay's side; stops once the relay answered.
fn write_segmented(c: &mut Client, parts: &[&[u8]]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
        if !c.write_unless_answered(p) {
            return;
        }
    }
}

/// Exactly these messages were queued (counted in the log) and delivered, each
/// from app@example.com to user@example.net only: once a sentinel message
/// submitted after them is delivered too, the log and the capture directory
/// hold these `n` and the sentinel, nothing else.
fn assert_delivered(relay: &Relay, n: usize) -> Vec<Vec<u8>> {
    assert!(
        relay.wait_log("status=sent", n, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let sentinel = relay.sentinel();
    let log = relay.log();
    assert_eq!(log.matches("from=<").count(), n + 1, "{log}");
    assert!(log.contains(&format!("{sentinel}: from=<")), "{log}");
    assert!(!log.contains("victim.example"), "{log}");
    let mut got = captured(&relay.path("out"));
    assert_eq!(got.len(), n + 1, "{log}");
    got.retain(|(meta, _)| meta["queue_id"] != sentinel.as_str());
    assert_eq!(got.len(), n, "{log}");
    for (meta, _) in &got {
        assert_eq!(meta["sender"], "app@example.com");
        assert_eq!(meta["recipients"], serde_json::json!(["user@example.net"]));
    }
    got.into_iter().map(|(_, body)| body).collect()
}

/// Nothing was queued or delivered: a sentinel message submitted afterwards
/// is delivered, and it is the only message queued and captured.
fn assert_nothing_stored(relay: &Relay) {
    let sentinel = relay.sentinel();
    common::assert_only_sentinel(relay, &relay.path("out"), &sentinel);
}

#[test]
fn bare_line_end_probes_abort_however_segmented() {
    let relay = Relay::start(CAPTURE);
    let head: &[u8] = b"From: app@example.com\r\nSubject: outer\r\n\r\nfirst";
    for (name, end) in BARE {
        let tail: Vec<u8> = [*end, SMUGGLED].concat();
        let whole: Vec<u8> = [head, &tail].concat();
        // In one write; the fake end in a segment of its own; and split
        // inside the fake end, between every two of its bytes.
        let mut layouts: Vec<Vec<&[u8]>> = vec![vec![&whole], vec![head, end, SMUGGLED]];
        for cut in 1..end.len() {
            let (a, b) = tail.split_at(cut);
            layouts.push(vec![head, a, b]);
        }
        for parts in layouts {
            let mut c = session(relay.addr());
            write_segmented(&mut c, &parts);
            let r = c.read_reply();
            assert_eq!(
                r,
                "521 5.5.2 Bare CR or LF in message data; lines must end with CRLF",
                "{name} in {} segments",
                parts.len()
            );
            assert!(c.closed(), "{name}: the connection must close");
        }
    }
    // A message with a fake end at its very start (".LF" right after DATA).
    for start in [&b".\n"[..], b".\r", b"\n.\r\n"] {
        let mut c = session(relay.addr());
        c.write(&[start, SMUGGLED].concat());
        assert!(c.read_reply().starts_with("521 5.5.2"), "{start:?}");
        assert!(c.closed());
    }
    // The relay is not desynchronized: the next client is served normally.
    let id = relay
        .send(
            "app@example.com",
            &["user@example.net"],
            b"Subject: after\r\n\r\nok\r\n",
        )
        .expect("queued");
    let bodies = assert_delivered(&relay, 1);
    assert!(relay.log().contains(&id));
    assert_eq!(strip_received(&bodies[0]), b"Subject: after\r\n\r\nok\r\n");
}

/// Sequences that look like an end but are data by RFC 5321: the forged
/// transaction stays text inside the one message, and only the real
/// `CRLF.CRLF` ends it.
#[test]
fn lookalike_ends_stay_data_of_one_message() {
    let relay = Relay::start(CAPTURE);
    let lookalikes: &[(&str, &[u8], &[u8])] = &[
        // (name, as sent after "first", as stored)
        ("CRLF SP . CRLF", b"\r\n .\r\n", b"\r\n .\r\n"),
        ("CRLF .. CRLF (stuffed)", b"\r\n..\r\n", b"\r\n.\r\n"),
        ("CRLF .x CRLF", b"\r\n.x\r\n", b"\r\nx\r\n"),
        ("CRLF . TAB CRLF", b"\r\n.\t\r\n", b"\r\n\t\r\n"),
    ];
    let head: &[u8] = b"Subject: outer\r\n\r\nfirst";
    let stuffed_smuggled: Vec<u8> = SMUGGLED
        .strip_suffix(b".\r\n")
        .map(|s| [s, b"..\r\n"].concat())
        .unwrap_or_default();
    for (name, sent, _) in lookalikes {
        let mut c = session(relay.addr());
        write_segmented(&mut c, &[head, sent, &stuffed_smuggled, b"last\r\n.\r\n"]);
        let r = c.read_reply();
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{name}: {r}");
        // Nothing else was answered: no second transaction.
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok", "{name}");
        c.expect_cmd("QUIT", 221);
    }
    let bodies = assert_delivered(&relay, lookalikes.len());
    let mut want: Vec<Vec<u8>> = lookalikes
        .iter()
        .map(|(_, _, stored)| [head, stored, SMUGGLED, b"last\r\n"].concat())
        .collect();
    let mut got: Vec<Vec<u8>> = bodies.iter().map(|b| strip_received(b).to_vec()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

/// A NUL in front of the dot makes that line data; the message is then refused
/// for the NUL at the real end, and the forged commands were never commands.
#[test]
fn nul_dot_is_data_and_the_message_is_refused() {
    let relay = Relay::start(CAPTURE);
    let mut c = session(relay.addr());
    write_segmented(
        &mut c,
        &[b"Subject: outer\r\n\r\nfirst", b"\r\n\x00.\r\n", SMUGGLED],
    );
    // SMUGGLED ends in its own "\r\n.\r\n": that is the real end of this data.
    assert_eq!(c.read_reply(), "554 5.6.0 Message contains NUL bytes");
    // The next reply answers the next command: no forged transaction ran.
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    c.expect_cmd("QUIT", 221);
    assert_nothing_stored(&relay);
}

/// BDAT (RFC 3030) is neither offered nor accepted, so no chunk length can
/// disagree with anyone's idea of the end of data.
#[test]
fn bdat_is_not_offered() {
    let relay = Relay::start(CAPTURE);
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    let ehlo = c.expect_cmd("EHLO client.test", 250);
    assert!(
        !ehlo.contains("CHUNKING") && !ehlo.contains("BINARYMIME"),
        "{ehlo}"
    );
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    c.expect_cmd("RCPT TO:<user@example.net>", 250);
    assert_eq!(c.cmd("BDAT 5 LAST"), "500 5.5.1 Command not recognized");
    assert!(c.cmd("DATA").starts_with("354"));
    c.write(b"Subject: after bdat\r\n\r\nok\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 2.0.0 Ok: queued"));
    c.expect_cmd("QUIT", 221);
    assert_delivered(&relay, 1);
}

/// `sendmail -bs` speaks to the same session over the local submission socket:
/// the same rule holds there.
#[test]
fn local_submission_socket_is_as_strict() {
    let relay = Relay::start(CAPTURE);
    let mut input = b"EHLO localhost\r\nMAIL FROM:<app@example.com>\r\n\
RCPT TO:<user@example.net>\r\nDATA\r\nSubject: outer\r\n\r\nfirst\n.\n"
        .to_vec();
    input.extend_from_slice(SMUGGLED);
    input.extend_from_slice(b"QUIT\r\n");
    let mut child = Command::new(BIN)
        .args(["sendmail", "-bs"])
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail -bs");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("sendmail -bs");
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\r\n521 5.5.2 "), "{stdout}");
    assert!(!stdout.contains("queued as"), "{stdout}");
    assert_nothing_stored(&relay);
}

// ---- outbound ---------------------------------------------------------------

/// A plain-text upstream that answers every command with success and records
/// the exact bytes of each DATA section, as the most lenient peer would get
/// them. Stops its threads when dropped.
struct RawUpstream {
    addr: SocketAddr,
    data: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections accepted and not yet ended: 0 once it has read and answered
    /// everything every client sent it.
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let data = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, o, s) = (data.clone(), open.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (d, o, s) = (d.clone(), o.clone(), s.clone());
                        o.fetch_add(1, Ordering::SeqCst);
                        conns.push(std::thread::spawn(move || {
                            serve(stream, &d, &s);
                            o.fetch_sub(1, Ordering::SeqCst);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        RawUpstream {
            addr,
            data,
            open,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every connection has ended, each after its last byte was handled.
    fn all_closed(&self) -> bool {
        self.open.load(Ordering::SeqCst) == 0
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve(stream: TcpStream, data: &Mutex<Vec<Vec<u8>>>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 up.test ESMTP\r\n");
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match r.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {}
            // A timeout mid-line keeps what was read; try again.
            _ => continue,
        }
        let verb = String::from_utf8_lossy(&line).to_ascii_uppercase();
        line.clear();
        let reply: &[u8] = if verb.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while !(raw.ends_with(b"\r\n.\r\n") || raw == b".\r\n") {
                match r.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(_) if !stop.load(Ordering::SeqCst) => continue,
                    Err(_) => return,
                }
            }
            data.lock().unwrap_or_else(|p| p.into_inner()).push(raw);
            b"250 2.0.0 accepted\r\n"
        } else if verb.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        let _ = w.write_all(reply);
    }
}

/// The DATA bytes as sent: CRLF only, every line that starts with a dot
/// stuffed, one terminator and only at the end. Returns the unstuffed message.
fn check_outbound(raw: &[u8]) -> Vec<u8> {
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}: {raw:?}"),
            b'\n' => assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}: {raw:?}"),
            _ => {}
        }
    }
    let body = raw.strip_suffix(b".\r\n").expect("terminator");
    assert!(body.is_empty() || body.ends_with(b"\r\n"));
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b".") {
            Some(rest) => {
                assert!(rest.starts_with(b"."), "unstuffed dot line {line:?}");
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// Whatever entered the queue, by SMTP or by `sendmail` from a program that
/// writes bare LF and bare CR, leaves for the smarthost in a form no lenient
/// upstream can split into two messages.
#[test]
fn outbound_data_has_one_end_and_no_bare_line_ends() {
    let up = RawUpstream::start();
    let relay = Relay::start(&format!(
        r#"trusted_networks = ["127.0.0.1/32"]
retry = "F,1m,1s"
[timeouts]
idle = "1s"
[[route]]
name = "up"
host = "127.0.0.1"
port = {}
tls = "none"
[routing]
default = "up"
"#,
        up.addr.port()
    ));
    // Over SMTP: a message full of dot lines and a forged transaction as text.
    let smtp_msg: Vec<u8> = [
        &b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n . \r\n"[..],
        SMUGGLED,
        b"end\r\n",
    ]
    .concat();
    relay
        .send("app@example.com", &["user@example.net"], &smtp_msg)
        .expect("queued");
    // Through sendmail -i: bare LF and bare CR line ends, lone dots, and the
    // smuggling sequences themselves.
    sendmail_i_t(
        &relay,
        b"To: user@example.net\nSubject: piped\n\nfirst\n.\nMAIL FROM:<admin@victim.example>\r\n.\r\nx\r.\rend\n.\r\n",
    );

    let ok = common::wait_for(Duration::from_secs(20), || up.messages().len() >= 2);
    assert!(
        ok,
        "upstream got {:?}; log:\n{}",
        up.messages(),
        relay.log()
    );
    // The sentinel: the relay closes its idle connections (after 1 s), and the
    // upstream has then handled every byte it was sent, a smuggled second
    // transaction included.
    let closed = common::wait_for(Duration::from_secs(20), || up.all_closed());
    assert!(
        closed,
        "the relay kept a connection open; log:\n{}",
        relay.log()
    );
    assert_outbound_intact(&up.messages(), &smtp_msg);
    assert_eq!(relay.log().matches("status=sent").count(), 2);
}

/// Submits `piped` through `sendmail -i -t -f app@example.com`, which must
/// succeed.
fn sendmail_i_t(relay: &Relay, piped: &[u8]) {
    let mut child = Command::new(BIN)
        .args(["sendmail", "-i", "-t", "-f", "app@example.com"])
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(piped)
        .expect("write");
    let out = child.wait_with_output().expect("sendmail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The upstream got exactly two messages, each with one end and no bare line
/// end: the SMTP one, `smtp_msg`, unchanged, and the piped one with every bare
/// LF and bare CR made CRLF and its lone dots kept as data.
fn assert_outbound_intact(raws: &[Vec<u8>], smtp_msg: &[u8]) {
    assert_eq!(raws.len(), 2, "exactly two messages upstream");
    let mut texts: Vec<Vec<u8>> = raws.iter().map(|r| check_outbound(r)).collect();
    texts.sort_by_key(|t| !t.windows(5).any(|w| w == b"dots\r"));
    assert_eq!(strip_received(&texts[0]), smtp_msg);
    let piped_out = String::from_utf8_lossy(strip_received(&texts[1])).into_owned();
    let body = piped_out.split("\r\n\r\n").nth(1).expect("body");
    assert_eq!(
        body,
        "first\r\n.\r\nMAIL FROM:<admin@victim.example>\r\n.\r\nx\r\n.\r\nend\r\n.\r\n"
    );
}
