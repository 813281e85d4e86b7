//! swaks (Debian package `swaks`) as the SMTP client against the relay, with a
//! capture (`type = "directory"`) route so the delivered bytes and envelope can
//! be compared with what swaks sent.
//!
//! How swaks (20201014) treats `--data <file>`: it re-joins the header lines with
//! CRLF, quotes leading dots, turns LF into CRLF and then appends `CRLF .`. It
//! adds no header of its own to a complete message (one without `%TOKENS%`, a
//! literal backslash-n or a leading `From ` line), but because of the appended
//! `CRLF .` a file that already ends in CRLF gains an empty line. So the data file
//! holds the message without its final CRLF, and the message on the wire is then
//! exactly `message` (see `write_data`). With `--no-data-fixup` swaks sends the
//! file as is plus one CRLF; [`dot_lines_pre_stuffed_no_fixup`] uses that to
//! control every byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Relay;

const CAPTURE: &str = r#"
retry = "F,1m,1s"
[timeouts]
connect = "2s"
[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[routing]
default = "capture"
"#;

fn require_swaks() {
    assert!(
        common::have("swaks"),
        "swaks is not installed; these tests need it: apt-get install swaks"
    );
}

fn start() -> Relay {
    require_swaks();
    Relay::start(CAPTURE)
}

/// Writes `message` (which must end in CRLF) for `swaks --data`, without the
/// final CRLF that swaks adds itself.
fn write_data(relay: &Relay, name: &str, message: &[u8]) -> PathBuf {
    assert!(message.ends_with(b"\r\n"), "test message must end in CRLF");
    let path = relay.path(name);
    std::fs::write(&path, &message[..message.len() - 2]).expect("write data file");
    path
}

struct SwaksRun {
    ok: bool,
    transcript: String,
}

impl SwaksRun {
    /// True if swaks sent exactly this line (as shown in its transcript).
    fn sent(&self, line: &str) -> bool {
        self.transcript
            .lines()
            .any(|l| l.trim_end_matches('\r').strip_prefix(" -> ") == Some(line))
    }

    /// The queue id from `250 2.0.0 Ok: queued as <ID>`.
    fn queue_id(&self) -> String {
        let at = self
            .transcript
            .find("queued as ")
            .unwrap_or_else(|| panic!("no 'queued as' in swaks output:\n{}", self.transcript));
        self.transcript[at + "queued as ".len()..]
            .split_whitespace()
            .next()
            .expect("queue id")
            .to_string()
    }
}

fn swaks(relay: &Relay, from: &str, to: &[&str], data: &Path, extra: &[&str]) -> SwaksRun {
    let out = Command::new("swaks")
        .arg("--server")
        .arg(format!("127.0.0.1:{}", relay.port))
        .args(["--helo", "client.test", "--timeout", "10"])
        .args(["--from", from])
        .args(["--to", &to.join(",")])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .args(extra)
        .output()
        .expect("run swaks");
    let mut transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    transcript.push_str(&String::from_utf8_lossy(&out.stderr));
    SwaksRun {
        ok: out.status.success(),
        transcript,
    }
}

/// Waits for `n` captured messages and returns them.
fn wait_captured(relay: &Relay, n: usize) -> Vec<(serde_json::Value, Vec<u8>)> {
    let out = relay.path("out");
    let ok = common::wait_for(Duration::from_secs(10), || {
        common::captured(&out).len() >= n
    });
    assert!(
        ok,
        "expected {n} captured message(s); log:\n{}",
        relay.log()
    );
    common::captured(&out)
}

/// One message for one run: checks swaks succeeded, the envelope and the bytes.
fn assert_delivered(relay: &Relay, run: &SwaksRun, from: &str, to: &[&str], message: &[u8]) {
    assert!(run.ok, "swaks failed:\n{}", run.transcript);
    let id = run.queue_id();
    let captured = wait_captured(relay, 1);
    assert_eq!(captured.len(), 1, "exactly one file per message");
    let (meta, eml) = &captured[0];
    assert_eq!(meta["queue_id"], id.as_str(), "{meta}");
    assert_eq!(meta["sender"], from, "{meta}");
    let rcpts: Vec<&str> = meta["recipients"]
        .as_array()
        .expect("recipients array")
        .iter()
        .map(|v| v.as_str().expect("recipient string"))
        .collect();
    assert_eq!(rcpts, to, "{meta}");

    // Exactly one header was added, and it is ours.
    assert!(
        eml.starts_with(
            b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost) with "
        ),
        "{}",
        String::from_utf8_lossy(eml)
    );
    let received_len = eml.len() - common::strip_received(eml).len();
    let received = String::from_utf8_lossy(&eml[..received_len]);
    assert!(received.contains(&format!(" id {id}")), "{received}");
    assert_eq!(
        common::strip_received(eml),
        message,
        "captured message differs from what swaks sent:\n--- captured\n{}\n--- sent\n{}",
        String::from_utf8_lossy(eml),
        String::from_utf8_lossy(message)
    );
    let line = format!("{id}: to=<{}> relay=directory", to[0]);
    assert!(
        relay.wait_log(&line, 1, Duration::from_secs(5)),
        "{}",
        relay.log()
    );
    assert!(
        relay.log().contains(&format!("{id}: removed")),
        "{}",
        relay.log()
    );
}

