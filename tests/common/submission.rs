//! A relay with two submission listeners (STARTTLS and implicit TLS, the
//! test CA's `localhost` certificate) and a passwd-file whose hashes
//! Dovecot's own `doveadm pw` made: alice (ARGON2ID), bob@example.com
//! (SHA512-CRYPT) and carol (BLF-CRYPT). alice may send as
//! alice@example.com and anyone at example.org; bob, an address, as himself;
//! carol as anyone. Mail goes to the capture route.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use crate::aiosmtpd::Files;
use crate::common::{self, Relay};

pub const ALICE_PW: &str = "alice-Argon-pw-6150";
pub const BOB_PW: &str = "bob-Sha512-pw-2281";
pub const CAROL_PW: &str = "carol-Blf-pw-9937";

/// Every password and its base64, for the no-secrets checks.
pub fn secrets() -> Vec<String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = Vec::new();
    for pw in [ALICE_PW, BOB_PW, CAROL_PW] {
        out.push(pw.to_string());
        out.push(b64(pw));
    }
    for (user, pw) in [
        ("alice", ALICE_PW),
        ("bob@example.com", BOB_PW),
        ("carol", CAROL_PW),
    ] {
        out.push(b64(&format!("\0{user}\0{pw}")));
    }
    out
}

/// `doveadm pw -s SCHEME -p PASSWORD`, or None without doveadm.
pub fn doveadm_pw(scheme: &str, password: &str) -> Option<String> {
    let out = Command::new("doveadm")
        .args([
            "-o",
            "stats_writer_socket_path=",
            "pw",
            "-s",
            scheme,
            "-p",
            password,
        ])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "doveadm pw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub struct Site {
    pub files: Files,
    pub relay: Relay,
    pub starttls_port: u16,
    pub tls_port: u16,
}

/// The passwd-file; None (the test returns) when doveadm is missing.
fn passwd(dir: &Path) -> Option<()> {
    if !common::require("doveadm (dovecot-core)", common::have("doveadm")) {
        return None;
    }
    let lines = [
        format!("alice:{}::::::", doveadm_pw("ARGON2ID", ALICE_PW)?),
        format!("bob@example.com:{}", doveadm_pw("SHA512-CRYPT", BOB_PW)?),
        format!(
            "carol:{}:1000:1000::/home/carol::",
            doveadm_pw("BLF-CRYPT", CAROL_PW)?
        ),
    ];
    std::fs::write(
        dir.join("passwd"),
        format!("# users\n{}\n", lines.join("\n")),
    )
    .ok()
}

/// The site, or None when its peers are missing (and CI is not set).
pub fn start(extra: &str) -> Option<Site> {
    let files = Files::new();
    passwd(files.path("").as_path())?;
    let (starttls_port, tls_port) = (common::free_port(), common::free_port());
    let f = |name: &str| files.path(name).display().to_string();
    let body = format!(
        "[[submission]]\nlisten = [\"127.0.0.1:{starttls_port}\"]\ntls = \"starttls\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [[submission]]\nlisten = [\"127.0.0.1:{tls_port}\"]\ntls = \"tls\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [auth]\npasswd_file = \"{passwd}\"\n{extra}\n[auth.senders]\nalice = [\"alice@example.com\", \"@example.org\"]\ncarol = [\"*\"]\n{}",
        common::CAPTURE,
        cert = f("cert.pem"),
        key = f("key.pem"),
        passwd = f("passwd"),
    );
    let relay = Relay::start(&body);
    Some(Site {
        files,
        relay,
        starttls_port,
        tls_port,
    })
}
