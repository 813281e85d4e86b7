//! Power cuts: the relay's queue, its drop directory and its OAuth state live
//! on cutfs (tests/common/cutfs.rs), a FUSE filesystem that keeps only what was
//! synced. Under mixed load (SMTP sessions, `sendmail` through the socket and,
//! while the daemon is down, into the drop directory, deliveries that are
//! accepted, deferred with long replies or refused, the DSNs for those, and
//! `queue delete` / `queue bounce`), the relay is SIGKILLed, the filesystem is
//! cut (alternately in mode (a), every unsynced byte lost, and mode (b), a
//! journaling filesystem's reordering and torn pages), mounted again and the
//! relay restarted, over and over.
//!
//! The oracle, once the last start has drained the queue: every acknowledged
//! message (a `250`, a `sendmail` exit 0) reached every recipient the upstream
//! accepts and got a DSN for every one it refuses, unless an acknowledged
//! `queue delete` or `queue bounce` removed it; no DSN names a recipient that
//! was delivered to; no acknowledged queue command is undone (a deleted
//! message is never delivered nor bounced, a bounced one is bounced, not
//! delivered); and the relay starts after every cut.
//!
//! `POWER_CUTS` sets the number of cuts (20 by default), `POWER_SEED` the seed
//! (printed by every run: the cuts' choices repeat, thread timing does not),
//! `SMARTHOST_BIN` another relay binary (an older build, to show the test
//! bites). The soak, as in the README:
//!
//!     POWER_CUTS=200 cargo test --release --test power_cut_no_acknowledged_loss -- --nocapture

mod common;
#[path = "common/cutfs.rs"]
mod cutfs;
#[path = "common/scripted.rs"]
mod scripted;
#[path = "common/stream.rs"]
mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cutfs::{CutReport, Mode, Stats};
use scripted::{reply, standard, Action, Cmd, ScriptedServer, Transaction};
use stream::{Record, Rng, Submission, Submit, Submitters};

const SENDER: &str = "cut@src.test";
/// Recipients in a "big" message: an envelope with this many long last
/// replies is far larger than a quarter of one of sled's segments.
const BIG_RCPTS: usize = 100;
const HOLD_RCPTS: usize = 30;
/// Attempts a `soft.` recipient is deferred before it is accepted.
const SOFT_DEFERRALS: usize = 3;
/// Messages queued, above which the SMTP stream pauses.
const MAX_BACKLOG: usize = 300;

fn relay_bin() -> PathBuf {
    std::env::var_os("SMARTHOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_smarthost")))
}

/// A reply of about 500 bytes, as real smarthosts give when they defer.
fn long_reply(code: &str) -> String {
    let mut text = format!(
        "{code} Requested action not taken: mailbox temporarily unavailable, the \
         receiving system is busy; please try again later. Details follow:"
    );
    let mut i = 0;
    while text.len() < 500 {
        text.push_str(&format!(" [reason-{i} greylisted-by-policy]"));
        i += 1;
    }
    text
}

// ---------------------------------------------------------------------------
// What each message asks of the upstream

/// The recipients of a token's message. Their local part says how the
/// upstream answers: `ok.` 250, `bad.` 550, `soft.` 451 (long) for the first
/// [`SOFT_DEFERRALS`] attempts then 250, `hold.` 451 (long) until the final
/// drain, then 250. Each address names the token, so the upstream can count
/// the attempts of each message.
fn recipients(token: &str) -> Vec<String> {
    let seq = seq_of(token);
    let one = |kind: &str| format!("{kind}.{token}@dst.test");
    if token.starts_with("hold-") {
        return (0..HOLD_RCPTS)
            .map(|i| format!("hold.{token}.{i}@dst.test"))
            .collect();
    }
    if token.starts_with("sm-") || token.starts_with("drop-") {
        return match seq % 3 {
            0 => vec![one("ok")],
            1 => vec![one("ok"), one("bad")],
            _ => vec![one("soft")],
        };
    }
    match seq % 16 {
        2 | 10 => vec![one("ok"), one("bad")],
        3 => vec![one("bad")],
        4 | 12 => vec![one("soft"), one("ok")],
        6 => (0..BIG_RCPTS)
            .map(|i| format!("soft.{token}.{i}@dst.test"))
            .collect(),
        _ => vec![one("ok")],
    }
}

