//! The daemon as systemd runs it: listeners handed over by socket activation
//! (through systemd's own `systemd-socket-activate`), notifications read from a
//! datagram socket standing in for `$NOTIFY_SOCKET`, reload without losing a
//! session or a message, and a stop that finishes open transactions.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{captured, free_port, have, kill, wait_for, Client, Relay, CAPTURE};

/// Everything the daemon told "systemd", in order.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Notifications {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one contains `needle` (counting from `from`);
    /// returns its index.
    fn wait(&mut self, needle: &str, from: usize, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen[from.min(self.seen.len())..]
                .iter()
                .position(|m| m.lines().any(|l| l == needle))
            {
                return from + i;
            }
            assert!(
                Instant::now() < end,
                "no {needle} within {timeout:?}; got {:#?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == needle))
            .count()
    }
}

struct Activated {
    child: Child,
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: <app@example.com>\r\nTo: <to@example.net>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n")
        .into_bytes()
}

fn subjects(dir: &Path) -> Vec<String> {
    captured(dir)
        .iter()
        .filter_map(|(_, body)| {
            let text = String::from_utf8_lossy(body);
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

/// The real protocol end to end: `systemd-socket-activate` binds the port and
/// execs the daemon with LISTEN_FDS/LISTEN_PID; the daemon serves on that socket
/// (not on its configured `listen`), and tells the notify socket READY=1 with a
/// STATUS=, WATCHDOG=1 as often as WATCHDOG_USEC asks, RELOADING=1 then READY=1
/// around a SIGHUP reload, and STOPPING=1 on SIGTERM.
#[test]
fn socket_activation_and_notifications() {
    if !have("systemd-socket-activate") {
        panic!("systemd-socket-activate (Debian package systemd) is needed: .ci/test installs it");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let configured = free_port();
    let activated = free_port();
    let mut notes = Notifications::bind(&dir.path().join("notify.sock"));
    let child = socket_activate(dir.path(), configured, activated);
    let pid = child.id();
    let mut daemon = Activated { child };

    // As with a real socket unit, the first connection starts the daemon; it
    // waits in the socket's backlog meanwhile and is served once the daemon runs.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], activated));
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "systemd-socket-activate did not listen"
    );
    let mut c = Client::connect(addr);
    let ready = notes.wait("READY=1", 0, Duration::from_secs(20));
    assert!(
        notes.seen[ready].contains("STATUS=relaying; 0 message(s) queued"),
        "{:?}",
        notes.seen[ready]
    );
    let log = relay_log(dir.path());
    assert!(log.contains("socket-activated"), "{log}");

    // The handed-over socket serves; the configured address was never bound.
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<app@example.com>", 250);
    c.expect_cmd("RCPT TO:<to@example.net>", 250);
    c.expect_cmd("DATA", 354);
    c.write(&common::dot_stuff(&message("activated")));
    assert!(c.read_reply().starts_with("250 "));
    c.expect_cmd("QUIT", 221);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", configured)).is_err(),
        "the configured listen address must not be bound when socket-activated"
    );
    let out = dir.path().join("out");
    assert!(wait_for(Duration::from_secs(10), || subjects(&out) == ["activated"]));

    // The watchdog: WATCHDOG_USEC=1s means a ping every 0.5 s.
    let first = notes.wait("WATCHDOG=1", ready, Duration::from_secs(5));
    notes.wait("WATCHDOG=1", first + 1, Duration::from_secs(5));
    assert!(notes.count("WATCHDOG=1") >= 2);

    assert_sighup_reloads(&mut notes, pid, dir.path());
    assert_sigterm_stops(&mut notes, &mut daemon, dir.path());
}

fn relay_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default()
}

/// SIGHUP: RELOADING=1 (with the monotonic time systemd wants), then READY=1.
fn assert_sighup_reloads(notes: &mut Notifications, pid: u32, dir: &Path) {
    let before = notes.seen.len();
    kill(pid, "HUP");
    let reloading = notes.wait("RELOADING=1", before, Duration::from_secs(10));
    assert!(
        notes.seen[reloading].contains("MONOTONIC_USEC="),
        "{:?}",
        notes.seen[reloading]
    );
    notes.wait("READY=1", reloading + 1, Duration::from_secs(10));
    assert!(
        relay_log(dir).contains("reloaded: 1 route(s)"),
        "{}",
        relay_log(dir)
    );
}

/// SIGTERM: STOPPING=1, then a clean exit well within TimeoutStopSec.
fn assert_sigterm_stops(notes: &mut Notifications, daemon: &mut Activated, dir: &Path) {
    let before = notes.seen.len();
    kill(daemon.child.id(), "TERM");
    notes.wait("STOPPING=1", before, Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Ok(Some(s)) = daemon.child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "{status:?}\n{}", relay_log(dir));
    assert!(relay_log(dir).contains("stopped; queued mail stays queued"));
}

/// systemd-socket-activate listening on `activated` for the daemon, whose
/// configuration (under `dir`) says to listen on `configured`; with a
/// notify socket at `dir`/notify.sock and a 1 s watchdog.
fn socket_activate(dir: &Path, configured: u16, activated: u16) -> Child {
    let config = dir.join("smarthost.toml");
    let text = format!(
        "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{configured}\"]\nqueue_path = \"{d}/queue\"\n{}\n[local]\nsocket_dir = \"{d}/run\"\ndrop_dir = \"{d}/drop\"\n",
        CAPTURE.replace("{dir}", &dir.display().to_string()),
        d = dir.display()
    );
    std::fs::write(&config, text).expect("config");
    let log = std::fs::File::create(dir.join("relay.log")).expect("log");
    Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{activated}"))
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            dir.join("notify.sock").display()
        ))
        // 1 s: pings every half of it, so the test sees several quickly.
        .arg("--setenv=WATCHDOG_USEC=1000000")
        .arg("--setenv=RUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_smarthost"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn systemd-socket-activate")
}

