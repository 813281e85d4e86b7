//! Shared harness for the integration tests: runs the real `smarthost` binary on a
//! loopback port it picked, with a config and queue in a temporary directory, and
//! a minimal raw SMTP client for conversations no real client would have.
//!
//! Every process started here is killed when its handle is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1, chosen below Linux's ephemeral
/// range (32768-60999): a client reconnecting to a relay that is down can never be
/// handed that port as its own source port and connect to itself.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..1000 {
        // xorshift: enough to spread parallel tests over the range.
        let mut x = STATE.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, Ordering::SeqCst);
        let port = 20000 + (x % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether a test that needs `what` (a tool, root, IPv6) may run. Missing it
/// fails the test under `CI=true`, where everything must be installed; elsewhere
/// it says so loudly and the caller returns (skips).
pub fn require(what: &str, ok: bool) -> bool {
    if !ok {
        let ci = std::env::var("CI").unwrap_or_default();
        assert!(
            ci.is_empty() || ci == "false" || ci == "0",
            "CI={ci}: this test must run here, but it needs {what}"
        );
        eprintln!("SKIPPED OR LIMITED: this test needs {what} (under CI=true, a failure)");
    }
    ok
}

/// Sends a signal by name (`TERM`, `HUP`) to a process.
pub fn kill(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}

/// Waits until `f` is true, polling; false on timeout.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Config for [`Relay::start`]: a route "capture" that writes every message to
/// `{dir}/out` (read it with [`captured`]), as the default route. Tables only:
/// top-level keys (`retry`) go before it.
pub const CAPTURE_ROUTE: &str = r#"[[route]]
name = "capture"
type = "directory"
path = "{dir}/out"
[routing]
default = "capture"
"#;

/// Two capture routes, "blocked" (the default) and "other" (senders at
/// other.example), retried hourly: with [`block_routes`] before the start,
/// every attempt defers and the queue keeps what is sent.
pub const TWO_ROUTES: &str = r#"retry = "F,1h,1h"
[[route]]
name = "blocked"
type = "directory"
path = "{dir}/out"
[[route]]
name = "other"
type = "directory"
path = "{dir}/other"
[routing]
default = "blocked"
[routing.senders]
"other.example" = "other"
"#;

/// Files where [`TWO_ROUTES`]' capture directories go.
pub fn block_routes(dir: &Path) {
    for route in ["out", "other"] {
        std::fs::write(dir.join(route), b"blocked").expect("block the route");
    }
}

/// [`CAPTURE_ROUTE`] under the name the security tests use.
pub const CAPTURE: &str = CAPTURE_ROUTE;

/// Config for [`Relay::start`]: a plain-text route "up" to a local upstream
/// (a [scripted] server) on `port`, as the default route; `extra` adds route
/// keys such as `max_connections = 6`.
pub fn upstream_route(port: u16, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n{extra}\n[routing]\ndefault = \"up\"\n"
    )
}

/// The envelope of [`Relay::sentinel`].
pub const SENTINEL_FROM: &str = "sentinel@example.com";
pub const SENTINEL_TO: &str = "sentinel@example.net";

pub struct Relay {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    starts: u32,
    /// Extra arguments for `smarthost serve`.
    args: Vec<String>,
}

impl Relay {
    /// Starts the relay with `body` appended to a base config (hostname, listener,
    /// queue path). `body` holds routes, routing, retry and limits; the token
    /// `{dir}` in it is replaced by the temporary directory.
    pub fn start(body: &str) -> Relay {
        Self::start_with(body, &[], |_| {})
    }

    /// [`Relay::start`] with extra `serve` arguments (e.g. `--log-format json`).
    pub fn start_with_args(body: &str, args: &[&str]) -> Relay {
        Self::start_with(body, args, |_| {})
    }

