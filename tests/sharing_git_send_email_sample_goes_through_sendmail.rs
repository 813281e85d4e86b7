//! conf/gitconfig-send-email as shipped: `git send-email` (whose SMTP client
//! has no XOAUTH2) hands a patch to smarthost's sendmail, and smarthost
//! delivers it to the provider with its own token. The provider is aiosmtpd
//! with STARTTLS and XOAUTH2; only the sendmail path of the sample is changed
//! to this build's binary.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aiosmtpd::{Files, Peer};
use common::Relay;

const USER: &str = "dev@contoso.com";
const TOKEN: &str = "relay-access-token-91b2";
const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

fn git(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with one commit, and its patch.
fn patch(files: &Files, global: &Path) -> std::path::PathBuf {
    let repo = files.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let env = [("GIT_CONFIG_GLOBAL", global)];
    git(&repo, &["init", "-q"], &env);
    git(&repo, &["config", "user.name", "Dev"], &env);
    git(&repo, &["config", "user.email", USER], &env);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "README"], &env);
    git(&repo, &["commit", "-q", "-m", "Add a README"], &env);
    let name = git(&repo, &["format-patch", "-1", "-o", "out"], &env);
    repo.join(name.trim())
}

fn relay_with_token(files: &Files, peer: &Peer) -> Relay {
    files.secret("access-token", TOKEN);
    let body = format!(
        "[[token_source]]\nname = \"office365\"\ntype = \"file\"\npath = \"{}\"\n\
         [[route]]\nname = \"up\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         auth = \"xoauth2\"\nusername = \"{USER}\"\ntoken_source = \"office365\"\n[routing]\ndefault = \"up\"\n",
        files.path("access-token").display(),
        peer.port,
        files.path("ca.pem").display(),
    );
    Relay::start(&body)
}

/// The provider: STARTTLS, XOAUTH2 for `USER` with `TOKEN`.
fn provider(files: &Files) -> Peer {
    std::fs::write(files.path("tokens"), format!("{TOKEN}\n")).unwrap();
    let mut args = files.tls_args();
    args.extend([
        "--xoauth2-user".into(),
        USER.into(),
        "--xoauth2-token-file".into(),
        files.path("tokens").into_os_string(),
    ]);
    Peer::start(args)
}

#[test]
fn sharing_git_send_email_sample_goes_through_sendmail() {
    let have = Command::new("git")
        .args(["send-email", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::require("git send-email (git-email)", have) {
        return;
    }
    let files = Files::new();
    let peer = provider(&files);
    let relay = relay_with_token(&files, &peer);

    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/gitconfig-send-email"
    ))
    .unwrap();
    assert!(sample.contains("sendmailCmd = /usr/sbin/sendmail"));
    let global = files.path("gitconfig");
    std::fs::write(
        &global,
        sample.replace("/usr/sbin/sendmail", &format!("{BIN} sendmail")),
    )
    .unwrap();
    let patch = patch(&files, &global);
    let out = Command::new("git")
        .current_dir(files.path("repo"))
        .args(["send-email", "--to", "list@example.net"])
        .arg(&patch)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", &global)
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .output()
        .expect("git send-email");
    assert!(
        out.status.success(),
        "git send-email: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::wait_for(Duration::from_secs(20), || !peer
        .messages()
        .is_empty()));
    let (meta, message) = &peer.messages()[0];
    assert_eq!(
        meta["login"], USER,
        "the relay authenticated with its token"
    );
    assert_eq!(
        meta["mail_from"], USER,
        "envelopeSender = auto: the patch's From"
    );
    assert_eq!(meta["rcpt_tos"][0], "list@example.net");
    let text = String::from_utf8_lossy(message);
    assert!(text.contains("Subject: [PATCH] Add a README"), "{text}");
    assert!(!relay.log().contains(TOKEN), "the token reached the log");
}
