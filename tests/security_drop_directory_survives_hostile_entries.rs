//! The drop directory against a hostile member of its group, with the daemon
//! unprivileged (as `nobody`, its group `nogroup` the drop group) as in
//! production. While it is down, another user (`daemon`, in `nogroup` only as
//! a supplementary group) plants a FIFO, a symbolic link, a hard link, a
//! directory, a 10 GB sparse file, a `.bad` link to a directory elsewhere,
//! and a name and a sender with a newline and a fake log line in them;
//! root and that user each leave a real message with `sendmail`. Then: the
//! daemon starts and becomes ready, both messages are delivered, every hostile
//! entry is set aside in the daemon's own `.bad` and said loudly (mailq), no
//! log line is forged,
//! nothing outside the drop directory changes, and stop and restart work with
//! a new FIFO waiting.
//!
//! Needs root and `setpriv` (as CI has); without them it says it skipped, or
//! fails under `CI=true`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{captured, wait_for, CAPTURE};

const NOBODY: u32 = 65534;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Site {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
}

impl Site {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    /// `smarthost serve` as nobody; waits for the `ready` line number `n`.
    fn start(&self, n: usize) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("log"))
            .unwrap();
        let child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serve as nobody");
        let daemon = Daemon(child);
        let ready = wait_for(Duration::from_secs(20), || {
            self.log().matches("smarthost ready").count() >= n
        });
        assert!(ready, "not ready: {}", self.log());
        daemon
    }
}

/// Stops the daemon with SIGTERM and waits for it to be gone.
fn stop(mut d: Daemon, site: &Site) {
    common::kill(d.0.id(), "TERM");
    let gone = wait_for(Duration::from_secs(20), || {
        d.0.try_wait().ok().flatten().is_some()
    });
    assert!(gone, "SIGTERM did not stop it: {}", site.log());
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = d.join("smarthost");
    assert!(Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_smarthost"))
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success()));
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&state, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let drop = state.join("drop");
    std::fs::create_dir(&drop).unwrap();
    nix::unistd::chown(&drop, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o1730)).unwrap();
    let config = d.join("smarthost.toml");
    let port = common::free_port();
    std::fs::write(
        &config,
        format!(
            "hostname = \"relay.test\"\nlisten = [\"127.0.0.1:{port}\"]\nqueue_path = \"{d}/state/queue\"\n{}\n[local]\nsocket_dir = \"{d}/state/run\"\ndrop_dir = \"{d}/state/drop\"\n",
            CAPTURE.replace("{dir}", &format!("{}/state", d.display())),
            d = d.display()
        ),
    )
    .unwrap();
    Site { dir, bin, config }
}

/// A shell script as `daemon` (uid 1) with `nogroup` as a supplementary
/// group only: a member of the drop group who is not its primary member.
fn as_member(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=daemon",
            "--regid=daemon",
            "--groups=nogroup",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything a member of the group can put in the directory that is not mail.
fn plant(site: &Site) {
    let elsewhere = site.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = format!(
        "set -e; cd {drop}; mkfifo 00000000.fifo; ln -s /etc/passwd 00000001.link; \
         mkdir 00000002.dir; truncate -s 10G 00000003.big; \
         echo mine > {e}/own; ln {e}/own 00000004.hard; ln -s {e} .bad; \
         touch \"$(printf '00000005\\n<6> INFO 0A1B: FORGED status=sent')\"; \
         printf '%s\\n%s\\n' '{{\"version\":1,\"sender\":\"a@b\\nFORGED status=sent\",\"recipients\":[\"c@d.example\"],\"created\":1}}' 'Subject: x' > 00000006.sender",
        drop = site.path("state/drop").display(),
        e = elsewhere.display()
    );
    let out = as_member(&script);
    assert!(out.status.success(), "{}", text(&out));
}

/// `sendmail -t` with the daemon down: root, then the supplementary member.
fn drop_mail(site: &Site) {
    let config = site.config.to_str().unwrap();
    let bin = site.bin.to_str().unwrap();
    let root = Command::new(bin)
        .args(["sendmail", "-C", config, "-t", "-f", "root@relay.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"To: a@example.net\nSubject: from root\n\nhi\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(root.status.success(), "root's sendmail: {}", text(&root));
    let member = as_member(&format!(
        "printf 'To: b@example.net\\nSubject: from a member\\n\\nhi\\n' | {bin} sendmail -C {config} -t"
    ));
    assert!(
        member.status.success(),
        "the member's sendmail: {}",
        text(&member)
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Everything planted is in the daemon's own `.bad`, each with one refusal
/// line, and no forged line is in the log.
fn assert_set_aside(site: &Site) {
    let bad = site.path("state/drop/.bad");
    let set_aside = wait_for(Duration::from_secs(10), || names(&bad).len() >= 6);
    assert!(set_aside, "{:?}\n{}", names(&bad), site.log());
    assert_eq!(std::fs::symlink_metadata(&bad).unwrap().uid(), NOBODY);
    assert_eq!(
        names(&bad),
        [
            "00000000.fifo",
            "00000001.link",
            "00000003.big",
            "00000004.hard",
            "00000005\n<6> INFO 0A1B: FORGED status=sent",
            "00000006.sender"
        ]
    );
    // A newline in a name or a sender never starts a log line of its own.
    let log = site.log();
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(line.contains("refused"), "a forged line: {line:?}\n{log}");
    }
    let forged = log.lines().filter(|l| l.contains("FORGED")).count();
    assert_eq!(forged, 2, "one refusal line each: {log}");
}

#[test]
fn hostile_drop_entries_are_set_aside_and_mail_still_flows() {
    let ok = nix::unistd::geteuid().is_root() && common::have("setpriv");
    if !common::require("root and setpriv (hostile drop entries)", ok) {
        return;
    }
    let site = site();
    plant(&site);
    drop_mail(&site);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let daemon = site.start(1);
    let out = site.path("state/out");
    let delivered = wait_for(Duration::from_secs(20), || captured(&out).len() >= 2);
    assert!(delivered, "{}", site.log());
    assert_set_aside(&site);
    // Someone else's directory cannot change parents: hidden where it is.
    let drop = names(&site.path("state/drop"));
    assert!(
        drop.iter().any(|n| n.starts_with(".bad.planted.")),
        "{drop:?}"
    );
    assert!(
        drop.iter().any(|n| n.starts_with(".bad.00000002.dir.")),
        "{drop:?}"
    );
    assert!(!drop.iter().any(|n| !n.starts_with('.')), "{drop:?}");
    assert_eq!(
        names(&site.path("elsewhere")),
        ["own"],
        "nothing went through the link"
    );
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    let mailq = Command::new(&site.bin)
        .args(["mailq", "-C"])
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(
        text(&mailq).contains("Drop directory: 8 files could not be queued"),
        "{}",
        text(&mailq)
    );
    stop(daemon, &site);
    // A new FIFO waiting does not stop the next start or stop.
    let out = as_member(&format!(
        "mkfifo {}/00000009.fifo",
        site.path("state/drop").display()
    ));
    assert!(out.status.success(), "{}", text(&out));
    let again = site.start(2);
    stop(again, &site);
}
