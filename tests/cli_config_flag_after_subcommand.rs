//! `--config FILE` (and `-c FILE`) is taken before or after any subcommand,
//! however deep: `smarthost queue list --config F` as well as `smarthost
//! --config F queue list`. That the file given is the one read is shown by
//! each command naming it: a missing file in its error, or a working relay's
//! answer.

mod common;

use std::process::Command;

use common::{Relay, CAPTURE_ROUTE};

fn smarthost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(args)
        .env_remove("SMARTHOST_CONFIG")
        .output()
        .expect("run smarthost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every subcommand that reads a configuration, with `--config` last: the
/// missing file is named, which is not a usage error (64).
#[test]
fn every_subcommand_reads_the_config_given_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-there.toml");
    let f = missing.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["check"],
        &["route", "app@example.com"],
        &["reload"],
        &["serve"],
        &["queue", "list"],
        &["queue", "list", "--json"],
        &["queue", "show", "ABC"],
        &["queue", "find", "app@example.com"],
        &["queue", "flush"],
        &["queue", "hold", "--all"],
        &["queue", "release", "--all"],
        &["queue", "delete", "ABC"],
        &["queue", "bounce", "ABC"],
        &["queue", "salvage", "--to", "/nonexistent/new"],
        &["oauth", "status"],
        &["oauth", "token", "src"],
        &["oauth", "login", "src"],
        &["test-send", "--route", "r", "--to", "a@example.net"],
    ];
    for cmd in commands {
        for flag in ["--config", "-c"] {
            let mut args = cmd.to_vec();
            args.extend([flag, f]);
            let (code, out, err) = smarthost(&args);
            assert_ne!(code, 64, "{args:?} is a usage error: {err}");
            assert_ne!(code, 0, "{args:?} succeeded without its config: {out}");
            assert!(err.contains(f), "{args:?} does not name {f}: {out}{err}");
        }
    }
}

/// The three places, against a running relay: before the subcommand, between
/// it and its own subcommand, and last.
#[test]
fn queue_list_and_oauth_status_take_the_config_anywhere() {
    let relay = Relay::start(CAPTURE_ROUTE);
    let f = relay.config_path.to_str().unwrap();
    for args in [
        vec!["--config", f, "queue", "list"],
        vec!["queue", "--config", f, "list"],
        vec!["queue", "list", "--config", f],
        vec!["queue", "list", "-c", f],
    ] {
        let (code, out, err) = smarthost(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("Mail queue is empty"), "{args:?}: {out}");
    }
    for args in [
        vec!["--config", f, "oauth", "status"],
        vec!["oauth", "status", "--config", f],
    ] {
        let (code, out, err) = smarthost(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(
            out.contains("no token sources configured"),
            "{args:?}: {out}"
        );
    }
    // `smarthost --config F mailq` is `mailq -C F`.
    let (code, out, err) = smarthost(&["--config", f, "mailq"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Mail queue is empty"), "{out}");
}
