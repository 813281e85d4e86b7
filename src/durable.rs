//! Filesystem durability, in one place: a file's bytes survive a power cut
//! once the file is synced, but a new, renamed or removed *name* survives only
//! once the directory holding it is synced too.

use std::fs::File;
use std::io;
use std::path::Path;

/// Makes the entries of `dir` (names created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`sync_dir`] for a directory the caller may write and search but not open
/// (the drop directory, mode 1730, for members of its group): then the
/// filesystem holding `file` is synced as a whole instead.
pub fn sync_dir_or_filesystem(dir: &Path, file: &File) -> io::Result<()> {
    match sync_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            nix::unistd::syncfs(file).map_err(io::Error::from)
        }
        other => other,
    }
}
