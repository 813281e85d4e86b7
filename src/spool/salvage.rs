//! `smarthost queue salvage`: copies every record that can still be read from
//! a queue the daemon cannot open into a fresh queue, for the operator to put
//! in its place. Run with the daemon stopped; the damaged queue is only read.

use std::path::{Path, PathBuf};

use super::store::{Changes, Store, StoreError};
use super::Spool;

/// What a salvage copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Salvaged {
    /// Records copied, of every kind.
    pub records: usize,
    /// Messages in the fresh queue, and how many of them are damaged.
    pub messages: usize,
    pub damaged: usize,
    /// Records left out because they are over the fresh queue's bound.
    pub too_large: usize,
    /// Why the scan of the old queue stopped early, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    #[error("{0} already exists; salvage writes only into a new directory")]
    TargetExists(PathBuf),
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records copied per batch: bounded memory whatever the queue's size.
const PER_BATCH: usize = 1000;

/// Copies what `from` still holds into the new queue `to`.
pub fn salvage(from: &Path, to: &Path) -> Result<Salvaged, SalvageError> {
    if to.exists() {
        return Err(SalvageError::TargetExists(to.to_path_buf()));
    }
    let (old, _copy) = match open_damaged(from) {
        Ok(db) => (db, None),
        // sled reads its newest snapshot first; one that is damaged (sled
        // issue #1527) keeps the whole queue closed. A copy without the
        // snapshots makes sled replay its log instead.
        Err(first) => match without_snapshots(from, to) {
            Ok(copy) => match open_damaged(&copy) {
                Ok(db) => (db, Some(RemoveOnDrop(copy))),
                Err(_) => return Err(first),
            },
            Err(_) => return Err(first),
        },
    };
    let fresh = Store::open(to, 8 << 20)?;
    let mut out = Salvaged::default();
    copy_records(&old, &fresh, &mut out)?;
    fresh.sync_blocking()?;
    drop(fresh);
    copy_bodies(from, to)?;
    // As after a crash, so that opening it as a spool sweeps the parts whose
    // message was lost; it also converts old-form records, and counting finds
    // the damaged ones.
    let _ = std::fs::remove_file(to.join(super::store::CLEAN_MARKER));
    let spool = Spool::open(to, 8 << 20)?;
    for m in spool.messages() {
        out.messages += 1;
        if matches!(m, Err(StoreError::Damaged { .. })) {
            out.damaged += 1;
        }
    }
    Ok(out)
}

/// Copies every record `old` still yields into `fresh`, PER_BATCH at a time.
fn copy_records(old: &sled::Db, fresh: &Store, out: &mut Salvaged) -> Result<(), StoreError> {
    let mut iter = old.iter();
    let mut changes = Changes::new();
    let mut in_batch = 0;
    loop {
        // sled 0.34 may panic on a damaged page as well as at open.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| iter.next()));
        let (key, value) = match next {
            Ok(None) => break,
            Ok(Some(Ok(kv))) => kv,
            Ok(Some(Err(e))) => {
                out.stopped = Some(e.to_string());
                break;
            }
            Err(_) => {
                out.stopped = Some("sled panicked reading the next record".into());
                break;
            }
        };
        if key.first() == Some(&super::due::KIND) || &key[..] == super::due::BUILT {
            // Rebuilt whole at the first open: an index with holes would
            // leave a queued message off the schedule.
            continue;
        } else if key.first() == Some(&b'e') {
            // An old-form envelope can be larger than a record may be now:
            // converted on the way.
            super::upgrade::convert(&mut changes, &key, &value);
        } else if key.len() + value.len() > fresh.bound() {
            out.too_large += 1;
            continue;
        } else {
            changes.insert(key.to_vec(), value);
        }
        out.records += 1;
        in_batch += 1;
        if in_batch == PER_BATCH {
            fresh.apply(std::mem::take(&mut changes))?;
            in_batch = 0;
        }
    }
    fresh.apply(changes)
}

/// Copies the body files of large messages, each synced, then their
/// directory: the fresh queue's sweep keeps those whose message was copied.
fn copy_bodies(from: &Path, to: &Path) -> Result<(), SalvageError> {
    let (old, new) = (from.join(super::body::DIR), to.join(super::body::DIR));
    let unreadable = |path: &Path, e: std::io::Error| SalvageError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let entries = match std::fs::read_dir(&old) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unreadable(&old, e)),
    };
    super::body::prepare(to)?;
    for entry in entries {
        let path = entry.map_err(|e| unreadable(&old, e))?.path();
        let target = new.join(path.file_name().unwrap_or_default());
        std::fs::copy(&path, &target)
            .and_then(|_| std::fs::File::open(&target)?.sync_data())
            .map_err(|e| unreadable(&path, e))?;
    }
    crate::durable::sync_dir(&new).map_err(|e| unreadable(&new, e))
}

/// A directory removed when dropped: the salvage's scratch copy.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the queue's files, except sled's snapshots, to a scratch directory
/// beside `to`; the original is never changed.
fn without_snapshots(from: &Path, to: &Path) -> std::io::Result<PathBuf> {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".without-snapshots");
    let copy = to.with_file_name(name);
    std::fs::create_dir_all(copy.join("blobs"))?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if file.starts_with("snap.") || !path.is_file() {
            continue;
        }
        std::fs::copy(&path, copy.join(&file))?;
    }
    if let Ok(blobs) = std::fs::read_dir(from.join("blobs")) {
        for entry in blobs {
            let path = entry?.path();
            std::fs::copy(
                &path,
                copy.join("blobs")
                    .join(path.file_name().unwrap_or_default()),
            )?;
        }
    }
    Ok(copy)
}

fn open_damaged(from: &Path) -> Result<sled::Db, SalvageError> {
    let unreadable = |reason: String| SalvageError::Unreadable {
        path: from.to_path_buf(),
        reason,
    };
    if !from.join("conf").exists() {
        return Err(unreadable("not a queue directory (no sled conf)".into()));
    }
    let mut config = sled::Config::new().path(from);
    if let Some(size) = super::store::persisted_segment_size(from) {
        config = config.segment_size(size);
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(unreadable(e.to_string())),
        Err(_) => Err(unreadable(
            "sled panics opening it; nothing can be read through sled".into(),
        )),
    }
}