    /// [`Relay::start`] with extra `serve` arguments, and `prepare` called on the
    /// temporary directory before the relay first starts (e.g. to put `queue` on
    /// another filesystem).
    pub fn start_with(body: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> Relay {
        Self::launch("127.0.0.1", body, args, prepare)
    }

    /// [`Relay::start`] listening on another loopback address, e.g. `[::1]`.
    pub fn start_on(host: &str, body: &str) -> Relay {
        Self::launch(host, body, &[], |_| {})
    }

    fn launch(host: &str, body: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path());
        let config_path = dir.path().join("smarthost.toml");
        let body = body.replace("{dir}", &dir.path().display().to_string());
        let log_path = dir.path().join("relay.log");
        let mut r = Relay {
            child: None,
            port: 0,
            dir,
            config_path,
            log_path,
            starts: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        // free_port's port can be taken by a parallel test before the relay binds
        // it: then the relay exits at once, and another port is tried.
        for _ in 0..5 {
            r.port = free_port();
            let mut local = format!(
                "socket_dir = \"{}\"\ndrop_dir = \"{}\"\n",
                r.dir.path().join("run").display(),
                r.dir.path().join("drop").display(),
            );
            // The machine's /etc/aliases and /etc/mailname stay out of tests
            // that do not ask for them: files in the relay's directory
            // instead, absent unless the test writes them.
            for (key, file) in [("aliases", "aliases"), ("mailname", "mailname")] {
                if !body.contains(&format!("\n{key} =")) {
                    let path = r.dir.path().join(file);
                    local.push_str(&format!("{key} = \"{}\"\n", path.display()));
                }
            }
            // A body with its own [local] table gets the paths added to it.
            let body = match body.find("[local]\n") {
                Some(at) => format!("{}{local}{}", &body[..at + 8], &body[at + 8..]),
                None => format!("{body}\n[local]\n{local}"),
            };
            let text = format!(
                "hostname = \"relay.test\"\nlisten = [\"{host}:{}\"]\nqueue_path = \"{}\"\n{body}\n",
                r.port,
                r.dir.path().join("queue").display(),
            );
            std::fs::write(&r.config_path, text).expect("write config");
            match r.try_spawn() {
                Ok(()) => return r,
                Err(log) if log.contains("Address already in use") => r.kill(),
                Err(log) => panic!("relay did not become ready; log:\n{log}"),
            }
        }
        panic!(
            "no free port for the relay after 5 tries; log:\n{}",
            r.log()
        );
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// (Re)starts the process and waits until it listens.
    pub fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("relay did not become ready; log:\n{log}");
        }
    }

