//! `mailq` while the daemon is down. Its queue cannot be asked for, but what
//! `sendmail` left in the drop directory meanwhile can be listed, read-only,
//! by root and the daemon's user (the directory's owner): the only ones its
//! mode 1730 lets list it. Everyone else is told the directory is not theirs
//! to read. Files are opened as the daemon opens them ([`crate::safe_fs`]:
//! never through a link, never blocking on a FIFO, only a regular file with
//! one name); nothing is changed, moved or removed.
//!
//! The exit code stays 69 (EX_UNAVAILABLE) with or without the listing: the
//! queue itself could not be listed, and scripts that ask `mailq` whether the
//! daemon runs keep their answer. Standard output has the listing, and only
//! when something waits; the line on stderr says the rest.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Fail;
use crate::config::Local;
use crate::control::client::ClientError;
use crate::control::render::{self, Printable};
use crate::dropdir::{DropEnvelope, Refused};
use crate::safe_fs::{Dir, SafeFsError};
use crate::sysexits::{EX_IOERR, EX_UNAVAILABLE};

/// The envelope line is bounded as the daemon bounds it.
const MAX_ENVELOPE: u64 = 1024 * 1024;

/// The drop file name column: `<hex time>.<pid>.<16 hex digits>`.
const NAME_WIDTH: usize = 34;

/// One name in the drop directory.
enum Waiting {
    Message {
        name: String,
        size: u64,
        env: DropEnvelope,
    },
    /// Something the daemon will set aside instead of queueing.
    Refused { name: String, why: Refused },
}

#[derive(Default)]
struct Listing {
    waiting: Vec<Waiting>,
    /// Files the daemon could not queue, kept in `.bad` for the operator.
    set_aside: usize,
}

/// Says the daemon is down (`unreachable` is why) and, to root and the drop
/// directory's owner, lists what waits there. Always an `Err`: exit 69.
pub(super) fn daemon_down(local: &Local, unreachable: &ClientError) -> Result<(), Fail> {
    let path = &local.drop_dir;
    let down = |more: String| Err(Fail(EX_UNAVAILABLE, format!("{unreachable}; {more}")));
    let owner = match std::fs::metadata(path) {
        Ok(m) => m.uid(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return down(format!(
                "the drop directory {} does not exist: no mail waits there",
                path.display()
            ))
        }
        // Not even searchable for this user: the answer below.
        Err(_) => u32::MAX,
    };
    let euid = nix::unistd::geteuid();
    if !euid.is_root() && euid.as_raw() != owner {
        return down(format!(
            "mail sent meanwhile waits in the drop directory {}, which is not readable to you (only {} may list it)",
            path.display(),
            who_may_list(owner)
        ));
    }
    let listing = match list(path) {
        Ok(l) => l,
        Err(e) => return down(format!("cannot list the drop directory: {e}")),
    };
    if listing.waiting.is_empty() && listing.set_aside == 0 {
        return down(format!(
            "nothing waits in the drop directory {}",
            path.display()
        ));
    }
    let text = render_listing(path, &listing);
    let mut stdout = std::io::stdout().lock();
    match Printable(&mut stdout).write_all(text.as_bytes()) {
        Ok(()) => {}
        // `mailq | head -1`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Fail(EX_IOERR, format!("standard output: {e}"))),
    }
    down("only the drop directory was listed".into())
}

/// Root and the drop directory's owner, the daemon's user, by name.
fn who_may_list(owner: u32) -> String {
    match owner {
        0 => "root".into(),
        u32::MAX => "root and the daemon's user".into(),
        uid => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => format!("root and the daemon's user {}", u.name),
            _ => format!("root and the daemon's user (uid {uid})"),
        },
    }
}

/// Every complete drop file, oldest first (names start with the time they
/// were written). Dot-names are files `sendmail` is still writing, and `.bad`
/// what the daemon set aside.
fn list(path: &Path) -> Result<Listing, SafeFsError> {
    let dir = Dir::open(path)?;
    let io = |source| SafeFsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut names: Vec<OsString> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut listing = Listing::default();
    for name in names {
        let shown = name.to_string_lossy();
        if shown == ".bad" {
            listing.set_aside += count_bad(&path.join(".bad"));
        } else if shown.starts_with(".bad.") {
            listing.set_aside += 1;
        } else if !shown.starts_with('.') {
            listing.waiting.extend(read_one(&dir, &name));
        }
    }
    Ok(listing)
}

/// Entries of the daemon's `.bad`; nothing for anything but a directory (a
/// member of the drop group may have put a link there).
fn count_bad(bad: &Path) -> usize {
    match std::fs::symlink_metadata(bad) {
        Ok(m) if m.is_dir() => std::fs::read_dir(bad).map_or(0, |d| d.count()),
        _ => 0,
    }
}

