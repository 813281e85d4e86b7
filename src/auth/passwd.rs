//! Dovecot's passwd-file: `user:password:uid:gid:gecos:home:shell:extra`,
//! one user a line, `#` comments and blank lines skipped.
//!
//! Only the user and the password matter here. A line we cannot use is
//! skipped with a [`LoadWarning`] naming its number and user, never its
//! data, and the rest of the file still counts: one bad line does not lock
//! everyone out. User names are compared in NFC and with their case, as
//! Dovecot compares them by default; the first line for a name wins, as in
//! Dovecot. The extra fields (`nologin`, `allow_nets=`, `nopassword`, ...)
//! are not acted on, and a warning says so when the file has any; an empty
//! password is refused, never taken as Dovecot's `nopassword`.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hash::{HashProblem, Scheme, StoredHash};
use super::precis;

/// The largest passwd-file read (64 MiB: some hundred thousand users).
pub const MAX_FILE: u64 = 64 << 20;

/// The parsed file: user (NFC) → stored password, and the decoy that a user
/// who is not in it is checked against.
pub struct PasswdFile {
    users: HashMap<String, StoredHash>,
    decoy: StoredHash,
}

impl std::fmt::Debug for PasswdFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswdFile")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// What a read of the file found, for `smarthost check` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub users: usize,
    pub warnings: Vec<LoadWarning>,
}

/// A line skipped or worth a look; its Display is one log line's worth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {what}", user_part(.user.as_deref()))]
pub struct LoadWarning {
    pub line: usize,
    /// The user, when the line has one that is safe to show.
    pub user: Option<String>,
    pub what: Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    #[error("not UTF-8; skipped")]
    NotUtf8,
    #[error("no ':' after the user name; skipped")]
    NoSeparator,
    #[error("empty user name; skipped")]
    EmptyUser,
    #[error("{0}; skipped")]
    Hash(HashProblem),
    #[error(
        "{{PLAIN}}: the password is stored in plaintext (`doveadm pw -s ARGON2ID` makes a hash)"
    )]
    Plaintext,
    #[error("listed again (first on line {0}); this line is ignored")]
    Duplicate(usize),
    #[error(
        "extra fields on {0} line(s) from here on; smarthost ignores them (nologin, allow_nets, ...)"
    )]
    ExtraFieldsIgnored(usize),
}

fn user_part(user: Option<&str>) -> String {
    user.map(|u| format!(" (user {u})")).unwrap_or_default()
}

/// Why the file could not be used at all: every login is then a temporary
/// failure until it can.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("passwd-file {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: Arc<std::io::Error>,
    },
    #[error("passwd-file {}: is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("passwd-file {}: is larger than {MAX_FILE} bytes", .0.display())]
    TooLarge(PathBuf),
    #[error(
        "passwd-file {}: anyone can write it (mode {mode:o}), and so add a login; refused",
        .path.display()
    )]
    WorldWritable { path: PathBuf, mode: u32 },
}

impl LoadError {
    fn read(path: &Path, error: std::io::Error) -> LoadError {
        LoadError::Read {
            path: path.to_path_buf(),
            error: Arc::new(error),
        }
    }
}

/// A fingerprint of the file: when it differs from the one read, the file
/// was changed or replaced and is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// A chmod changes only this: a file made writable by anyone is seen.
    ctime: i64,
    ctime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// The current stamp of `path`, None if it cannot be examined; only the
/// metadata is read.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path).ok().map(|m| FileStamp::of(&m))
}

/// What one line is.
enum Line {
    Blank,
    Bad(Option<String>, Warning),
    Entry {
        user: String,
        hash: StoredHash,
        extra: bool,
    },
}

