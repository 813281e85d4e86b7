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
use crate::dsn::{MailDsn, Notify, RcptDsn};
use crate::intake::{Incoming, Intake, Peer, Rcpt};
use crate::safe_fs::{Dir, SafeFsError};
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
    /// `sendmail -R/-V`: RET and ENVID (checked again at pickup).
    #[serde(default, skip_serializing_if = "MailDsn::is_empty")]
    pub dsn: MailDsn,
    /// `sendmail -N`, for every recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// What `sendmail` asks of delivery status notices (`-N`, `-R`, `-V`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    pub mail: MailDsn,
    pub notify: Option<Notify>,
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
    notices: &Notices,
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
        dsn: notices.mail.clone(),
        notify: notices.notify,
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
        readable_by_daemon(&f, dir)?;
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

/// The daemon reads drop files through the directory's group: a file root
/// (or a user in that group only as a supplementary group) makes would
/// otherwise have the maker's group, and sit unread. Given to the
/// directory's group, mode 0640, and checked, before a byte is written: a
/// file the daemon could not read must fail sendmail, not be lost later.
fn readable_by_daemon(f: &std::fs::File, dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let gid = std::fs::metadata(dir)?.gid();
    let want = nix::unistd::Gid::from_raw(gid);
    if f.metadata()?.gid() != gid {
        nix::unistd::fchown(f.as_fd(), None, Some(want)).map_err(|e| {
            std::io::Error::other(format!(
                "cannot give the drop file to the directory's group {gid} (the daemon could not read it): {e}"
            ))
        })?;
    }
    nix::sys::stat::fchmod(f.as_fd(), nix::sys::stat::Mode::from_bits_truncate(0o640))?;
    let st = f.metadata()?;
    if st.gid() != gid || st.mode() & 0o040 == 0 {
        return Err(std::io::Error::other(
            "the drop file would not be readable by the daemon",
        ));
    }
    Ok(())
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

/// Picks up drop files forever, the first time at once.
pub async fn run(intake: Intake) {
    loop {
        let picked = pickup(&intake).await;
        if picked > 0 {
            tracing::info!("picked up {picked} message(s) from the drop directory");
        }
        tokio::time::sleep(PICKUP_INTERVAL).await;
    }
}

/// Queues every complete drop file; returns how many were queued. Anything
/// else at a name (a FIFO, a link, a directory, a file too big to be mail)
/// is set aside without being read, so nobody with write access to the
/// directory can stall the pickup.
pub async fn pickup(intake: &Intake) -> usize {
    let path = intake.config().local.drop_dir.clone();
    let dir = match Dir::open(&path) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return 0,
        Err(e) => {
            tracing::warn!("drop directory: {e}");
            return 0;
        }
    };
    let Ok(entries) = std::fs::read_dir(&path) else {
        return 0;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Names start with the creation time: oldest first.
    names.sort();
    let mut n = 0;
    for name in names {
        if name.starts_with('.') {
            remove_if_abandoned(&path.join(&name));
            continue;
        }
        match pickup_one(intake, &dir, &name).await {
            Ok(Some(id)) => {
                tracing::info!("{id}: picked up from {}", path.join(&name).display());
                if let Err(e) = dir.remove(&name) {
                    tracing::error!("{id}: queued, but cannot remove {e}; it will be queued again");
                }
                n += 1;
            }
            Ok(None) => {}
            Err(Pickup::Bad(reason)) => {
                if let Some(waiting) = set_aside(&dir, &name, &reason.to_string()) {
                    intake.metrics().set_aside(waiting);
                }
            }
            Err(Pickup::Later(reason)) => {
                tracing::warn!("{name}: not picked up yet: {reason}");
                // The queue is unavailable; the rest would fail the same way.
                break;
            }
            Err(Pickup::Aliases(e)) => {
                // Left in place until /etc/aliases can be read again.
                tracing::warn!("{name}: not picked up yet: {e}");
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
    /// Try again once the local aliases can be used.
    Aliases(crate::local::AliasError),
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
    #[error("a symbolic link")]
    Link,
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
    #[error(transparent)]
    Dsn(#[from] crate::dsn::ParamError),
}

fn unreadable(op: &'static str) -> impl Fn(std::io::Error) -> Pickup {
    move |e| {
        Pickup::Bad(Refused::Unreadable {
            op,
            reason: e.to_string(),
        })
    }
}

/// The drop file's recipients with local names resolved (an older
/// `sendmail`, or one run while `/etc/aliases` changed, may have left them).
fn resolved(
    local: &crate::config::Local,
    recipients: &[String],
    notify: Option<Notify>,
) -> Result<Vec<Rcpt>, Pickup> {
    let mut out: Vec<Rcpt> = Vec::new();
    for r in recipients {
        let dsn = RcptDsn {
            notify,
            orcpt: None,
        };
        let expanded = Rcpt::resolved(local, r, dsn).map_err(|e| match e.is_temporary() {
            // The file waits for the aliases to be fixed.
            true => Pickup::Aliases(e),
            false => Pickup::Bad(Refused::Recipient {
                address: r.clone(),
                reason: e.to_string(),
            }),
        })?;
        for e in expanded {
            if !out
                .iter()
                .any(|o| o.address.eq_ignore_ascii_case(&e.address))
            {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Queues one drop file; `Ok(None)` if it went away meanwhile.
async fn pickup_one(intake: &Intake, dir: &Dir, name: &str) -> Result<Option<String>, Pickup> {
    let config = intake.config();
    let limits = &config.limits;
    let Some((file, uid)) = open_drop_file(dir, name, limits.max_message_size)? else {
        return Ok(None);
    };
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
        recipients: resolved(&config.local, &env.recipients, env.notify)?,
        dsn: env.dsn,
        smtputf8,
        auth: None,
        auth_header: false,
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
        .map(Some)
        .map_err(Pickup::Later)
}

/// Bytes read from a drop file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The envelope line is bounded by the recipient limit; 1 MiB is ample.
const MAX_ENVELOPE: u64 = 1024 * 1024;

/// Opens a drop file through [`crate::safe_fs`]: never through a link,
/// never blocking on a FIFO, and only a regular file with one name (the
/// owner is who the mail is from: a second name for someone else's file must
/// not pass as theirs) and a size mail can have. Returns it and its owner.
fn open_drop_file(
    dir: &Dir,
    name: &str,
    max_message: u64,
) -> Result<Option<(std::fs::File, u32)>, Pickup> {
    let (file, st) = match dir.read_anyones(name) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(SafeFsError::Link(_)) => return Err(Pickup::Bad(Refused::Link)),
        Err(SafeFsError::NotAFile(_)) => return Err(Pickup::Bad(Refused::NotAFile)),
        Err(SafeFsError::HardLinked { .. }) => return Err(Pickup::Bad(Refused::HardLinked)),
        Err(e) => {
            return Err(Pickup::Bad(Refused::Unreadable {
                op: "open",
                reason: e.to_string(),
            }))
        }
    };
    // Message and envelope line, with room for CRLFs the size check counts.
    let most = max_message.saturating_mul(2).saturating_add(MAX_ENVELOPE);
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > most {
        return Err(Pickup::Bad(Refused::TooLarge));
    }
    Ok(Some((file, st.st_uid)))
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
/// operator instead of deleting someone's mail, and says so loudly: an error
/// line, the metric and `/healthz` (degraded), and `mailq`'s first line.
/// Members of the directory's group can create names in it, `.bad` too: one
/// that is not the daemon's is moved aside and a fresh one made.
/// Returns how many files now wait in `.bad`.
fn set_aside(dir: &Dir, name: &str, reason: &str) -> Option<u64> {
    let moved: Result<PathBuf, SafeFsError> = (|| {
        let bad = match dir.subdir(".bad", 0o700) {
            Ok(bad) => bad,
            Err(e) => {
                let planted = format!(".bad.planted.{:016x}", crate::safe_fs::random());
                tracing::error!("drop directory .bad: {e}; moved to {planted}");
                dir.rename(OsStr::new(".bad"), OsStr::new(&planted))?;
                dir.subdir(".bad", 0o700)?
            }
        };
        match dir.move_to(OsStr::new(name), &bad) {
            Ok(()) => Ok(bad.path().join(name)),
            // Someone else's directory cannot move to another parent (its
            // `..` would change): it gets a hidden name where it is.
            Err(_) => {
                let hidden = format!(".bad.{name}.{:016x}", crate::safe_fs::random());
                dir.rename(OsStr::new(name), OsStr::new(&hidden))?;
                Ok(dir.path().join(hidden))
            }
        }
    })();
    match moved {
        Ok(to) => {
            tracing::error!(
                "drop file {name} refused: {reason}; moved to {}",
                to.display()
            );
            Some(count_set_aside(dir))
        }
        Err(e) => {
            tracing::error!("drop file {name} refused: {reason}; cannot move it aside: {e}");
            None
        }
    }
}

/// How many entries wait for the operator: in `.bad`, and set aside in
/// place under `.bad.` names.
fn count_set_aside(drop: &Dir) -> u64 {
    let count = |p: &Path, hidden: bool| {
        std::fs::read_dir(p).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| !hidden || e.file_name().to_string_lossy().starts_with(".bad."))
                .count() as u64
        })
    };
    count(&drop.path().join(".bad"), false) + count(drop.path(), true)
}

/// At start: what earlier runs set aside, for the metric and `/healthz`.
pub fn recount_set_aside(intake: &Intake) {
    if let Ok(dir) = Dir::open(&intake.config().local.drop_dir) {
        intake.metrics().set_aside(count_set_aside(&dir));
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
        let notices = Notices {
            mail: MailDsn {
                ret: Some(crate::dsn::Ret::Hdrs),
                envid: Some("QQ+2B1".into()),
            },
            notify: Some(Notify::never()),
        };
        let p = write(
            dir.path(),
            "a@example.com",
            &["b@example.net".into()],
            &notices,
            &mut &b"Subject: x\r\n\r\nhi\r\n"[..],
        )
        .unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.'));
        let bytes = std::fs::read(&p).unwrap();
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let env: DropEnvelope = serde_json::from_slice(&bytes[..nl]).unwrap();
        assert_eq!(env.recipients, vec!["b@example.net".to_string()]);
        assert_eq!((env.dsn, env.notify), (notices.mail, notices.notify));
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
            dsn: MailDsn::default(),
            notify: None,
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
    fn a_forged_envid_is_refused() {
        let limits = Limits {
            max_message_size: 100,
            max_recipients: 2,
            max_line_length: 998,
            max_connections: 1,
        };
        let forged = DropEnvelope {
            version: FORMAT_VERSION,
            sender: "a@example.com".into(),
            recipients: vec!["b@example.net".into()],
            created: 0,
            dsn: MailDsn {
                ret: None,
                envid: Some("a\r\nRCPT".into()),
            },
            notify: None,
        };
        assert!(matches!(
            check(&forged, b"x\r\n", &limits),
            Err(Refused::Dsn(e)) if e.param == "ENVID"
        ));
    }

    #[test]
    fn a_planted_bad_directory_is_not_used() {
        let drop = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), drop.path().join(".bad")).unwrap();
        std::fs::write(drop.path().join("f1"), "not a drop file").unwrap();
        let dir = Dir::open(drop.path()).unwrap();
        // The file, and the planted link kept aside for the operator.
        assert_eq!(set_aside(&dir, "f1", "test"), Some(2));
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
