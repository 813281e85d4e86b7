//! Postfix's smtp-sink (Debian package `postfix`, /usr/sbin/smtp-sink) as the
//! upstream smarthost, over plain SMTP to loopback.
//!
//! smtp-sink `-d <template>` writes every completed transaction to its own file.
//! The dump format (smtp-sink(1), and its source): `X-Client-Addr:`,
//! `X-Client-Proto:`, `X-Helo-Args:`, `X-Mail-Args:` and one `X-Rcpt-Args:` per
//! recipient, then a three-line `Received:` header of its own, then the message
//! as received with every CR dropped and the first dot of each line removed
//! (so dot-unstuffed, LF line endings), then the LF of the `.` terminator line.
//! The relay only ever sends CRLF lines, so turning each LF back into CRLF gives
//! exactly the bytes that were on the wire, unstuffed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, Relay};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

fn smtp_sink_binary() -> String {
    if Path::new(SMTP_SINK).exists() {
        return SMTP_SINK.to_string();
    }
    assert!(
        common::have("smtp-sink"),
        "smtp-sink not found (neither {SMTP_SINK} nor on PATH); install it: apt-get install postfix"
    );
    "smtp-sink".to_string()
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A running smtp-sink, killed on drop.
struct SmtpSink {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts smtp-sink on 127.0.0.1 with `extra` options, dumping each message
    /// into `<dir>/dump/`, and waits until it greets.
    fn start(extra: &[&str]) -> SmtpSink {
        let bin = smtp_sink_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = common::free_port();
        let log = std::fs::File::create(dir.path().join("smtp-sink.log")).expect("log");
        let mut cmd = Command::new(bin);
        // Run as root, smtp-sink insists on -u (it drops privileges after bind).
        if running_as_root() {
            cmd.args(["-u", "root"]);
        }
        // The template goes through strftime; the temp dir holds no '%'.
        let template = format!("{}/dump/msg.", dir.path().display());
        assert!(!template.contains('%'));
        cmd.arg("-d")
            .arg(&template)
            .args(["-h", "sink.test", "-t", "10"])
            .args(extra)
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn smtp-sink");
        let mut sink = SmtpSink {
            child: Some(child),
            port,
            dir,
        };
        let ready = common::wait_for(Duration::from_secs(10), || sink.greets());
        assert!(ready, "smtp-sink did not start; its log:\n{}", sink.log());
        sink
    }

    /// One probe session: any greeting means it is up; QUIT after a 220 (a
    /// refused greeting is left without one, so every QUIT in a `-v` log of
    /// such a sink is the relay's). smtp-sink dumps nothing for it.
    fn greets(&mut self) -> bool {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
            panic!("smtp-sink exited with {status}; log:\n{}", self.log());
        }
        let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err()
            || line.len() < 4
            || !line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        {
            return false;
        }
        if !line.starts_with("220") {
            return true;
        }
        let mut w = stream;
        let _ = w.write_all(b"QUIT\r\n");
        let _ = reader.read_line(&mut line);
        true
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtp-sink.log")).unwrap_or_default()
    }

    fn dump_dir(&self) -> PathBuf {
        self.dir.path().join("dump")
    }

    /// Every dumped transaction, sorted by file name.
    fn dumps(&self) -> Vec<Dump> {
        let Ok(entries) = std::fs::read_dir(self.dump_dir()) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths
            .iter()
            .map(|p| Dump::parse(&std::fs::read(p).expect("read dump"), p))
            .collect()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One smtp-sink dump file.
#[derive(Debug)]
struct Dump {
    helo: String,
    mail_args: String,
    rcpt_args: Vec<String>,
    /// The message as received, LF turned back into CRLF.
    message: Vec<u8>,
}

impl Dump {
    fn parse(bytes: &[u8], path: &Path) -> Dump {
        let text = String::from_utf8_lossy(bytes);
        let mut d = Dump {
            helo: String::new(),
            mail_args: String::new(),
            rcpt_args: Vec::new(),
            message: Vec::new(),
        };
        let mut pos = 0;
        // smtp-sink's own records end with its three-line Received header.
        loop {
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or_else(|| panic!("{}: truncated dump:\n{text}", path.display()));
            let line = String::from_utf8_lossy(&bytes[pos..pos + end]).into_owned();
            pos += end + 1;
            if let Some(v) = line.strip_prefix("X-Helo-Args: ") {
                d.helo = v.to_string();
            } else if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
                d.mail_args = v.to_string();
            } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
                d.rcpt_args.push(v.to_string());
            } else if line.starts_with("Received: ") {
                // "\tby <host> (smtp-sink) with ... id ...;" and "\t<date>".
                for n in 0..2 {
                    let end = bytes[pos..].iter().position(|&b| b == b'\n').unwrap();
                    let cont = String::from_utf8_lossy(&bytes[pos..pos + end]);
                    assert!(cont.starts_with('\t'), "{}: {text}", path.display());
                    if n == 0 {
                        assert!(cont.contains("(smtp-sink)"), "{}: {text}", path.display());
                    }
                    pos += end + 1;
                }
                break;
            } else {
                assert!(
                    line.starts_with("X-Client-"),
                    "{}: unexpected smtp-sink record {line:?}",
                    path.display()
                );
            }
        }
        let rest = &bytes[pos..];
        assert!(
            rest.ends_with(b"\n\n"),
            "{}: dump must end with the message's last LF and the terminator's:\n{text}",
            path.display()
        );
        let rest = &rest[..rest.len() - 1];
        assert!(!rest.contains(&b'\r'));
        for &b in rest {
            if b == b'\n' {
                d.message.extend_from_slice(b"\r\n");
            } else {
                d.message.push(b);
            }
        }
        d
    }
}

