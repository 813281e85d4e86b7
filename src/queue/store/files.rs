//! The queue directory around sled: opening it, the segment size it was
//! created with, sled's unfinished snapshots, the clean-close marker and the
//! sweep of chunks a crash left without an envelope.

use super::*;

/// Opens sled and the log file the committer fdatasyncs.
pub(super) fn open_handle(
    path: &Path,
    cache_bytes: u64,
    generation: u64,
) -> Result<Handle, StoreError> {
    remove_unfinished_snapshots(path)?;
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .segment_size(persisted_segment_size(path).unwrap_or(SEGMENT_SIZE))
        .open()?;
    // The log file and the directory entries sled just created must be on disk
    // before anything is acknowledged.
    let log_path = path.join("db");
    let log = File::open(&log_path).map_err(|source| StoreError::Io {
        path: log_path.clone(),
        source,
    })?;
    sync_dir(path)?;
    Ok(Handle {
        db,
        log: Arc::new(log),
        generation,
        failed: Arc::new(Mutex::new(None)),
    })
}

/// The segment size an existing queue was created with, from sled's `conf`
/// file (text lines such as `segment_size: 8388608`, then a CRC).
pub(super) fn persisted_segment_size(path: &Path) -> Option<usize> {
    let raw = std::fs::read(path.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let size: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))?
        .trim()
        .parse()
        .ok()?;
    // sled's own limits: a power of two of at most 16 MiB.
    (size.is_power_of_two() && (256..=1 << 24).contains(&size)).then_some(size)
}

/// sled 0.34 writes a snapshot (when it opens, and now and then) to
/// `snap.<lsn>.generating`, syncs it and only then renames it to `snap.<lsn>`.
/// A full disk or a crash in between leaves the partial file behind, and sled
/// then takes it for the newest snapshot and refuses to open the queue for
/// good ("corrupt snapshot", sled issue #1527). Such a file was never
/// published: without it sled reads the previous snapshot and replays its log,
/// as if the snapshot had never been started.
pub(super) fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(io)? {
        let file = entry.map_err(io)?.path();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                "queue: removing unfinished sled snapshot {}",
                file.display()
            );
            std::fs::remove_file(&file).map_err(io)?;
        }
    }
    Ok(())
}

/// Present in the queue directory only while no process has it open and the
/// last one closed it after a final sync: the next start then skips
/// [`sweep_orphans`].
pub(super) const CLEAN_MARKER: &str = "closed-cleanly";

/// Removes body chunks whose envelope is gone: what an `in_order` change cut
/// short by a crash leaves behind. Only the keys and one envelope lookup per
/// message are touched.
pub(super) fn sweep_orphans(h: &Handle) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut last: Option<(Vec<u8>, bool)> = None;
    for key in h.scan_keys(b"b") {
        let key = h.check(key)?;
        // b<id>/<u32 BE>
        let Some(id) = key.len().checked_sub(5).and_then(|end| key.get(1..end)) else {
            continue;
        };
        let orphan = match &last {
            Some((prev, orphan)) if prev.as_slice() == id => *orphan,
            _ => {
                let orphan = !h.check(h.db.contains_key(prefixed(b'e', id)))?;
                last = Some((id.to_vec(), orphan));
                orphan
            }
        };
        if orphan {
            h.check(h.db.remove(&key))?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}
