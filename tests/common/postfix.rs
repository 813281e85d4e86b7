//! A private Postfix instance (Debian package `postfix`) as a real upstream:
//! its own configuration and queue in a temporary directory, smtpd on a
//! loopback port of its own, every accepted message put on hold so that the
//! test reads exactly what arrived with `postcat` (envelope records: the DSN
//! parameters as Postfix parsed them; the message as queued).
//!
//! Starting a Postfix instance needs root (the master runs as root and hands
//! its queue to the `postfix` user), so [`Postfix::start`] returns None where
//! that is not possible, after `common::require` (a failure under CI=true).
//! Include it with `#[path = "common/postfix.rs"] mod postfix;` beside
//! `mod common;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct Postfix {
    pub port: u16,
    dir: tempfile::TempDir,
}

/// One held message: its envelope records and its content, as postcat
/// prints them.
pub struct Held {
    pub id: String,
    pub envelope: String,
    pub body: Vec<u8>,
}

impl Held {
    /// Sent from the null sender: a notice.
    pub fn is_notice(&self) -> bool {
        self.record("sender").as_deref() == Some("")
    }

    /// The value of `named_attribute: <name>=…` or `<name>: …`.
    pub fn record(&self, name: &str) -> Option<String> {
        let attr = format!("named_attribute: {name}=");
        let plain = format!("{name}: ");
        self.envelope.lines().find_map(|l| {
            l.strip_prefix(&attr)
                .or_else(|| l.strip_prefix(&plain))
                .map(|v| v.trim().to_string())
        })
    }

    /// Every value of a record that may repeat (`recipient`, `dsn_orig_rcpt`).
    pub fn records(&self, name: &str) -> Vec<String> {
        let attr = format!("named_attribute: {name}=");
        let plain = format!("{name}: ");
        let lines = self.envelope.lines();
        lines
            .filter_map(|l| l.strip_prefix(&attr).or_else(|| l.strip_prefix(&plain)))
            .map(|v| v.trim().to_string())
            .collect()
    }
}

impl Postfix {
    /// Starts an instance; `main_extra` is appended to its main.cf (e.g.
    /// `smtpd_discard_ehlo_keywords = dsn`).
    pub fn start(main_extra: &str) -> Option<Postfix> {
        let root = is_root();
        let usable = root && Path::new("/usr/sbin/postfix").exists();
        if !crate::common::require(
            "root and /usr/sbin/postfix (a private Postfix instance)",
            usable,
        ) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::common::free_port();
        let pf = Postfix { port, dir };
        pf.configure(main_extra);
        let out = pf.postfix(&["start"]);
        assert!(out.status.success(), "postfix start: {}", pf.log());
        let up = crate::common::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "postfix did not listen on {port}: {}", pf.log());
        Some(pf)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn configure(&self, main_extra: &str) {
        let d = self.dir.path().display().to_string();
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(self.path(sub)).expect("mkdir");
        }
        // The temporary directory is 0700: the postfix user must reach its
        // queue and data directories below it.
        set_mode(self.dir.path(), 0o755);
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(self.path("data"))
            .status();
        assert!(chown.is_ok_and(|s| s.success()), "chown postfix data");
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = upstream.test\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject\n\
             smtpd_data_restrictions = check_client_access static:HOLD\n\
             {main_extra}\n"
        );
        std::fs::write(self.path("etc/main.cf"), main).expect("main.cf");
        std::fs::write(self.path("etc/master.cf"), self.master_cf()).expect("master.cf");
    }

    /// Debian's master.cf with smtpd on our port and nothing chrooted (a
    /// chroot would need copies of /etc files in the queue directory).
    fn master_cf(&self) -> String {
        let proto = ["/etc/postfix/master.cf.proto", "/etc/postfix/master.cf"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .expect("a master.cf to start from");
        let mut out = String::new();
        for line in proto.lines() {
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            let service = !line.starts_with(['#', ' ', '\t']) && fields.len() >= 8;
            if service && fields[4] == "y" {
                fields[4] = "n";
            }
            let listener = format!("127.0.0.1:{}", self.port);
            if service && fields[0] == "smtp" && fields[1] == "inet" {
                fields[0] = &listener;
                out.push_str(&fields.join(" "));
            } else if service {
                out.push_str(&fields.join(" "));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    fn postfix(&self, args: &[&str]) -> Output {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.path("etc"))
            .args(args)
            .output()
            .expect("run postfix")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("maillog")).unwrap_or_default()
    }

    /// The queue ids on hold.
    pub fn held_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.path("queue/hold"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Waits until `n` messages are on hold, then reads them all.
    pub fn wait_held(&self, n: usize) -> Vec<Held> {
        let ok = crate::common::wait_for(Duration::from_secs(60), || self.held_ids().len() >= n);
        assert!(
            ok,
            "{} held, wanted {n}: {}",
            self.held_ids().len(),
            self.log()
        );
        self.held_ids().iter().map(|id| self.read(id)).collect()
    }

    /// After the relay's sentinel: `n` messages held and the relay's queue
    /// empty, so anything the relay was going to send has arrived.
    pub fn settled(&self, relay: &crate::common::Relay, n: usize) -> Vec<Held> {
        let held = self.wait_held(n);
        assert!(relay.wait_queue_empty(Duration::from_secs(30)));
        assert_eq!(self.held_ids().len(), n, "more arrived: {}", self.log());
        held
    }

    fn read(&self, id: &str) -> Held {
        let postcat = |flag: &str| {
            let out = Command::new("/usr/sbin/postcat")
                .arg("-c")
                .arg(self.path("etc"))
                .args([flag, "-q", id])
                .output()
                .expect("run postcat");
            assert!(out.status.success(), "postcat {flag} {id}");
            out.stdout
        };
        Held {
            id: id.to_string(),
            envelope: String::from_utf8_lossy(&postcat("-e")).into_owned(),
            body: strip_postcat_banners(&postcat("-bh")),
        }
    }
}

/// postcat -bh prints `*** HEADER EXTRACTED …` / `*** MESSAGE CONTENTS …`
/// banner lines around the message: the message alone, CRLF.
fn strip_postcat_banners(out: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out);
    let lines = text.lines().filter(|l| !l.starts_with("*** "));
    lines
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .into_bytes()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
            uid.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // `stop` waits for the master to go; `abort` if it will not.
        if !self.postfix(&["stop"]).status.success() {
            let _ = self.postfix(&["abort"]);
        }
    }
}

/// A notice parsed by Python's `email` package (tests/peers/dsn_report.py),
/// as JSON: see the script for the fields.
pub fn parse_report(message: &[u8]) -> serde_json::Value {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), message).expect("write the notice");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dsn_report.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(file.path())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "Python's email package refused the notice: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(message)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}
