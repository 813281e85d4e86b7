//! Giving the disk back. sled reuses the space of records it no longer needs
//! but never returns it: a queue that held 100,000 messages through an
//! upstream outage kept its 580 MiB after they were delivered. When the live
//! records fill less than a fifth of the files (and at most [`MAX_COPY`]),
//! the compaction thread copies them into a fresh database (`compact.tmp`),
//! syncs it and swaps it in; the space comes back, without a restart.
//!
//! The swap is made of steps that a crash can interrupt anywhere, finished
//! by [`finish_swap`] at the next open:
//!
//! 1. the synced copy is renamed `compact.ready`: from here it is the queue;
//! 2. the old database's files are removed, and `compact.ready` renamed
//!    `compact.moving`;
//! 3. each file of `compact.moving` is renamed into the queue directory, and
//!    the emptied directory removed.
//!
//! A copy that never reached step 1 is removed. Nothing else of the queue
//! directory (body files, the clean-close marker) is touched.
//!
//! While the copy is made, every read and write of the queue waits (sessions
//! and deliveries block their runtime thread meanwhile): it only runs when
//! at most [`MAX_COPY`] bytes are left to copy, and only when nobody holds
//! the database (an iterator, a write under way), so it never waits on them.

use std::time::Instant;

use super::*;

/// A queue smaller than this is left as it is.
pub(super) const FLOOR: u64 = 64 << 20;
/// Compacted when the live records are less than 1/RATIO of the files...
const RATIO: u64 = 5;
/// ...and at most this many bytes: every read and write of the queue waits
/// while they are copied (about a second for this much here).
const MAX_COPY: u64 = 64 << 20;
/// How often the compaction thread looks while the queue is quiet (no
/// commit for [`QUIET`]): after a backlog drained, the space comes back
/// within about this.
const CHECK_EVERY: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(5);
/// How often it looks all the same while the queue is never quiet: the
/// look reads up to a fifth of the queue, a cost a busy relay should not
/// pay every minute.
const CHECK_BUSY: Duration = Duration::from_secs(600);
const TICK: Duration = Duration::from_secs(5);
/// The key holding the id counter's base (see [`Store::new_id`]): a fresh
/// database counts from 0 again.
pub(super) const ID_BASE_KEY: &[u8] = b"i";

const TMP: &str = "compact.tmp";
const READY: &str = "compact.ready";
const MOVING: &str = "compact.moving";
/// Records copied per batch.
const PER_BATCH: usize = 1000;

/// Starts the thread that looks now and then (see [`CHECK_EVERY`]); it ends
/// when the returned sender is dropped. Its own thread: the look (a scan)
/// must not hold up the group commit.
pub(super) fn spawn(
    queue: &Arc<Queue>,
) -> Result<(std_mpsc::Sender<()>, std::thread::JoinHandle<()>), StoreError> {
    let (stop, stopped) = std_mpsc::channel::<()>();
    let path = queue.path.clone();
    let queue = queue.clone();
    let thread = std::thread::Builder::new()
        .name("queue-compact".into())
        .spawn(move || {
            let mut looked = Instant::now();
            while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                let since = looked.elapsed();
                let quiet = queue.idle_for() >= QUIET;
                if !(since >= CHECK_BUSY || (since >= CHECK_EVERY && quiet)) {
                    continue;
                }
                looked = Instant::now();
                if let Err(e) = queue.maybe_compact(FLOOR) {
                    tracing::error!("queue {}: cannot compact: {e}", queue.path.display());
                }
            }
        })
        .map_err(|source| io(&path, source))?;
    Ok((stop, thread))
}

