//! The open-relay probes against a submission listener: before STARTTLS
//! nothing but EHLO, STARTTLS, NOOP, RSET and QUIT (530 5.7.0), and AUTH is
//! not even offered; bytes pipelined after STARTTLS end the session
//! (CVE-2011-0411); over TLS, MAIL without a login, after a failed login, or
//! from a sender the identity does not own is refused, so nothing is queued;
//! an identity over its `[auth.rate]` is told to come back (450 4.7.1).
//! A positive sentinel, submitted afterwards, is the only message the relay
//! queued.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/submission.rs"]
mod submission;

use std::process::Command;

use common::Client;
use submission::{Site, ALICE_PW};

fn before_tls(site: &Site) {
    let mut c = Client::connect(([127, 0, 0, 1], site.starttls_port).into());
    c.expect(220);
    let ehlo = c.expect_cmd("EHLO probe.test", 250);
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    for cmd in [
        "MAIL FROM:<alice@example.com>",
        "RCPT TO:<victim@example.net>",
        "AUTH PLAIN AGFsaWNlAHg=",
        "DATA",
    ] {
        let r = c.cmd(cmd);
        assert!(r.starts_with("530 5.7.0"), "{cmd}: {r}");
    }
    c.expect_cmd("NOOP", 250);
    c.write(b"STARTTLS\r\nMAIL FROM:<alice@example.com>\r\n");
    let r = c.read_reply();
    assert!(r.starts_with("554 5.5.1"), "{r}");
    assert!(c.closed(), "the session goes on after pipelined STARTTLS");
}

/// Over STARTTLS with Python's smtplib: every reply code, one per line.
fn over_tls(site: &Site) -> Vec<String> {
    let script = format!(
        "import smtplib, ssl, base64\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         s = smtplib.SMTP('localhost', {port})\n\
         s.ehlo(); s.starttls(context=ctx); code, ext = s.ehlo()\n\
         print('ehlo', 'AUTH PLAIN LOGIN' in ext.decode(), 'STARTTLS' in ext.decode())\n\
         def cmd(line):\n    code, text = s.docmd(line); print(code, text.decode().split(' ')[0])\n\
         cmd('MAIL FROM:<alice@example.com>')\n\
         cmd('RCPT TO:<victim@example.net>')\n\
         cmd('AUTH PLAIN ' + base64.b64encode(b'\\0alice\\0wrong-password').decode())\n\
         cmd('MAIL FROM:<alice@example.com>')\n\
         cmd('AUTH PLAIN ' + base64.b64encode(b'\\0alice\\0' + {pw:?}.encode()).decode())\n\
         cmd('AUTH PLAIN ' + base64.b64encode(b'\\0alice\\0' + {pw:?}.encode()).decode())\n\
         cmd('MAIL FROM:<victim@example.net>')\n\
         cmd('MAIL FROM:<alice@example.com>')\n\
         cmd('RCPT TO:<victim@example.net>')\n\
         cmd('RSET')\n\
         cmd('MAIL FROM:<alice@example.com>')\n\
         cmd('RSET')\n\
         cmd('MAIL FROM:<alice@example.com>')\n\
         s.quit()\n",
        ca = site.files.path("ca.pem").display().to_string(),
        port = site.starttls_port,
        pw = ALICE_PW,
    );
    let out = Command::new(aiosmtpd::PYTHON)
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn submission_relays_nothing_without_a_login() {
    let Some(site) = submission::start("[auth.rate]\nalice = \"2/h\"") else {
        return;
    };
    before_tls(&site);
    let got = over_tls(&site);
    let want = [
        "ehlo True False",
        "530 5.7.0",
        "503 5.5.1",
        "535 5.7.8",
        "530 5.7.0",
        "235 2.7.0",
        "503 5.5.1",
        "553 5.7.1",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.0.0",
        "450 4.7.1",
    ];
    assert_eq!(got, want);
    let sentinel = site.relay.sentinel();
    common::assert_only_sentinel(&site.relay, &site.relay.path("out"), &sentinel);
    for secret in submission::secrets() {
        assert!(
            !site.relay.log().contains(&secret),
            "a password reached the log"
        );
    }
}
