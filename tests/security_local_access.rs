//! Local access control, tried as other users: the control socket (0660, the
//! control group) and the drop directory (1730) refuse a user outside the
//! group, the submission socket (0666) takes anyone's mail and records who it
//! was; the daemon runs unprivileged, as the systemd unit says it does.
//!
//! Switching users needs root (as CI runs): without it each test says it
//! skipped, or fails under `CI=true`. Other users run a copy of the binary in a directory they can reach.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{captured, free_port, wait_for, Relay, CAPTURE};

const NOBODY: u32 = 65534;

fn root_with_setpriv(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ok = root && common::have("setpriv");
    common::require(
        &format!("root and setpriv to act as other users ({test})"),
        ok,
    )
}

/// The relay's directory made reachable by others (tempdirs are 0700), with a
/// copy of the binary that they may run.
fn open_up(relay: &Relay) -> PathBuf {
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(relay.dir.path(), 0o755).unwrap();
    let bin = relay.path("smarthost");
    copy_binary(&bin);
    bin
}

/// A copy of the binary others may run. `cp` writes it, not this process:
/// a write descriptor of ours would leak into children that other tests fork
/// meanwhile, and executing the copy would then fail with ETXTBSY.
fn copy_binary(to: &Path) {
    let ok = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_smarthost"))
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot copy the binary to {}", to.display());
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `argv` as `user` (no supplementary groups but `groups`), with `input`
/// on stdin.
fn run_as(user: &str, groups: Option<&str>, argv: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={user}"));
    cmd.arg(format!(
        "--regid={}",
        if user == "nobody" { "nogroup" } else { user }
    ));
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.arg("--").args(argv);
    cmd.env_remove("SMARTHOST_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn setpriv");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("setpriv");
    let _ = writer.join();
    out
}

/// `sendmail` from nobody@example.com to b@example.net with the relay's config.
fn sendmail_argv(bin: &Path, relay: &Relay) -> Vec<String> {
    let mut argv = vec![bin.display().to_string(), "sendmail".into(), "-C".into()];
    argv.push(relay.config_path.display().to_string());
    argv.extend(["-f", "nobody@example.com", "b@example.net"].map(String::from));
    argv
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

#[test]
fn control_socket_refuses_users_outside_its_group() {
    if !root_with_setpriv("control_socket_refuses_users_outside_its_group") {
        return;
    }
    // A token source, so that `oauth token` has something to hand out.
    let source = "[[token_source]]\nname = \"tok\"\ntype = \"file\"\npath = \"{dir}/token\"\n";
    let relay = Relay::start(&format!("{source}{CAPTURE}"));
    std::fs::write(relay.path("token"), "tok-3a5e\n").unwrap();
    std::fs::set_permissions(relay.path("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let bin = open_up(&relay);
    let (bin, config) = (bin.to_str().unwrap(), relay.config_path.to_str().unwrap());
    let control = relay.path("run/control.sock");
    assert_eq!(mode_of(&control), 0o660);
    assert_eq!(mode_of(&relay.path("run/submit.sock")), 0o666);
    // The control group is the daemon's (root here).
    let group = std::fs::metadata(&control).unwrap().gid().to_string();
    let id = relay
        .send(
            "a@example.com",
            &["b@example.net"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .expect("queued");
    assert!(relay.wait_log("status=sent", 1, Duration::from_secs(10)));

    for argv in [
        vec![bin, "queue", "--config", config, "list"],
        vec![bin, "queue", "--config", config, "find", &id],
        vec![bin, "queue", "--config", config, "delete", "--all"],
        vec![bin, "reload", "--config", config],
        vec![bin, "sendmail", "-C", config, "-bp"],
        vec![bin, "sendmail", "-C", config, "-q"],
        // The oauth commands say it too, and exit the same way.
        vec![bin, "oauth", "--config", config, "status"],
        vec![bin, "oauth", "--config", config, "token", "tok"],
    ] {
        let out = run_as("nobody", None, &argv, b"");
        assert_eq!(
            out.status.code(),
            Some(77),
            "{argv:?} as nobody: {}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "{err}");
    }
    // The same user in the control group is let in.
    for argv in [
        vec![bin, "queue", "--config", config, "list"],
        vec![bin, "queue", "--config", config, "find", &id],
    ] {
        let out = run_as("nobody", Some(&group), &argv, b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{argv:?} in the group: {}",
            text(&out)
        );
    }
    assert_control_group_only_looks(&relay, bin, config, &id, &group);
    // Nothing was changed by the refused requests.
    assert!(!relay.log().contains("reload"), "{}", relay.log());
}

/// A member of the control group may look, not act: that is the admin
/// socket's, and the refusal names it and its group.
fn assert_control_group_only_looks(relay: &Relay, bin: &str, config: &str, id: &str, group: &str) {
    assert_eq!(mode_of(&relay.path("run/admin.sock")), 0o600);
    for argv in [
        vec![bin, "queue", "--config", config, "show", id],
        vec![bin, "queue", "--config", config, "delete", "--all"],
        vec![bin, "reload", "--config", config],
        vec![bin, "oauth", "--config", config, "token", "tok"],
    ] {
        let out = run_as("nobody", Some(group), &argv, b"");
        assert_eq!(
            out.status.code(),
            Some(77),
            "{argv:?} in the control group: {}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("admin.sock") && err.contains("admin_group"),
            "{err}"
        );
    }
}

/// Root, the daemon's user and `admin_group` act through `admin.sock`; the
/// daemon refuses acting requests that arrive on `control.sock` whoever
/// sends them, and hands out tokens only under a source's `share_as`.
#[test]
fn admin_socket_acts_and_control_socket_only_looks() {
    if !root_with_setpriv("admin_socket_acts_and_control_socket_only_looks") {
        return;
    }
    let sources = "[[token_source]]\nname = \"tok\"\ntype = \"file\"\npath = \"{dir}/token\"\nshare_as = [\"ops@example.com\"]\n";
    let body = format!("{sources}{CAPTURE}[local]\nadmin_group = \"nogroup\"\n");
    let relay = Relay::start(&body);
    std::fs::write(relay.path("token"), "tok-77c1\n").unwrap();
    std::fs::set_permissions(relay.path("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let bin = open_up(&relay);
    let (bin, config) = (bin.to_str().unwrap(), relay.config_path.to_str().unwrap());
    let admin = relay.path("run/admin.sock");
    assert_eq!(mode_of(&admin), 0o660);
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(std::fs::metadata(&admin).unwrap().gid(), nogroup.as_raw());

    // nobody's group is nogroup: the admin group here.
    let token = |user: &str| {
        let argv = [
            bin, "oauth", "--config", config, "token", "tok", "--user", user,
        ];
        run_as("nobody", None, &argv, b"")
    };
    let out = token("ops@example.com");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tok-77c1");
    let out = token("someone@example.com");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("share_as"), "{}", text(&out));
    assert!(!text(&out).contains("tok-77c1"), "{}", text(&out));

    let out = run_as("nobody", None, &[bin, "reload", "--config", config], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Straight to control.sock, even as root: refused, naming the socket.
    let reply = raw_request(&relay.path("run/control.sock"), r#"{"op":"reload"}"#);
    assert!(
        reply.contains("not allowed on") && reply.contains("admin.sock"),
        "{reply}"
    );
}

/// One request line on a queue socket; the daemon's answer.
fn raw_request(socket: &Path, line: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn submission_socket_takes_anyones_mail_and_records_the_user() {
    if !root_with_setpriv("submission_socket_takes_anyones_mail_and_records_the_user") {
        return;
    }
    let relay = Relay::start(CAPTURE);
    let bin = open_up(&relay);
    let argv = sendmail_argv(&bin, &relay);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run_as("nobody", None, &argv, b"Subject: from nobody\n\nhi\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(wait_for(Duration::from_secs(10), || {
        !captured(&relay.path("out")).is_empty()
    }));
    let (_, body) = captured(&relay.path("out")).remove(0);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(
        body.starts_with(&format!(
            "Received: by relay.test (smarthost, from userid {NOBODY})"
        )),
        "{body}"
    );
}

/// With the daemon down, `sendmail` falls back to the drop directory: a user
/// outside its group can neither write nor list it; a member (what the setgid
/// install gives sendmail) can leave a file but not read, list or remove
/// anyone else's, and the daemon picks it up as that user's mail.
#[test]
fn drop_directory_refuses_other_users() {
    if !root_with_setpriv("drop_directory_refuses_other_users") {
        return;
    }
    let mut relay = Relay::start(CAPTURE);
    let bin = open_up(&relay);
    let drop = relay.path("drop");
    assert_eq!(mode_of(&drop), 0o1730);
    let group = std::fs::metadata(&drop).unwrap().gid().to_string();
    relay.kill();
    let drop_s = drop.to_str().unwrap();

    let argv = sendmail_argv(&bin, &relay);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_outsider_cannot_drop(&drop, &argv);

    // A member of the group: can drop, cannot list, cannot touch another's file.
    let out = run_as("nobody", Some(&group), &argv, b"Subject: dropped\n\nhi\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let files: Vec<PathBuf> = std::fs::read_dir(&drop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].to_str().unwrap().to_string();
    let out = sh_as("nobody", Some(&group), &format!("ls {drop_s}"));
    assert!(!out.status.success(), "a member listed the drop directory");
    // Another member of the group: Debian's `daemon` user, where it exists.
    // The file is readable by the group (the daemon reads it through it),
    // but only under its name, 64 random bits no member can list or learn.
    let other = nix::unistd::User::from_name("daemon").is_ok_and(|u| u.is_some());
    for script in [format!("rm -f {file}"), format!("mv {file} {file}.x")]
        .iter()
        .filter(|_| other)
    {
        let out = sh_as("daemon", Some(&group), script);
        assert!(
            !out.status.success(),
            "{script} as another member: {}",
            text(&out)
        );
    }
    assert!(Path::new(&file).exists());

    relay.spawn();
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let (_, body) = captured(&relay.path("out")).remove(0);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains(&format!("from userid {NOBODY}")), "{body}");
}

/// `sh -c script` as `user`.
fn sh_as(user: &str, groups: Option<&str>, script: &str) -> Output {
    run_as(user, groups, &["sh", "-c", script], b"")
}

/// A user outside the drop directory's group can neither write nor list it,
/// and sendmail run by one fails with EX_CANTCREAT, leaving nothing.
fn assert_outsider_cannot_drop(drop: &Path, argv: &[&str]) {
    let drop_s = drop.to_str().unwrap();
    for script in [
        format!("echo x > {drop_s}/planted"),
        format!("ls {drop_s}"),
        format!("touch {drop_s}/.tmp.planted"),
    ] {
        let out = sh_as("nobody", None, &script);
        assert!(!out.status.success(), "{script} as nobody: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    }
    let out = run_as("nobody", None, argv, b"Subject: dropped\n\nhi\n");
    assert_eq!(out.status.code(), Some(73), "{}", text(&out));
    assert_eq!(std::fs::read_dir(drop).unwrap().count(), 0);
}

/// The daemon needs no privilege at all: started as nobody in a directory of
/// its own, it serves and delivers, with no capabilities.
#[test]
fn daemon_runs_unprivileged() {
    if !root_with_setpriv("daemon_runs_unprivileged") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("smarthost");
    copy_binary(&bin);
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (config, port) = write_unprivileged_config(d);
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(NOBODY.into()), None).unwrap();
    let log = std::fs::File::create(d.join("log")).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn serve as nobody");
    let pid = child.id();
    let _guard = Kill(&mut child);
    let read_log = || std::fs::read_to_string(d.join("log")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || read_log()
            .contains("smarthost ready")),
        "{}",
        read_log()
    );
    assert_no_privilege(pid);
    // It works: a message in, delivered, the files its own.
    let mut c = common::Client::connect(([127, 0, 0, 1], port).into());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<a@example.com>", 250);
    c.expect_cmd("RCPT TO:<b@example.net>", 250);
    c.expect_cmd("DATA", 354);
    c.write(b"Subject: unprivileged\r\n\r\nok\r\n.\r\n");
    assert!(c.read_reply().starts_with("250 2.0.0 Ok: queued"));
    assert!(
        wait_for(Duration::from_secs(10), || {
            !captured(&state.join("out")).is_empty()
        }),
        "{}",
        read_log()
    );
    for p in ["queue", "run/control.sock", "drop", "out"] {
        let meta = std::fs::symlink_metadata(state.join(p)).unwrap();
        assert_eq!(meta.uid(), NOBODY, "{p}");
    }
}

/// The unit runs the daemon as its own user with no capabilities; port 25
/// comes from the socket unit, so it never needs any.
#[test]
fn systemd_unit_runs_the_daemon_unprivileged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(root.join("smarthost.service")).unwrap();
    let settings: Vec<(String, String)> = service
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let all = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, want) in [
        ("User", "smarthost"),
        ("Group", "smarthost"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("UMask", "0077"),
        ("StateDirectoryMode", "0710"),
        ("RuntimeDirectoryMode", "0755"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(all(key), [want], "{key}");
    }
    assert!(all("SystemCallFilter").contains(&"@system-service"));
    // Nothing runs with more privilege than the daemon ("+", "!" prefixes).
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        for v in all(key) {
            assert!(v.starts_with("/usr/bin/smarthost "), "{key}={v}");
        }
    }
    assert!(all("PermissionsStartOnly").is_empty() && all("DynamicUser").is_empty());
    let socket = std::fs::read_to_string(root.join("smarthost.socket")).unwrap();
    assert!(socket.contains("ListenStream=127.0.0.1:25"), "{socket}");
    // The users the package creates: a system user without a login shell.
    let sysusers = std::fs::read_to_string(root.join("smarthost.sysusers")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u smarthost ") || l.starts_with("u! smarthost ")),
        "{sysusers}"
    );
}

/// Kills and reaps the child when dropped.
struct Kill<'a>(&'a mut std::process::Child);
impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration under `d` whose state lives in `d/state`; its path and
/// the port it listens on.
fn write_unprivileged_config(d: &Path) -> (PathBuf, u16) {
    let port = free_port();
    let config = d.join("smarthost.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nqueue_path = \"{d}/state/queue\"\n{}\n[local]\nsocket_dir = \"{d}/state/run\"\ndrop_dir = \"{d}/state/drop\"\n",
            CAPTURE.replace("{dir}", &format!("{}/state", d.display())),
            d = d.display()
        ),
    )
    .unwrap();
    (config, port)
}

/// Process `pid` runs as nobody, with no capability.
fn assert_no_privilege(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
}