#[test]
fn plain_message() {
    let relay = start();
    let message = b"From: Alice <alice@example.com>\r\n\
To: Bob <bob@example.net>\r\n\
Subject: plain text from swaks\r\n\
Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n\
Message-ID: <plain.1@client.test>\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
this is a plain 7-bit message.\r\n\
  Indented line, trailing spaces kept.   \r\n\
-- \r\n\
Alice\r\n";
    let data = write_data(&relay, "plain.eml", message);
    let run = swaks(
        &relay,
        "alice@example.com",
        &["bob@example.net"],
        &data,
        &[],
    );
    assert_delivered(
        &relay,
        &run,
        "alice@example.com",
        &["bob@example.net"],
        message,
    );
    // One recipient: the Received header names it.
    let (_, eml) = &wait_captured(&relay, 1)[0];
    let text = String::from_utf8_lossy(eml);
    assert!(text.contains("\tfor <bob@example.net>;"), "{text}");
    assert!(text.contains("with ESMTP id"), "{text}");
}

#[test]
fn dot_lines_quoted_by_swaks() {
    let relay = start();
    let message = b"From: dots@example.com\r\n\
To: rcpt@example.net\r\n\
Subject: lines that start with dots\r\n\
Message-ID: <dots.1@client.test>\r\n\
\r\n\
.leading dot\r\n\
..two dots\r\n\
.\r\n\
...\r\n\
not a dot .\r\n\
. space after dot\r\n\
.\r\n\
end\r\n";
    let data = write_data(&relay, "dots.eml", message);
    let run = swaks(
        &relay,
        "dots@example.com",
        &["rcpt@example.net"],
        &data,
        &[],
    );
    // swaks quoted the dots on the wire; the relay must have removed exactly one.
    for wire in [
        "..leading dot",
        "...two dots",
        "..",
        "....",
        ".. space after dot",
    ] {
        assert!(run.sent(wire), "{wire:?} not sent:\n{}", run.transcript);
    }
    assert_delivered(
        &relay,
        &run,
        "dots@example.com",
        &["rcpt@example.net"],
        message,
    );
}

#[test]
fn dot_lines_pre_stuffed_no_fixup() {
    let relay = start();
    let message = b"From: raw@example.com\r\n\
To: rcpt@example.net\r\n\
Subject: pre-stuffed data, no swaks fixups\r\n\
\r\n\
.\r\n\
..\r\n\
.x\r\n\
body\r\n";
    // The exact wire form: transparency by us, the terminator without its CRLF
    // (swaks sends one after the data).
    let mut wire = common::dot_stuff(message);
    wire.truncate(wire.len() - 2);
    let data = relay.path("raw.txt");
    std::fs::write(&data, &wire).unwrap();
    let run = swaks(
        &relay,
        "raw@example.com",
        &["rcpt@example.net"],
        &data,
        &["--no-data-fixup"],
    );
    for wire in ["..", "...", "..x"] {
        assert!(run.sent(wire), "{wire:?} not sent:\n{}", run.transcript);
    }
    assert_delivered(
        &relay,
        &run,
        "raw@example.com",
        &["rcpt@example.net"],
        message,
    );
}

