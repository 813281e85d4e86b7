//! The `sendmail` command as the programs that call it expect: PHP's `mail()`,
//! cron, git send-email, `-t` with Bcc, hostile `-f`/`-F` values, line ends and
//! the lone dot, limits and exit codes, the legacy flags, `-bs`, `mailq`, and the
//! drop directory while the daemon is down (including SIGKILL during pickup).
//!
//! Every test runs the real binary twice over: `smarthost serve` through the
//! harness, and `smarthost sendmail ...` (or a symlink named `sendmail` /
//! `mailq`) as a child process, fed on stdin. Delivered messages are read back
//! from a capture (`type = "directory"`) route.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Relay;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_smarthost");

const CAPTURE: &str = r#"
[[route]]
name = "capture"
type = "directory"
path = "{dir}/mail"
[routing]
default = "capture"
"#;

const EX_USAGE: i32 = 64;
const EX_DATAERR: i32 = 65;
const EX_NOUSER: i32 = 67;
const EX_UNAVAILABLE: i32 = 69;

// ---------------------------------------------------------------------------
// Helpers

/// A child process (and its process group) killed unless it finished.
struct Guard {
    child: Child,
    done: bool,
}

impl Guard {
    fn spawn(cmd: &mut Command) -> Guard {
        // Its own process group, so that a shell or PHP and the sendmail it
        // started can be killed together if the test gives up on them.
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Guard { child, done: false }
    }

    /// Waits up to `timeout`; None if the process is still running.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.done = true;
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if !self.done {
            // The child is alive (not yet reaped), so its pid, which is also
            // its process group id, is still ours.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_code(&self, want: i32, what: &str) {
        assert_eq!(self.code, Some(want), "{what}: {}", self.describe());
    }

    /// The queue id from `-v`'s `sendmail: queued as <ID>`.
    fn queue_id(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("sendmail: queued as "))
            .map(|id| id.trim().to_string())
            .unwrap_or_else(|| panic!("no 'queued as' line: {}", self.describe()))
    }
}

