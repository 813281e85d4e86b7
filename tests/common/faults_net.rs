//! The network half of the fault matrix (tests/fault_net_*.rs): peers that fail
//! below SMTP, and the assertions every scenario makes.
//!
//! - [`Pki`]: a test CA with a good `localhost` certificate, one for the wrong
//!   name and an expired one, plus the route's password file. Routes trust only
//!   this CA (`ca_file`), so the fault is the only difference between a
//!   scenario and its control.
//! - [`TlsUpstream`]: an SMTP server offering STARTTLS (and AUTH, in clear text
//!   too, as bait) that then shakes hands with one of those certificates, answers
//!   the ClientHello with garbage, or hangs up. It records the commands before
//!   and after TLS, how the handshake ended on its side, and what was delivered.
//! - [`DnsServer`]: a UDP name server answering SERVFAIL, NXDOMAIN or A/AAAA
//!   records, written in DNS wire format by hand (test code only: the relay
//!   resolves with hickory), recording every question.
//! - The relay's side: its status lines parsed into fields ([`status_lines`]),
//!   the message as `smarthost queue find --json` shows it ([`queue_find`]).
//!
//! Every server listens on 127.0.0.1 on a port of its own and stops all its
//! threads when dropped. Include it with
//! `#[path = "common/faults_net.rs"] mod faults_net;` beside `mod common;`.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{wait_for, Relay};

/// The relay's settings shared by every scenario: a retry every second (a fault
/// shows as a run of deferrals, never a bounce, within the test), and short
/// upstream timeouts, which no scenario here ever waits out.
pub const RELAY_BASE: &str = r#"retry = "F,1h,1s"
[timeouts]
connect = "10s"
greeting = "10s"
upstream_command = "10s"
upstream_data = "10s"
idle = "1s"
"#;

/// How long a test waits for something the relay does within a second or two
/// when the machine is idle.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const SENDER: &str = "alice@src.test";
/// The route's account on the TLS peers, and its password: neither may ever
/// reach a server before TLS is up.
pub const USER: &str = "relay@src.test";
pub const PASSWORD: &str = "fault-net-Pa55word-9317";

/// A short CRLF message with a recognisable header.
pub fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: Alice <{SENDER}>\r\nTo: bob@dst.test\r\nSubject: fault {tag}\r\n\
         Message-ID: <{tag}@src.test>\r\n\r\nBody of {tag}.\r\n"
    )
    .into_bytes()
}

/// Starts the relay with [`RELAY_BASE`] and `body` (routes, routing, `[dns]`).
/// The port the harness picked was free a moment ago; if another test took
/// it meanwhile, the relay is started again on another one.
pub fn start_relay(body: &str) -> Relay {
    Relay::start(&format!("{RELAY_BASE}{body}"))
}

/// Sends [`message`]`(tag)` from [`SENDER`] to `rcpts`; its queue id.
pub fn send(relay: &Relay, rcpts: &[&str], tag: &str) -> String {
    relay
        .send(SENDER, rcpts, &message(tag))
        .unwrap_or_else(|r| panic!("not accepted: {r}"))
}

// ---------------------------------------------------------------------------
// The relay's side

/// One `<id>: to=<...> relay=... delay=... route=... attempts=N status=...
/// (reason)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub to: String,
    pub relay: String,
    pub route: String,
    pub attempts: u32,
    pub status: String,
    pub reason: String,
    /// The whole log line, for messages.
    pub line: String,
}

impl StatusLine {
    fn parse(id: &str, line: &str) -> Option<StatusLine> {
        let rest = &line[line.find(&format!("{id}: to=<"))? + id.len() + 6..];
        let (to, rest) = rest.split_once("> relay=")?;
        let (relay, rest) = rest.split_once(" delay=")?;
        let (delay_route, rest) = rest.split_once(" attempts=")?;
        let (_, route) = delay_route.split_once(" route=")?;
        let (attempts, rest) = rest.split_once(" status=")?;
        let (status, rest) = rest.split_once(" (")?;
        Some(StatusLine {
            to: to.to_string(),
            relay: relay.to_string(),
            route: route.to_string(),
            attempts: attempts.parse().ok()?,
            status: status.to_string(),
            reason: rest.strip_suffix(')')?.to_string(),
            line: line.to_string(),
        })
    }
}

