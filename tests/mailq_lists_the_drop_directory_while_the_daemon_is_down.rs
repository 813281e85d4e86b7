//! With the daemon stopped, `mailq` (and `sendmail -bp`) says so and exits 69
//! (EX_UNAVAILABLE), and shows root and the daemon's user what `sendmail`
//! left in the drop directory meanwhile: sender, recipients, size, when. A
//! user who may ask the daemon but not read the directory (a member of the
//! control group) is told the directory is not readable to them, and sees
//! none of it. The daemon, started again, queues exactly what was listed.
//!
//! The user part needs root and `setpriv` (as CI has); without them it says
//! it skipped, or fails under `CI=true`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{captured, Relay, CAPTURE_ROUTE};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn smarthost(relay: &Relay, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(args)
        .env("SMARTHOST_CONFIG", &relay.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smarthost");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("smarthost")
}

#[test]
fn mailq_lists_the_drop_directory_while_the_daemon_is_down() {
    let mut relay = Relay::start(CAPTURE_ROUTE);
    relay.signal("TERM");
    assert!(
        relay.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        relay.log()
    );

    let sent = smarthost(
        &relay,
        &["sendmail", "-f", "app@example.com", "bob@example.net"],
        b"Subject: while down\n\nwaiting\n",
    );
    assert!(sent.status.success(), "{:?}", text(&sent));
    let dropped = std::fs::read_dir(relay.path("drop")).unwrap().count();
    assert_eq!(
        dropped, 1,
        "sendmail left the message in the drop directory"
    );

    for args in [&["mailq"][..], &["sendmail", "-bp"]] {
        let out = smarthost(&relay, args, b"");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("daemon is not running"), "{stdout}");
        assert!(stdout.contains("1 message waits"), "{stdout}");
        let sender = stdout.lines().find(|l| l.ends_with(" app@example.com"));
        let rcpt = stdout.lines().find(|l| l.ends_with(" bob@example.net"));
        assert!(sender.is_some() && rcpt.is_some(), "{stdout}");
        assert!(
            stderr.contains("cannot reach the smarthost daemon"),
            "{stderr}"
        );
        assert!(
            stderr.contains("only the drop directory was listed"),
            "{stderr}"
        );
    }

    a_control_group_member_is_told_the_directory_is_not_theirs(&relay);

    relay.spawn();
    let out = relay.path("out");
    assert!(
        common::wait_for(Duration::from_secs(20), || captured(&out).len() == 1),
        "{}",
        relay.log()
    );
    let (meta, _) = &captured(&out)[0];
    assert_eq!(meta["sender"], "app@example.com", "{meta}");
    let after = smarthost(&relay, &["mailq"], b"");
    assert_eq!(after.status.code(), Some(0), "{:?}", text(&after));
}

/// nobody with the daemon's group (root here) as a supplementary group: it may
/// connect to control.sock, so it learns the daemon is down; the drop
/// directory (mode 1730) is not readable to it, and it is told so.
fn a_control_group_member_is_told_the_directory_is_not_theirs(relay: &Relay) {
    let ok = nix::unistd::geteuid().is_root() && common::have("setpriv");
    if !common::require("root and setpriv (mailq as another user)", ok) {
        return;
    }
    std::fs::set_permissions(relay.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--groups=0"])
        .arg(env!("CARGO_BIN_EXE_smarthost"))
        .args(["mailq", "-C"])
        .arg(&relay.config_path)
        .env_remove("SMARTHOST_CONFIG")
        .output()
        .expect("setpriv");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot reach the smarthost daemon"),
        "{stderr}"
    );
    assert!(stderr.contains("not readable to you"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        !stderr.contains("app@example.com") && !stderr.contains("bob@"),
        "{stderr}"
    );
}
