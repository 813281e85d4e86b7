//! The drop directory: where `sendmail` leaves a message while the daemon is not
//! running, and where the daemon picks it up when it starts and while it runs.
//!
//! A drop file is one JSON line (the envelope) followed by the message in CRLF
//! form. `sendmail` writes it under a dot-name, fsyncs it, renames it into place
//! and fsyncs the directory, so a file without a dot is always complete and
//! durable. The daemon queues it (fsynced), and only then removes the file: a
//! crash in between delivers the message twice, never zero times.
//!
//! The directory belongs to the daemon (mode 1730): its group may create files
//! but nobody else may list or read them; unprivileged users submit through the
//! socket instead, or through a `sendmail` that is setgid to that group.

use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::intake::{Incoming, Intake, Peer};
use crate::safe_fs::Dir;
use crate::smtp::address::needs_smtputf8;

/// The drop directory's mode: owner all, group write+search, sticky.
pub const DIR_MODE: u32 = 0o1730;
/// How often a running daemon looks for new files.
const PICKUP_INTERVAL: Duration = Duration::from_secs(2);
/// A dot-file older than this was abandoned by a `sendmail` that died mid-write.
const ABANDONED: u64 = 86400;
const FORMAT_VERSION: u32 = 1;

mod check;
#[cfg(test)]
use check::check;
pub use check::line_too_long;
use check::{check_envelope, BodyCheck};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropEnvelope {
    pub version: u32,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Unix seconds when sendmail wrote it.
    pub created: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("drop directory {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// Writes a complete, durable drop file (sendmail's side), the message
/// copied from `message` as it is read. Returns its path.
pub fn write(
    dir: &Path,
    sender: &str,
    recipients: &[String],
    message: &mut dyn Read,
) -> Result<PathBuf, DropError> {
    let io = |source| DropError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let env = DropEnvelope {
        version: FORMAT_VERSION,
        sender: sender.to_string(),
        recipients: recipients.to_vec(),
        created: unix_now(),
    };
    let name = format!("{:x}.{}.{:016x}", env.created, std::process::id(), random());
    let tmp = dir.join(format!(".tmp.{name}"));
    let done = dir.join(&name);
    let mut line = serde_json::to_vec(&env).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(&line)?;
        std::io::copy(message, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &done)?;
        crate::durable::sync_dir_or_filesystem(dir, &f)
    })();
    if let Err(e) = result {
        // A file left in place would be delivered although sendmail failed.
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(&done);
        return Err(io(e));
    }
    Ok(done)
}

/// 64 random bits from the kernel, for unguessable file names.
fn random() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        // Uniqueness still holds through the pid and the exclusive create.
        Err(_) => u64::from(std::process::id()) ^ unix_now(),
    }
}

/// Creates the drop directory if it is missing (the daemon's side).
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Picks up drop files forever.
pub async fn run(intake: Intake) {
    loop {
        pickup(&intake).await;
        tokio::time::sleep(PICKUP_INTERVAL).await;
    }
}

/// Queues every complete drop file; returns how many were queued.
pub async fn pickup(intake: &Intake) -> usize {
    let dir = intake.config().local.drop_dir.clone();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!("drop directory {}: {e}", dir.display());
            return 0;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Names start with the creation time: oldest first.
    names.sort();
    let mut n = 0;
    for name in names {
        let path = dir.join(&name);
        if name.starts_with('.') {
            remove_if_abandoned(&path);
            continue;
        }
        match pickup_one(intake, &path).await {
            Ok(id) => {
                tracing::info!("{id}: picked up from {}", path.display());
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(
                        "{id}: queued, but cannot remove {}: {e}; it will be queued again",
                        path.display()
                    );
                }
                n += 1;
            }
            Err(Pickup::Bad(reason)) => set_aside(&dir, &name, &reason.to_string()),
            Err(Pickup::Later(reason)) => {
                tracing::warn!("{}: not picked up yet: {reason}", path.display());
                // The queue is unavailable; the rest would fail the same way.
                break;
            }
        }
    }
    n
}

enum Pickup {
    /// The file can never be queued.
    Bad(Refused),
    /// Try again later (queue unavailable).
    Later(crate::spool::StoreError),
}