/// One drop file's envelope and message size; `None` if it went away (the
/// daemon picked it up meanwhile).
fn read_one(dir: &Dir, name: &OsStr) -> Option<Waiting> {
    let refused = |why| {
        Some(Waiting::Refused {
            name: name.to_string_lossy().into_owned(),
            why,
        })
    };
    let (file, st) = match dir.read_anyones(name) {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(SafeFsError::Link(_)) => return refused(Refused::Link),
        Err(SafeFsError::NotAFile(_)) => return refused(Refused::NotAFile),
        Err(SafeFsError::HardLinked { .. }) => return refused(Refused::HardLinked),
        Err(e) => return refused(unreadable("open", &e)),
    };
    let mut line = Vec::new();
    if let Err(e) = std::io::BufReader::new(file)
        .take(MAX_ENVELOPE)
        .read_until(b'\n', &mut line)
    {
        return refused(unreadable("read", &e));
    }
    if line.last() != Some(&b'\n') {
        return refused(Refused::NoEnvelope);
    }
    let env: DropEnvelope = match serde_json::from_slice(&line) {
        Ok(env) => env,
        Err(e) => return refused(Refused::BadEnvelope(e.to_string())),
    };
    let size = u64::try_from(st.st_size).unwrap_or(0);
    Some(Waiting::Message {
        name: name.to_string_lossy().into_owned(),
        size: size.saturating_sub(line.len() as u64),
        env,
    })
}

fn unreadable(op: &'static str, e: &dyn std::fmt::Display) -> Refused {
    Refused::Unreadable {
        op,
        reason: e.to_string(),
    }
}

/// The listing in `mailq`'s columns: the drop file's name where the queue id
/// would be (it has none yet), the time `sendmail` wrote it.
fn render_listing(path: &Path, listing: &Listing) -> String {
    use std::fmt::Write as _;
    let messages = listing
        .waiting
        .iter()
        .filter(|w| matches!(w, Waiting::Message { .. }))
        .count();
    let mut out = format!(
        "The smarthost daemon is not running: its queue cannot be listed.\nDrop directory {}: {messages} message{} wait{} to be queued when it starts\n",
        path.display(),
        if messages == 1 { "" } else { "s" },
        if messages == 1 { "s" } else { "" },
    );
    if !listing.waiting.is_empty() {
        let _ = writeln!(
            out,
            "{:<NAME_WIDTH$} {:>5}  {:<15}  Sender / Recipients",
            "File name", "Size", "Written (UTC)"
        );
    }
    for w in &listing.waiting {
        out.push_str(&render_waiting(w));
    }
    if listing.set_aside > 0 {
        let _ = writeln!(
            out,
            "{} file{} in its .bad could not be queued (the daemon's log says why)",
            listing.set_aside,
            if listing.set_aside == 1 { "" } else { "s" }
        );
    }
    out
}

fn render_waiting(w: &Waiting) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match w {
        Waiting::Message { name, size, env } => {
            let sender = if env.sender.is_empty() {
                "<>"
            } else {
                &env.sender
            };
            let _ = writeln!(
                out,
                "{name:<NAME_WIDTH$} {:>5}  {}  {sender}",
                render::size(*size),
                render::date(env.created)
            );
            for r in &env.recipients {
                let _ = writeln!(out, "{:>w$}{r}", "", w = NAME_WIDTH + 1 + 5 + 2 + 15 + 2);
            }
        }
        Waiting::Refused { name, why } => {
            let _ = writeln!(
                out,
                "{name:<NAME_WIDTH$} not mail the daemon will queue: {why}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_messages_and_what_will_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let notices = crate::dropdir::Notices::default();
        crate::dropdir::write(
            dir.path(),
            "app@example.com",
            &["bob@example.net".into(), "carol@example.net".into()],
            &notices,
            &mut &b"Subject: x\r\n\r\nhi\r\n"[..],
        )
        .unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(dir.path().join("junk"), "no envelope").unwrap();
        std::fs::write(dir.path().join(".tmp.writing"), "half").unwrap();
        std::fs::create_dir(dir.path().join(".bad")).unwrap();
        std::fs::write(dir.path().join(".bad/old"), "x").unwrap();

        let listing = list(dir.path()).unwrap();
        let text = render_listing(dir.path(), &listing);
        assert!(text.contains(": 1 message waits to be queued"), "{text}");
        assert!(text.contains("  18  "), "the message's size alone: {text}");
        let sender = text
            .lines()
            .find(|l| l.ends_with("app@example.com"))
            .unwrap();
        let rcpt = text
            .lines()
            .find(|l| l.ends_with("bob@example.net"))
            .unwrap();
        assert_eq!(sender.find("app@"), rcpt.find("bob@"), "{text}");
        assert!(text.contains("fifo"), "{text}");
        assert!(text.contains("not a regular file"), "{text}");
        assert!(text.contains("no envelope line"), "{text}");
        assert!(!text.contains(".tmp.writing"), "{text}");
        assert!(text.contains("1 file in its .bad"), "{text}");
    }
}