/// The status lines logged so far for message `id`, in order.
pub fn status_lines(relay: &Relay, id: &str) -> Vec<StatusLine> {
    relay
        .log()
        .lines()
        .filter_map(|l| StatusLine::parse(id, l))
        .collect()
}

/// Waits until `id` has `n` status lines for `rcpt` (failing early if one is
/// final); returns that recipient's lines.
pub fn wait_status(relay: &Relay, id: &str, rcpt: &str, n: usize) -> Vec<StatusLine> {
    let mine = || -> Vec<StatusLine> {
        status_lines(relay, id)
            .into_iter()
            .filter(|s| s.to == rcpt)
            .collect()
    };
    // A final status ends the wait early: no more lines will come.
    wait_for(PATIENCE, || {
        let lines = mine();
        lines.len() >= n || lines.iter().any(|l| l.status != "deferred")
    });
    let lines = mine();
    assert!(
        lines.len() >= n,
        "{n} status line(s) for {id} to <{rcpt}> expected; log:\n{}",
        relay.log()
    );
    lines
}

/// Waits until `id` is logged as sent to `rcpt`; returns that recipient's lines,
/// the last one the `sent`.
pub fn wait_sent(relay: &Relay, id: &str, rcpt: &str) -> Vec<StatusLine> {
    let mine = || -> Vec<StatusLine> {
        status_lines(relay, id)
            .into_iter()
            .filter(|s| s.to == rcpt)
            .collect()
    };
    wait_for(PATIENCE, || mine().iter().any(|l| l.status == "sent"));
    let lines = mine();
    assert!(
        lines.last().is_some_and(|l| l.status == "sent"),
        "{id} to <{rcpt}> should end sent; log:\n{}",
        relay.log()
    );
    lines
}

/// The route every scenario's faulty smarthost is on.
pub const ROUTE: &str = "up";

/// Asserts the first `n` lines are deferrals numbered 1..=n on [`ROUTE`],
/// through `relay_name`, for `reason`.
pub fn assert_deferred(lines: &[StatusLine], n: usize, relay_name: &str, reason: &str) {
    assert_deferred_for(lines, n, relay_name, |r| r == reason);
}

/// [`assert_deferred`] for a reason that varies (a time in it): `reason` judges.
pub fn assert_deferred_for(
    lines: &[StatusLine],
    n: usize,
    relay_name: &str,
    reason: impl Fn(&str) -> bool,
) {
    assert!(lines.len() >= n, "{lines:#?}");
    for (i, l) in lines.iter().take(n).enumerate() {
        assert_eq!(
            (
                l.attempts,
                l.status.as_str(),
                l.relay.as_str(),
                l.route.as_str()
            ),
            (i as u32 + 1, "deferred", relay_name, ROUTE),
            "{}",
            l.line
        );
        assert!(reason(&l.reason), "unexpected reason: {}", l.line);
    }
}

/// The relay's side of every fault here: message `id` to `rcpt` was deferred
/// at its first two attempts through `relay_name` for a reason `reason`
/// accepts (log), and is still queued with `rcpt` deferred, its last error
/// such a reason (`queue find`); nothing bounced.
pub fn assert_fault_deferred(
    relay: &Relay,
    id: &str,
    rcpt: &str,
    relay_name: &str,
    reason: impl Fn(&str) -> bool,
) {
    let lines = wait_status(relay, id, rcpt, 2);
    assert_deferred_for(&lines, 2, relay_name, &reason);
    let found = queue_find(relay, id);
    let r = recipient(&found, rcpt);
    assert_eq!(
        (&r["state"], &r["relay"]),
        (&"deferred".into(), &relay_name.into()),
        "{found}"
    );
    assert!(r["attempts"].as_u64() >= Some(2), "{found}");
    assert!(
        reason(r["last_error"].as_str().unwrap_or_default()),
        "{found}"
    );
    assert_not_bounced(relay, id);
}