#[test]
fn eight_bit_utf8_body() {
    let relay = start();
    let message = "From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.com>\r\n\
To: chloe@example.net\r\n\
Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Grüße aus Köln — ½ € ✓\r\n\
日本語のテキスト\r\n\
emoji: 📨🚀\r\n\
.ünïcödé after a dot\r\n"
        .as_bytes();
    assert!(!message.is_ascii());
    let data = write_data(&relay, "utf8.eml", message);
    let run = swaks(
        &relay,
        "juergen@example.com",
        &["chloe@example.net"],
        &data,
        &[],
    );
    // The relay announces 8BITMIME (this swaks cannot send BODY=8BITMIME, so
    // the 8-bit octets arrive undeclared and must still pass untouched).
    assert!(
        run.transcript.contains("250-8BITMIME"),
        "{}",
        run.transcript
    );
    assert_delivered(
        &relay,
        &run,
        "juergen@example.com",
        &["chloe@example.net"],
        message,
    );
}

#[test]
fn multiple_recipients() {
    let relay = start();
    let message = b"From: list@example.com\r\n\
To: one@example.net, two@example.org\r\n\
Cc: three@example.com\r\n\
Subject: three recipients\r\n\
\r\n\
One copy, three envelope recipients.\r\n";
    let data = write_data(&relay, "multi.eml", message);
    let to = ["one@example.net", "two@example.org", "three@example.com"];
    let run = swaks(&relay, "list@example.com", &to, &data, &[]);
    for r in to {
        assert!(run.sent(&format!("RCPT TO:<{r}>")), "{}", run.transcript);
    }
    assert_delivered(&relay, &run, "list@example.com", &to, message);
    let id = run.queue_id();
    for r in to {
        let line = format!("{id}: to=<{r}> relay=directory");
        assert!(relay.log().contains(&line), "{line}\n{}", relay.log());
    }
    // Several recipients: no `for` clause (it would disclose the others).
    let (_, eml) = &wait_captured(&relay, 1)[0];
    let received_len = eml.len() - common::strip_received(eml).len();
    let received = String::from_utf8_lossy(&eml[..received_len]);
    assert!(!received.contains("for <"), "{received}");
}

#[test]
fn pipelining() {
    let relay = start();
    let message = b"From: pipe@example.com\r\n\
To: a@example.net\r\n\
Subject: pipelined\r\n\
\r\n\
Sent with PIPELINING.\r\n";
    let data = write_data(&relay, "pipe.eml", message);
    let to = ["a@example.net", "b@example.net"];
    let run = swaks(&relay, "pipe@example.com", &to, &data, &["--pipeline"]);
    assert!(
        run.transcript.contains("250-PIPELINING"),
        "{}",
        run.transcript
    );
    // swaks sent MAIL, both RCPTs and DATA as one batch before reading a reply.
    let lines: Vec<&str> = run.transcript.lines().collect();
    let mail = lines
        .iter()
        .position(|l| l.starts_with(" -> MAIL FROM:<pipe@example.com>"))
        .unwrap_or_else(|| panic!("no MAIL:\n{}", run.transcript));
    assert_eq!(
        &lines[mail..mail + 7],
        &[
            " -> MAIL FROM:<pipe@example.com>",
            " -> RCPT TO:<a@example.net>",
            " -> RCPT TO:<b@example.net>",
            " -> DATA",
            "<-  250 2.1.0 Ok",
            "<-  250 2.1.5 Ok",
            "<-  250 2.1.5 Ok",
        ],
        "{}",
        run.transcript
    );
    assert!(
        lines[mail + 7].starts_with("<-  354 "),
        "{}",
        run.transcript
    );
    assert_delivered(&relay, &run, "pipe@example.com", &to, message);
}