fn reload(relay: &Relay) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg("reload")
        .arg("--config")
        .arg(&relay.config_path)
        .output()
        .expect("run smarthost reload")
}

/// Rewrites the relay's config with another `body`, keeping the base settings.
fn rewrite(relay: &Relay, body: &str) {
    let old = std::fs::read_to_string(&relay.config_path).expect("config");
    let base: String = old.lines().take(3).map(|l| format!("{l}\n")).collect();
    let local = old
        .find("[local]")
        .map(|i| old[i..].to_string())
        .unwrap_or_default();
    let body = body.replace("{dir}", &relay.dir.path().display().to_string());
    std::fs::write(&relay.config_path, format!("{base}{body}\n{local}")).expect("write config");
}

/// A session open across a reload finishes its message; a queued message whose
/// route changed goes out on the new route at once (not at its next retry); a
/// broken configuration is refused with the reason, and the one in force keeps
/// serving.
#[test]
fn reload_keeps_sessions_reroutes_queued_mail_and_refuses_broken_config() {
    // First config: the only route points at a port nobody listens on, and
    // retries are an hour apart, so a message stays deferred.
    let down = free_port();
    let relay = Relay::start(&format!(
        "retry = \"F,1h,1h\"\n[[route]]\nname = \"down\"\nhost = \"127.0.0.1\"\nport = {down}\ntls = \"none\"\n[routing]\ndefault = \"down\"\n"
    ));
    let queued = relay
        .send("app@example.com", &["to@example.net"], &message("queued"))
        .expect("accepted");
    assert!(relay.wait_log("status=deferred", 1, Duration::from_secs(20)));

    // A session in the middle of a transaction when the reload comes.
    let mut open = Client::connect(relay.addr());
    open.expect(220);
    open.expect_cmd("EHLO client.test", 250);
    open.expect_cmd("MAIL FROM:<app@example.com>", 250);
    open.expect_cmd("RCPT TO:<to@example.net>", 250);

    rewrite(
        &relay,
        &format!(
            "retry = \"F,1h,1h\"\n[[route]]\nname = \"down\"\nhost = \"127.0.0.1\"\nport = {down}\ntls = \"none\"\n{CAPTURE}"
        ),
    );
    let out = reload(&relay);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("reloaded: 2 route(s); 1 queued message(s) rescheduled, 1 on a new route"),
        "{stdout}"
    );

    // The open session is still served and its message accepted.
    open.expect_cmd("DATA", 354);
    open.write(&common::dot_stuff(&message("across the reload")));
    assert!(open.read_reply().starts_with("250 "));
    open.expect_cmd("QUIT", 221);

    // The deferred message did not wait an hour for its retry.
    let dir = relay.path("out");
    assert!(
        wait_for(Duration::from_secs(15), || subjects(&dir).len() == 2),
        "{:?}\n{}",
        subjects(&dir),
        relay.log()
    );
    let mut got = subjects(&dir);
    got.sort();
    assert_eq!(got, ["across the reload", "queued"]);
    assert!(relay
        .log()
        .contains(&format!("{queued}: to=<to@example.net> relay=directory")));

    assert_broken_config_refused(&relay);
}