/// Asserts the relay neither bounced anything nor sent a DSN, and kept `id`.
pub fn assert_not_bounced(relay: &Relay, id: &str) {
    let log = relay.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("non-delivery notification"), "{log}");
    assert!(!log.contains(&format!("{id}: removed")), "{log}");
}

/// `smarthost queue find <id> --json`: the queued message (its envelope, each
/// recipient's `state`, `attempts`, `last_error` and `relay`), or once it has
/// left the queue its history record (`outcome`, each recipient's `state`,
/// `relay` and `reply`).
pub fn queue_find(relay: &Relay, id: &str) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg("queue")
        .arg("--config")
        .arg(&relay.config_path)
        .args(["find", id, "--json"])
        .env_remove("SMARTHOST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smarthost queue find");
    let finished = wait_for(PATIENCE, || matches!(child.try_wait(), Ok(Some(_))));
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!("smarthost queue find {id} did not finish");
    }
    let out = child.wait_with_output().expect("queue find output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "queue find {id}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The recipient `address` of a [`queue_find`] answer.
pub fn recipient<'a>(found: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    found["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("no recipient {address} in {found}"))
}

/// A port on 127.0.0.1 that is bound but not listened on: connecting to it is
/// refused, and no other test (nor a client's own source port) can take it
/// until it comes alive with [`DeadPort::listen`].
pub struct DeadPort {
    socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        for _ in 0..100 {
            // Below the ephemeral range, like every port the harness picks.
            let port = crate::common::free_port();
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            if socket
                .bind(SocketAddr::from(([127, 0, 0, 1], port)))
                .is_ok()
            {
                return DeadPort { socket, port };
            }
        }
        panic!("no port to hold on 127.0.0.1");
    }

    /// Starts listening: connections to the port are accepted from now on.
    pub fn listen(self) -> TcpListener {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async { self.socket.listen(128)?.into_std() })
            .expect("listen on the held port")
    }
}

/// Asserts `text` holds neither the password nor its AUTH PLAIN or LOGIN forms.
pub fn assert_no_password(text: &str) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for form in [
        PASSWORD.to_string(),
        b64(PASSWORD),
        b64(&format!("\0{USER}\0{PASSWORD}")),
    ] {
        assert!(!text.contains(&form), "password form {form:?} in:\n{text}");
    }
}

/// The name the DNS scenarios give their smarthost.
pub const SMARTHOST: &str = "smarthost.fault.test";

/// A relay config whose default route `up` goes to `hosts` on `port` in clear
/// text (loopback addresses only, whatever the names say), asking `dns` for
/// names if given, else the system resolver.
pub fn plain_route_config(hosts: &[&str], port: u16, dns: Option<&DnsServer>) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let dns = dns.map_or(String::new(), |d| {
        format!("[dns]\nnameservers = [\"{}\"]\n", d.address())
    });
    format!(
        "[[route]]\nname = \"up\"\nhosts = [{}]\nport = {port}\ntls = \"none\"\n\
         allow_plaintext = true\n[routing]\ndefault = \"up\"\n{dns}",
        hosts.join(", "),
    )
}

// ---------------------------------------------------------------------------
// Certificates

/// Which certificate a [`TlsUpstream`] presents. All are signed by the test CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    /// For `localhost` and `127.0.0.1`, valid now: the control.
    Good,
    /// For `mail.wrong.test` only.
    WrongName,
    /// For `localhost`, valid in 2020 only.
    Expired,
}