/// Runs `cmd` with `input` on stdin, at most 60 s.
fn run(mut cmd: Command, input: &[u8]) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut g = Guard::spawn(&mut cmd);
    let mut stdin = g.child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // sendmail may stop reading at a lone dot or at the size limit: a write
    // error here is expected then.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut so = g.child.stdout.take().expect("stdout");
    let mut se = g.child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let Some(status) = g.wait_timeout(Duration::from_secs(60)) else {
        g.kill();
        panic!("{cmd:?} did not finish within 60 s");
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Out {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `smarthost sendmail ARGS` with `$SMARTHOST_CONFIG` pointing at the relay.
fn sendmail(relay: &Relay, args: &[&str], input: &[u8]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg("sendmail")
        .args(args)
        .env("SMARTHOST_CONFIG", &relay.config_path);
    run(cmd, input)
}

/// The same through a link named `name` (`sendmail` or `mailq`), as
/// /usr/sbin/sendmail would be installed.
fn linked(links: &Links, name: &str, relay: &Relay, args: &[&str], input: &[u8]) -> Out {
    let mut cmd = Command::new(links.path(name));
    cmd.args(args).env("SMARTHOST_CONFIG", &relay.config_path);
    run(cmd, input)
}

/// A directory with `sendmail` and `mailq` symlinks to the binary.
struct Links(tempfile::TempDir);

impl Links {
    fn new() -> Links {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["sendmail", "mailq"] {
            std::os::unix::fs::symlink(BIN, dir.path().join(name)).expect("symlink");
        }
        Links(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// The invoking user's login name, which sendmail uses as the default sender.
fn login_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The default envelope sender on a relay named relay.test without rewrites.
fn default_sender() -> String {
    format!("{}@relay.test", login_name())
}

fn mail_dir(relay: &Relay) -> PathBuf {
    relay.path("mail")
}

fn captured(relay: &Relay) -> Vec<(Value, Vec<u8>)> {
    common::captured(&mail_dir(relay))
}

/// Waits until at least `n` messages are captured; returns them all.
fn wait_captured(relay: &Relay, n: usize) -> Vec<(Value, Vec<u8>)> {
    let ok = common::wait_for(Duration::from_secs(20), || captured(relay).len() >= n);
    assert!(
        ok,
        "expected {n} captured message(s), have {}; log:\n{}",
        captured(relay).len(),
        relay.log()
    );
    captured(relay)
}

/// The captured message (first copy) of queue id `id`.
fn captured_id(relay: &Relay, id: &str) -> (Value, Vec<u8>) {
    let eml = mail_dir(relay).join(format!("{id}.0.eml"));
    let json = mail_dir(relay).join(format!("{id}.0.json"));
    let ok = common::wait_for(Duration::from_secs(20), || json.exists() && eml.exists());
    assert!(ok, "{id} was not delivered; log:\n{}", relay.log());
    let meta = serde_json::from_slice(&std::fs::read(&json).expect("read json")).expect("json");
    (meta, std::fs::read(&eml).expect("read eml"))
}

/// Runs sendmail with `-v` prepended and returns the captured message.
fn deliver(relay: &Relay, args: &[&str], input: &[u8]) -> (Value, Vec<u8>) {
    let mut all = vec!["-v"];
    all.extend_from_slice(args);
    let out = sendmail(relay, &all, input);
    out.assert_code(0, &format!("sendmail {all:?}"));
    captured_id(relay, &out.queue_id())
}

fn recipients(meta: &Value) -> Vec<String> {
    meta["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {meta}"))
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect()
}

fn sender(meta: &Value) -> String {
    meta["sender"].as_str().unwrap_or_default().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The header section (without the final empty line) and the body.
fn split(message: &[u8]) -> (String, Vec<u8>) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of header in {:?}", text(message)));
    (text(&message[..at + 2]), message[at + 4..].to_vec())
}

/// Names of the header fields, in order (continuation lines skipped).
fn field_names(message: &[u8]) -> Vec<String> {
    let (head, _) = split(message);
    head.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

/// The unfolded values of every field called `name`.
fn fields(message: &[u8], name: &str) -> Vec<String> {
    let (head, _) = split(message);
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

/// Every LF is preceded by CR and every CR followed by LF.
fn assert_crlf(message: &[u8]) {
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && message[i - 1] == b'\r',
                "bare LF at {i}: {:?}",
                text(message)
            );
        }
        if b == b'\r' {
            assert_eq!(
                message.get(i + 1),
                Some(&b'\n'),
                "bare CR at {i}: {:?}",
                text(message)
            );
        }
    }
    assert!(message.ends_with(b"\r\n"), "{:?}", text(message));
}

/// The message without Received, Date and Message-ID, for comparisons.
fn without_variable_fields(message: &[u8]) -> Vec<u8> {
    let m = common::strip_received(message);
    let (head, body) = split(m);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("date") || name.eq_ignore_ascii_case("message-id") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// How many messages the daemon has queued (its `from=<` log lines).
fn queued_count(relay: &Relay) -> usize {
    relay.log().matches(": from=<").count()
}

fn drop_files(relay: &Relay) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(relay.path("drop")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Nothing reached the daemon, the capture directory or the drop directory:
/// a sentinel message submitted afterwards is delivered, and it is the one
/// message queued and captured since the counts were taken.
fn assert_nothing_stored(relay: &Relay, queued_before: usize, captured_before: usize, what: &str) {
    let sentinel = relay.sentinel();
    assert_eq!(
        queued_count(relay),
        queued_before + 1,
        "{what}: the daemon queued something besides the sentinel; log:\n{}",
        relay.log()
    );
    assert!(
        relay.log().contains(&format!("{sentinel}: from=<")),
        "{}",
        relay.log()
    );
    let got = captured(relay);
    assert_eq!(
        got.len(),
        captured_before + 1,
        "{what}: something besides the sentinel was delivered"
    );
    assert!(got
        .iter()
        .any(|(meta, _)| meta["queue_id"] == sentinel.as_str()));
    assert!(
        drop_files(relay).is_empty(),
        "{what}: drop dir: {:?}",
        drop_files(relay)
    );
}

// ---------------------------------------------------------------------------
// 1. PHP mail()

#[test]
fn php_mail_function() {
    if !common::require("php (php-cli)", common::have("php")) {
        return;
    }
    let relay = Relay::start(CAPTURE);
    let sendmail_path = format!(
        "sendmail_path={BIN} sendmail -t -i -C {}",
        relay.config_path.display()
    );
    let script = r#"
        var_dump(mail("bob@example.net", "Subject here", "Body line\n.\nafter dot",
            "From: app@example.com\r\nCc: carol@example.net"));
        var_dump(mail("dave@example.net", "With -f", "Second body",
            "From: app@example.com", "-fbounces@example.com"));
    "#;
    let mut cmd = Command::new("php");
    cmd.arg("-n")
        .arg("-d")
        .arg(&sendmail_path)
        .arg("-r")
        .arg(script)
        .env_remove("SMARTHOST_CONFIG");
    let out = run(cmd, b"");
    out.assert_code(0, "php");
    assert_eq!(
        out.stdout.matches("bool(true)").count(),
        2,
        "mail() must return true twice: {}",
        out.describe()
    );

    let all = wait_captured(&relay, 2);
    assert_eq!(all.len(), 2, "{all:?}");
    let find = |subject: &str| {
        all.iter()
            .find(|(_, m)| fields(m, "subject") == [subject])
            .unwrap_or_else(|| panic!("no message with subject {subject:?}"))
            .clone()
    };
    let (meta, msg) = find("Subject here");
    assert_php_plain_mail(&meta, &msg);
    let (meta, msg) = find("With -f");
    assert_eq!(recipients(&meta), ["dave@example.net"]);
    assert_eq!(sender(&meta), "bounces@example.com");
    assert_eq!(fields(&msg, "from"), ["app@example.com"]);
    assert_eq!(split(&msg).1, b"Second body\r\n");
}

/// PHP's mail() without -f: recipients from To and Cc, the default sender,
/// Date and Message-ID added, the lone dot kept (-i).
fn assert_php_plain_mail(meta: &Value, msg: &[u8]) {
    assert_eq!(recipients(meta), ["bob@example.net", "carol@example.net"]);
    assert_eq!(sender(meta), default_sender());
    assert_crlf(msg);
    assert!(msg.starts_with(b"Received: by relay.test (smarthost, from userid "));
    assert_eq!(fields(msg, "to"), ["bob@example.net"]);
    assert_eq!(fields(msg, "from"), ["app@example.com"]);
    assert_eq!(fields(msg, "cc"), ["carol@example.net"]);
    // Added because PHP sends neither.
    let dates = fields(msg, "date");
    assert_eq!(dates.len(), 1, "{}", text(msg));
    assert!(dates[0].ends_with(" +0000"), "{dates:?}");
    let ids = fields(msg, "message-id");
    assert_eq!(ids.len(), 1, "{}", text(msg));
    assert!(
        ids[0].starts_with('<') && ids[0].ends_with("@relay.test>"),
        "{ids:?}"
    );
    // -i: the lone dot is message text.
    let (_, body) = split(msg);
    assert_eq!(body, b"Body line\r\n.\r\nafter dot\r\n");
}

// ---------------------------------------------------------------------------
// 2. cron

#[test]
fn cron_invocation() {
    let relay = Relay::start(&format!(
        "{CAPTURE}\n[local.rewrite]\nroot = \"ops@example.com\"\n"
    ));
    let links = Links::new();
    let login = login_name();
    let want_sender = if login == "root" {
        "ops@example.com".to_string()
    } else {
        format!("{login}@relay.test")
    };
    let input = "From: root (Cron Daemon)\n\
                 To: root\n\
                 Subject: Cron <root@host> run-parts --report /etc/cron.hourly\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=UTF-8\n\
                 Content-Transfer-Encoding: 8bit\n\
                 X-Cron-Env: <SHELL=/bin/sh>\n\
                 X-Cron-Env: <LOGNAME=root>\n\
                 \n\
                 r\u{e9}sum\u{e9} of the job\n\
                 .\n\
                 last line\n";
    // Exactly what cron (Debian's cron 3.0) runs, through /usr/sbin/sendmail.
    let args = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"];
    let out = linked(&links, "sendmail", &relay, &args, input.as_bytes());
    out.assert_code(0, "cron's sendmail");
    assert!(out.stderr.is_empty(), "{}", out.describe());

    let all = wait_captured(&relay, 1);
    let (meta, msg) = &all[0];
    assert_eq!(recipients(meta), ["ops@example.com"]);
    assert_eq!(sender(meta), want_sender);
    assert_cron_message(msg);
    assert_cron_body_parameter(&relay, &links, &args, input, &want_sender);
    wait_captured(&relay, 4);
}

fn assert_cron_message(msg: &[u8]) {
    assert_crlf(msg);
    let m = text(msg);
    // The rewrite keeps the comment; cron's own From wins over -F.
    assert!(
        m.contains("\r\nFrom: ops@example.com (Cron Daemon)\r\n"),
        "{m}"
    );
    assert_eq!(fields(msg, "from").len(), 1, "{m}");
    assert!(m.contains("\r\nTo: ops@example.com\r\n"), "{m}");
    // Not address fields: left alone.
    assert!(
        m.contains("\r\nSubject: Cron <root@host> run-parts --report /etc/cron.hourly\r\n"),
        "{m}"
    );
    assert_eq!(
        fields(msg, "x-cron-env"),
        ["<SHELL=/bin/sh>", "<LOGNAME=root>"]
    );
    assert!(
        m.contains("for <ops@example.com>;"),
        "Received names the one recipient: {m}"
    );
    // 8-bit text passes untouched, and -i keeps the lone dot.
    assert_eq!(
        split(msg).1,
        "r\u{e9}sum\u{e9} of the job\r\n.\r\nlast line\r\n".as_bytes()
    );
}

/// Cron's command with -v: the dialogue shows BODY=8BITMIME on MAIL FROM,
/// even for an ASCII body (it is what -B8BITMIME asks for); -B 7BIT with an
/// ASCII body gives no BODY parameter.
fn assert_cron_body_parameter(
    relay: &Relay,
    links: &Links,
    args: &[&str],
    input: &str,
    want_sender: &str,
) {
    let mut verbose = args.to_vec();
    verbose.insert(0, "-v");
    for body in [input, "Subject: ascii\n\nplain\n"] {
        let out = linked(links, "sendmail", relay, &verbose, body.as_bytes());
        out.assert_code(0, "cron's sendmail -v");
        let want = format!(">>> MAIL FROM:<{want_sender}> BODY=8BITMIME");
        assert!(
            out.stderr.lines().any(|l| l == want),
            "want {want:?}: {}",
            out.describe()
        );
    }
    let out = linked(
        links,
        "sendmail",
        relay,
        &["-v", "-B", "7BIT", "root"],
        b"Subject: ascii\n\nplain\n",
    );
    out.assert_code(0, "-B 7BIT");
    let want = format!(">>> MAIL FROM:<{want_sender}>");
    assert!(
        out.stderr.lines().any(|l| l == want),
        "want {want:?}: {}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// 3. git send-email

#[test]
fn git_send_email() {
    if !common::require("git", common::have("git")) {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    // git-send-email is a separate package (git-email) and needs Perl modules:
    // --dump-aliases runs it without sending anything.
    let mut probe = Command::new("git");
    probe
        .args(["send-email", "--dump-aliases"])
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1");
    let probe = run(probe, b"");
    if !common::require(
        &format!("git send-email (git-email)\n{}", probe.describe()),
        probe.code == Some(0),
    ) {
        return;
    }
    let relay = Relay::start(CAPTURE);
    let (repo, patch) = one_patch(home.path());
    let cmd = format!(
        "sendemail.sendmailcmd={BIN} sendmail -C {}",
        relay.config_path.display()
    );
    let out = git(
        home.path(),
        &[
            "-C",
            &repo,
            "-c",
            &cmd,
            "send-email",
            "--to=dev@example.net",
            "--from=me@example.com",
            "--confirm=never",
            "--quiet",
            &patch.display().to_string(),
        ],
    );
    out.assert_code(0, "git send-email");

    let all = wait_captured(&relay, 1);
    assert_eq!(all.len(), 1, "one message, one transaction");
    let (meta, msg) = &all[0];
    let rcpts = recipients(meta);
    assert!(rcpts.contains(&"dev@example.net".to_string()), "{rcpts:?}");
    // git adds the patch author (and signers) as Cc unless told otherwise.
    for r in &rcpts {
        assert!(
            r == "dev@example.net" || r == "me@example.com",
            "unexpected recipient {r}"
        );
    }
    assert_eq!(sender(meta), default_sender());
    assert_git_patch_message(msg);
}

/// git with `home` as $HOME and a fixed identity, no system configuration.
fn git(home: &std::path::Path, args: &[&str]) -> Out {
    let mut cmd = Command::new("git");
    cmd.current_dir(home)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Me")
        .env("GIT_AUTHOR_EMAIL", "me@example.com")
        .env("GIT_COMMITTER_NAME", "Me")
        .env("GIT_COMMITTER_EMAIL", "me@example.com")
        .env_remove("SMARTHOST_CONFIG")
        .args(args);
    run(cmd, b"")
}

/// A repository under `home` with one commit whose message and file have
/// lone-dot lines; the repository's path and the commit's patch file.
fn one_patch(home: &std::path::Path) -> (String, PathBuf) {
    let repo = home.join("repo");
    let r = repo.display().to_string();
    git(home, &["init", "-q", &r]).assert_code(0, "git init");
    std::fs::write(repo.join("file.txt"), "hello\n.\n..\n").expect("write");
    git(home, &["-C", &r, "add", "file.txt"]).assert_code(0, "git add");
    git(
        home,
        &[
            "-C",
            &r,
            "commit",
            "-q",
            "-m",
            "Add file\n\nA lone dot follows:\n.\nline after dot",
        ],
    )
    .assert_code(0, "git commit");
    let patches = home.join("patches");
    git(
        home,
        &[
            "-C",
            &r,
            "format-patch",
            "-q",
            "-1",
            "-o",
            &patches.display().to_string(),
        ],
    )
    .assert_code(0, "git format-patch");
    let patch = std::fs::read_dir(&patches)
        .expect("patches")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "patch"))
        .expect("a patch");
    (r, patch)
}

fn assert_git_patch_message(msg: &[u8]) {
    assert_crlf(msg);
    let m = text(msg);
    assert_eq!(fields(msg, "subject"), ["[PATCH] Add file"], "{m}");
    assert_eq!(fields(msg, "from"), ["me@example.com"], "{m}");
    assert_eq!(fields(msg, "to"), ["dev@example.net"], "{m}");
    // git's own Message-ID and Date are kept, not doubled.
    assert_eq!(fields(msg, "message-id").len(), 1, "{m}");
    assert!(
        fields(msg, "message-id")[0].ends_with("@example.com>"),
        "{m}"
    );
    assert_eq!(fields(msg, "date").len(), 1, "{m}");
    // git passes -i: the lone dot of the commit message is text.
    assert!(
        m.contains("\r\nA lone dot follows:\r\n.\r\nline after dot\r\n"),
        "{m}"
    );
    // The patch content round-trips exactly, its dot lines included.
    assert!(m.contains("\r\n+hello\r\n+.\r\n+..\r\n"), "{m}");
}

// ---------------------------------------------------------------------------
// 4. -t, Bcc, command-line recipients, Resent-*

#[test]
fn extract_recipients_and_bcc() {
    let relay = Relay::start(CAPTURE);
    let input = "From: app@example.com\n\
                 To: To One <to1@example.net>\n\
                 Cc: cc1@example.net, \"Doe, Jane\" <jane@example.net>\n\
                 Bcc: hidden1@example.org,\n  hidden2@example.org\n\
                 Subject: bcc test\n\
                 \n\
                 Bcc: this is body text, not a header\n";
    let (meta, msg) = deliver(&relay, &["-t", "-i", "extra@example.net"], input.as_bytes());
    assert_eq!(
        recipients(&meta),
        [
            "to1@example.net",
            "cc1@example.net",
            "jane@example.net",
            "hidden1@example.org",
            "hidden2@example.org",
            "extra@example.net"
        ]
    );
    let (head, body) = split(&msg);
    assert!(!head.to_ascii_lowercase().contains("\nbcc"), "{head}");
    assert!(!head.contains("hidden"), "{head}");
    assert_eq!(
        field_names(&msg),
        [
            "Received",
            "Date",
            "Message-ID",
            "From",
            "To",
            "Cc",
            "Subject"
        ]
    );
    assert_eq!(body, b"Bcc: this is body text, not a header\r\n");

    // Without -t, Bcc is still removed and only the argument is a recipient.
    let (meta, msg) = deliver(&relay, &["only@example.net"], input.as_bytes());
    assert_eq!(recipients(&meta), ["only@example.net"]);
    assert!(!text(&msg).contains("hidden"), "{}", text(&msg));

    assert_resent_fields_win(&relay);

    // -t with nothing to extract and no arguments: a usage error.
    let before = (queued_count(&relay), captured(&relay).len());
    let out = sendmail(&relay, &["-t"], b"Subject: nobody\n\nx\n");
    out.assert_code(EX_USAGE, "-t without recipients");
    assert!(out.stderr.contains("no recipients"), "{}", out.describe());
    assert_nothing_stored(&relay, before.0, before.1, "-t without recipients");
}

/// Resent-* fields take precedence over To/Cc with -t; Resent-Bcc is removed.
fn assert_resent_fields_win(relay: &Relay) {
    let input = "To: orig@example.net\n\
                 From: app@example.com\n\
                 Subject: forwarded\n\
                 Resent-From: fwd@example.com\n\
                 Resent-To: new@example.net\n\
                 Resent-Bcc: newhidden@example.org\n\
                 \n\
                 text\n";
    let (meta, msg) = deliver(relay, &["-t"], input.as_bytes());
    assert_eq!(
        recipients(&meta),
        ["new@example.net", "newhidden@example.org"]
    );
    let m = text(&msg);
    assert!(!m.contains("newhidden"), "{m}");
    assert!(m.contains("\r\nTo: orig@example.net\r\n"), "{m}");
    assert!(m.contains("\r\nResent-To: new@example.net\r\n"), "{m}");
}

// ---------------------------------------------------------------------------
// 5. Header and address injection

#[test]
fn injection_attempts() {
    let relay = Relay::start(CAPTURE);
    let body = b"Subject: injection\n\nhello\n";
    let (q0, c0) = (queued_count(&relay), captured(&relay).len());
    for bad in [
        "a@b.c\r\nBcc: x@y.z",
        "a@b.c\nBcc: x@y.z",
        "a@b.c>",
        "<a@b.c> <d@e.f>",
        "<a@b.c>,<d@e.f>",
        "a@b.c> SIZE=1",
    ] {
        let out = sendmail(&relay, &["-f", bad, "bob@example.net"], body);
        out.assert_code(EX_USAGE, &format!("-f {bad:?}"));
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("sendmail: invalid sender address"),
            "{bad:?}: {}",
            out.describe()
        );
        // The refusal itself must not echo a raw line break.
        assert!(!out.stderr.contains('\r'), "{bad:?}: {:?}", out.stderr);
    }
    for bad in ["bob@example.net\r\nRCPT TO:<x@y.z>", "bob@example.net>"] {
        let out = sendmail(&relay, &[bad], body);
        out.assert_code(EX_USAGE, &format!("recipient {bad:?}"));
        assert!(
            out.stderr.contains("invalid recipient"),
            "{}",
            out.describe()
        );
    }
    assert_nothing_stored(&relay, q0, c0, "refused -f / recipient");

    let me = default_sender();
    for name in [
        "Evil\r\nBcc: victim@example.org",
        "Evil\nTo: victim@example.org",
        "\"><script>alert(1)</script>",
        "J\u{f6}rg \u{dc}n\u{ef}c\u{f6}d\u{e9}",
    ] {
        let (meta, msg) = deliver(&relay, &["-F", name, "bob@example.net"], body);
        let m = text(&msg);
        assert_eq!(recipients(&meta), ["bob@example.net"], "{name:?}");
        assert_eq!(sender(&meta), me);
        assert_crlf(&msg);
        assert_eq!(
            field_names(&msg),
            ["Received", "From", "Date", "Message-ID", "Subject"],
            "{name:?}: {m}"
        );
        assert!(!m.contains("victim"), "{name:?}: {m}");
        assert!(!m.contains("<script>"), "{name:?}: {m}");
        let from = fields(&msg, "from");
        assert_eq!(from.len(), 1);
        assert!(from[0].ends_with(&format!("<{me}>")), "{name:?}: {from:?}");
        // Non-ASCII or dangerous names are RFC 2047 encoded, so the message
        // stays 7-bit.
        assert!(msg.is_ascii(), "{name:?}: {m}");
    }
    // A plain name is quoted, not encoded.
    let (_, msg) = deliver(&relay, &["-F", "Cron Daemon", "bob@example.net"], body);
    assert_eq!(fields(&msg, "from"), [format!("\"Cron Daemon\" <{me}>")]);
}

// ---------------------------------------------------------------------------
// 6. Line ends and dots

#[test]
fn line_ends_and_dots() {
    let relay = Relay::start(CAPTURE);
    let lf = "From: app@example.com\n\
              To: r@example.net\n\
              Subject: line ends\n\
              \n\
              first line\n\
              ..two dots\n\
              .leading dot\n\
              . dot space\n\
              \ttab line\n\
              \n\
              last line\n";
    let crlf = lf.replace('\n', "\r\n");
    let (_, a) = deliver(&relay, &["r@example.net"], lf.as_bytes());
    let (_, b) = deliver(&relay, &["r@example.net"], crlf.as_bytes());
    assert_crlf(&a);
    assert_crlf(&b);
    assert_eq!(
        text(&without_variable_fields(&a)),
        text(&without_variable_fields(&b))
    );
    // The .eml is the message, not its SMTP form: ".." stays "..".
    assert_eq!(
        split(&a).1,
        b"first line\r\n..two dots\r\n.leading dot\r\n. dot space\r\n\ttab line\r\n\r\nlast line\r\n"
    );
    // Missing final newline.
    let (_, c) = deliver(
        &relay,
        &["r@example.net"],
        lf.trim_end_matches('\n').as_bytes(),
    );
    assert_eq!(
        text(&without_variable_fields(&c)),
        text(&without_variable_fields(&a))
    );

    // Without -i a lone dot ends the input: what follows is not sent.
    let dotted = "Subject: dot\n\nbefore\n.\nafter the dot\n";
    for input in [dotted.to_string(), dotted.replace('\n', "\r\n")] {
        let (_, msg) = deliver(&relay, &["r@example.net"], input.as_bytes());
        assert_eq!(split(&msg).1, b"before\r\n", "{input:?}");
        assert!(!text(&msg).contains("after the dot"));
    }
    // With -i or -oi it is an ordinary line.
    for flag in ["-i", "-oi"] {
        let (_, msg) = deliver(&relay, &[flag, "r@example.net"], dotted.as_bytes());
        assert_eq!(split(&msg).1, b"before\r\n.\r\nafter the dot\r\n", "{flag}");
    }
}

// ---------------------------------------------------------------------------
// 7. Empty message, limits, bad recipients, bad options

#[test]
fn empty_message_limits_and_refusals() {
    let relay = Relay::start(&format!("{CAPTURE}\n[limits]\nmax_message_size = 4096\n"));
    let me = default_sender();

    // Empty stdin: the message is just our added fields.
    let (meta, msg) = deliver(&relay, &["empty@example.net"], b"");
    assert_eq!(recipients(&meta), ["empty@example.net"]);
    assert_eq!(sender(&meta), me);
    let rest = text(common::strip_received(&msg));
    assert!(rest.starts_with(&format!("From: {me}\r\nDate: ")), "{rest}");
    assert_eq!(
        field_names(&msg),
        ["Received", "From", "Date", "Message-ID"]
    );
    assert!(rest.ends_with(">\r\n\r\n"), "no body: {rest:?}");

    let links = Links::new();
    let (q0, c0) = (queued_count(&relay), captured(&relay).len());
    assert_oversized_refused(&relay);
    assert_bad_recipients_refused(&relay);
    assert_bad_options_refused(&relay, &links);

    assert_nothing_stored(&relay, q0, c0, "refusals");
    let out = linked(&links, "mailq", &relay, &[], b"");
    out.assert_code(0, "mailq");
    assert_eq!(
        out.stdout.trim(),
        "Mail queue is empty",
        "{}",
        out.describe()
    );
}

/// Over the 4096-byte limit: refused before anything reaches the daemon,
/// whether the input is a little or a lot too large.
fn assert_oversized_refused(relay: &Relay) {
    for size in [5000, 4 << 20] {
        let mut big = b"Subject: big\n\n".to_vec();
        while big.len() < size {
            big.extend_from_slice(b"0123456789012345678901234567890123456789\n");
        }
        let out = sendmail(relay, &["big@example.net"], &big);
        out.assert_code(EX_DATAERR, "oversized message");
        assert!(
            out.stderr.contains("larger than the limit of 4096 bytes"),
            "{}",
            out.describe()
        );
    }
    // Fits as read, but not with the fields sendmail adds.
    let mut near = b"Subject: near\n\n".to_vec();
    while near.len() < 4000 {
        near.extend_from_slice(b"abcdefghij\n");
    }
    let out = sendmail(relay, &["big@example.net"], &near);
    out.assert_code(EX_DATAERR, "over the limit once completed");
}

fn assert_bad_recipients_refused(relay: &Relay) {
    let out = sendmail(relay, &[], b"Subject: s\n\nx\n");
    out.assert_code(EX_USAGE, "no recipients");
    assert!(out.stderr.contains("no recipients"), "{}", out.describe());

    let out = sendmail(relay, &["|cmd@x.example"], b"Subject: s\n\nx\n");
    out.assert_code(EX_NOUSER, "pipe recipient");
    assert!(
        out.stderr.contains("invalid recipient"),
        "{}",
        out.describe()
    );

    for bad in ["a b@c.example", "/etc/passwd@x.example", "x@../y"] {
        let out = sendmail(relay, &[bad], b"Subject: s\n\nx\n");
        assert!(
            matches!(out.code, Some(EX_USAGE) | Some(EX_NOUSER)),
            "{bad:?}: {}",
            out.describe()
        );
    }
    // A dangerous address taken from the header with -t is refused too, and
    // the whole message with it.
    let out = sendmail(relay, &["-t"], b"To: |cmd@x.example\nSubject: s\n\nx\n");
    assert!(
        matches!(out.code, Some(EX_USAGE) | Some(EX_NOUSER)),
        "{}",
        out.describe()
    );
}

fn assert_bad_options_refused(relay: &Relay, links: &Links) {
    for (args, what) in [
        (&["-Z", "x@example.net"][..], "unknown option -Z"),
        (&["--help"][..], "unknown option --help"),
        (&["-f"][..], "option -f requires an argument"),
    ] {
        let out = linked(links, "sendmail", relay, args, b"x\n");
        out.assert_code(EX_USAGE, what);
        assert!(out.stderr.contains(what), "{}", out.describe());
        assert!(out.stderr.contains("usage: sendmail"), "{}", out.describe());
    }
    let out = sendmail(relay, &["-N", "never,success", "x@example.net"], b"x\n");
    out.assert_code(EX_USAGE, "-N never,success");
}

/// A line longer than `[limits] max_line_length` is refused by the daemon; the
/// drop directory must not accept it instead when the daemon is down.
#[test]
fn overlong_line_refused_with_or_without_daemon() {
    let mut relay = Relay::start(&format!("{CAPTURE}\n[limits]\nmax_line_length = 998\n"));
    let mut input = b"Subject: long line\n\n".to_vec();
    input.extend_from_slice(&[b'x'; 1500]);
    input.push(b'\n');
    let (q0, c0) = (queued_count(&relay), captured(&relay).len());
    let out = sendmail(&relay, &["long@example.net"], &input);
    out.assert_code(EX_DATAERR, "long line, daemon up");
    assert!(out.stderr.contains("line"), "{}", out.describe());
    assert_nothing_stored(&relay, q0, c0, "long line, daemon up");

    relay.kill();
    let out = sendmail(&relay, &["long@example.net"], &input);
    out.assert_code(EX_DATAERR, "long line, daemon down");
    assert!(out.stderr.contains("998"), "{}", out.describe());
    assert!(drop_files(&relay).is_empty(), "{:?}", drop_files(&relay));

    // A planted drop file with such a line is set aside, not queued.
    let path = relay.path("drop").join("1.1.planted");
    let mut planted =
        br#"{"version":1,"sender":"a@example.com","recipients":["b@example.net"],"created":1}"#
            .to_vec();
    planted.push(b'\n');
    planted.extend_from_slice(b"Subject: planted\r\n\r\n");
    planted.extend_from_slice(&[b'y'; 1500]);
    planted.extend_from_slice(b"\r\n");
    std::fs::write(&path, &planted).expect("plant");
    relay.spawn();
    assert!(
        relay.wait_log("drop file 1.1.planted refused", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    assert!(!path.exists());
    assert!(relay.path("drop").join(".bad").join("1.1.planted").exists());
    // The one queued since q0 is assert_nothing_stored's sentinel.
    assert_eq!(queued_count(&relay), q0 + 1);
}

/// A 40 MB attachment through sendmail held to 48 MiB of data (`prlimit`):
/// it passes only if sendmail never holds the message whole. Delivered
/// intact with the daemon up; with it down, left in the drop directory and
/// delivered intact once it starts.
#[test]
fn a_large_message_streams_through_with_or_without_daemon() {
    let have_prlimit = Command::new("prlimit").arg("--version").output().is_ok();
    if !common::require("prlimit (util-linux)", have_prlimit) {
        return;
    }
    let config = format!("{CAPTURE}\n[limits]\nmax_message_size = 64000000\n");
    let mut relay = Relay::start(&config);
    let mut input = b"Subject: attachment\n\n".to_vec();
    let mut body = Vec::new();
    let mut n = 0u64;
    while body.len() < 40 << 20 {
        body.extend_from_slice(
            format!("{n:012} QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9w\r\n")
                .as_bytes(),
        );
        n += 1;
    }
    // LF on the way in, CRLF in the queue.
    input.extend_from_slice(
        &body
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect::<Vec<u8>>(),
    );
    let limited = |relay: &Relay| {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--data={}", 48 << 20))
            .arg("--")
            .arg(BIN)
            .args(["sendmail", "-v", "-i", "big@example.net"])
            .env("SMARTHOST_CONFIG", &relay.config_path);
        run(cmd, &input)
    };
    let out = limited(&relay);
    out.assert_code(0, "40 MB, daemon up");
    let (_, eml) = captured_id(&relay, &out.queue_id());
    assert!(
        eml.ends_with(&body),
        "delivered altered ({} bytes)",
        eml.len()
    );
    assert!(eml.len() < body.len() + 4096, "{} bytes", eml.len());

    relay.kill();
    let out = limited(&relay);
    out.assert_code(0, "40 MB, daemon down");
    assert_eq!(drop_files(&relay).len(), 1, "{}", out.describe());
    relay.spawn();
    let all = wait_captured(&relay, 2);
    assert!(all.iter().all(|(_, eml)| eml.ends_with(&body)));
}

// ---------------------------------------------------------------------------
// 8. Legacy flags, -bi, -bp, -q, -bd

/// Options sendmail accepts and ignores (or that change nothing here), one
/// invocation each.
const LEGACY_FLAG_SETS: &[&[&str]] = &[
    &["-odi"],
    &["-odb"],
    &["-odq"],
    &["-oem"],
    &["-oep"],
    &["-oee"],
    &["-N", "success,failure"],
    &["-N", "never"],
    &["-V", "envid123"],
    &["-R", "hdrs"],
    &["-B", "7BIT"],
    &["-oQ/x"],
    &["-h", "3"],
    &["-n"],
    &["-m"],
    &["-U"],
    &["-v"],
    &[
        "-c",
        "-x",
        "-G",
        "-L",
        "label",
        "-Am",
        "-O",
        "DeliveryMode=b",
    ],
    &["-bm"],
    &["-r", "<flags-sender@example.com>"],
    &["--"],
];

#[test]
fn legacy_flags_and_modes() {
    let dead_port = common::free_port();
    let relay = Relay::start(&format!(
        r#"
[[route]]
name = "capture"
type = "directory"
path = "{{dir}}/mail"
[[route]]
name = "dead"
host = "127.0.0.1"
port = {dead_port}
tls = "none"
[routing]
default = "capture"
[routing.senders]
"held.example" = "dead"
"#
    ));
    let links = Links::new();
    let subjects = send_with_each_flag_set(&relay, &links);
    // -- protects a recipient that looks like an option (symlink spelling).
    let out = linked(
        &links,
        "sendmail",
        &relay,
        &["-v", "--", "-dash@example.net"],
        b"Subject: dash\n\nx\n",
    );
    out.assert_code(0, "-- -dash@example.net");
    let (meta, _) = captured_id(&relay, &out.queue_id());
    assert_eq!(recipients(&meta), ["-dash@example.net"]);

    let all = wait_captured(&relay, LEGACY_FLAG_SETS.len() + 1);
    for (subject, flags) in &subjects {
        let (meta, msg) = all
            .iter()
            .find(|(_, m)| fields(m, "subject") == [subject.as_str()])
            .unwrap_or_else(|| panic!("{flags:?}: not delivered"));
        assert_eq!(recipients(meta), ["flags@example.net"], "{flags:?}");
        let want = if flags.contains(&"-r") {
            "flags-sender@example.com".to_string()
        } else {
            default_sender()
        };
        assert_eq!(sender(meta), want, "{flags:?}");
        assert!(split(msg).1.starts_with(b"flags test "), "{flags:?}");
    }
    assert_modes(&relay);
    assert_stuck_message_listed_and_flushed(&relay, &links);
}

/// One message with each of [`LEGACY_FLAG_SETS`], alternately through the
/// subcommand and the symlink; each accepted. Subject → flags.
fn send_with_each_flag_set(relay: &Relay, links: &Links) -> BTreeMap<String, Vec<&'static str>> {
    let mut subjects = BTreeMap::new();
    for (i, flags) in LEGACY_FLAG_SETS.iter().enumerate() {
        let subject = format!("flags {i}: {}", flags.join(" "));
        let mut args = flags.to_vec();
        args.push("flags@example.net");
        let input = format!("Subject: {subject}\n\nflags test {i}\n");
        let out = if i % 2 == 0 {
            sendmail(relay, &args, input.as_bytes())
        } else {
            linked(links, "sendmail", relay, &args, input.as_bytes())
        };
        out.assert_code(0, &format!("sendmail {args:?}"));
        subjects.insert(subject, flags.to_vec());
    }
    subjects
}

fn assert_modes(relay: &Relay) {
    // -v shows which options were ignored.
    let out = sendmail(
        relay,
        &["-v", "-oQ/x", "-h", "3", "flags@example.net"],
        b"x\n",
    );
    out.assert_code(0, "-v with ignored options");
    assert!(
        out.stderr.contains("sendmail: ignoring -oQ/x -h 3"),
        "{}",
        out.describe()
    );
    // Delivered and gone before the stuck message's listing counts the
    // queue (under stress-ng it was still there, due now).
    captured_id(relay, &out.queue_id());
    assert!(
        relay.wait_queue_empty(Duration::from_secs(20)),
        "{}",
        relay.log()
    );

    // -bi (newaliases) does nothing, successfully.
    let out = sendmail(relay, &["-bi"], b"");
    out.assert_code(0, "-bi");
    // -bd would mean running a daemon: refused with a pointer to `serve`.
    let out = sendmail(relay, &["-bd"], b"");
    out.assert_code(EX_USAGE, "-bd");
    assert!(out.stderr.contains("smarthost serve"), "{}", out.describe());
    // Recipients make no sense with a mode.
    let out = sendmail(relay, &["-bp", "x@example.net"], b"");
    out.assert_code(EX_USAGE, "-bp with a recipient");
}

/// A message that stays queued (its route's host refuses connections),
/// listed by -bp and by mailq, then flushed by -q.
fn assert_stuck_message_listed_and_flushed(relay: &Relay, links: &Links) {
    let out = sendmail(
        relay,
        &["-v", "-f", "app@held.example", "stuck@example.net"],
        b"Subject: stuck\n\nx\n",
    );
    out.assert_code(0, "queued for the dead route");
    let id = out.queue_id();
    assert!(
        relay.wait_log(
            &format!("{id}: to=<stuck@example.net>"),
            1,
            Duration::from_secs(20)
        ),
        "{}",
        relay.log()
    );
    let bp = sendmail(relay, &["-bp"], b"");
    bp.assert_code(0, "-bp");
    let mq = linked(links, "mailq", relay, &[], b"");
    mq.assert_code(0, "mailq");
    for listing in [&bp.stdout, &mq.stdout] {
        assert!(listing.contains(&id), "{listing}");
        assert!(listing.contains("app@held.example"), "{listing}");
        assert!(listing.contains("stuck@example.net"), "{listing}");
        assert!(listing.contains("-- 1 message"), "{listing}");
    }
    // -q flushes: one more attempt right away, instead of in 15 minutes.
    let attempts = |log: &str| {
        log.matches(&format!("{id}: to=<stuck@example.net>"))
            .count()
    };
    let before = attempts(&relay.log());
    let out = sendmail(relay, &["-q"], b"");
    out.assert_code(0, "-q");
    assert!(
        common::wait_for(Duration::from_secs(20), || attempts(&relay.log()) > before),
        "-q did not cause another attempt; log:\n{}",
        relay.log()
    );
    let out = sendmail(relay, &[&format!("-qI{id}")], b"");
    out.assert_code(0, "-qI<id>");
    let out = sendmail(relay, &["-qSapp@held.example"], b"");
    out.assert_code(EX_USAGE, "-qS");
}

// ---------------------------------------------------------------------------
// 9. sendmail -bs

#[test]
fn smtp_on_stdin() {
    let relay = Relay::start(CAPTURE);
    let mut bs = BsSession::start(&relay);
    let greeting = bs.reply();
    assert!(greeting.starts_with("220 relay.test "), "{greeting}");
    bs.say("EHLO client.example\r\n");
    let ehlo = bs.reply();
    assert!(ehlo.starts_with("250-relay.test"), "{ehlo}");
    assert!(ehlo.contains("8BITMIME"), "{ehlo}");
    for (command, code) in [
        ("MAIL FROM:<bs@example.com>\r\n", "250 "),
        ("RCPT TO:<one@example.net>\r\n", "250 "),
        ("RCPT TO:<two@example.net>\r\n", "250 "),
        ("DATA\r\n", "354 "),
    ] {
        bs.say(command);
        assert!(bs.reply().starts_with(code), "{}", bs.transcript);
    }
    bs.say("From: bs@example.com\r\nSubject: over -bs\r\n\r\nhello\r\n..stuffed\r\n.\r\n");
    let done = bs.reply();
    let id = done
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{}", bs.transcript))
        .to_string();
    bs.say("QUIT\r\n");
    assert!(bs.reply().starts_with("221 "), "{}", bs.transcript);
    let status = bs
        .guard
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("sendmail -bs did not exit after QUIT"));
    assert_eq!(status.code(), Some(0));

    let (meta, msg) = captured_id(&relay, &id);
    assert_eq!(recipients(&meta), ["one@example.net", "two@example.net"]);
    assert_eq!(sender(&meta), "bs@example.com");
    // SMTP transparency undone, and nothing added: the client sent a message.
    assert_eq!(
        common::strip_received(&msg),
        b"From: bs@example.com\r\nSubject: over -bs\r\n\r\nhello\r\n.stuffed\r\n"
    );
    assert!(msg.starts_with(b"Received: by relay.test (smarthost, from userid "));
}

/// `sendmail -bs` running as a child: SMTP over its stdin and stdout.
struct BsSession {
    guard: Guard,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every reply line so far, for failure messages.
    transcript: String,
}

impl BsSession {
    fn start(relay: &Relay) -> BsSession {
        let mut cmd = Command::new(BIN);
        cmd.args(["sendmail", "-bs"])
            .env("SMARTHOST_CONFIG", &relay.config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd);
        let stdin = guard.child.stdin.take().expect("stdin");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = guard.child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        BsSession {
            guard,
            stdin,
            lines,
            transcript: String::new(),
        }
    }

    /// The next reply, all its lines (each must end in CRLF).
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no reply; so far:\n{}", self.transcript));
            self.transcript.push_str(&line);
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn say(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
    }
}

// ---------------------------------------------------------------------------
// 10. Daemon stopped: the drop directory

#[test]
fn daemon_down_uses_drop_directory() {
    let mut relay = Relay::start(CAPTURE);
    let links = Links::new();
    relay.kill();

    let input = "From: app@example.com\nTo: later@example.net\nSubject: while down\n\nkept for later\n..dots\n";
    let out = linked(
        &links,
        "sendmail",
        &relay,
        &["-v", "-t", "-i"],
        input.as_bytes(),
    );
    out.assert_code(0, "sendmail with the daemon down");
    assert!(
        out.stderr.contains("message left in") && out.stderr.contains("for pickup"),
        "{}",
        out.describe()
    );
    let files = drop_files(&relay);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!files[0].starts_with('.'), "{files:?}");
    assert_daemon_commands_unavailable(&relay, &links);

    assert_eq!(captured(&relay).len(), 0);
    relay.spawn();
    let all = wait_captured(&relay, 1);
    assert_eq!(all.len(), 1);
    let (meta, msg) = &all[0];
    assert_eq!(recipients(meta), ["later@example.net"]);
    assert_eq!(sender(meta), default_sender());
    assert_crlf(msg);
    let m = text(msg);
    // No `with` clause for mail from sendmail, as Postfix's pickup writes it.
    assert!(m.contains(")\r\n\tid "), "{m}");
    assert!(m.contains("\r\nSubject: while down\r\n"), "{m}");
    assert!(m.ends_with("\r\n\r\nkept for later\r\n..dots\r\n"), "{m}");
    assert!(
        common::wait_for(Duration::from_secs(5), || drop_files(&relay).is_empty()),
        "{:?}",
        drop_files(&relay)
    );
    assert!(relay.log().contains("picked up from"), "{}", relay.log());

    // And with the daemon running again, straight through the socket.
    let (meta, _) = deliver(&relay, &["again@example.net"], b"Subject: again\n\nx\n");
    assert_eq!(recipients(&meta), ["again@example.net"]);
    assert!(drop_files(&relay).is_empty());
}

/// With the daemon down, queue commands give a clear message and
/// EX_UNAVAILABLE, and -bs tells the SMTP client to come back later.
fn assert_daemon_commands_unavailable(relay: &Relay, links: &Links) {
    for (name, args) in [
        ("mailq", &[][..]),
        ("sendmail", &["-bp"][..]),
        ("sendmail", &["-q"][..]),
    ] {
        let out = linked(links, name, relay, args, b"");
        out.assert_code(
            EX_UNAVAILABLE,
            &format!("{name} {args:?} with the daemon down"),
        );
        assert!(
            out.stderr.contains("cannot reach the smarthost daemon")
                && out.stderr.contains("smarthost serve"),
            "{}",
            out.describe()
        );
    }
    let out = sendmail(relay, &["-bs"], b"EHLO x\r\nQUIT\r\n");
    out.assert_code(75, "-bs with the daemon down");
    assert!(out.stdout.starts_with("421 4.3.0 "), "{}", out.describe());
}

// ---------------------------------------------------------------------------
// 11. SIGKILL during pickup

/// `smarthost serve` started by the test itself, so it can be killed before it
/// is ready (the harness waits for readiness).
fn spawn_serve(relay: &Relay) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&relay.log_path)
        .expect("open log");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&relay.config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    Guard::spawn(&mut cmd)
}

#[test]
fn sigkill_during_pickup_loses_nothing() {
    const MESSAGES: usize = 200;
    let mut relay = Relay::start(CAPTURE);
    relay.kill();
    drop_while_down(&relay, MESSAGES);
    let kills = kill_during_pickup(&relay);

    // Finally let it run.
    relay.spawn();
    let ok = common::wait_for(Duration::from_secs(60), || {
        let mut seen = std::collections::BTreeSet::new();
        for (_, m) in captured(&relay) {
            seen.extend(fields(&m, "subject"));
        }
        seen.len() >= MESSAGES
    });
    let count = crash_message_counts(&relay);
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|i| !count.contains_key(&format!("crash {i:03}")))
        .collect();
    let duplicates: Vec<(&String, &usize)> = count.iter().filter(|(_, &n)| n > 1).collect();
    eprintln!(
        "{kills} kill(s); {} distinct message(s) delivered, {} duplicate(s): {duplicates:?}",
        count.len(),
        duplicates.len()
    );
    assert!(
        ok && missing.is_empty(),
        "missing after {kills} kills: {missing:?}; log:\n{}",
        relay.log()
    );
    assert!(
        common::wait_for(Duration::from_secs(10), || drop_files(&relay).is_empty()),
        "drop directory not empty: {:?}",
        drop_files(&relay)
    );
    assert_eq!(count.len(), MESSAGES);
}

/// Drops `messages` messages ("crash NNN" to rNNN@) while the daemon is down,
/// from four threads at once.
fn drop_while_down(relay: &Relay, messages: usize) {
    const THREADS: usize = 4;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in (t..messages).step_by(THREADS) {
                    let input = format!(
                        "Subject: crash {i:03}\nMessage-ID: <crash-{i}@test.example>\n\nmessage {i}\n"
                    );
                    let out = sendmail(relay, &[&format!("r{i}@example.net")], input.as_bytes());
                    out.assert_code(0, &format!("drop {i}"));
                }
            });
        }
    });
    let files = drop_files(relay);
    assert_eq!(files.len(), messages, "{files:?}");
    eprintln!("dropped {messages} messages in {:?}", started.elapsed());
}

