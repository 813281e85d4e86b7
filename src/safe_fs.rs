//! Files in directories that someone else can write.
//!
//! Root's commands (`oauth login`, `oauth token`, `import`, `test-send`) write
//! into directories the daemon's user owns, and everyone reads secrets that
//! sit in directories others may own. Whoever owns a directory can put a
//! symbolic or a hard link at any name in it, so opening by path would let
//! them aim root's write at `/etc/shadow`. So everything here goes through
//! descriptors:
//!
//! * A path is walked one component at a time ([`walk`]). A symbolic link is
//!   followed only where it stands in a directory that only root or we can
//!   write (so an administrator's `/var/run -> /run` still works), and then
//!   by walking its target under the same rule, never by the kernel; inside
//!   any other directory it is refused. That is `openat2`'s
//!   `RESOLVE_NO_SYMLINKS` for exactly the part of the path someone else
//!   controls. `..` is refused in the paths we are given.
//! * Files are opened with `O_NOFOLLOW`, new ones with `O_EXCL` under names
//!   nobody can guess, and a file that is not regular or has a second hard
//!   link is refused: that second name may be root's file. In a directory
//!   others can write, an existing file must also belong to the directory's
//!   owner: a link count can be lowered between our open and our check, an
//!   owner cannot be changed by whoever planted the file.
//! * Owner and mode change through the open file (`fchown`, `fchmod`), names
//!   through the open directory (`renameat`, `linkat`, `unlinkat`), and a name
//!   put in place is checked to still be the file that was written.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, geteuid, linkat, unlinkat, Gid, Uid, UnlinkatFlags};