/// The test CA (`ca.pem`, the routes' `ca_file`), its certificates, and the
/// route's password file (`pw`, mode 0600), in a temporary directory that
/// exists before the relay reads its config.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "smarthost fault-net test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("CA cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        let pki = Pki { dir, ca, ca_key };
        pki.password_file();
        pki
    }

    fn password_file(&self) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.password_path();
        std::fs::write(&p, format!("{PASSWORD}\n")).expect("write pw");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod pw");
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn password_path(&self) -> PathBuf {
        self.dir.path().join("pw")
    }

    /// A `[[route]]` named `name` to `localhost:port` over STARTTLS, trusting
    /// only the test CA and authenticating with PLAIN as [`USER`].
    pub fn starttls_route(&self, name: &str, port: u16) -> String {
        self.starttls_route_to(name, "localhost", port)
    }

    /// A relay whose default route `up` is [`Pki::starttls_route`] to `port`.
    pub fn starttls_relay(&self, port: u16) -> Relay {
        start_relay(&format!(
            "{}[routing]\ndefault = \"up\"\n",
            self.starttls_route("up", port)
        ))
    }

    /// [`Pki::starttls_route`] to `host` instead of `localhost`.
    pub fn starttls_route_to(&self, name: &str, host: &str, port: u16) -> String {
        format!(
            "[[route]]\nname = \"{name}\"\nhost = \"{host}\"\nport = {port}\ntls = \"starttls\"\n\
             ca_file = \"{}\"\nauth = \"plain\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
            self.ca_path().display(),
            self.password_path().display()
        )
    }

    /// The server settings presenting `cert` (and the chain up to the CA).
    pub fn server_config(&self, cert: Cert) -> Arc<rustls::ServerConfig> {
        use rcgen::{
            date_time_ymd, CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair,
            KeyUsagePurpose,
        };
        let names = match cert {
            Cert::Good => vec!["localhost".to_string(), "127.0.0.1".to_string()],
            Cert::WrongName => vec!["mail.wrong.test".to_string()],
            Cert::Expired => vec!["localhost".to_string()],
        };
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if cert == Cert::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let leaf = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("leaf cert");
        let chain = vec![leaf.der().clone(), self.ca.der().clone()];
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("leaf key der");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        Arc::new(config)
    }
}

/// A certificate fault and its control: the default route `up` goes to a
/// [`TlsUpstream`] presenting the faulty certificate, the route `control` (for
/// sender `control@src.test`) to one presenting the good one; both trust the
/// same CA and log in the same way. One message is sent through each.
pub struct CertScenario {
    pub faulty: TlsUpstream,
    pub good: TlsUpstream,
    pub relay: Relay,
    /// The message through the faulty route, to `bob@dst.test`.
    pub id: String,
    /// The message through the control route, to `bob@dst.test`.
    pub control: String,
    _pki: Pki,
}

impl CertScenario {
    pub fn start(cert: Cert, tag: &str) -> CertScenario {
        let pki = Pki::new();
        let faulty = TlsUpstream::start(AfterStartTls::Handshake(pki.server_config(cert)));
        let good = TlsUpstream::start(AfterStartTls::Handshake(pki.server_config(Cert::Good)));
        let relay = start_relay(&format!(
            "{}{}[routing]\ndefault = \"up\"\n[routing.senders]\n\"control@src.test\" = \"control\"\n",
            pki.starttls_route("up", faulty.port()),
            pki.starttls_route("control", good.port()),
        ));
        let id = relay
            .send(SENDER, &["bob@dst.test"], &message(tag))
            .expect("accepted");
        let control = relay
            .send("control@src.test", &["bob@dst.test"], &message("control"))
            .expect("accepted");
        CertScenario {
            faulty,
            good,
            relay,
            id,
            control,
            _pki: pki,
        }
    }

    /// The faulty upstream as the log names it.
    pub fn relay_name(&self) -> String {
        format!("localhost[127.0.0.1]:{}", self.faulty.port())
    }

    /// [`assert_fault_deferred`] for the message through the faulty route.
    pub fn assert_deferred(&self, reason: impl Fn(&str) -> bool) {
        assert_fault_deferred(
            &self.relay,
            &self.id,
            "bob@dst.test",
            &self.relay_name(),
            reason,
        );
    }

    /// The control message went out on the first attempt, over TLS, after AUTH.
    pub fn assert_control_delivered(&self) {
        let ok = wait_status(&self.relay, &self.control, "bob@dst.test", 1);
        assert_eq!(
            (
                ok[0].status.as_str(),
                ok[0].attempts,
                ok[0].relay.clone(),
                ok[0].route.as_str()
            ),
            (
                "sent",
                1,
                format!("localhost[127.0.0.1]:{}", self.good.port()),
                "control"
            ),
            "{}",
            ok[0].line
        );
        let delivered = self.good.delivered();
        assert_eq!(delivered.len(), 1, "{}", self.good.dump());
        assert_eq!(
            (delivered[0].from.as_str(), delivered[0].rcpts.clone()),
            ("control@src.test", vec!["bob@dst.test".to_string()])
        );
        let conns = self.good.connections();
        assert_eq!(conns[0].handshake, Handshake::Done, "{}", self.good.dump());
        assert_eq!(conns[0].clear, ["EHLO relay.test", "STARTTLS"]);
        assert!(
            conns[0].secure[1].starts_with("AUTH PLAIN "),
            "{}",
            self.good.dump()
        );
    }
}

