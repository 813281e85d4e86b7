//! `[log] syslog = true`: the daemon's lines reach the syslog socket with
//! facility mail, and the mail.log a syslog daemon writes from them is read
//! right by Debian's pflogsumm (`--syslog_name=smarthost`) and logwatch's
//! Postfix report (postfix-logwatch, `--syslog_name smarthost`): one message
//! to three recipients at a private Postfix that takes one, refuses one for
//! good and one for now gives 1 received, 2 delivered (the recipient and the
//! bounce to the sender), 1 deferred and 1 bounced.
//!
//! The syslog daemon is a listener in this test that writes each datagram as
//! rsyslog writes a traditional file line (`Mmm dd hh:mm:ss host tag: text`).

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Relay};
use postfix::Postfix;

const PFLOGSUMM: &str = "/usr/sbin/pflogsumm";
const LOGWATCH_POSTFIX: &str = "/usr/share/logwatch/scripts/services/postfix";

/// A syslog daemon in miniature: every datagram becomes a mail.log line;
/// anything but facility mail is a failure, reported at the end.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Listener {
    fn start(socket: &Path, file: PathBuf) -> Listener {
        let sock = UnixDatagram::bind(socket).expect("bind syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = std::fs::File::create(file).expect("mail.log");
            let (mut buf, mut wrong) = (vec![0u8; 65536], Vec::new());
            while !flag.load(Ordering::SeqCst) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some((pri, text)) = datagram.strip_prefix('<').and_then(|d| d.split_once('>'))
                else {
                    wrong.push(datagram);
                    continue;
                };
                if pri.parse::<u8>().map(|p| p >> 3) != Ok(2) {
                    wrong.push(datagram.clone());
                }
                writeln!(out, "Dec  8 02:10:00 relayhost {text}").expect("write");
                out.flush().expect("flush");
            }
            wrong
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("listener"))
            .unwrap_or_default()
    }
}

fn send(relay: &Relay) {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO web.test", 250);
    c.expect_cmd("MAIL FROM:<sender@example.com>", 250);
    for to in ["ok@example.net", "bad@example.net", "later@example.net"] {
        c.expect_cmd(&format!("RCPT TO:<{to}>"), 250);
    }
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: report me\r\nMessage-ID: <r1@example.com>\r\n\r\nhi\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
}

/// pflogsumm's "Grand Totals": the number before each label.
fn pflogsumm_total(report: &str, label: &str) -> Option<u32> {
    report.lines().find_map(|l| {
        let l = l.trim();
        let (n, rest) = l.split_once(char::is_whitespace)?;
        rest.trim_start()
            .starts_with(label)
            .then(|| n.parse().ok())?
    })
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn syslog_mail_log_is_read_by_pflogsumm_and_logwatch() {
    let have = Path::new(PFLOGSUMM).exists() && Path::new(LOGWATCH_POSTFIX).exists();
    if !common::require("pflogsumm and logwatch", have) {
        return;
    }
    let Some(pf) = Postfix::start(
        "smtpd_recipient_restrictions = check_recipient_access \
         inline:{bad@example.net=REJECT, later@example.net=DEFER}, permit_mynetworks, reject",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, mail_log) = (dir.path().join("log.sock"), dir.path().join("mail.log"));
    let listener = Listener::start(&socket, mail_log.clone());
    let body = format!(
        "retry = \"F,1h,1h\"\n{}\n[log]\nsyslog = true\nsyslog_socket = \"{}\"\n",
        common::upstream_route(pf.port, ""),
        socket.display()
    );
    let relay = Relay::start(&body);
    send(&relay);
    let logged = |needle: &str| {
        std::fs::read_to_string(&mail_log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    };
    let done = common::wait_for(Duration::from_secs(30), || {
        logged("status=sent") >= 2
            && logged("status=bounced") >= 1
            && logged("status=deferred") >= 1
    });
    drop(relay);
    let wrong = listener.finish();
    let text = std::fs::read_to_string(&mail_log).expect("mail.log");
    assert!(done, "mail.log:\n{text}\nPostfix:\n{}", pf.log());
    assert!(wrong.is_empty(), "not facility mail: {wrong:?}");

    let report = run(
        PFLOGSUMM,
        &["--syslog_name=smarthost", &mail_log.display().to_string()],
    );
    let totals =
        ["received", "delivered", "deferred", "bounced"].map(|l| pflogsumm_total(&report, l));
    assert_eq!(
        totals,
        [Some(1), Some(2), Some(1), Some(1)],
        "{report}\n{text}"
    );

    let report = run(
        LOGWATCH_POSTFIX,
        &[
            "--syslog_name",
            "smarthost",
            "--detail",
            "10",
            &mail_log.display().to_string(),
        ],
    );
    assert_logwatch(&report, &text);
}

/// postfix-logwatch's summary: "N   Label   N" lines (the label ends at
/// the next run of spaces).
fn assert_logwatch(report: &str, text: &str) {
    let count = |label: &str| {
        report.lines().find_map(|l| {
            let (n, rest) = l.trim().split_once(char::is_whitespace)?;
            let name = rest.trim_start().split("  ").next()?;
            (name == label).then(|| n.parse::<u32>().ok())?
        })
    };
    assert_eq!(count("Accepted"), Some(1), "{report}\n{text}");
    assert_eq!(count("Sent via SMTP"), Some(2), "{report}\n{text}");
    assert_eq!(count("Deferred"), Some(1), "{report}\n{text}");
    assert_eq!(count("Bounced (local)"), Some(1), "{report}\n{text}");
    assert_eq!(count("Notifications sent"), Some(1), "{report}\n{text}");
}
