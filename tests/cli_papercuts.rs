//! Small things an operator runs into at the command line: usage errors exit
//! 64 (EX_USAGE) like sendmail's, `route` refuses what is not an address,
//! `check` brackets IPv6 hosts, output cut short by its reader (`| head -1`)
//! ends quietly, and `check` takes a password over `tls = "none"` only to
//! loopback with `allow_plaintext = true`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Relay, TWO_ROUTES};

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

fn write_config(dir: &Path, text: &str) -> String {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg.to_str().unwrap().to_string()
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["no-such-command"][..],
        &["queue", "list", "--no-such-flag"],
        &["queue", "frobnicate"],
        &["route"],
        &["test-send", "--to", "a@example.net"],
        &[],
    ] {
        let (code, _, err) = smarthost(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains("Usage:"), "{args:?}: {err}");
    }
    let (code, out, _) = smarthost(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage:"), "{out}");
    let (code, out, _) = smarthost(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("smarthost "), "{out}");
}

#[test]
fn route_refuses_what_is_not_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[route]]\nname = \"d\"\ntype = \"directory\"\npath = \"out\"\n[routing]\ndefault = \"d\"\n",
    );
    for bad in [
        "bad address",
        "root",
        "@example.com",
        "a@",
        "<a@example.com",
        "a|b@example.com",
    ] {
        let (code, out, err) = smarthost(&["route", "--config", &cfg, bad]);
        assert_eq!(code, 64, "{bad:?}: {out}{err}");
        assert!(out.is_empty(), "{bad:?}: {out}");
        assert!(err.contains("is not an address"), "{bad:?}: {err}");
    }
    for good in ["app@example.com", "<app@example.com>", "<>", ""] {
        let (code, out, err) = smarthost(&["route", "--config", &cfg, good]);
        assert_eq!(code, 0, "{good:?}: {err}");
        assert!(out.contains("-> route d (decided by default)"), "{out}");
    }
}

#[test]
fn check_brackets_ipv6_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[route]]\nname = \"v6\"\nhosts = [\"2001:db8::25\", \"[2001:db8::26]\", \"mx.example.com\"]\nport = 587\n[routing]\ndefault = \"v6\"\n",
    );
    let (code, out, err) = smarthost(&["check", "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("v6: smtp [2001:db8::25],[2001:db8::26],mx.example.com:587 tls=starttls"),
        "{out}"
    );
}

/// `tls = "none"` with a password: to loopback with `allow_plaintext = true`
/// (a local stunnel), and nowhere else, as the README says.
#[test]
fn check_takes_plaintext_credentials_only_to_loopback_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "sample-secret-value\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = |host: &str, allow: &str| {
        format!(
            "[[route]]\nname = \"up\"\nhost = \"{host}\"\nport = 2526\ntls = \"none\"\n{allow}username = \"u\"\npassword_file = \"{}\"\n[routing]\ndefault = \"up\"\n",
            pw.display()
        )
    };
    for (host, allow, ok) in [
        ("127.0.0.1", "allow_plaintext = true\n", true),
        ("::1", "allow_plaintext = true\n", true),
        ("localhost", "allow_plaintext = true\n", true),
        ("127.0.0.1", "", false),
        ("192.0.2.1", "allow_plaintext = true\n", false),
    ] {
        let cfg = write_config(dir.path(), &config(host, allow));
        let (code, out, err) = smarthost(&["check", "--config", &cfg]);
        assert_eq!(code == 0, ok, "{host} {allow:?}: {out}{err}");
        if !ok {
            assert_eq!(code, 78, "{err}");
            assert!(err.contains("clear text"), "{err}");
        }
        assert!(!out.contains("sample-secret") && !err.contains("sample-secret"));
    }
}

/// Runs the command with its standard output a pipe nobody reads any more,
/// as `| head -1` leaves it once head has its line.
fn with_closed_stdout(args: &[&str], config: &str) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(args)
        .env("SMARTHOST_CONFIG", config)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run smarthost")
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    // A queue with something in it, so each listing has lines to write.
    let relay = Relay::start_with(TWO_ROUTES, &[], common::block_routes);
    relay
        .send(
            "app@example.com",
            &["bob@example.net"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .expect("queued");
    let cfg = relay.config_path.to_str().unwrap();
    for args in [
        &["sendmail", "-bp"][..],
        &["mailq"],
        &["queue", "list"],
        &["queue", "list", "--json"],
        &["check"],
        &["route", "app@example.com"],
        &["oauth", "status"],
        &["--help"],
    ] {
        let out = with_closed_stdout(args, cfg);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
    }
}