/// Why a drop file can never be queued; it is set aside with this reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("cannot {op}: {reason}")]
    Unreadable { op: &'static str, reason: String },
    #[error("not a regular file")]
    NotAFile,
    #[error("a hard link: another name of a file that may not be its sender's")]
    HardLinked,
    #[error("larger than the message size limit")]
    TooLarge,
    #[error("no envelope line")]
    NoEnvelope,
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    #[error("unknown drop file version {0}")]
    Version(u32),
    #[error("sender <{address}>: {reason}")]
    Sender { address: String, reason: String },
    #[error("no recipients")]
    NoRecipients,
    #[error("more than {0} recipients")]
    TooManyRecipients(usize),
    #[error("recipient <{address}>: {reason}")]
    Recipient { address: String, reason: String },
    #[error("bare CR, bare LF or NUL in the message")]
    BadLineEnding,
    #[error("message does not end with CRLF")]
    NoFinalCrlf,
    #[error("a line is longer than {0} octets")]
    LineTooLong(usize),
}

fn unreadable(op: &'static str) -> impl Fn(std::io::Error) -> Pickup {
    move |e| {
        Pickup::Bad(Refused::Unreadable {
            op,
            reason: e.to_string(),
        })
    }
}

async fn pickup_one(intake: &Intake, path: &Path) -> Result<String, Pickup> {
    let config = intake.config();
    let limits = &config.limits;
    let (file, uid) = open_drop_file(path)?;
    let mut reader = std::io::BufReader::with_capacity(READ_CHUNK, file);
    let env = read_envelope(&mut reader)?;
    check_envelope(&env, limits).map_err(Pickup::Bad)?;
    let smtputf8 = needs_smtputf8(&env.sender) || env.recipients.iter().any(|r| needs_smtputf8(r));
    let peer = Peer::Local { uid };
    let mut incoming = Incoming {
        peer: &peer,
        helo: None,
        protocol: "local",
        eight_bit: false,
        sender: env.sender,
        recipients: env.recipients,
        smtputf8,
    };
    let mut receiving = intake.receive(&incoming).await.map_err(Pickup::Later)?;
    // The message goes to the spool as it is read and checked: never whole
    // in memory. A refusal drops what was written of it.
    let mut check = BodyCheck::new(limits);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = reader.read(&mut chunk).map_err(unreadable("read"))?;
        let Some(bytes) = chunk.get(..n).filter(|b| !b.is_empty()) else {
            break;
        };
        check.feed(bytes).map_err(Pickup::Bad)?;
        receiving.write(bytes).await.map_err(Pickup::Later)?;
    }
    incoming.eight_bit = check.finish().map_err(Pickup::Bad)?;
    intake
        .enqueue(incoming, receiving)
        .await
        .map_err(Pickup::Later)
}

/// Bytes read from a drop file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The envelope line is bounded by the recipient limit; 1 MiB is ample.
const MAX_ENVELOPE: u64 = 1024 * 1024;

/// Opens a drop file, never through a link someone planted: only regular
/// files are mail. Returns it and its owner.
fn open_drop_file(path: &Path) -> Result<(std::fs::File, u32), Pickup> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(unreadable("open"))?;
    let meta = file.metadata().map_err(unreadable("stat"))?;
    if !meta.is_file() {
        return Err(Pickup::Bad(Refused::NotAFile));
    }
    // The owner is who the mail is from: a second name for someone else's
    // file (which its group may create here) must not pass as theirs.
    if meta.nlink() > 1 {
        return Err(Pickup::Bad(Refused::HardLinked));
    }
    Ok((file, meta.uid()))
}

fn read_envelope<R: std::io::BufRead>(reader: &mut R) -> Result<DropEnvelope, Pickup> {
    let mut line = Vec::new();
    reader
        .take(MAX_ENVELOPE)
        .read_until(b'\n', &mut line)
        .map_err(unreadable("read"))?;
    if line.last() != Some(&b'\n') {
        return Err(Pickup::Bad(Refused::NoEnvelope));
    }
    serde_json::from_slice(&line).map_err(|e| Pickup::Bad(Refused::BadEnvelope(e.to_string())))
}