#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error(
        "{}: is a symbolic link in a directory that others can write; refusing to follow it",
        .0.display()
    )]
    Link(PathBuf),
    #[error(
        "{}: has {links} hard links; refusing a file that may be another file's second name",
        .path.display()
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{}: is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: a path with \"..\" is not accepted here", .0.display())]
    DotDot(PathBuf),
    #[error("{}: was replaced by someone else while it was written", .0.display())]
    Replaced(PathBuf),
    #[error(
        "{}: belongs to uid {uid}, not to the owner of the directory others can write that holds it",
        .path.display()
    )]
    Foreign { path: PathBuf, uid: u32 },
    #[error("{}: more than {MAX_LINKS} symbolic links on the way", .0.display())]
    TooManyLinks(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SafeFsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeFsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn io(path: &Path) -> impl FnOnce(Errno) -> SafeFsError + '_ {
    move |e| SafeFsError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Whether someone other than root and us can change the names in a
/// directory (or the contents of a file) with this status.
pub fn others_can_write(st: &FileStat) -> bool {
    let owner = Uid::from_raw(st.st_uid);
    (!owner.is_root() && owner != geteuid()) || st.st_mode & 0o022 != 0
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// An open directory, and the path it was reached by (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    stat: FileStat,
    /// Opened for reading, so it can be fsynced (a directory we may only
    /// search, like the drop directory for its group, cannot).
    readable: bool,
}

/// A new file under a temporary name in a [`Dir`].
pub struct Temp {
    pub file: File,
    pub name: OsString,
}

impl Dir {
    /// Opens an existing directory.
    pub fn open(path: &Path) -> Result<Dir, SafeFsError> {
        walk::walk(path, None)
    }

    /// Opens a directory, creating what is missing with `mode`; as root, each
    /// new directory is given to the owner of the one it is made in, so the
    /// daemon can use what `oauth login` or `import` created for it.
    pub fn create(path: &Path, mode: u32) -> Result<Dir, SafeFsError> {
        walk::walk(path, Some(mode))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn owner(&self) -> (Uid, Gid) {
        (
            Uid::from_raw(self.stat.st_uid),
            Gid::from_raw(self.stat.st_gid),
        )
    }

    pub fn stat(&self) -> &FileStat {
        &self.stat
    }

    fn name<'a>(&self, name: &'a OsStr) -> Result<&'a OsStr, SafeFsError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(n)), None) => Ok(n),
            _ => Err(SafeFsError::DotDot(self.path.join(name))),
        }
    }

    /// Opens an existing regular file for reading; `Ok(None)` when there is
    /// none by that name.
    pub fn read(&self, name: impl AsRef<OsStr>) -> Result<Option<(File, FileStat)>, SafeFsError> {
        match self.open_file(name.as_ref(), OFlag::O_RDONLY, 0) {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// [`Dir::read`] where files of other users are expected and who owns
    /// one is what the caller records (the drop directory: its owner is the
    /// mail's sender); every other check holds.
    pub fn read_anyones(
        &self,
        name: impl AsRef<OsStr>,
    ) -> Result<Option<(File, FileStat)>, SafeFsError> {
        match self.open_checked(name.as_ref(), OFlag::O_RDONLY, 0, false) {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// [`Dir::read`], but a symbolic link at `name` is followed when only root
    /// or we can write this directory (an administrator's link, as in
    /// [`Dir::open`]), its target walked under the same rules.
    pub fn read_linked(
        &self,
        name: impl AsRef<OsStr>,
    ) -> Result<Option<(File, FileStat)>, SafeFsError> {
        match walk::read_linked(self, name.as_ref(), 0) {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// Opens a file for reading and writing, creating it with `mode` (and
    /// the directory's owner, as root) when missing; never truncates. For
    /// lock files.
    pub fn open_or_create(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File, SafeFsError> {
        let name = name.as_ref();
        let excl = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        match self.open_file(name, excl, mode) {
            Ok((file, _)) => {
                self.adopt(&file, &self.path.join(name))?;
                Ok(file)
            }
            Err(SafeFsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                self.open_file(name, OFlag::O_RDWR, 0).map(|(f, _)| f)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a new file with `mode` under an unguessable name starting with
    /// `.{stem}.`, owned (as root) by the directory's owner.
    pub fn temp(&self, stem: &str, mode: u32) -> Result<Temp, SafeFsError> {
        let name = OsString::from(format!(".{stem}.{:016x}.tmp", random()));
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let (file, _) = self.open_file(&name, flags, mode)?;
        self.adopt(&file, &self.path.join(&name))?;
        // The umask may have taken bits the caller asked for.
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(io(&self.path))?;
        Ok(Temp { file, name })
    }

    /// Opens `name` (never through a link) and checks what was opened: a
    /// regular file with one name and, unless we have just created it, in a
    /// directory others can write, the directory owner's.
    fn open_file(
        &self,
        name: &OsStr,
        flags: OFlag,
        mode: u32,
    ) -> Result<(File, FileStat), SafeFsError> {
        self.open_checked(name, flags, mode, true)
    }

    fn open_checked(
        &self,
        name: &OsStr,
        flags: OFlag,
        mode: u32,
        owner_rule: bool,
    ) -> Result<(File, FileStat), SafeFsError> {
        let name = self.name(name)?;
        let path = self.path.join(name);
        // O_NONBLOCK: a FIFO planted at the name must not hang the open.
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(SafeFsError::Link(path)),
            Err(e) => return Err(io(&path)(e)),
        };
        let st = fstat(&fd).map_err(io(&path))?;
        if kind(&st) != SFlag::S_IFREG {
            return Err(SafeFsError::NotAFile(path));
        }
        if st.st_nlink > 1 {
            return Err(SafeFsError::HardLinked {
                path,
                links: st.st_nlink as u64,
            });
        }
        let created = flags.contains(OFlag::O_EXCL);
        if owner_rule && !created && others_can_write(&self.stat) && st.st_uid != self.stat.st_uid {
            return Err(SafeFsError::Foreign {
                path,
                uid: st.st_uid,
            });
        }
        Ok((File::from(fd), st))
    }

    /// As root, gives a file or directory just made here to the directory's
    /// owner: `oauth login` runs as root, the daemon as its own user.
    fn adopt(&self, what: &impl AsFd, path: &Path) -> Result<(), SafeFsError> {
        if !geteuid().is_root() {
            return Ok(());
        }
        let (uid, gid) = self.owner();
        fchown(what.as_fd(), Some(uid), Some(gid)).map_err(io(path))
    }

    /// Makes (if missing) and opens a directory in this one that must belong
    /// to us: one someone else made at that name is refused.
    pub fn subdir(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<Dir, SafeFsError> {
        let name = self.name(name.as_ref())?;
        let path = self.path.join(name);
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let dir = walk::open_step(self, name, &path)?;
        if Uid::from_raw(dir.stat.st_uid) != geteuid() {
            return Err(SafeFsError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "belongs to another user",
                ),
            });
        }
        Ok(dir)
    }

    /// Gives `from` (a file of ours, open as `file`) the name `to`: replacing
    /// what is there with `replace`, else failing if the name exists. The name
    /// is then checked to be that very file.
    pub fn put(
        &self,
        file: &File,
        from: &OsStr,
        to: &OsStr,
        replace: bool,
    ) -> Result<(), SafeFsError> {
        let (from, to) = (self.name(from)?, self.name(to)?);
        let path = self.path.join(to);
        let placed = if replace {
            renameat(&self.fd, from, &self.fd, to)
        } else {
            linkat(&self.fd, from, &self.fd, to, AtFlags::empty())
        };
        if !replace {
            let _ = unlinkat(&self.fd, from, UnlinkatFlags::NoRemoveDir);
        }
        placed.map_err(io(&path))?;
        let ours = fstat(file.as_fd()).map_err(io(&path))?;
        let there = fstatat(&self.fd, to, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io(&path))?;
        if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino) {
            // Whatever was swapped in must not stand as what we wrote.
            let _ = unlinkat(&self.fd, to, UnlinkatFlags::NoRemoveDir);
            return Err(SafeFsError::Replaced(path));
        }
        Ok(())
    }

    /// Renames `from` to `to` in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<(), SafeFsError> {
        let (from, to) = (self.name(from)?, self.name(to)?);
        renameat(&self.fd, from, &self.fd, to).map_err(io(&self.path.join(to)))
    }

    /// Moves `name` from this directory to `to` in another.
    pub fn move_to(&self, name: &OsStr, to: &Dir) -> Result<(), SafeFsError> {
        let name = self.name(name)?;
        renameat(&self.fd, name, &to.fd, name).map_err(io(&to.path.join(name)))
    }

    pub fn remove(&self, name: impl AsRef<OsStr>) -> Result<(), SafeFsError> {
        let name = self.name(name.as_ref())?;
        unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).map_err(io(&self.path.join(name)))
    }

    /// Makes the names in this directory durable; for a directory we may only
    /// search, the filesystem holding `written` is synced instead.
    pub fn sync(&self, written: &File) -> Result<(), SafeFsError> {
        let synced = if self.readable {
            nix::unistd::fsync(&self.fd)
        } else {
            nix::unistd::syncfs(written)
        };
        synced.map_err(io(&self.path))
    }
}

/// 64 random bits, for names nobody can plant a link at in advance.
pub fn random() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // O_EXCL still refuses any planted name; this only makes a clash
        // (a clear error) possible.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return now ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

mod walk;

/// How many symbolic links one walk follows at most, as the kernel's
/// MAXSYMLINKS.
pub const MAX_LINKS: usize = 40;

#[cfg(test)]
mod tests;
