//! The shipped fail2ban filter (conf/fail2ban/smarthost.conf), run by
//! Debian's `fail2ban-regex` over the relay's log after wrong passwords,
//! unknown users, a good login and a delivery: it matches every failure
//! line, and nothing else, and finds the client's address in each.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/submission.rs"]
mod submission;

use std::process::Command;
use std::time::Duration;

use submission::{Site, ALICE_PW, BOB_PW};

const FILTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/fail2ban/smarthost.conf");

fn login(site: &Site, user: &str, pw: &str) -> bool {
    Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", site.tls_port),
            "--tlsc",
        ])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            pw,
        ])
        .args(["--from", "alice@example.com", "--to", "rcpt@example.net"])
        .output()
        .expect("swaks")
        .status
        .success()
}

/// The number after `label` in fail2ban-regex's summary line
/// `Lines: 12 lines, 0 ignored, 3 matched, 9 missed`.
fn count(report: &str, label: &str) -> Option<usize> {
    let line = report.lines().find(|l| l.starts_with("Lines:"))?;
    line.split(',').find_map(|part| {
        let part = part.trim().trim_start_matches("Lines:").trim();
        let (n, word) = part.split_once(' ')?;
        (word.trim() == label).then(|| n.parse().ok())?
    })
}

#[test]
fn submission_failed_logins_match_the_fail2ban_filter() {
    let have = common::have("fail2ban-regex") && common::have("swaks");
    if !common::require("fail2ban-regex and swaks", have) {
        return;
    }
    let Some(site) = submission::start("") else {
        return;
    };
    assert!(!login(&site, "alice", BOB_PW));
    assert!(!login(&site, "mallory", "guess-1"));
    assert!(!login(&site, ALICE_PW, "password-in-the-user-field"));
    assert!(login(&site, "alice", ALICE_PW));
    assert!(site
        .relay
        .wait_log("status=sent", 1, Duration::from_secs(20)));
    let log_path = site.relay.log_path.display().to_string();
    let out = Command::new("fail2ban-regex")
        .args([log_path.as_str(), FILTER])
        .output()
        .expect("fail2ban-regex");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = site.relay.log();
    let failures = log.matches("authentication failed:").count();
    assert_eq!(failures, 3, "{log}");
    assert_eq!(count(&report, "matched"), Some(failures), "{report}\n{log}");
    assert!(
        report.contains("127.0.0.1"),
        "the client's address: {report}"
    );
    assert!(
        !log.contains(ALICE_PW),
        "a password typed as the user was logged"
    );
}