impl PasswdFile {
    /// Reads and parses the file. The stamp is the open file's, so it
    /// belongs to the contents read even if the file is replaced meanwhile.
    pub fn read(path: &Path) -> Result<(PasswdFile, LoadReport, FileStamp), LoadError> {
        // O_NONBLOCK: a FIFO put at the path must not hang the reader.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| LoadError::read(path, e))?;
        let meta = file.metadata().map_err(|e| LoadError::read(path, e))?;
        if !meta.is_file() {
            return Err(LoadError::NotAFile(path.to_path_buf()));
        }
        if meta.mode() & 0o002 != 0 {
            return Err(LoadError::WorldWritable {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        let bytes = read_capped(file, path)?;
        let (parsed, warnings) = PasswdFile::parse(&bytes);
        let report = LoadReport {
            users: parsed.len(),
            warnings,
        };
        Ok((parsed, report, FileStamp::of(&meta)))
    }

    /// Parses the file's contents; the lines that cannot be used are left
    /// out and warned of.
    pub fn parse(text: &[u8]) -> (PasswdFile, Vec<LoadWarning>) {
        let mut users: HashMap<String, (usize, StoredHash)> = HashMap::new();
        let mut warnings = Vec::new();
        let mut extras: Option<(usize, usize)> = None;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let (user, hash) = match parse_line(raw) {
                Line::Blank => continue,
                Line::Bad(user, what) => {
                    warnings.push(LoadWarning { line, user, what });
                    continue;
                }
                Line::Entry { user, hash, extra } => {
                    if extra {
                        let (first, count) = extras.unwrap_or((line, 0));
                        extras = Some((first, count + 1));
                    }
                    (user, hash)
                }
            };
            let shown = Some(shown_user(&user));
            if let Some((first, _)) = users.get(&user) {
                warnings.push(LoadWarning {
                    line,
                    user: shown,
                    what: Warning::Duplicate(*first),
                });
                continue;
            }
            if hash.scheme() == Scheme::Plain {
                warnings.push(LoadWarning {
                    line,
                    user: shown,
                    what: Warning::Plaintext,
                });
            }
            users.insert(user, (line, hash));
        }
        if let Some((line, count)) = extras {
            warnings.push(LoadWarning {
                line,
                user: None,
                what: Warning::ExtraFieldsIgnored(count),
            });
        }
        let decoy = choose_decoy(&users);
        let users = users.into_iter().map(|(u, (_, h))| (u, h)).collect();
        (PasswdFile { users, decoy }, warnings)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` (as typed: it is NFC-normalized here) has a line.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(&precis::username(user))
    }

    /// The users, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The stored password of `user`, already in NFC.
    pub(crate) fn entry(&self, nfc_user: &str) -> Option<&StoredHash> {
        self.users.get(nfc_user)
    }

    /// What a user who is not in the file is checked against.
    pub(crate) fn decoy(&self) -> &StoredHash {
        &self.decoy
    }
}

fn read_capped(file: File, path: &Path) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::read(path, e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(LoadError::TooLarge(path.to_path_buf()));
    }
    Ok(bytes)
}

fn parse_line(raw: &[u8]) -> Line {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let Ok(text) = std::str::from_utf8(raw) else {
        return Line::Bad(None, Warning::NotUtf8);
    };
    if text.trim().is_empty() || text.trim_start().starts_with('#') {
        return Line::Blank;
    }
    let mut fields = text.split(':');
    let user = precis::username(fields.next().unwrap_or_default());
    // Without a ':' the whole line is one field, and may be a password
    // pasted on the wrong line: not shown.
    let Some(password) = fields.next() else {
        return Line::Bad(None, Warning::NoSeparator);
    };
    if user.is_empty() {
        return Line::Bad(None, Warning::EmptyUser);
    }
    // After the password: uid, gid, gecos, home, shell, then the extra fields.
    let extra = fields.nth(5).is_some_and(|f| !f.trim().is_empty());
    match StoredHash::parse(password) {
        Ok(hash) => Line::Entry { user, hash, extra },
        Err(problem) => Line::Bad(Some(shown_user(&user)), Warning::Hash(problem)),
    }
}

/// A user name as a warning shows it: a field that looks like a hash or is
/// not a name at all (a password typed into the wrong field) is not shown.
fn shown_user(user: &str) -> String {
    let looks_like_a_name = user.chars().count() <= 128
        && !user.starts_with(['{', '$'])
        && !user.chars().any(char::is_control);
    if looks_like_a_name {
        user.to_string()
    } else {
        "(not shown)".to_string()
    }
}

/// The decoy: one of the most common scheme and cost in the file (the first
/// line of it on a tie), so that an unknown user's refusal takes as long as
/// most users'. With no users, `doveadm pw`'s default ARGON2ID.
fn choose_decoy(users: &HashMap<String, (usize, StoredHash)>) -> StoredHash {
    let mut classes: HashMap<String, (usize, usize, &StoredHash)> = HashMap::new();
    for (line, hash) in users.values() {
        let class = classes.entry(hash.cost_class()).or_insert((0, *line, hash));
        class.0 += 1;
        if *line < class.1 {
            (class.1, class.2) = (*line, hash);
        }
    }
    classes
        .values()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map_or_else(StoredHash::default_decoy, |(_, _, hash)| hash.decoy())
}

#[cfg(test)]
mod tests;
