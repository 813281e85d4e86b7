//! Walking a path one directory at a time, following a symbolic link only
//! where nobody but root or we could have put it, and then by walking its
//! target ourselves: the kernel, following it for us, would also follow links
//! in the directories the target passes through.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, Uid};

use super::{io, kind, others_can_write, Dir, SafeFsError, MAX_LINKS};

/// One step still to take: a name, or `..` (only from a link's target).
enum Step {
    Name(OsString),
    Up,
}

/// Opens `path` (module comment), creating missing directories with
/// `create`'s mode. `..` in `path` itself is refused.
pub(super) fn walk(path: &Path, create: Option<u32>) -> Result<Dir, SafeFsError> {
    let mut steps = VecDeque::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => steps.push_back(Step::Name(name.to_owned())),
            Component::ParentDir => return Err(SafeFsError::DotDot(path.to_path_buf())),
            _ => {}
        }
    }
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = walk_steps(vec![open_at(AT_FDCWD, start)?], steps, create, 0)?;
    dir.path = path.to_path_buf();
    readable(dir)
}

/// Takes `steps` from the last directory of `stack` (the way there, so that
/// a link's `..` goes back up it).
fn walk_steps(
    mut stack: Vec<Dir>,
    mut steps: VecDeque<Step>,
    create: Option<u32>,
    mut links: usize,
) -> Result<Dir, SafeFsError> {
    while let Some(step) = steps.pop_front() {
        let here = stack.last().ok_or_else(|| no_dir("the walk"))?;
        let name = match step {
            Step::Up if stack.len() > 1 => {
                stack.pop();
                continue;
            }
            Step::Up => {
                let up = open_step(here, OsStr::new(".."), &here.path.join(".."))?;
                stack = vec![up];
                continue;
            }
            Step::Name(name) => name,
        };
        let path = here.path.join(&name);
        let next = match open_step(here, &name, &path) {
            Err(SafeFsError::Link(_)) if !others_can_write(&here.stat) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(SafeFsError::TooManyLinks(path));
                }
                let target = readlinkat(&here.fd, name.as_os_str()).map_err(io(&path))?;
                if Path::new(&target).is_absolute() {
                    stack = vec![open_at(AT_FDCWD, "/")?];
                }
                for step in steps_of(Path::new(&target)).into_iter().rev() {
                    steps.push_front(step);
                }
                continue;
            }
            Err(e) if e.is_not_found() && create.is_some() => {
                make_step(here, &name, create.unwrap_or(0o700), &path)?
            }
            other => other?,
        };
        stack.push(next);
    }
    stack.pop().ok_or_else(|| no_dir("the walk"))
}

/// A link's target as steps; its `..` are kept, to go back up.
fn steps_of(target: &Path) -> Vec<Step> {
    target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Step::Name(n.to_owned())),
            Component::ParentDir => Some(Step::Up),
            _ => None,
        })
        .collect()
}

fn no_dir(what: &str) -> SafeFsError {
    SafeFsError::NotADirectory(PathBuf::from(what))
}

/// The directory `start` ("/" or ".") as a walk begins it.
fn open_at(fd: impl std::os::fd::AsFd, start: &str) -> Result<Dir, SafeFsError> {
    let path = PathBuf::from(start);
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = openat(fd, start, flags, Mode::empty()).map_err(io(&path))?;
    let stat = fstat(&fd).map_err(io(&path))?;
    Ok(Dir {
        fd,
        path,
        stat,
        readable: false,
    })
}

/// `name` in `parent` as a directory, never through a link (a link there
/// is [`SafeFsError::Link`], for the caller to decide about).
pub(super) fn open_step(parent: &Dir, name: &OsStr, path: &Path) -> Result<Dir, SafeFsError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd: OwnedFd = match openat(&parent.fd, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(not_a_dir(parent, name, path)),
        Err(e) => return Err(io(path)(e)),
    };
    let stat = fstat(&fd).map_err(io(path))?;
    // O_PATH|O_NOFOLLOW opens a link itself rather than failing.
    match kind(&stat) {
        SFlag::S_IFDIR => Ok(Dir {
            fd,
            path: path.to_path_buf(),
            stat,
            readable: false,
        }),
        SFlag::S_IFLNK => Err(SafeFsError::Link(path.to_path_buf())),
        _ => Err(SafeFsError::NotADirectory(path.to_path_buf())),
    }
}

fn not_a_dir(parent: &Dir, name: &OsStr, path: &Path) -> SafeFsError {
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    match nix::sys::stat::fstatat(&parent.fd, name, flags) {
        Ok(st) if kind(&st) == SFlag::S_IFLNK => SafeFsError::Link(path.to_path_buf()),
        Ok(_) => SafeFsError::NotADirectory(path.to_path_buf()),
        Err(e) => io(path)(e),
    }
}

/// Creates `name` in `parent` with `mode`, owned like `parent` (as root).
/// Only a directory this call made is given away and chmodded.
fn make_step(parent: &Dir, name: &OsStr, mode: u32, path: &Path) -> Result<Dir, SafeFsError> {
    let made = match mkdirat(&parent.fd, name, Mode::from_bits_truncate(mode)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(io(path)(e)),
    };
    let dir = readable(open_step(parent, name, path)?)?;
    if made && Uid::from_raw(dir.stat.st_uid) == geteuid() {
        parent.adopt(&dir.fd, path)?;
        fchmod(&dir.fd, Mode::from_bits_truncate(mode)).map_err(io(path))?;
    }
    let stat: FileStat = fstat(&dir.fd).map_err(io(path))?;
    Ok(Dir { stat, ..dir })
}

/// Reopens a directory for reading where we may (to fsync or fchown it).
pub(super) fn readable(dir: Dir) -> Result<Dir, SafeFsError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match openat(&dir.fd, ".", flags, Mode::empty()) {
        Ok(fd) => Ok(Dir {
            fd,
            readable: true,
            ..dir
        }),
        Err(Errno::EACCES) => Ok(dir),
        Err(e) => Err(io(&dir.path)(e)),
    }
}

/// [`Dir::read_linked`]: a link at `name` in a directory only root or we can
/// write is followed by walking its target from `dir`.
pub(super) fn read_linked(
    dir: &Dir,
    name: &OsStr,
    links: usize,
) -> Result<(File, FileStat), SafeFsError> {
    let path = dir.path.join(name);
    match dir.open_file(name, OFlag::O_RDONLY, 0) {
        Err(SafeFsError::Link(_)) if !others_can_write(&dir.stat) => {}
        other => return other,
    }
    if links >= MAX_LINKS {
        return Err(SafeFsError::TooManyLinks(path));
    }
    let target = readlinkat(&dir.fd, name).map_err(io(&path))?;
    let mut steps: VecDeque<Step> = steps_of(Path::new(&target)).into();
    let Some(Step::Name(last)) = steps.pop_back() else {
        return Err(SafeFsError::NotAFile(path));
    };
    let start = if Path::new(&target).is_absolute() {
        open_at(AT_FDCWD, "/")?
    } else {
        open_at(&dir.fd, ".").map(|d| Dir {
            path: dir.path.clone(),
            ..d
        })?
    };
    let holder = walk_steps(vec![start], steps, None, links + 1)?;
    read_linked(&holder, &last, links + 1)
}