fn sink_route(port: u16, extra: &str) -> String {
    format!(
        r#"
retry = "F,1m,1s"
[timeouts]
connect = "2s"
greeting = "5s"
upstream_command = "10s"
upstream_data = "10s"
[[route]]
name = "sink"
host = "127.0.0.1"
port = {port}
tls = "none"
{extra}
[routing]
default = "sink"
"#
    )
}

/// Sends with BODY=8BITMIME, which `Relay::send` does not.
fn send_8bitmime(relay: &Relay, from: &str, to: &str, message: &[u8]) -> String {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd(&format!("MAIL FROM:<{from}> BODY=8BITMIME"), 250);
    c.expect_cmd(&format!("RCPT TO:<{to}>"), 250);
    c.expect_cmd("DATA", 354);
    c.write(&common::dot_stuff(message));
    let r = c.read_reply();
    let _ = c.cmd("QUIT");
    r.strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {r}"))
        .trim()
        .to_string()
}

struct Sent {
    id: String,
    from: &'static str,
    to: Vec<&'static str>,
    message: Vec<u8>,
    eight_bit: bool,
}

#[test]
fn messages_arrive_once_with_identical_bytes() {
    let sink = SmtpSink::start(&[]);
    let relay = Relay::start(&sink_route(sink.port, ""));
    let sent = send_four(&relay);
    let recipients: usize = sent.iter().map(|s| s.to.len()).sum();
    assert!(
        relay.wait_log("status=sent", recipients, Duration::from_secs(20)),
        "not all delivered; relay log:\n{}\nsmtp-sink log:\n{}",
        relay.log(),
        sink.log()
    );
    assert_each_sent_at_once(&relay, &sink, &sent);
    assert_each_arrived_once_intact(&sink, &sent);
}

