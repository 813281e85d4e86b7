//! Real clients on the submission listeners: swaks with STARTTLS and AUTH
//! PLAIN and LOGIN, swaks with implicit TLS, and Python's smtplib
//! (SMTP_SSL, verifying the certificate) log in with passwords whose hashes
//! `doveadm pw` made (ARGON2ID, SHA512-CRYPT, BLF-CRYPT), and their mail
//! is relayed; a wrong password, and a sender the identity does not own,
//! are refused. No password, nor its base64, reaches the relay's log.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/submission.rs"]
mod submission;

use std::process::{Command, Output};
use std::time::Duration;

use submission::{Site, ALICE_PW, BOB_PW, CAROL_PW};

fn swaks(tls: &str, port: u16, auth: &str, user: &str, pw: &str, from: &str) -> Output {
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), tls])
        .args(["--auth", auth, "--auth-user", user, "--auth-password", pw])
        .args(["--from", from, "--to", "rcpt@example.net"])
        .args(["--header", &format!("Subject: from {user}")])
        .output()
        .expect("swaks")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Python's smtplib over implicit TLS, verifying against the test CA.
fn smtplib(site: &Site, user: &str, pw: &str, from: &str) -> Output {
    let script = format!(
        "import smtplib, ssl, sys\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         s = smtplib.SMTP_SSL('localhost', {port}, context=ctx)\n\
         s.login({user:?}, sys.stdin.readline().strip())\n\
         s.sendmail({from:?}, ['rcpt@example.net'], 'Subject: smtplib\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n",
        ca = site.files.path("ca.pem").display().to_string(),
        port = site.tls_port,
    );
    let mut child = Command::new(aiosmtpd::PYTHON)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{pw}").expect("password");
    drop(stdin);
    child.wait_with_output().expect("python3")
}

/// One swaks run: TLS flag, port, mechanism, user, password, sender, and
/// the refusal expected (None: delivered).
type Case<'a> = (
    &'a str,
    u16,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
);

fn cases(site: &Site) -> Vec<Case<'static>> {
    let (st, tls) = (site.starttls_port, site.tls_port);
    vec![
        (
            "--tls",
            st,
            "PLAIN",
            "alice",
            ALICE_PW,
            "alice@example.com",
            None,
        ),
        (
            "--tls",
            st,
            "LOGIN",
            "bob@example.com",
            BOB_PW,
            "bob@example.com",
            None,
        ),
        (
            "--tlsc",
            tls,
            "PLAIN",
            "carol",
            CAROL_PW,
            "anyone@example.net",
            None,
        ),
        (
            "--tls",
            st,
            "PLAIN",
            "alice",
            BOB_PW,
            "alice@example.com",
            Some("535 5.7.8"),
        ),
        (
            "--tlsc",
            tls,
            "LOGIN",
            "nobody",
            ALICE_PW,
            "x@example.com",
            Some("535 5.7.8"),
        ),
        (
            "--tls",
            st,
            "PLAIN",
            "bob@example.com",
            BOB_PW,
            "alice@example.com",
            Some("553 5.7.1"),
        ),
    ]
}

/// The relay's log and what it delivered: four messages, each login named,
/// `with ESMTPSA`, no login in the header (off by default), no password.
fn assert_delivered(site: &Site) {
    let relay = &site.relay;
    assert!(
        relay.wait_log("status=sent", 4, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    assert_eq!(log.matches("status=sent").count(), 4, "{log}");
    for who in ["alice", "bob@example.com", "carol"] {
        assert!(log.contains(&format!("sasl_username={who}")), "{log}");
    }
    let captured = common::captured(&relay.path("out"));
    let received = String::from_utf8_lossy(&captured[0].1).into_owned();
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert!(!received.contains("Authenticated sender"), "{received}");
    // The clients print their own transcripts, credentials included; the
    // relay's log must hold none of it.
    for secret in submission::secrets() {
        assert!(
            !log.contains(&secret),
            "a password reached the log: {secret}"
        );
    }
}

#[test]
fn submission_clients_log_in_over_tls() {
    if !common::require("swaks", common::have("swaks")) {
        return;
    }
    let Some(site) = submission::start("") else {
        return;
    };
    for (tls, port, auth, user, pw, from, refused) in cases(&site) {
        let o = swaks(tls, port, auth, user, pw, from);
        match refused {
            None => assert!(o.status.success(), "{}", text(&o)),
            Some(want) => {
                assert!(!o.status.success(), "{}", text(&o));
                assert!(text(&o).contains(want), "want {want}: {}", text(&o));
            }
        }
    }
    let o = smtplib(&site, "alice", ALICE_PW, "news@example.org");
    assert!(o.status.success(), "{}", text(&o));
    assert_delivered(&site);
    assert_checked(&site);
}

/// `smarthost check` loads the certificates and reads the passwd-file, and
/// shows neither a hash nor a password.
fn assert_checked(site: &Site) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["check", "--config"])
        .arg(&site.relay.config_path)
        .output()
        .expect("check");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("submission submission: 127.0.0.1:"),
        "{shown}"
    );
    assert!(
        shown.contains("tls=starttls") && shown.contains("tls=tls"),
        "{shown}"
    );
    assert!(shown.contains("(3 users)"), "{shown}");
    assert!(
        shown.contains("alice may send as alice@example.com, @example.org"),
        "{shown}"
    );
    assert!(!shown.contains('$'), "a hash was shown: {shown}");
}