    /// Starts the process; Err(log) if it exits or is not ready within 20 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let before = self.ready_count();
        self.spawn_unready();
        wait_for(Duration::from_secs(20), || {
            self.ready_count() > before
                || self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        });
        if self.ready_count() > before {
            Ok(())
        } else {
            Err(self.log())
        }
    }

    /// How many times the relay has said it is ready.
    pub fn ready_count(&self) -> usize {
        self.log().matches("smarthost ready").count()
    }

    /// (Re)starts the process without waiting for it to be ready.
    pub fn spawn_unready(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn smarthost");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`) to the running daemon.
    pub fn signal(&self, name: &str) {
        kill(self.child.as_ref().expect("relay running").id(), name);
    }

    /// Waits for the daemon to exit by itself; its status, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_for(timeout, || self.log().matches(needle).count() >= count)
    }

    /// The positive sentinel of a test that proves something did not happen:
    /// submits one message from `sentinel@example.com` to
    /// `sentinel@example.net` through the local submission socket (trusted, and
    /// there whatever the relay listens on) and waits until the log says it was
    /// sent; returns its queue id. The relay logs `<id>: from=<...>` before it
    /// acknowledges a message, so whatever the test's earlier, finished sessions
    /// had queued is in the log before the sentinel's line, and the sentinel's
    /// delivery shows that delivery had its turn after them.
    pub fn sentinel(&self) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .args(["sendmail", "-v", "-f", SENTINEL_FROM, SENTINEL_TO])
            .env("SMARTHOST_CONFIG", &self.config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smarthost sendmail");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"Subject: sentinel\n\nsentinel\n")
            .expect("write the sentinel");
        let out = child.wait_with_output().expect("sendmail");
        let err = String::from_utf8_lossy(&out.stderr);
        let id = err
            .lines()
            .find_map(|l| l.strip_prefix("sendmail: queued as "))
            .unwrap_or_else(|| panic!("sentinel not queued ({}): {err}", out.status))
            .trim()
            .to_string();
        let sent = format!("{id}: to=<{SENTINEL_TO}>");
        let ok = wait_for(Duration::from_secs(30), || {
            self.log()
                .lines()
                .any(|l| l.contains(&sent) && l.contains(" status=sent "))
        });
        assert!(ok, "sentinel {id} not delivered; log:\n{}", self.log());
        id
    }

    /// `smarthost queue ARGS...` against this relay.
    pub fn queue_cmd(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .arg("queue")
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("SMARTHOST_CONFIG")
            .output()
    }

    /// [`Relay::queue_cmd`] that must succeed: its standard output.
    pub fn queue_ok(&self, args: &[&str]) -> String {
        let out = self.queue_cmd(args).expect("run smarthost queue");
        assert!(
            out.status.success(),
            "queue {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `smarthost queue list --json`: one JSON object per queued message, or the
    /// command's error output.
    pub fn queue_json(&self) -> Result<Vec<serde_json::Value>, String> {
        let out = self
            .queue_cmd(&["list", "--json"])
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
            .collect()
    }

    /// Waits until `queue list --json` shows an empty queue; false on timeout.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        wait_for(timeout, || self.queue_json().is_ok_and(|q| q.is_empty()))
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends one message over SMTP; Ok(queue id) on 250, Err(reply) otherwise.
    pub fn send(&self, from: &str, to: &[&str], message: &[u8]) -> Result<String, String> {
        let mut c = Client::connect(self.addr());
        c.expect(220);
        c.expect_cmd("EHLO client.test", 250);
        let r = c.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return Err(r);
        }
        for t in to {
            let r = c.cmd(&format!("RCPT TO:<{t}>"));
            if !r.starts_with("250") {
                return Err(r);
            }
        }
        c.expect_cmd("DATA", 354);
        c.write(&dot_stuff(message));
        let r = c.read_reply();
        let _ = c.cmd("QUIT");
        match r.strip_prefix("250 2.0.0 Ok: queued as ") {
            Some(id) => Ok(id.trim().to_string()),
            None => Err(r),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Transparency for a CRLF message, plus the terminator.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A raw SMTP client for tests.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::connect_from(None, addr)
    }

    /// Connects from a chosen local address (e.g. 127.0.0.2 for an untrusted peer).
    pub fn connect_from(local: Option<std::net::IpAddr>, addr: SocketAddr) -> Client {
        let stream = match local {
            None => TcpStream::connect(addr).expect("connect"),
            Some(ip) => socket2_connect(ip, addr),
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Reads one (possibly multi-line) reply, lines joined with '\n'.
    pub fn read_reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            let done = line.as_bytes().get(3) != Some(&b'-');
            all.push_str(line.trim_end());
            if done {
                return all;
            }
            all.push('\n');
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.write(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    pub fn expect(&mut self, code: u16) -> String {
        let r = self.read_reply();
        assert!(
            r.starts_with(&code.to_string()),
            "expected {code}, got {r:?}"
        );
        r
    }

    pub fn expect_cmd(&mut self, line: &str, code: u16) -> String {
        let r = self.cmd(line);
        assert!(
            r.starts_with(&code.to_string()),
            "{line}: expected {code}, got {r:?}"
        );
        r
    }

    /// True once the server has closed the connection (or reset it: a server
    /// that closes with our bytes unread sends RST instead of FIN).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Writes `bytes` unless the server has already answered or hung up (a
    /// probe whose earlier bytes made it refuse and close); true if written.
    pub fn write_unless_answered(&mut self, bytes: &[u8]) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let mut peek = [0u8; 1];
        let _ = self.writer.set_nonblocking(true);
        let waiting = self.writer.peek(&mut peek);
        let _ = self.writer.set_nonblocking(false);
        match waiting {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.writer.write_all(bytes).is_ok()
            }
            _ => false,
        }
    }
}

fn socket2_connect(local: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    // std cannot bind before connect; a tiny tokio runtime can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sock = match local {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        sock.bind(SocketAddr::new(local, 0)).expect("bind local");
        let s = sock.connect(addr).await.expect("connect");
        s.into_std().expect("into std")
    })
    .tap_blocking()
}

