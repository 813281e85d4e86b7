//! conf/msmtprc as shipped: msmtp (Debian's) sends straight to the provider
//! with XOAUTH2, its access token from `smarthost oauth token` through the
//! running daemon, which shares the source under the account. The provider
//! is aiosmtpd with STARTTLS and XOAUTH2 for that account and token; only
//! the host, port and trust file of the sample are changed for it.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aiosmtpd::{Files, Peer};
use common::Relay;

const USER: &str = "app@contoso.com";
const TOKEN: &str = "shared-access-token-3c9e";
const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

/// The sample with the test's provider in place of Office 365.
fn msmtprc(files: &Files, port: u16) -> std::path::PathBuf {
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/msmtprc")).unwrap();
    let text = sample
        .replace("host smtp.office365.com", "host localhost")
        .replace("port 587", &format!("port {port}"))
        .replace(
            "tls_trust_file system",
            &format!("tls_trust_file {}", files.path("ca.pem").display()),
        )
        .replace(
            "logfile ~/.msmtp.log",
            &format!("logfile {}", files.path("msmtp.log").display()),
        );
    assert!(text.contains("host localhost") && text.contains(&format!("port {port}")));
    let path = files.path("msmtprc");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A directory with `smarthost` in it, for the sample's `passwordeval`.
fn bin_dir(files: &Files) -> String {
    let dir = files.path("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("smarthost");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn relay_sharing(files: &Files) -> Relay {
    files.secret("access-token", TOKEN);
    let body = format!(
        "[[token_source]]\nname = \"office365\"\ntype = \"file\"\npath = \"{}\"\nshare_as = [\"{USER}\"]\n{}",
        files.path("access-token").display(),
        common::CAPTURE,
    );
    Relay::start(&body)
}

#[test]
fn sharing_msmtp_sample_sends_with_smarthost_tokens() {
    if !common::require("msmtp", Path::new("/usr/bin/msmtp").exists()) {
        return;
    }
    let files = Files::new();
    std::fs::write(files.path("tokens"), format!("{TOKEN}\n")).unwrap();
    let mut args = files.tls_args();
    args.extend([
        "--xoauth2-user".into(),
        USER.into(),
        "--xoauth2-token-file".into(),
        files.path("tokens").into_os_string(),
    ]);
    let peer = Peer::start(args);
    let relay = relay_sharing(&files);
    let config = msmtprc(&files, peer.port);

    let mut child = Command::new("/usr/bin/msmtp")
        .arg("-C")
        .arg(&config)
        .arg("rcpt@example.net")
        .env("PATH", bin_dir(&files))
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msmtp");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            format!("From: {USER}\nTo: rcpt@example.net\nSubject: msmtp\n\nvia msmtp\n").as_bytes(),
        )
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "msmtp: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(files.path("msmtp.log")).unwrap_or_default()
    );
    assert!(common::wait_for(Duration::from_secs(10), || !peer
        .messages()
        .is_empty()));
    let (meta, message) = &peer.messages()[0];
    assert_eq!(meta["login"], USER);
    assert_eq!(meta["rcpt_tos"][0], "rcpt@example.net");
    assert!(String::from_utf8_lossy(message).contains("via msmtp"));
    let events = peer.events();
    assert!(
        events
            .iter()
            .any(|e| e == &format!("AUTH-OK XOAUTH2 {USER}")),
        "{events:?}"
    );
    assert!(!relay.log().contains(TOKEN), "the token reached the log");
}
