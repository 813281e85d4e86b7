//! The queue directory around sled: opening it, the segment size it was
//! created with, sled's unfinished snapshots and the clean-close marker, each
//! made durable before the store relies on it.

use super::*;

/// Opens sled and the log file the committer fdatasyncs.
pub(super) fn open_handle(
    path: &Path,
    cache_bytes: u64,
    generation: u64,
) -> Result<Handle, StoreError> {
    compact::finish_swap(path)?;
    remove_unfinished_snapshots(path)?;
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .segment_size(persisted_segment_size(path).unwrap_or(SEGMENT_SIZE));
    // sled 0.34 panics on some damaged logs instead of returning an error
    // (seen after a power cut: `cannot find pid 3 in view_for_key`). A queue
    // that cannot be opened must be a reason the daemon gives, not a crash.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(sled::Error::Corruption { .. })) => {
            return Err(unopenable(path, "sled reports the database corrupt"))
        }
        Ok(Err(e)) => return Err(StoreError::Sled(e)),
        Err(panic) => return Err(unopenable(path, &panic_text(&panic))),
    };
    // sled writes its `conf` (the segment size it must be reopened with) and
    // its log without syncing them; they and the directory entries sled just
    // created must be on disk before anything is acknowledged.
    sync_file(&path.join("conf"))?;
    let log_path = path.join("db");
    let log = File::open(&log_path).map_err(|source| StoreError::Io {
        path: log_path.clone(),
        source,
    })?;
    log.sync_all().map_err(|source| StoreError::Io {
        path: log_path.clone(),
        source,
    })?;
    sync_dir(path)?;
    let id_base = match db.get(compact::ID_BASE_KEY)? {
        Some(v) => <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes),
        None => 0,
    };
    Ok(Handle {
        db,
        log: Arc::new(log),
        generation,
        id_base,
        failed: Arc::new(Mutex::new(None)),
    })
}

/// The segment size an existing queue was created with, from sled's `conf`
/// file (text lines such as `segment_size: 8388608`, then a CRC).
pub(in crate::spool) fn persisted_segment_size(path: &Path) -> Option<usize> {
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
pub(in crate::spool) const CLEAN_MARKER: &str = "closed-cleanly";

pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    crate::durable::sync_dir(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates the queue directory and every missing parent, each new entry made
/// durable by syncing the directory that holds it.
pub(super) fn create_durably(path: &Path) -> Result<(), StoreError> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    for dir in missing.iter().rev() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn unopenable(path: &Path, reason: &str) -> StoreError {
    StoreError::Unopenable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!("sled panicked while opening it ({text})")
}