impl Queue {
    /// Compacts the queue if it is worth it: sizes on disk before and after,
    /// or None if it was not done (too small, mostly live, or busy).
    pub(super) fn maybe_compact(&self, floor: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let h = self.handle()?;
        let on_disk = h.check(h.db.size_on_disk())?;
        if on_disk < floor || live_exceeds(&h, (on_disk / RATIO).min(MAX_COPY))? {
            return Ok(None);
        }
        drop(h);
        // Writers hold the database for microseconds: try a few times.
        for _ in 0..50 {
            if let Some(done) = self.compact(on_disk)? {
                return Ok(Some(done));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(None)
    }

    /// Copies and swaps, holding the queue closed to everyone meanwhile;
    /// None if someone still had the database.
    fn compact(&self, before: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let started = Instant::now();
        let mut slot = self.open.write().unwrap_or_else(|p| p.into_inner());
        let Ok(old) = &*slot else {
            return Ok(None);
        };
        // The slot's own handle is the only one: no iterator, no write.
        if Arc::strong_count(&old.failed) > 1 {
            return Ok(None);
        }
        old.sync().map_err(StoreError::Sync)?;
        let segment = persisted_segment_size(&self.path).unwrap_or(SEGMENT_SIZE);
        if let Err(e) = copy_into(old, &self.path.join(TMP), segment) {
            let _ = std::fs::remove_dir_all(self.path.join(TMP));
            return Err(e);
        }
        rename(&self.path.join(TMP), &self.path.join(READY))?;
        // The copy is the queue now, whatever happens next: the old handle
        // never serves again (writes to it would be lost to the copy). A
        // failure from here leaves the queue closed; the committer's reopen
        // finishes the swap.
        let generation = old.generation;
        *slot = Err(Failure {
            kind: std::io::ErrorKind::Other,
            text: "the queue is being compacted".into(),
        });
        sync_dir(&self.path)?;
        let new = open_handle(&self.path, self.cache_bytes, generation)?;
        let after = new.check(new.db.size_on_disk())?;
        *slot = Ok(new);
        tracing::info!(
            "queue compacted: {} MiB on disk, was {} MiB ({} ms)",
            after >> 20,
            before >> 20,
            started.elapsed().as_millis()
        );
        Ok(Some((before, after)))
    }
}

/// Whether the records hold more than `limit` bytes; stops counting there.
fn live_exceeds(h: &Handle, limit: u64) -> Result<bool, StoreError> {
    let mut live = 0u64;
    for item in h.scan(b"") {
        let (k, v) = item?;
        // sled's own overhead per record, roughly.
        live += (k.len() + v.len()) as u64 + 32;
        if live > limit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes every record of `old` into a new database at `dir`, with the id
/// counter's base carried over, and syncs it whole.
fn copy_into(old: &Handle, dir: &Path, segment: usize) -> Result<(), StoreError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| io(dir, source))?;
    }
    let new = sled::Config::new()
        .path(dir)
        .cache_capacity(8 << 20)
        .segment_size(segment)
        .open()?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in old.db.iter() {
        let (key, value) = item?;
        if key.as_ref() != ID_BASE_KEY {
            batch.insert(key, value);
            n += 1;
        }
        if n == PER_BATCH {
            new.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    let next_id = old.id_base + old.check(old.db.generate_id())? + 1;
    batch.insert(ID_BASE_KEY, &next_id.to_be_bytes());
    new.apply_batch(batch)?;
    new.flush()?;
    drop(new);
    sync_tree(dir)
}

/// fsyncs every file under `dir`, then the directories.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(|source| io(dir, source))? {
        let path = entry.map_err(|source| io(dir, source))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| io(&path, source))?;
        }
    }
    sync_dir(dir)
}

/// Finishes a swap a crash interrupted (see the module's steps), or removes
/// a copy that was never finished. Runs before sled opens the queue.
pub(super) fn finish_swap(path: &Path) -> Result<(), StoreError> {
    let (tmp, ready, moving) = (path.join(TMP), path.join(READY), path.join(MOVING));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|source| io(&tmp, source))?;
    }
    if ready.exists() {
        remove_old_database(path)?;
        rename(&ready, &moving)?;
        sync_dir(path)?;
    }
    if moving.exists() {
        for entry in std::fs::read_dir(&moving).map_err(|source| io(&moving, source))? {
            let from = entry.map_err(|source| io(&moving, source))?.path();
            rename(&from, &path.join(from.file_name().unwrap_or_default()))?;
        }
        sync_dir(path)?;
        std::fs::remove_dir(&moving).map_err(|source| io(&moving, source))?;
        sync_dir(path)?;
    }
    Ok(())
}

/// sled's files: its log, its configuration, its snapshots and blobs.
fn remove_old_database(path: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(path).map_err(|source| io(path, source))? {
        let entry = entry.map_err(|source| io(path, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = entry.path();
        let removed = match name.as_str() {
            "blobs" => std::fs::remove_dir_all(&file),
            "db" | "conf" => std::fs::remove_file(&file),
            _ if name.starts_with("snap.") => std::fs::remove_file(&file),
            _ => continue,
        };
        removed.map_err(|source| io(&file, source))?;
    }
    sync_dir(path)
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|source| io(from, source))
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