/// Four messages: plain, full of dot lines, to two recipients, and 8-bit
/// UTF-8 (sent with BODY=8BITMIME).
fn send_four(relay: &Relay) -> Vec<Sent> {
    let plain = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: one\r\nMessage-ID: <one@client.test>\r\n\r\nFirst message.\r\n".to_vec();
    let dots = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: two, with dots\r\nMessage-ID: <two@client.test>\r\n\r\n.leading dot\r\n..two leading dots\r\n.\r\n...\r\nmiddle . dot\r\n.\r\n".to_vec();
    let multi = b"From: c@example.com\r\nTo: x@example.net, y@example.org\r\nSubject: three, two recipients\r\nMessage-ID: <three@client.test>\r\n\r\nFor both.\r\n\r\n\r\nTrailing empty lines above.\r\n".to_vec();
    let utf8 = "From: d@example.com\r\nTo: u@example.net\r\nSubject: four\r\nMessage-ID: <four@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße — 日本語 📨\r\n.ä after a dot\r\n"
        .as_bytes()
        .to_vec();

    let mut sent = Vec::new();
    for (from, to, message) in [
        ("a@example.com", vec!["b@example.net"], plain),
        ("a@example.com", vec!["b@example.net"], dots),
        (
            "c@example.com",
            vec!["x@example.net", "y@example.org"],
            multi,
        ),
    ] {
        let id = relay.send(from, &to, &message).expect("queued");
        sent.push(Sent {
            id,
            from,
            to,
            message,
            eight_bit: false,
        });
    }
    let id = send_8bitmime(relay, "d@example.com", "u@example.net", &utf8);
    sent.push(Sent {
        id,
        from: "d@example.com",
        to: vec!["u@example.net"],
        message: utf8,
        eight_bit: true,
    });
    sent
}

/// Each recipient was sent on the first attempt and each message removed;
/// nothing was deferred or bounced.
fn assert_each_sent_at_once(relay: &Relay, sink: &SmtpSink, sent: &[Sent]) {
    let log = relay.log();
    let relay_field = format!("relay=127.0.0.1[127.0.0.1]:{}", sink.port);
    for s in sent {
        for to in &s.to {
            let prefix = format!("{}: to=<{to}> {relay_field} ", s.id);
            let line = log
                .lines()
                .find(|l| l.contains(&prefix))
                .unwrap_or_else(|| panic!("no delivery line {prefix:?} in\n{log}"));
            assert!(
                line.contains("attempts=1 status=sent (250 2.0.0 Ok)"),
                "{line}"
            );
        }
        assert!(log.contains(&format!("{}: removed", s.id)), "{log}");
    }
    assert!(
        !log.contains("status=deferred") && !log.contains("status=bounced"),
        "{log}"
    );
}

/// Each message arrived exactly once with identical bytes (the relay's
/// Received header aside), with the envelope it was sent with.
fn assert_each_arrived_once_intact(sink: &SmtpSink, sent: &[Sent]) {
    let dumps = sink.dumps();
    assert_eq!(
        dumps.len(),
        sent.len(),
        "one dump per message expected: {dumps:#?}"
    );
    for s in sent {
        let matching: Vec<&Dump> = dumps
            .iter()
            .filter(|d| common::strip_received(&d.message) == s.message.as_slice())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "message {} must arrive exactly once with identical bytes:\n{}\ndumps: {dumps:#?}",
            s.id,
            String::from_utf8_lossy(&s.message)
        );
        let d = matching[0];
        // The only header added on the way is the relay's Received.
        let text = String::from_utf8_lossy(&d.message);
        assert!(
            text.starts_with(
                "Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost) with "
            ),
            "{text}"
        );
        assert!(text.contains(&format!(" id {}", s.id)), "{text}");
        assert_eq!(d.helo, "relay.test");
        let mail = if s.eight_bit {
            format!("<{}> BODY=8BITMIME", s.from)
        } else {
            format!("<{}>", s.from)
        };
        assert_eq!(d.mail_args, mail);
        let rcpts: Vec<String> = s.to.iter().map(|t| format!("<{t}>")).collect();
        assert_eq!(d.rcpt_args, rcpts);
    }
}