/// Moves a file that can never be queued out of the way, keeping it for the
/// operator instead of deleting someone's mail. Members of the directory's
/// group can create names in it, `.bad` too: a link or a directory of theirs
/// there is refused rather than used ([`crate::safe_fs`]).
fn set_aside(dir: &Path, name: &str, reason: &str) {
    let moved = Dir::open(dir).and_then(|d| {
        let bad = match d.subdir(".bad", 0o700) {
            Ok(bad) => bad,
            Err(e) => {
                // Someone else's `.bad` (the directory is ours, so we may
                // move it): out of the way, kept for the operator to see.
                let planted = format!(".bad.planted.{:016x}", crate::safe_fs::random());
                tracing::error!("drop directory .bad: {e}; moved to {planted}");
                d.rename(OsStr::new(".bad"), OsStr::new(&planted))?;
                d.subdir(".bad", 0o700)?
            }
        };
        d.move_to(OsStr::new(name), &bad)?;
        Ok(bad.path().join(name))
    });
    match moved {
        Ok(to) => tracing::error!(
            "drop file {name} refused: {reason}; moved to {}",
            to.display()
        ),
        Err(e) => tracing::error!("drop file {name} refused: {reason}; cannot move it aside: {e}"),
    }
}

fn remove_if_abandoned(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_file()
        || !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp."))
    {
        return;
    }
    let age = unix_now().saturating_sub(u64::try_from(meta.mtime()).unwrap_or(0));
    if age > ABANDONED {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    #[test]
    fn write_is_complete_and_named_without_dot() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a@example.com",
            &["b@example.net".into()],
            &mut &b"Subject: x\r\n\r\nhi\r\n"[..],
        )
        .unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.'));
        let bytes = std::fs::read(&p).unwrap();
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let env: DropEnvelope = serde_json::from_slice(&bytes[..nl]).unwrap();
        assert_eq!(env.recipients, vec!["b@example.net".to_string()]);
        assert_eq!(&bytes[nl + 1..], b"Subject: x\r\n\r\nhi\r\n");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn checks_like_smtp() {
        let limits = Limits {
            max_message_size: 100,
            max_recipients: 2,
            max_line_length: 998,
            max_connections: 1,
        };
        let env = |s: &str, r: &[&str]| DropEnvelope {
            version: FORMAT_VERSION,
            sender: s.into(),
            recipients: r.iter().map(|x| x.to_string()).collect(),
            created: 0,
        };
        let ok = env("a@example.com", &["b@example.net"]);
        assert_eq!(check(&ok, b"S: x\r\n\r\nhi\r\n", &limits), Ok(()));
        assert_eq!(check(&env("", &["b@example.net"]), b"", &limits), Ok(()));
        assert_eq!(
            check(&ok, b"S: x\n\r\n", &limits),
            Err(Refused::BadLineEnding),
            "bare LF"
        );
        assert_eq!(
            check(&ok, b"S: x\r\r\n", &limits),
            Err(Refused::BadLineEnding),
            "bare CR"
        );
        assert_eq!(
            check(&ok, b"S: \0\r\n", &limits),
            Err(Refused::BadLineEnding),
            "NUL"
        );
        assert_eq!(check(&ok, b"S: x", &limits), Err(Refused::NoFinalCrlf));
        assert_eq!(check(&ok, &[b'a'; 101], &limits), Err(Refused::TooLarge));
        assert_eq!(
            check(&env("a@example.com", &[]), b"", &limits),
            Err(Refused::NoRecipients)
        );
        assert_eq!(
            check(
                &env("a@example.com", &["a@x.y", "b@x.y", "c@x.y"]),
                b"",
                &limits
            ),
            Err(Refused::TooManyRecipients(2))
        );
        assert!(check(&env("a@example.com", &["|cmd@x.y"]), b"", &limits).is_err());
        assert!(check(&env("bad sender", &["b@x.y"]), b"", &limits).is_err());
        let short = Limits {
            max_line_length: 4,
            ..limits
        };
        // "..abc" is five octets on the wire, like the SMTP receiver counts.
        assert!(check(&ok, b"abcd\r\n.abc\r\n", &short).is_err());
        assert_eq!(check(&ok, b"abcd\r\n.ab\r\n", &short), Ok(()));
        assert!(check(&ok, b"abcde\r\n", &short).is_err(), "long line");
    }

    #[test]
    fn a_planted_bad_directory_is_not_used() {
        let drop = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), drop.path().join(".bad")).unwrap();
        std::fs::write(drop.path().join("f1"), "not a drop file").unwrap();
        set_aside(drop.path(), "f1", "test");
        assert!(drop.path().join(".bad/f1").exists(), "in a .bad of our own");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        let planted: Vec<_> = std::fs::read_dir(drop.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".bad.planted."))
            .collect();
        assert_eq!(planted.len(), 1, "the link kept aside: {planted:?}");
    }
}