/// The number at the end of a token.
fn seq_of(token: &str) -> u64 {
    token
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One message in eight is past the spool's inline bound (64 KiB), so its
/// body goes to a file of its own: both ways of storing a body are cut.
fn message(token: &str, rcpts: &[String]) -> String {
    let filler_lines = if seq_of(token) % 8 == 7 { 5000 } else { 20 };
    format!(
        "From: {SENDER}\r\nTo: undisclosed-recipients:;\r\nSubject: power cut {token} ({} rcpt)\r\n\
         X-Crash-Token: {token}\r\nMessage-ID: <{token}.{}@cut.test>\r\n\r\nbody of {token}\r\n\
         .dot line\r\n{}\r\n",
        rcpts.len(),
        std::process::id(),
        "filler line to give the body some size\r\n".repeat(filler_lines)
    )
}

fn submission(token: &str) -> Submission {
    let rcpts = recipients(token);
    Submission {
        from: SENDER.into(),
        message: message(token, &rcpts),
        rcpts,
    }
}

/// The token of a message, or of the message a DSN returns the header of.
fn token_of(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("X-Crash-Token: ")? + "X-Crash-Token: ".len();
    let end = text[start..].find(['\r', '\n'])?;
    Some(text[start..start + end].to_string())
}

/// The addresses in a DSN's `Final-Recipient: rfc822; ...` fields.
fn final_recipients(dsn: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(dsn)
        .lines()
        .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822;"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// The upstream; `commands` counts every command it answers (a cheap sign
/// of progress).
fn upstream(drain: Arc<AtomicBool>, commands: Arc<AtomicUsize>) -> ScriptedServer {
    ScriptedServer::start(move |ctx, cmd| {
        commands.fetch_add(1, Ordering::SeqCst);
        answer(&drain, ctx, cmd)
    })
}

fn answer(drain: &AtomicBool, ctx: &scripted::Ctx, cmd: &Cmd<'_>) -> Action {
    match cmd {
        Cmd::Rcpt { to, .. } if to.starts_with("bad.") => {
            reply(&format!("550 5.1.1 <{to}>: Recipient address rejected"))
        }
        Cmd::Rcpt { .. } if ctx.from.as_deref() == Some("") => reply("250 2.1.5 Ok"),
        Cmd::Rcpt { to, .. } if to.starts_with("soft.") && ctx.earlier_rcpt < SOFT_DEFERRALS => {
            Action::Reply(long_reply("451 4.2.0"))
        }
        Cmd::Rcpt { to, .. } if to.starts_with("hold.") && !drain.load(Ordering::SeqCst) => {
            Action::Reply(long_reply("451 4.3.0"))
        }
        Cmd::Dot(message) => {
            // Some final dots are answered late, so kills find deliveries in flight.
            let h = message
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            match h % 10 {
                0..=6 => reply("250 2.0.0 Ok: queued"),
                n => Action::DelayedReply(
                    Duration::from_millis(20 * (n - 6)),
                    "250 2.0.0 Ok: queued".into(),
                ),
            }
        }
        _ => standard(cmd),
    }
}

// ---------------------------------------------------------------------------
// The relay process

struct Daemon {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last lines (backtrace frames left out, long lines cut), and
    /// where a copy of the whole log is kept.
    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<String> = log
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with("at ")
                    || t.split_once(": ")
                        .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
            })
            .map(|l| l.chars().take(240).collect())
            .collect();
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("power_cut_relay.log");
        let saved = match std::fs::write(&kept, &log) {
            Ok(()) => format!("(whole log: {})", kept.display()),
            Err(e) => format!("(log not kept: {e})"),
        };
        format!(
            "{}\n{saved}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    fn ready_count(&self) -> usize {
        self.log().matches("smarthost ready").count()
    }

    /// Starts the relay and waits until it is ready; Err(why) if it exits or
    /// is not ready within a minute.
    fn start(&mut self) -> Result<Duration, String> {
        let before = self.ready_count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("SMARTHOST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        loop {
            if self.ready_count() > before {
                return Ok(started.elapsed());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("the relay exited with {status}"));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err("the relay was not ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished command returned.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with `input` on stdin, killed after 60 s.
fn run(mut cmd: Command, input: &[u8]) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: None,
                stdout: String::new(),
                stderr: e.to_string(),
            }
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = writer.join();
    Out {
        code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned(),
    }
}

fn sendmail(bin: &Path, config: &Path, token: &str) -> Out {
    let rcpts = recipients(token);
    let mut cmd = Command::new(bin);
    cmd.arg("sendmail")
        .args(["-f", SENDER, "-i", "--"])
        .args(&rcpts)
        .env("SMARTHOST_CONFIG", config);
    run(cmd, message(token, &rcpts).replace("\r\n", "\n").as_bytes())
}

fn queue_cmd(bin: &Path, config: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin);
    cmd.arg("queue")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SMARTHOST_CONFIG");
    run(cmd, b"")
}

/// How many messages the running daemon has queued (the summary `queue list`
/// ends with); None if it does not answer.
fn queue_size(bin: &Path, config: &Path) -> Option<usize> {
    let out = queue_cmd(bin, config, &["list"]);
    if out.code != Some(0) {
        return None;
    }
    if out.stdout.contains("Mail queue is empty") {
        return Some(0);
    }
    out.stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("-- "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
}

// ---------------------------------------------------------------------------
// Load besides the SMTP submitters

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueAction {
    Delete,
    Bounce,
}

#[derive(Default)]
struct Ledger {
    /// sendmail tokens that exited 0 (through the socket or the drop directory).
    sendmail_acked: BTreeSet<String>,
    /// Tokens that went into the drop directory (sendmail said so).
    dropped: BTreeSet<String>,
    sendmail_failed: usize,
    /// Hold messages: token → queue id, acknowledged over SMTP.
    hold_acked: BTreeMap<String, String>,
    /// Acknowledged queue commands: token → action.
    acted: BTreeMap<String, QueueAction>,
    /// Queue commands cut off or refused other than "daemon down": they may or
    /// may not have happened.
    uncertain: BTreeMap<String, String>,
}

/// A thread doing something now and then while the relay runs, never while
/// the filesystem is being cut (it holds `gate` for reading while it works).
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(
        stop: Arc<AtomicBool>,
        gate: Arc<RwLock<()>>,
        mut step: impl FnMut() + Send + 'static,
        every: Duration,
    ) -> Worker {
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                {
                    let _g = gate.read().unwrap_or_else(|p| p.into_inner());
                    step();
                }
                std::thread::sleep(every);
            }
        });
        Worker {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("worker panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The oracle

#[derive(Default, Debug)]
struct Seen {
    /// Recipients some delivery of the token's message was accepted for, and
    /// how many times.
    delivered: BTreeMap<String, usize>,
    deliveries: usize,
    /// Recipients named by the DSNs about it.
    dsn_named: BTreeSet<String>,
    dsns: usize,
}

fn tally(txs: &[Transaction]) -> (BTreeMap<String, Seen>, Vec<String>) {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut strays = Vec::new();
    for t in txs.iter().filter(|t| t.delivered()) {
        let data = t.data.as_deref().unwrap_or_default();
        let Some(token) = token_of(data) else {
            strays.push(format!("from=<{}> {:?}", t.from, t.rcpt_addresses()));
            continue;
        };
        let s = seen.entry(token).or_default();
        if t.from.is_empty() {
            s.dsns += 1;
            s.dsn_named.extend(final_recipients(data));
        } else {
            s.deliveries += 1;
            for r in t.accepted() {
                *s.delivered.entry(r).or_default() += 1;
            }
        }
    }
    (seen, strays)
}

/// What is wrong with one acknowledged token, if anything.
fn verdict(token: &str, seen: Option<&Seen>, acted: Option<QueueAction>) -> Result<(), String> {
    let empty = Seen::default();
    let s = seen.unwrap_or(&empty);
    let rcpts = recipients(token);
    let wanted: Vec<&String> = rcpts.iter().filter(|r| !r.starts_with("bad.")).collect();
    let refused: Vec<&String> = rcpts.iter().filter(|r| r.starts_with("bad.")).collect();
    if let Some(r) = s.dsn_named.iter().find(|r| s.delivered.contains_key(*r)) {
        return Err(format!("{token}: DSN names {r}, which was delivered"));
    }
    match acted {
        Some(QueueAction::Delete) => {
            if !s.delivered.is_empty() || s.dsns > 0 {
                return Err(format!(
                    "{token}: deleted (acknowledged), yet delivered to {:?} / {} DSN(s)",
                    s.delivered, s.dsns
                ));
            }
        }
        Some(QueueAction::Bounce) => {
            if !s.delivered.is_empty() {
                return Err(format!(
                    "{token}: bounced (acknowledged), yet delivered to {:?}",
                    s.delivered
                ));
            }
            if let Some(r) = wanted.iter().find(|r| !s.dsn_named.contains(**r)) {
                return Err(format!("{token}: bounced (acknowledged), no DSN for {r}"));
            }
        }
        None => {
            let missing: Vec<&&String> = wanted
                .iter()
                .filter(|r| !s.delivered.contains_key(**r))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{token}: not delivered to {} of {} recipient(s), e.g. {}",
                    missing.len(),
                    wanted.len(),
                    missing[0]
                ));
            }
            if let Some(r) = refused.iter().find(|r| !s.dsn_named.contains(**r)) {
                return Err(format!("{token}: refused recipient {r} got no DSN"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn cuts_wanted() -> usize {
    std::env::var("POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn acknowledged_mail_survives_power_cuts() {
    let cuts = cuts_wanted();
    let seed = Rng::seed_from_env("POWER_SEED");
    let bin = relay_bin();
    println!(
        "power cuts: POWER_CUTS={cuts} POWER_SEED={seed:#x} SMARTHOST_BIN={}",
        bin.display()
    );
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut fs) = mount_state_disk(dir.path()) else {
        return;
    };

    let drain = Arc::new(AtomicBool::new(false));
    let commands = Arc::new(AtomicUsize::new(0));
    let server = upstream(drain.clone(), commands.clone());
    let port = common::free_port();
    let config = dir.path().join("smarthost.toml");
    write_config(&config, dir.path(), fs.path(), port, server.port());
    let mut daemon = start_daemon(&bin, &config, dir.path());

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let subs = Submitters::start(addr, 2, Arc::new(submission));
    let load = Load::default();
    let sendmailer = start_sendmailer(&bin, &config, &load);
    let operator = start_operator(&bin, &config, &load, addr, seed);
    let cutting = cut_again_and_again(&mut fs, &mut daemon, &subs, &load, seed, cuts);
    // The load stops; the last start drains everything, holds included.
    std::thread::sleep(Duration::from_millis(300));
    let record = subs.finish();
    sendmailer.finish();
    operator.finish();
    let loop_time = started.elapsed();
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let mut acked: Vec<String> = record.acked.keys().cloned().collect();
    acked.extend(ledger.sendmail_acked.iter().cloned());
    acked.extend(ledger.hold_acked.keys().cloned());
    let mut run = Run {
        seed,
        cuts,
        bin,
        cutting,
        record,
        ledger,
        acked,
        loop_time,
        drain_time: Duration::ZERO,
    };
    if let Some(f) = run.cutting.failure.take() {
        fail_stranded(&run, &server, &f);
    }
    drain.store(true, Ordering::SeqCst);
    let _ = queue_cmd(&run.bin, &config, &["flush"]);
    run.drain_time = wait_drained(&run.bin, &config, &commands);
    let queue_left = queue_cmd(&run.bin, &config, &["list", "--json"]).stdout;
    judge(&run, &server, &fs.stats(), &daemon, &queue_left);
}

/// cutfs mounted on `dir/disk` with the state directories the package
/// installs, long since on disk; None (the test skips) where FUSE is missing.
fn mount_state_disk(dir: &Path) -> Option<cutfs::CutFs> {
    let mnt = dir.join("disk");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let fs = cutfs::mount_or_skip(&mnt, "acknowledged_mail_survives_power_cuts")?;
    for d in ["queue", "drop", "oauth"] {
        std::fs::create_dir(fs.path().join(d)).expect("mkdir on cutfs");
    }
    fs.sync_everything();
    Some(fs)
}

/// The relay `bin` with `config`, its log in `dir`, started and ready.
fn start_daemon(bin: &Path, config: &Path, dir: &Path) -> Daemon {
    let mut daemon = Daemon {
        bin: bin.to_path_buf(),
        config: config.to_path_buf(),
        log: dir.join("relay.log"),
        child: None,
    };
    if let Err(e) = daemon.start() {
        panic!("the relay did not start: {e}\n{}", daemon.log_tail(40));
    }
    daemon
}

/// The relay's configuration: its queue, drop directory and OAuth state on
/// `disk` (cutfs), its socket in `dir`, listening on `port`, delivering to
/// the upstream on `upstream`.
fn write_config(config: &Path, dir: &Path, disk: &Path, port: u16, upstream: u16) {
    std::fs::write(
        config,
        format!(
            r#"hostname = "relay.test"
listen = ["127.0.0.1:{port}"]
queue_path = "{disk}/queue"
retry = "F,10m,1s"
[timeouts]
upstream_command = "5s"
upstream_data = "5s"
greeting = "5s"
connect = "2s"
idle = "1s"
[local]
socket_dir = "{run}"
drop_dir = "{disk}/drop"
[oauth]
state_dir = "{disk}/oauth"
{route}"#,
            disk = disk.display(),
            run = dir.join("run").display(),
            route = common::upstream_route(upstream, "max_connections = 6"),
        ),
    )
    .expect("config");
}

/// What the load threads share with the cut loop.
#[derive(Default)]
struct Load {
    ledger: Arc<Mutex<Ledger>>,
    /// Held for reading while a worker acts, for writing while the
    /// filesystem is cut.
    gate: Arc<RwLock<()>>,
    stop: Arc<AtomicBool>,
}

/// sendmail through the socket (the drop directory if the daemon is down).
fn start_sendmailer(bin: &Path, config: &Path, load: &Load) -> Worker {
    let (bin, config, ledger) = (bin.to_path_buf(), config.to_path_buf(), load.ledger.clone());
    let mut seq = 0usize;
    Worker::start(
        load.stop.clone(),
        load.gate.clone(),
        move || {
            let token = format!("sm-{seq}");
            seq += 1;
            let out = sendmail(&bin, &config, &token);
            let mut l = ledger.lock().unwrap();
            if out.code == Some(0) {
                if out.stderr.contains("for pickup") {
                    l.dropped.insert(token.clone());
                }
                l.sendmail_acked.insert(token);
            } else {
                l.sendmail_failed += 1;
            }
        },
        Duration::from_millis(150),
    )
}

/// Messages held by the upstream, submitted and then deleted or bounced.
fn start_operator(
    bin: &Path,
    config: &Path,
    load: &Load,
    addr: std::net::SocketAddr,
    seed: u64,
) -> Worker {
    let mut op = Operator {
        bin: bin.to_path_buf(),
        config: config.to_path_buf(),
        ledger: load.ledger.clone(),
        rng: Rng((seed ^ 0x0be7_a70e) | 1),
        hold_seq: 0,
        addr,
    };
    Worker::start(
        load.stop.clone(),
        load.gate.clone(),
        move || op.step(),
        Duration::from_millis(100),
    )
}

/// The operator's state: its own generator, so its choices repeat with the
/// seed whatever the other threads do.
struct Operator {
    bin: PathBuf,
    config: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    rng: Rng,
    hold_seq: usize,
    addr: std::net::SocketAddr,
}

impl Operator {
    fn step(&mut self) {
        // Now and then a held message is submitted.
        if self.rng.next().is_multiple_of(6) {
            self.submit_held();
        }
        // Act on an earlier one, now and then.
        if !self.rng.next().is_multiple_of(3) {
            return;
        }
        let candidates: Vec<(String, String)> = {
            let l = self.ledger.lock().unwrap();
            l.hold_acked
                .iter()
                .filter(|(t, _)| !l.acted.contains_key(*t) && !l.uncertain.contains_key(*t))
                .map(|(t, i)| (t.clone(), i.clone()))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let (token, id) = candidates[(self.rng.next() % candidates.len() as u64) as usize].clone();
        let action = if self.rng.next().is_multiple_of(2) {
            QueueAction::Delete
        } else {
            QueueAction::Bounce
        };
        self.act(token, &id, action);
    }

    fn submit_held(&mut self) {
        let token = format!("hold-{}", self.hold_seq);
        self.hold_seq += 1;
        if let Ok(mut c) = Submit::connect(self.addr) {
            if let Ok(r) = c.send(&submission(&token)) {
                if let Some(id) = r.strip_prefix("250 2.0.0 Ok: queued as ") {
                    self.ledger
                        .lock()
                        .unwrap()
                        .hold_acked
                        .insert(token, id.trim().to_string());
                }
            }
            c.quit();
        }
    }

    /// `queue delete` or `queue bounce` of message `id`, recorded in the
    /// ledger as done, or as uncertain unless the daemon was down.
    fn act(&self, token: String, id: &str, action: QueueAction) {
        let verb = match action {
            QueueAction::Delete => "delete",
            QueueAction::Bounce => "bounce",
        };
        let out = queue_cmd(&self.bin, &self.config, &[verb, id]);
        let mut l = self.ledger.lock().unwrap();
        match out.code {
            Some(0) => {
                l.acted.insert(token, action);
            }
            // EX_UNAVAILABLE: the daemon was down, nothing happened.
            Some(69) => {}
            _ => {
                l.uncertain.insert(
                    token,
                    format!("{verb} {id}: {:?} {}{}", out.code, out.stdout, out.stderr),
                );
            }
        }
    }
}

/// What the cut loop did.
#[derive(Default)]
struct Cutting {
    reports: Vec<CutReport>,
    start_times: Vec<Duration>,
    drop_seq: usize,
    max_backlog: usize,
    /// (queue size checks, of which over MAX_BACKLOG)
    polls: (usize, usize),
    /// Why the loop stopped early: a cut failed or the relay did not start.
    failure: Option<String>,
}

/// `cuts` times: the load runs a while, the relay is killed, mail may go to
/// the drop directory, the filesystem is cut (alternately strict and
/// reordered) and the relay started again. Stops at the first cut or start
/// that fails.
fn cut_again_and_again(
    fs: &mut cutfs::CutFs,
    daemon: &mut Daemon,
    subs: &Submitters,
    load: &Load,
    seed: u64,
    cuts: usize,
) -> Cutting {
    let mut rng = Rng(seed);
    let mut c = Cutting::default();
    for i in 0..cuts {
        c.run_load(&mut rng, daemon, subs);
        daemon.kill();
        c.send_while_down(&mut rng, daemon, &load.ledger);
        let mode = if (i as u64 + (seed >> 7)).is_multiple_of(2) {
            Mode::Strict
        } else {
            Mode::Reordered
        };
        let cut_seed = rng.next();
        let report = {
            let _quiet = load.gate.write().unwrap_or_else(|p| p.into_inner());
            fs.cut(mode, cut_seed)
        };
        match report {
            Ok(r) => c.reports.push(r),
            Err(e) => {
                c.failure = Some(format!("cut {i} ({mode:?}, seed {cut_seed:#x}): {e}"));
                break;
            }
        }
        match daemon.start() {
            Ok(t) => c.start_times.push(t),
            Err(e) => {
                let r = c.reports.last().expect("this cut's report");
                c.failure = Some(format!(
                    "the relay did not start after cut {i} ({mode:?}, cut seed {cut_seed:#x}; \
                     the cut lost {} path(s): {:?}, changed {:?}, kept {} of {} unsynced pages \
                     and {} of {} metadata operations): {e}\n{}",
                    r.lost_paths.len(),
                    &r.lost_paths[..r.lost_paths.len().min(10)],
                    &r.changed_files[..r.changed_files.len().min(10)],
                    r.kept_pages,
                    r.dirty_pages,
                    r.kept_meta,
                    r.pending_meta,
                    daemon.log_tail(12)
                ));
                break;
            }
        }
    }
    c
}

impl Cutting {
    /// The load runs for a while. The SMTP stream (by far the most mail)
    /// pauses while much is waiting, so a long run stays a steady state
    /// rather than a queue that grows faster than it drains.
    fn run_load(&mut self, rng: &mut Rng, daemon: &Daemon, subs: &Submitters) {
        let until = Instant::now() + Duration::from_millis(rng.range(300, 1500));
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left.min(Duration::from_millis(200)));
            if let Some(n) = queue_size(&daemon.bin, &daemon.config) {
                let over = n > MAX_BACKLOG;
                subs.pause(over);
                self.polls.0 += 1;
                self.polls.1 += usize::from(over);
                self.max_backlog = self.max_backlog.max(n);
            }
        }
    }

    /// Now and then mail arrives while the daemon is down: the drop directory.
    fn send_while_down(&mut self, rng: &mut Rng, daemon: &Daemon, ledger: &Mutex<Ledger>) {
        let down_sends = if rng.next().is_multiple_of(3) {
            rng.range(1, 4)
        } else {
            0
        };
        for _ in 0..down_sends {
            let token = format!("drop-{}", self.drop_seq);
            self.drop_seq += 1;
            let out = sendmail(&daemon.bin, &daemon.config, &token);
            let mut l = ledger.lock().unwrap();
            if out.code == Some(0) {
                l.dropped.insert(token.clone());
                l.sendmail_acked.insert(token);
            } else {
                l.sendmail_failed += 1;
                eprintln!(
                    "sendmail with the daemon down: {:?} {}",
                    out.code, out.stderr
                );
            }
        }
    }
}

/// Everything the run gathered, for the report and the verdict.
struct Run {
    seed: u64,
    /// The cuts wanted (all of which were made, unless the run failed early).
    cuts: usize,
    bin: PathBuf,
    cutting: Cutting,
    /// The SMTP submitters' record.
    record: Record,
    ledger: Ledger,
    /// Every acknowledged token: SMTP, sendmail, held.
    acked: Vec<String>,
    loop_time: Duration,
    drain_time: Duration,
}

/// The run stopped early (`failure`): fails, with what the relay had not
/// delivered when it stopped starting, left in a queue it cannot open.
fn fail_stranded(run: &Run, server: &ScriptedServer, failure: &str) -> ! {
    let (seen, _) = tally(&server.transactions());
    let stranded: Vec<String> = run
        .acked
        .iter()
        .filter(|t| !run.ledger.uncertain.contains_key(*t))
        .filter_map(|t| verdict(t, seen.get(t), run.ledger.acted.get(t).copied()).err())
        .collect();
    panic!(
        "power cuts: seed={:#x} bin={}: {failure}\nacknowledged {} message(s), of which {} \
         not (fully) delivered when the relay stopped starting, e.g. {:?}",
        run.seed,
        run.bin.display(),
        run.acked.len(),
        stranded.len(),
        &stranded[..stranded.len().min(5)]
    );
}

/// Waits until drained: the queue is empty (DSNs are queued messages too), or
/// it has stopped shrinking and nothing reaches the upstream any more (no
/// change in its `commands` for a minute); how long that took.
fn wait_drained(bin: &Path, config: &Path, commands: &AtomicUsize) -> Duration {
    let drain_start = Instant::now();
    let mut progress = (usize::MAX, usize::MAX);
    let mut still_since = Instant::now();
    loop {
        let size = queue_size(bin, config);
        if size == Some(0) {
            break;
        }
        let now = (size.unwrap_or(usize::MAX), commands.load(Ordering::SeqCst));
        if now != progress {
            progress = now;
            still_since = Instant::now();
        }
        if still_since.elapsed() > Duration::from_secs(60)
            || drain_start.elapsed() > Duration::from_secs(1800)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Deliveries the upstream is still answering (a delayed reply) finish.
    std::thread::sleep(Duration::from_millis(500));
    drain_start.elapsed()
}

/// The oracle over what reached the upstream, the report, and the asserts.
fn judge(run: &Run, server: &ScriptedServer, stats: &Stats, daemon: &Daemon, queue_left: &str) {
    let (seen, strays) = tally(&server.transactions());
    let (lost, problems) = lost_and_problems(run, &seen);
    print_report(run, &seen, stats, lost.len(), problems.len());
    for (t, why) in &run.ledger.uncertain {
        println!("power cuts: uncertain {t}: {}", why.trim());
    }
    for r in run
        .cutting
        .reports
        .iter()
        .filter(|r| !r.lost_paths.is_empty())
        .take(5)
    {
        println!(
            "power cuts: a {:?} cut (seed {:#x}) lost {:?}",
            r.mode,
            r.seed,
            &r.lost_paths[..r.lost_paths.len().min(8)]
        );
    }
    if !lost.is_empty() || !problems.is_empty() {
        println!(
            "power cuts: relay log tail:\n{}\nqueue left: {}",
            daemon.log_tail(30),
            queue_left.lines().count()
        );
    }

    assert!(strays.is_empty(), "messages nobody sent: {strays:?}");
    let record = &run.record;
    assert!(
        record.refused.is_empty(),
        "the relay refused messages: {:?}",
        &record.refused[..record.refused.len().min(5)]
    );
    assert_no_loss(run, stats, &lost, &problems, queue_left);
}

/// Each acknowledged token's verdict (uncertain ones left out): those of which
/// nothing at all arrived (lost), and the other failures (problems), with any
/// DSN naming a delivered recipient, uncertain tokens included.
fn lost_and_problems(run: &Run, seen: &BTreeMap<String, Seen>) -> (Vec<String>, Vec<String>) {
    let ledger = &run.ledger;
    let mut problems = Vec::new();
    let mut lost = Vec::new();
    for t in &run.acked {
        if ledger.uncertain.contains_key(t) {
            continue;
        }
        if let Err(e) = verdict(t, seen.get(t), ledger.acted.get(t).copied()) {
            if seen.get(t).is_none_or(|s| s.deliveries == 0 && s.dsns == 0) {
                lost.push(e);
            } else {
                problems.push(e);
            }
        }
    }
    // DSNs for a delivered recipient, also among the uncertain ones.
    for (t, s) in seen {
        if let Some(r) = s.dsn_named.iter().find(|r| s.delivered.contains_key(*r)) {
            let e = format!("{t}: DSN names {r}, which was delivered");
            if !problems.contains(&e) {
                problems.push(e);
            }
        }
    }
    (lost, problems)
}

/// The run's numbers: cuts, traffic, duplicates, what cutfs saw.
fn print_report(
    run: &Run,
    seen: &BTreeMap<String, Seen>,
    stats: &Stats,
    lost: usize,
    problems: usize,
) {
    let (acked, ledger, record, c) = (&run.acked, &run.ledger, &run.record, &run.cutting);
    // At-least-once allows duplicates (a cut between the upstream's 250 and
    // the relay's record of it): extra copies per recipient, and messages.
    let extra = |s: &Seen| -> usize { s.delivered.values().map(|n| n - 1).sum() };
    let duplicates: usize = acked.iter().filter_map(|t| seen.get(t)).map(extra).sum();
    let duplicated = acked
        .iter()
        .filter_map(|t| seen.get(t))
        .filter(|s| extra(s) > 0)
        .count();
    let (strict, reordered) = c.reports.iter().fold((0, 0), |(a, b), r| match r.mode {
        Mode::Strict => (a + 1, b),
        Mode::Reordered => (a, b + 1),
    });
    let slowest = c.start_times.iter().max().copied().unwrap_or_default();
    println!(
        "power cuts: seed={:#x} bin={} cuts={} (strict {strict}, reordered {reordered}) in {:.1}s, \
         drained in {:.1}s; acknowledged={} (smtp {}, sendmail {} of which drop directory {}, held {}; \
         deleted {}, bounced {}, uncertain {}); lost={lost} problems={problems} duplicates={duplicates} (in {duplicated} messages); \
         smtp cut off={} sendmail failed={}; cutfs: {}; \
         slowest start {:.2}s, queue at most {} (SMTP stream paused {}% of the time)",
        run.seed,
        run.bin.display(),
        c.reports.len(),
        run.loop_time.as_secs_f64(),
        run.drain_time.as_secs_f64(),
        acked.len(),
        record.acked.len(),
        ledger.sendmail_acked.len(),
        ledger.dropped.len(),
        ledger.hold_acked.len(),
        ledger.acted.values().filter(|a| **a == QueueAction::Delete).count(),
        ledger.acted.values().filter(|a| **a == QueueAction::Bounce).count(),
        ledger.uncertain.len(),
        record.unknown,
        ledger.sendmail_failed,
        cutfs_summary(&c.reports, stats),
        slowest.as_secs_f64(),
        c.max_backlog,
        c.polls.1 * 100 / c.polls.0.max(1),
    );
}

/// What the cuts dropped and kept, and the syncs that reached cutfs.
fn cutfs_summary(reports: &[CutReport], stats: &Stats) -> String {
    let lost_paths: usize = reports.iter().map(|r| r.lost_paths.len()).sum();
    let dirty: usize = reports.iter().map(|r| r.dirty_pages).sum();
    let kept: usize = reports.iter().map(|r| r.kept_pages).sum();
    let torn: usize = reports.iter().map(|r| r.torn_pages).sum();
    let meta: (usize, usize) = reports
        .iter()
        .fold((0, 0), |a, r| (a.0 + r.pending_meta, a.1 + r.kept_meta));
    format!(
        "unsynced pages {dirty} (kept {kept}, torn {torn}), \
         metadata ops pending {} (kept {}), paths lost {lost_paths}, {} fsync {} fdatasync {} dir fsync",
        meta.0, meta.1, stats.fsyncs, stats.fdatasyncs, stats.fsyncdirs,
    )
}

/// The run meant something, nothing acknowledged was lost or undone, and the
/// queue drained.
fn assert_no_loss(
    run: &Run,
    stats: &Stats,
    lost: &[String],
    problems: &[String],
    queue_left: &str,
) {
    let (seed, cuts, acked) = (run.seed, run.cuts, &run.acked);
    // The run means something only if mail flowed and the queue really lived
    // on cutfs (its writes and syncs went through it).
    assert!(
        acked.len() >= 5 * cuts.min(20) && stats.writes > 0 && stats.fsyncs + stats.fdatasyncs > 0,
        "too little happened: {} acknowledged, cutfs saw {stats:?}",
        acked.len(),
    );
    assert!(
        problems.is_empty(),
        "seed {seed:#x}: acknowledged queue commands undone or wrong DSNs ({}): {:?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
    assert!(
        lost.is_empty(),
        "seed {seed:#x}: acknowledged mail lost ({} of {}): {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        queue_left.trim().is_empty(),
        "seed {seed:#x}: the queue did not drain: {} message(s) left, e.g. {:?}",
        queue_left.lines().count(),
        queue_left
            .lines()
            .take(3)
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
    );
}