/// A configuration a client can read but the daemon cannot use (a secret file
/// that group and others may read) is refused by the daemon itself, and
/// `smarthost reload` reports why.
#[test]
fn reload_refused_by_the_daemon_reports_the_reason() {
    let relay = Relay::start(CAPTURE);
    let secret = relay.path("password");
    std::fs::write(&secret, "hunter2-secret\n").expect("secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    rewrite(
        &relay,
        &format!(
            "[[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nallow_plaintext = true\nusername = \"u\"\npassword_file = \"{}\"\n{CAPTURE}",
            secret.display()
        ),
    );
    let out = reload(&relay);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(relay.log().contains("reload refused"), "{}", relay.log());
    assert!(!stderr.contains("hunter2") && !relay.log().contains("hunter2"));
    relay
        .send(
            "app@example.com",
            &["to@example.net"],
            &message("still capture"),
        )
        .expect("accepted");
    assert!(wait_for(Duration::from_secs(15), || subjects(
        &relay.path("out")
    )
    .len()
        == 1));
}

/// SIGTERM: the listeners close at once, an idle session is told 421, a session
/// in the middle of DATA finishes its message (which is kept), and the daemon
/// exits by itself.
#[test]
fn stop_finishes_open_transactions() {
    let mut relay = Relay::start(CAPTURE);
    let mut idle = Client::connect(relay.addr());
    idle.expect(220);
    idle.expect_cmd("EHLO idle.test", 250);

    let mut busy = Client::connect(relay.addr());
    busy.expect(220);
    busy.expect_cmd("EHLO busy.test", 250);
    busy.expect_cmd("MAIL FROM:<app@example.com>", 250);
    busy.expect_cmd("RCPT TO:<to@example.net>", 250);
    busy.expect_cmd("DATA", 354);
    busy.write(b"Subject: in flight\r\n\r\nfirst half\r\n");

    relay.signal("TERM");
    assert!(relay.wait_log("stopping", 1, Duration::from_secs(10)));
    let r = idle.read_reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert!(wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(relay.addr()).is_err()
    }));

    busy.write(b"second half\r\n.\r\n");
    let r = busy.read_reply();
    assert!(r.starts_with("250 "), "{r}");
    // After its transaction, the session is closed for the stop.
    let r = busy.cmd("NOOP");
    assert!(r.starts_with("421") || r.is_empty(), "{r}");

    let status = relay.wait_exit(Duration::from_secs(25)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(relay.log().contains("stopped; queued mail stays queued"));
    // Accepted means kept: delivered before the stop, or queued for the next start.
    relay.spawn();
    let dir = relay.path("out");
    assert!(wait_for(Duration::from_secs(15), || subjects(&dir) == ["in flight"]));
}

/// A broken configuration: refused, the reason shown, the old one serving
/// (its two messages already captured).
fn assert_broken_config_refused(relay: &Relay) {
    rewrite(
        relay,
        "[[route]]\nname = \"capture\"\ntype = \"directory\"\npath = \"{dir}/out\"\n[routing]\ndefault = \"missing\"\n",
    );
    // `smarthost reload` (ExecReload) checks the file before asking the daemon,
    // so `systemctl reload` fails with the reason.
    let out = reload(relay);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains("missing"), "{stderr}");
    // SIGHUP reaches the daemon, which validates it again and refuses it.
    relay.signal("HUP");
    assert!(
        relay.wait_log("reload refused", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    assert!(relay.log().contains("missing"));
    relay
        .send(
            "app@example.com",
            &["to@example.net"],
            &message("after refusal"),
        )
        .expect("still accepting");
    let dir = relay.path("out");
    assert!(wait_for(Duration::from_secs(15), || subjects(&dir).len() == 3));
}