#[test]
fn rejected_recipient_bounces_and_dsn_is_delivered() {
    let reject = "550 5.1.1 <nobody@example.net>: Recipient address rejected: test";
    // Every RCPT is refused with `reject`. RSET answers after 3 s: the window in
    // which the DSN (which leaves by the original sender's route, this same
    // smtp-sink) waits on the reused connection and the sink is stopped, so the
    // DSN is deferred instead of being refused and lost too.
    let mut sink = SmtpSink::start(&["-f", "RCPT", "-B", reject, "-W", "rset:3"]);
    // One worker: the DSN must wait on the same connection.
    let mut relay = Relay::start(&sink_route(
        sink.port,
        "max_connections = 1\n\n[[route]]\nname = \"bounces\"\ntype = \"directory\"\npath = \"{dir}/bounces\"",
    ));

    let message = b"From: sender@bouncer.test\r\nTo: nobody@example.net\r\nSubject: will bounce\r\nMessage-ID: <bounce.1@client.test>\r\n\r\nThis recipient does not exist.\r\n";
    let id = relay
        .send("sender@bouncer.test", &["nobody@example.net"], message)
        .expect("queued");

    let relay_field = format!("relay=127.0.0.1[127.0.0.1]:{}", sink.port);
    let bounced = format!("{id}: to=<nobody@example.net> {relay_field} ");
    assert!(
        relay.wait_log(&bounced, 1, Duration::from_secs(15)),
        "{}\nsmtp-sink log:\n{}",
        relay.log(),
        sink.log()
    );
    sink.kill();
    let dsn_id = assert_bounced_with_a_dsn(&relay, &bounced, &id, reject);
    assert_dsn_deferred_nothing_accepted(&relay, &sink, &dsn_id);

    // Route the original sender's domain to a capture directory and restart:
    // the queued DSN now leaves through it.
    let config = std::fs::read_to_string(&relay.config_path).unwrap();
    // The harness ends the file with [local]; the routing table comes before it.
    let config = config.replacen(
        "default = \"sink\"\n",
        "default = \"sink\"\n[routing.senders]\n\"bouncer.test\" = \"bounces\"\n",
        1,
    );
    assert!(
        config.contains("\"bouncer.test\" = \"bounces\""),
        "{config}"
    );
    std::fs::write(&relay.config_path, config).unwrap();
    relay.restart();
    assert_dsn_captured(&relay, &dsn_id, &id, reject);
}