trait TapBlocking {
    fn tap_blocking(self) -> Self;
}

impl TapBlocking for TcpStream {
    // tokio hands back a non-blocking socket; the tests use blocking I/O.
    fn tap_blocking(self) -> Self {
        self.set_nonblocking(false).expect("blocking");
        self
    }
}

/// Messages the capture route wrote to `dir`, as (envelope json, message bytes).
pub fn captured(dir: &Path) -> Vec<(serde_json::Value, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    for eml in names {
        let json = eml.with_extension("json");
        let (Ok(meta), Ok(body)) = (std::fs::read(&json), std::fs::read(&eml)) else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice(&meta) {
            out.push((v, body));
        }
    }
    out
}

/// After [`Relay::sentinel`] returned `sentinel`: the sentinel is the one
/// message the relay queued (its only `from=<` line) and the one the capture
/// directory `dir` holds.
#[track_caller]
pub fn assert_only_sentinel(relay: &Relay, dir: &Path, sentinel: &str) {
    let log = relay.log();
    assert_eq!(
        log.matches("from=<").count(),
        1,
        "something besides the sentinel was queued:\n{log}"
    );
    assert!(
        log.contains(&format!("{sentinel}: from=<{SENTINEL_FROM}>")),
        "{log}"
    );
    let got = captured(dir);
    let ids: Vec<&serde_json::Value> = got.iter().map(|(meta, _)| &meta["queue_id"]).collect();
    assert_eq!(
        ids,
        [sentinel],
        "something besides the sentinel was delivered"
    );
}

/// The message without the first header if it is our Received header.
pub fn strip_received(message: &[u8]) -> &[u8] {
    if !message.starts_with(b"Received:") {
        return message;
    }
    let mut i = 0;
    while let Some(pos) = message[i..].windows(2).position(|w| w == b"\r\n") {
        let next = i + pos + 2;
        match message.get(next) {
            Some(b' ') | Some(b'\t') => i = next,
            _ => return &message[next..],
        }
    }
    message
}

/// The address the daemon bound for `listen = "127.0.0.1:0"`, from its log.
pub fn metrics_addr(relay: &Relay) -> SocketAddr {
    let log = relay.log();
    let start = log
        .rfind("metrics on http://")
        .expect("metrics listener logged")
        + 18;
    let rest = &log[start..];
    rest[..rest.find('/').expect("path")]
        .parse()
        .expect("metrics address")
}

/// One raw HTTP/1.1 exchange: (status, headers in lower case, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The decoded text of a message's first text part, as Python's email
/// package reads it (what mail programs see of a converted message).
pub fn decoded_text(message: &[u8]) -> String {
    let script = "import sys, email\n\
        m = email.message_from_bytes(sys.stdin.buffer.read())\n\
        part = next(p for p in m.walk() if p.get_content_maintype() == 'text')\n\
        sys.stdout.buffer.write(part.get_payload(decode=True))\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "Python could not decode the message");
    String::from_utf8(out.stdout).expect("UTF-8")
}
