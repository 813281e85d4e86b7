//! The setgid install (the Debian package's `chmod 2755`, group = the
//! daemon's) exists so `sendmail` can use the drop directory. `mailq`,
//! `sendmail -bp` and `sendmail -q` run by a local user outside the queue
//! groups must not borrow that group: they are refused, naming the socket and
//! group they need, and nothing of the queue is shown or flushed. That the
//! setgid bit is in force is shown by the same user's `sendmail` leaving mail in
//! the drop directory while the daemon is down.
//!
//! A setgid program reads only `/etc/smarthost/smarthost.toml`, so each run
//! happens in a private mount namespace with an overlay on `/etc` holding the
//! test's configuration. Needs root, `setpriv`, `unshare` and overlayfs (as CI
//! has); without them it says it skipped, or fails under `CI=true`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Relay, TWO_ROUTES};

fn can_run(test: &str) -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && common::have("setpriv")
        && common::have("unshare")
        && overlay_on_etc_works();
    common::require(
        &format!("root, setpriv, and unshare with an overlay on /etc ({test})"),
        ok,
    )
}

/// Whether a private mount namespace with an overlay on /etc can be made
/// here (not in an unprivileged container, not on overlayfs itself).
fn overlay_on_etc_works() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let (u, w) = (dir.path().join("u"), dir.path().join("w"));
    let made = std::fs::create_dir(&u).and_then(|()| std::fs::create_dir(&w));
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc",
        u.display(),
        w.display()
    );
    made.is_ok()
        && Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A setgid copy of the binary (group root: the group of the daemon, which
/// runs as root here) with its `mailq` and `sendmail` names.
fn setgid_install(relay: &Relay) -> PathBuf {
    std::fs::set_permissions(relay.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = relay.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let smarthost = bin.join("smarthost");
    let copied = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_smarthost"))
        .arg(&smarthost)
        .status()
        .is_ok_and(|s| s.success());
    assert!(copied);
    nix::unistd::chown(&smarthost, None, Some(nix::unistd::Gid::from_raw(0))).unwrap();
    std::fs::set_permissions(&smarthost, std::fs::Permissions::from_mode(0o2755)).unwrap();
    for name in ["mailq", "sendmail"] {
        std::os::unix::fs::symlink("smarthost", bin.join(name)).unwrap();
    }
    bin
}

/// Whether the setgid bit counts where the tests' temporary directories are
/// (systemd mounts /tmp nosuid on many machines).
fn suid_counts(test: &str) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let ok = nix::sys::statvfs::statvfs(dir.path())
        .is_ok_and(|st| !st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
    common::require(
        &format!("a temporary directory without nosuid ({test})"),
        ok,
    )
}

/// Runs `argv` as nobody (group nogroup only) with the relay's configuration
/// at /etc/smarthost/smarthost.toml, in a mount namespace of its own.
fn as_nobody_with_config(relay: &Relay, argv: &[&str], input: &[u8]) -> Output {
    let (upper, work) = (relay.path("etc-upper"), relay.path("etc-work"));
    for d in [&upper, &work] {
        let _ = std::fs::create_dir(d);
    }
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={u},workdir={w} /etc \
         && mkdir -p /etc/smarthost && cp {c} /etc/smarthost/smarthost.toml \
         && chmod 644 /etc/smarthost/smarthost.toml \
         && exec setpriv --reuid=nobody --regid=nogroup --clear-groups \"$@\"",
        u = upper.display(),
        w = work.display(),
        c = relay.config_path.display(),
    );
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(argv)
        .env_remove("SMARTHOST_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("unshare")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn setgid_mailq_shows_a_user_nothing_of_the_queue() {
    if !can_run("setgid mailq") || !suid_counts("setgid mailq") {
        return;
    }
    // Deferred so that it stays queued, with a sender and a recipient to leak.
    let mut relay = Relay::start_with(TWO_ROUTES, &[], common::block_routes);
    let bin = setgid_install(&relay);
    let id = relay
        .send(
            "secret-sender@example.com",
            &["secret-rcpt@example.net"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .expect("queued");
    assert!(relay.wait_log("status=deferred", 1, Duration::from_secs(10)));
    // Root sees it: there is something a user could have been shown.
    let listed = relay.queue_ok(&["list"]);
    assert!(listed.contains("secret-rcpt@example.net"), "{listed}");
    let mailq = bin.join("mailq");
    let sendmail = bin.join("sendmail");
    let (mailq, sendmail) = (mailq.to_str().unwrap(), sendmail.to_str().unwrap());
    for (argv, socket) in [
        (vec![mailq], "control.sock"),
        (vec![sendmail, "-bp"], "control.sock"),
        (vec![sendmail, "-q"], "admin.sock"),
    ] {
        let out = as_nobody_with_config(&relay, &argv, b"");
        let said = text(&out);
        assert_eq!(out.status.code(), Some(77), "{argv:?}: {said}");
        assert!(
            said.contains(socket) && said.contains("group"),
            "{argv:?}: {said}"
        );
        assert!(!said.contains("secret-") && !said.contains(&id), "{said}");
    }
    assert_setgid_is_in_force(&mut relay, sendmail);
}

/// The same user's `sendmail`, with the daemon down, writes the drop
/// directory (mode 1730, the daemon's group): only the setgid group allows it.
fn assert_setgid_is_in_force(relay: &mut Relay, sendmail: &str) {
    relay.kill();
    let drop = relay.path("drop");
    let before = count(&drop);
    let out = as_nobody_with_config(relay, &[sendmail, "-t"], b"To: a@example.net\n\nhi\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(count(&drop), before + 1, "the drop file is there");
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