/// The recipient's line (`bounced`) says it bounced with `reject`, and a DSN
/// was queued for message `id`; the DSN's id.
fn assert_bounced_with_a_dsn(relay: &Relay, bounced: &str, id: &str, reject: &str) -> String {
    let log = relay.log();
    let line = log.lines().find(|l| l.contains(bounced)).unwrap();
    assert!(
        line.contains(&format!("attempts=1 status=bounced ({reject})")),
        "{line}"
    );
    let dsn_marker = format!("{id}: sender non-delivery notification: ");
    let at = log
        .find(&dsn_marker)
        .unwrap_or_else(|| panic!("no DSN queued:\n{log}"));
    log[at + dsn_marker.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The DSN went for the sink, which is gone: deferred, not lost; the sink
/// accepted nothing.
fn assert_dsn_deferred_nothing_accepted(relay: &Relay, sink: &SmtpSink, dsn_id: &str) {
    let relay_field = format!("relay=127.0.0.1[127.0.0.1]:{}", sink.port);
    let dsn_deferred = format!("{dsn_id}: to=<sender@bouncer.test> {relay_field} ");
    assert!(
        relay.wait_log(&dsn_deferred, 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let line = log.lines().find(|l| l.contains(&dsn_deferred)).unwrap();
    assert!(line.contains("status=deferred"), "{line}");
    // Nothing may have been accepted. The refused transaction's dump can
    // remain, holding no message: smtp-sink deletes it at RSET, and the relay
    // resets only before the next transaction, in the RSET the sink was
    // stopped in.
    let dumps = std::fs::read_dir(sink.dump_dir()).into_iter().flatten();
    for dump in dumps.flatten() {
        let text = std::fs::read_to_string(dump.path()).unwrap_or_default();
        assert!(!text.contains("(smtp-sink)"), "accepted: {text}");
    }
}

/// The DSN `dsn_id` about message `id` arrived in the capture directory,
/// from the null sender, with the failure (`reject`) and the original's
/// header section only; it was not bounced in turn.
fn assert_dsn_captured(relay: &Relay, dsn_id: &str, id: &str, reject: &str) {
    let dir = relay.path("bounces");
    let ok = common::wait_for(Duration::from_secs(15), || {
        !common::captured(&dir).is_empty()
    });
    assert!(ok, "DSN not delivered:\n{}", relay.log());
    let captured = common::captured(&dir);
    assert_eq!(captured.len(), 1);
    let (meta, eml) = &captured[0];
    assert_eq!(meta["queue_id"], dsn_id, "{meta}");
    assert_eq!(meta["sender"], "", "a DSN has the null sender: {meta}");
    assert_eq!(
        meta["recipients"],
        serde_json::json!(["sender@bouncer.test"])
    );
    // Unfolded (RFC 5322 2.2.3): long DSN fields are folded at whitespace.
    let text = String::from_utf8_lossy(eml).replace("\r\n ", " ");
    for needle in [
        "To: sender@bouncer.test",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        "multipart/report; report-type=delivery-status",
        "Content-Type: message/delivery-status",
        "Reporting-MTA: dns; relay.test",
        &format!("X-Smarthost-Queue-ID: {id}"),
        "Final-Recipient: rfc822; nobody@example.net",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; 127.0.0.1",
        &format!("Diagnostic-Code: smtp; {reject}"),
        "Content-Type: text/rfc822-headers",
        "Subject: will bounce",
        "Message-ID: <bounce.1@client.test>",
    ] {
        assert!(text.contains(needle), "DSN lacks {needle:?}:\n{text}");
    }
    // Only the header section of the original comes back.
    assert!(!text.contains("This recipient does not exist."), "{text}");
    assert!(
        relay.wait_log(
            &format!("{dsn_id}: to=<sender@bouncer.test> relay=directory"),
            1,
            Duration::from_secs(5)
        ),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!(
                "{dsn_id}: to=<sender@bouncer.test> relay=directory"
            ))
        })
        .unwrap();
    assert!(line.contains("status=sent"), "{line}");
    // No bounce of the bounce.
    assert_eq!(
        log.matches("sender non-delivery notification").count(),
        1,
        "{log}"
    );
}

#[test]
fn refused_greeting_defers_and_relay_says_quit() {
    // -f CONNECT: the greeting itself is the hard error; -v logs each command.
    let sink = SmtpSink::start(&["-v", "-f", "CONNECT", "-B", "554 5.7.1 no service here"]);
    let relay = Relay::start(&sink_route(sink.port, ""));
    let id = relay
        .send(
            "a@example.com",
            &["b@example.net"],
            b"Subject: refused\r\n\r\nbody\r\n",
        )
        .expect("queued");
    // Refused twice (the schedule retries every second), deferred both times:
    // a server that will not talk says nothing about the recipient.
    assert!(
        relay.wait_log("status=deferred", 2, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{id}: to=<b@example.net> ")))
        .unwrap();
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{} delay=", sink.port)),
        "{line}"
    );
    assert!(
        line.contains("status=deferred (greeting: 554 5.7.1 no service here)"),
        "{line}"
    );
    assert!(
        !log.contains("status=bounced") && !log.contains("non-delivery"),
        "{log}"
    );
    // RFC 5321 3.1: after a 554 greeting the client sends QUIT, and nothing else.
    assert!(
        common::wait_for(Duration::from_secs(5), || sink
            .log()
            .matches("smtp-sink: QUIT")
            .count()
            >= 2),
        "the relay dropped the refused sessions without QUIT; smtp-sink log:\n{}",
        sink.log()
    );
    let sink_log = sink.log();
    for never in ["EHLO", "HELO", "MAIL", "RCPT"] {
        assert!(
            !sink_log.contains(&format!("smtp-sink: {never}")),
            "{never} after a refused greeting:\n{sink_log}"
        );
    }
    assert!(sink.dumps().is_empty());
}