// ---------------------------------------------------------------------------
// A stoppable server: an accept loop and a thread per connection

struct Threads {
    stop: AtomicBool,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    fn new() -> Arc<Threads> {
        Arc::new(Threads {
            stop: AtomicBool::new(false),
            handles: Mutex::new(Vec::new()),
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        let h = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .expect("spawn server thread");
        lock(&self.handles).push(h);
    }

    /// Stops and joins every thread; `first` (the acceptor) before the rest, so
    /// no connection thread is added meanwhile.
    fn stop(&self, first: Option<JoinHandle<()>>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = first {
            let _ = a.join();
        }
        let handles: Vec<JoinHandle<()>> = lock(&self.handles).drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls `each(stream)` on a thread of its own for every connection accepted
/// on `listener` until `threads` stops.
fn accept_loop(
    threads: Arc<Threads>,
    listener: TcpListener,
    each: impl Fn(TcpStream) + Send + Sync + 'static,
) -> JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let each = Arc::new(each);
    std::thread::Builder::new()
        .name("fault-net-accept".into())
        .spawn(move || {
            let mut n = 0;
            while !threads.stopped() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let each = each.clone();
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_nodelay(true);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                        n += 1;
                        threads.spawn(&format!("fault-net-conn-{n}"), move || each(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .expect("spawn acceptor")
}

fn retryable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Lines from a stream whose reads time out regularly, so the stop flag is seen.
struct Lines<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Lines<S> {
    fn new(stream: S) -> Self {
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes; false on EOF, error or stop.
    fn fill(&mut self, threads: &Threads) -> bool {
        let mut chunk = [0u8; 8192];
        while !threads.stopped() {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if retryable(&e) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The next line without its CRLF.
    fn line(&mut self, threads: &Threads) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&raw);
                return Some(text.trim_end_matches(['\r', '\n']).to_string());
            }
            if !self.fill(threads) {
                return None;
            }
        }
    }

    /// Sends a reply; lines separated by `\n`.
    fn reply(&mut self, text: &str) -> bool {
        let wire: String = text.split('\n').map(|l| format!("{l}\r\n")).collect();
        self.stream
            .write_all(wire.as_bytes())
            .and_then(|_| self.stream.flush())
            .is_ok()
    }
}

// ---------------------------------------------------------------------------
// The STARTTLS upstream

/// What the server does once it has said `220` to STARTTLS.
#[derive(Clone)]
pub enum AfterStartTls {
    /// A real handshake with these settings (see [`Pki::server_config`]).
    Handshake(Arc<rustls::ServerConfig>),
    /// Reads the ClientHello and answers with a line of text.
    Garbage,
    /// Reads the ClientHello and closes the connection.
    Abort,
}

/// How the TLS handshake ended, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The client never sent STARTTLS.
    NotTried,
    Done,
    /// Garbage sent or connection closed on purpose.
    Sabotaged,
    /// The handshake failed: rustls's words, e.g. the client's alert.
    Failed(String),
}

/// One connection to a [`TlsUpstream`].
#[derive(Debug, Clone)]
pub struct TlsConn {
    /// Command lines received before TLS.
    pub clear: Vec<String>,
    pub handshake: Handshake,
    /// Command lines received over TLS (AUTH included: test secrets only).
    pub secure: Vec<String>,
    /// The connection is over.
    pub closed: bool,
}

/// A message accepted over TLS.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct TlsRecord {
    conns: Vec<TlsConn>,
    delivered: Vec<Delivered>,
}

pub struct TlsUpstream {
    threads: Arc<Threads>,
    record: Arc<Mutex<TlsRecord>>,
    port: u16,
    acceptor: Option<JoinHandle<()>>,
}

/// The EHLO reply before TLS: STARTTLS, and AUTH offered in clear text as bait.
const EHLO_CLEAR: &str = "250-tls.test\n250-STARTTLS\n250-AUTH PLAIN LOGIN\n250 8BITMIME";
const EHLO_TLS: &str = "250-tls.test\n250-AUTH PLAIN LOGIN\n250 8BITMIME";

impl TlsUpstream {
    /// On a port of its own.
    pub fn start(after: AfterStartTls) -> TlsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS upstream");
        Self::start_on(listener, after)
    }

    /// On `listener`'s port (see [`DeadPort::listen`]).
    pub fn start_on(listener: TcpListener, after: AfterStartTls) -> TlsUpstream {
        let port = listener.local_addr().expect("local addr").port();
        let threads = Threads::new();
        let record = Arc::new(Mutex::new(TlsRecord::default()));
        let (t, r) = (threads.clone(), record.clone());
        let acceptor = accept_loop(threads.clone(), listener, move |stream| {
            let i = {
                let mut r = lock(&r);
                r.conns.push(TlsConn {
                    clear: Vec::new(),
                    handshake: Handshake::NotTried,
                    secure: Vec::new(),
                    closed: false,
                });
                r.conns.len() - 1
            };
            tls_session(&t, &r, &after, stream, i);
            lock(&r).conns[i].closed = true;
        });
        TlsUpstream {
            threads,
            record,
            port,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn connections(&self) -> Vec<TlsConn> {
        lock(&self.record).conns.clone()
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.record).delivered.clone()
    }

    /// Everything recorded, for assertion messages.
    pub fn dump(&self) -> String {
        let r = lock(&self.record);
        let mut out = String::new();
        for (i, c) in r.conns.iter().enumerate() {
            out.push_str(&format!(
                "conn {i} (closed={}): clear={:?} handshake={:?} secure={:?}\n",
                c.closed, c.clear, c.handshake, c.secure
            ));
        }
        for d in &r.delivered {
            out.push_str(&format!(
                "delivered: from=<{}> rcpts={:?} {} bytes\n",
                d.from,
                d.rcpts,
                d.data.len()
            ));
        }
        out
    }

    /// Asserts every finished connection went EHLO, STARTTLS and no further,
    /// its handshake ending as `handshake` says, and that no connection (one
    /// of a retry may be under way) sent anything over TLS or any password,
    /// and nothing was delivered.
    pub fn assert_stopped_at_starttls(&self, handshake: impl Fn(&Handshake) -> bool) {
        const CLEAR: [&str; 2] = ["EHLO relay.test", "STARTTLS"];
        let conns = self.connections();
        assert!(conns.iter().any(|c| c.closed), "{}", self.dump());
        for c in &conns {
            if c.closed {
                assert_eq!(c.clear, CLEAR, "{}", self.dump());
                assert!(handshake(&c.handshake), "{}", self.dump());
            } else {
                assert!(CLEAR[..c.clear.len().min(2)] == c.clear, "{}", self.dump());
            }
            assert!(c.secure.is_empty(), "{}", self.dump());
        }
        assert_no_password(&self.dump());
        assert!(self.delivered().is_empty(), "{}", self.dump());
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.threads.stop(self.acceptor.take());
    }
}

fn tls_session(
    threads: &Threads,
    record: &Mutex<TlsRecord>,
    after: &AfterStartTls,
    stream: TcpStream,
    conn: usize,
) {
    let mut clear = Lines::new(stream);
    if !until_starttls(threads, record, &mut clear, conn) {
        return;
    }
    let Lines {
        stream: mut tcp, ..
    } = clear;
    let outcome = match after {
        AfterStartTls::Garbage | AfterStartTls::Abort => {
            sabotage(threads, after, &mut tcp);
            lock(record).conns[conn].handshake = Handshake::Sabotaged;
            return;
        }
        AfterStartTls::Handshake(config) => handshake(threads, config.clone(), &mut tcp),
    };
    let tls = match outcome {
        Ok(tls) => tls,
        Err(e) => {
            lock(record).conns[conn].handshake = Handshake::Failed(e);
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
    };
    lock(record).conns[conn].handshake = Handshake::Done;
    let mut secure = Lines::new(rustls::StreamOwned::new(tls, tcp));
    smtp_over_tls(threads, record, conn, &mut secure);
}

/// The clear-text dialogue up to an accepted STARTTLS; false when the
/// connection ended before that.
fn until_starttls(
    threads: &Threads,
    record: &Mutex<TlsRecord>,
    clear: &mut Lines<TcpStream>,
    conn: usize,
) -> bool {
    if !clear.reply("220 tls.test ESMTP ready") {
        return false;
    }
    loop {
        let Some(line) = clear.line(threads) else {
            return false;
        };
        lock(record).conns[conn].clear.push(line.clone());
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => EHLO_CLEAR,
            "STARTTLS" => "220 2.0.0 Ready to start TLS",
            "QUIT" => {
                clear.reply("221 2.0.0 Bye");
                return false;
            }
            _ => "530 5.7.0 Must issue a STARTTLS command first",
        };
        if !clear.reply(answer) {
            return false;
        }
        if verb == "STARTTLS" {
            return true;
        }
    }
}

/// Answers the ClientHello with garbage or a clean close, as `after` says,
/// then waits for the relay to close.
fn sabotage(threads: &Threads, after: &AfterStartTls, tcp: &mut TcpStream) {
    // The ClientHello first, so the relay is in its handshake.
    let mut hello = [0u8; 4096];
    let got = loop {
        match tcp.read(&mut hello) {
            Err(e) if retryable(&e) && !threads.stopped() => continue,
            other => break other,
        }
    };
    if matches!(got, Ok(n) if n > 0) {
        match after {
            AfterStartTls::Garbage => {
                let _ = tcp.write_all(b"this is not TLS at all\r\n");
                let _ = tcp.flush();
            }
            // A clean end of stream (FIN), never a reset.
            _ => {
                let _ = tcp.shutdown(Shutdown::Write);
            }
        }
        // Until the relay gives up and closes.
        let mut sink = Lines::new(&mut *tcp);
        while sink.fill(threads) {
            sink.buf.clear();
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
}

/// The server side of the handshake; the error is rustls's (an alert from the
/// client reads "received fatal alert: ...").
fn handshake(
    threads: &Threads,
    config: Arc<rustls::ServerConfig>,
    tcp: &mut TcpStream,
) -> Result<rustls::ServerConnection, String> {
    let mut tls = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let end = Instant::now() + PATIENCE;
    while tls.is_handshaking() {
        if threads.stopped() || Instant::now() > end {
            return Err("the server gave up waiting".into());
        }
        match tls.complete_io(tcp) {
            Ok(_) => {}
            Err(e) if retryable(&e) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(tls)
}

/// A well-behaved server after TLS: AUTH accepted, every message taken.
fn smtp_over_tls<S: Read + Write>(
    threads: &Threads,
    record: &Mutex<TlsRecord>,
    conn: usize,
    s: &mut Lines<S>,
) {
    let mut from = String::new();
    let mut rcpts = Vec::new();
    while let Some(line) = s.line(threads) {
        lock(record).conns[conn].secure.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or_default().to_string();
        let answer = match verb.as_str() {
            "EHLO" => EHLO_TLS,
            "AUTH" => "235 2.7.0 Authentication successful",
            "MAIL" => {
                from = path_of(&line);
                rcpts.clear();
                "250 2.1.0 Ok"
            }
            "RCPT" => {
                rcpts.push(path_of(&line));
                "250 2.1.5 Ok"
            }
            "DATA" => {
                if !s.reply("354 End data with <CR><LF>.<CR><LF>") {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let Some(l) = s.line(threads) else { return };
                    if l == "." {
                        break;
                    }
                    let l = l.strip_prefix('.').unwrap_or(&l);
                    data.extend_from_slice(l.as_bytes());
                    data.extend_from_slice(b"\r\n");
                }
                lock(record).delivered.push(Delivered {
                    from: from.clone(),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                });
                "250 2.0.0 Ok: queued as TLSUP"
            }
            "RSET" | "NOOP" => "250 2.0.0 Ok",
            "QUIT" => {
                s.reply("221 2.0.0 Bye");
                return;
            }
            _ => "502 5.5.2 Error: command not recognized",
        };
        if !s.reply(answer) {
            return;
        }
    }
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn path_of(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_string()
}

// ---------------------------------------------------------------------------
// The name server

/// What the [`DnsServer`] says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// RCODE 2.
    ServFail,
    /// RCODE 3: the name does not exist.
    NxDomain,
    /// These addresses, in this order: A queries get the IPv4 ones, AAAA the
    /// IPv6 ones (NOERROR with no answer when there are none).
    Addresses(Vec<IpAddr>),
}

/// One question the server was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower-cased, without the final dot.
    pub name: String,
    /// "A", "AAAA" or the type number.
    pub qtype: String,
}

type Answers = Arc<dyn Fn(&str) -> DnsAnswer + Send + Sync>;

/// A UDP name server on 127.0.0.1 answering from a closure of the name.
pub struct DnsServer {
    threads: Arc<Threads>,
    answers: Arc<Mutex<Answers>>,
    questions: Arc<Mutex<Vec<Question>>>,
    addr: SocketAddr,
    worker: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(answers: impl Fn(&str) -> DnsAnswer + Send + Sync + 'static) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("local addr");
        let threads = Threads::new();
        let answers: Arc<Mutex<Answers>> = Arc::new(Mutex::new(Arc::new(answers)));
        let questions = Arc::new(Mutex::new(Vec::new()));
        let (t, a, q) = (threads.clone(), answers.clone(), questions.clone());
        let worker = std::thread::Builder::new()
            .name("fault-net-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !t.stopped() {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some((question, end)) = parse_question(&buf[..n]) else {
                        continue;
                    };
                    lock(&q).push(question.clone());
                    let answer = (lock(&a).clone())(&question.name);
                    let reply = dns_reply(&buf[..end], &question, &answer);
                    let _ = socket.send_to(&reply, peer);
                }
            })
            .expect("spawn DNS server");
        DnsServer {
            threads,
            answers,
            questions,
            addr,
            worker: Some(worker),
        }
    }

    /// `"127.0.0.1:<port>"`, for `[dns] nameservers`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Answers from now on with `answers`.
    pub fn set_answers(&self, answers: impl Fn(&str) -> DnsAnswer + Send + Sync + 'static) {
        *lock(&self.answers) = Arc::new(answers);
    }

    pub fn questions(&self) -> Vec<Question> {
        lock(&self.questions).clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.threads.stop(self.worker.take());
    }
}

/// The question of a query, and where it ends (RFC 1035 4.1.1, 4.1.2).
fn parse_question(msg: &[u8]) -> Option<(Question, usize)> {
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if msg.len() < 12 || msg[2] & 0x80 != 0 || qdcount != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let end = i + 4;
    msg.get(..end)?;
    let qtype = match qtype {
        1 => "A".to_string(),
        28 => "AAAA".to_string(),
        n => n.to_string(),
    };
    Some((
        Question {
            name: labels.join("."),
            qtype,
        },
        end,
    ))
}

/// The response to `query` (its header and question, `query[..end]`).
fn dns_reply(query: &[u8], question: &Question, answer: &DnsAnswer) -> Vec<u8> {
    let (rcode, records): (u8, Vec<Vec<u8>>) = match answer {
        DnsAnswer::ServFail => (2, Vec::new()),
        DnsAnswer::NxDomain => (3, Vec::new()),
        DnsAnswer::Addresses(ips) => (
            0,
            ips.iter()
                .filter_map(|ip| match (ip, question.qtype.as_str()) {
                    (IpAddr::V4(v4), "A") => Some(v4.octets().to_vec()),
                    (IpAddr::V6(v6), "AAAA") => Some(v6.octets().to_vec()),
                    _ => None,
                })
                .collect(),
        ),
    };
    let mut out = query.to_vec();
    // QR, the query's opcode and RD, RA; the RCODE.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x80 | rcode;
    out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    out[8..12].fill(0);
    let rtype: u16 = if question.qtype == "A" { 1 } else { 28 };
    for rdata in records {
        out.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&60u32.to_be_bytes()); // TTL
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}