/// Starts the daemon and SIGKILLs it again and again while it works through
/// the drop directory; how many times.
fn kill_during_pickup(relay: &Relay) -> usize {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut kills = 0;
    for round in 0..6 {
        let picked_before = relay.log().matches("picked up from").count();
        let ready_before = relay.log().matches("smarthost ready").count();
        let mut g = spawn_serve(relay);
        if round == 0 {
            // Right after start: during queue open and recovery.
            std::thread::sleep(Duration::from_millis(rnd(30)));
        } else {
            // As soon as pickup is under way, plus a little.
            let want = picked_before + 1 + rnd(5) as usize;
            common::wait_for(Duration::from_secs(10), || {
                relay.log().matches("picked up from").count() >= want
                    || relay.log().matches("smarthost ready").count() > ready_before
            });
            std::thread::sleep(Duration::from_millis(rnd(15)));
        }
        g.kill();
        kills += 1;
        let left = drop_files(relay)
            .iter()
            .filter(|n| !n.starts_with('.'))
            .count();
        eprintln!("round {round}: killed; {left} drop file(s) left");
        if left == 0 {
            break;
        }
    }
    kills
}

/// How many copies of each "crash NNN" message were captured; each copy must
/// have gone to its own recipient, its body intact.
fn crash_message_counts(relay: &Relay) -> BTreeMap<String, usize> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for (meta, m) in captured(relay) {
        for s in fields(&m, "subject") {
            *count.entry(s.clone()).or_default() += 1;
            let i: usize = s.trim_start_matches("crash ").parse().expect("number");
            assert_eq!(recipients(&meta), [format!("r{i}@example.net")], "{s}");
            assert!(
                text(&m).ends_with(&format!("\r\n\r\nmessage {i}\r\n")),
                "{s}"
            );
        }
    }
    count
}

/// The config file given with -C wins over $SMARTHOST_CONFIG.
#[test]
fn config_option_wins_over_environment() {
    let relay = Relay::start(CAPTURE);
    let mut cmd = Command::new(BIN);
    cmd.args(["sendmail", "-v", "-C"])
        .arg(&relay.config_path)
        .arg("c@example.net")
        .env("SMARTHOST_CONFIG", "/nonexistent/smarthost.toml");
    let out = run(cmd, b"Subject: -C\n\nx\n");
    out.assert_code(0, "-C");
    let (meta, _) = captured_id(&relay, &out.queue_id());
    assert_eq!(recipients(&meta), ["c@example.net"]);

    let mut cmd = Command::new(BIN);
    cmd.args([
        "sendmail",
        "-C",
        "/nonexistent/smarthost.toml",
        "c@example.net",
    ]);
    let out = run(cmd, b"x\n");
    out.assert_code(78, "missing config");
    assert!(
        out.stderr.contains("/nonexistent/smarthost.toml"),
        "{}",
        out.describe()
    );
}
