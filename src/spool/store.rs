//! The durable queue store. Everything that touches sled lives here, so the engine
//! can be swapped without the rest of the relay noticing.
//!
//! Durability: sled's own `flush()` ends in `sync_file_range`, which survives a
//! process crash but flushes neither the disk's write cache nor the file size, so
//! after every flush we `fdatasync` sled's log file ourselves. sled writes values
//! larger than a quarter of a segment to separate "blob" files that it never
//! syncs; bodies are therefore stored in chunks small enough that even a full leaf
//! node (16 entries, see sled's `Node::should_split`) stays below that threshold.
//!
//! Group commit: callers apply their writes to sled (in memory), then wait in
//! [`Store::commit`]. One committer thread takes every waiter that arrived while
//! the previous sync ran, syncs once and releases them all, so throughput is not
//! bounded by one fsync per message and no waiter is ever delayed artificially.
//!
//! Recovery: after an I/O error (a full disk) sled refuses every further write
//! until it is reopened. The store then reopens it by itself, in the committer
//! thread and at most once a second ([`REOPEN_EVERY`]), so service resumes when
//! space returns, without a restart. Writes applied to a handle that has since
//! been replaced are lost with it; their commit fails, so nothing that was not
//! on disk is ever acknowledged. What was synced is recovered by the reopen, as
//! after a crash.
//!
//! This is the spool's engine: it knows writes, syncs and prefixes, not
//! messages. The key layout is in `spool/records.rs`; which writes a change of
//! a message needs is decided in `spool/mod.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

use super::history::Finished;
use super::records;

mod changes;
mod committer;
mod compact;
mod files;

pub use changes::Changes;
use committer::*;
use files::*;
pub(in crate::spool) use files::{persisted_segment_size, CLEAN_MARKER};

/// sled's log segment, which is also the size of each of its in-memory write
/// buffers: several are in flight under load, and with 8 MiB ones a burst of
/// large messages kept 64 MiB of them resident. A queue created with another
/// size keeps it (sled refuses to open with a different one).
const SEGMENT_SIZE: usize = 1024 * 1024;
/// 17 chunks of this size (a leaf just before it splits) stay well under the blob
/// threshold of SEGMENT_SIZE / 4, and of any larger segment an older queue has.
pub const CHUNK_SIZE: usize = 8 * 1024;
/// How often the committer tries to reopen a queue that failed.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("queue database: {0}")]
    Sled(#[from] sled::Error),
    #[error("queue file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("queue sync failed: {0}")]
    Sync(sled::Error),
    #[error("queue reopened after an I/O error; this write was lost with the old handle")]
    Reopened,
    /// A record of this message does not decode, or a part is missing: the
    /// message is quarantined, never retried.
    #[error("message {id} is damaged: {reason}")]
    Damaged { id: String, reason: String },
    /// Refused before anything was written: a record this large could land in
    /// one of sled's unsynced blob files.
    #[error("record {key} of {size} bytes is over the queue's bound of {bound} bytes; nothing was written")]
    TooLarge {
        key: String,
        size: usize,
        bound: usize,
    },
    /// sled could not open the queue (it panicked or reported corruption).
    #[error("queue {path} cannot be opened: {reason}; `smarthost queue salvage` copies what can still be read into a fresh queue")]
    Unopenable { path: PathBuf, reason: String },
    #[error("queue committer has stopped")]
    Closed,
}

impl StoreError {
    /// The disk (or the user's quota) is full: a `452 4.3.1`, not a `451`.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Sync(sled::Error::Io(e)) => e,
            StoreError::Io { source, .. } => source,
            _ => return false,
        };
        // ENOSPC and EDQUOT; sled's clone of an io::Error keeps only the kind.
        matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    }
}

/// A commit request: the handle generation the caller's writes went to.
struct Waiter {
    generation: u64,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<Queue>,
    commits: Option<std_mpsc::Sender<Waiter>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// The compaction thread, stopped by dropping its sender.
    compactor: Option<(std_mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// The sled database as it is open now, shared with the committer.
struct Queue {
    /// History records stored, kept as they are written so that pruning
    /// need not count them (a scan) to know it is due.
    history_len: std::sync::atomic::AtomicUsize,
    path: PathBuf,
    cache_bytes: u64,
    /// [`records::record_bound`] of the queue's segment size.
    bound: usize,
    /// No clean-close marker was found at open.
    crashed: bool,
    /// What the clean-close marker found at open said (see
    /// [`Store::close_note`]).
    found_note: Option<Vec<u8>>,
    /// What the clean close writes into its marker.
    note: Mutex<Vec<u8>>,
    /// The open handle, or the error that keeps the queue closed until the next
    /// reopen attempt.
    open: RwLock<Result<Handle, Failure>>,
    /// The generation of the last handle opened; watched by whoever must know
    /// that unsynced writes may have been lost.
    reopened: watch::Sender<u64>,
    /// When the committer last synced a group: compaction waits for a quiet
    /// queue.
    last_commit: Mutex<std::time::Instant>,
}

/// One opening of the sled database.
#[derive(Clone)]
struct Handle {
    db: sled::Db,
    log: Arc<File>,
    generation: u64,
    /// Added to sled's id counter, which a compacted copy starts afresh.
    id_base: u64,
    /// The I/O error sled reported: it refuses every write until reopened.
    failed: Arc<Mutex<Option<Failure>>>,
}

/// Why the queue is closed, kept flat (sled's errors gain a level of nesting
/// each time they are cloned, and this one is handed to every caller).
#[derive(Clone, Debug)]
struct Failure {
    kind: std::io::ErrorKind,
    text: String,
}

impl Failure {
    fn of_sled(e: &sled::Error) -> Failure {
        match e {
            sled::Error::Io(io) => Failure {
                kind: io.kind(),
                text: io.to_string(),
            },
            other => Failure {
                kind: std::io::ErrorKind::Other,
                text: other.to_string(),
            },
        }
    }

    fn of(e: &StoreError) -> Failure {
        match e {
            StoreError::Sled(e) | StoreError::Sync(e) => Failure::of_sled(e),
            StoreError::Io { source, .. } => Failure {
                kind: source.kind(),
                text: e.to_string(),
            },
            other => Failure {
                kind: std::io::ErrorKind::Other,
                text: other.to_string(),
            },
        }
    }

    fn sled(&self) -> sled::Error {
        sled::Error::Io(std::io::Error::new(self.kind, self.text.clone()))
    }
}

/// Frees what sled has retired on this thread so far.
///
/// sled frees replaced tree nodes, evicted pages and its spent 1 MiB log
/// buffers through crossbeam-epoch, which parks each thread's retired objects
/// in a thread-local bag of 64 and frees nothing until the bag is full. On the
/// few threads that write (the runtime's workers, the committer) that kept
/// about 30 MiB of dead log buffers alive under 100 KB messages over 100
/// sessions. Flushing the bag after each write hands it to the global queue,
/// which frees it once no reader can still see it; it costs a few atomic
/// operations, and measured no slower.
fn release_garbage() {
    crossbeam_epoch::pin().flush();
}

impl Handle {
    /// `scan_prefix` that also looks each key up once, for sled's cache.
    ///
    /// sled 0.34 compares its cache with `queue_cache_size` only once one of its
    /// 256 shards has queued 64 page accesses, and a scan counts one access per
    /// page, not per key. Scanning 100,000 envelopes never got a shard there,
    /// and their pages stayed resident for good: 117 MiB after a restart with
    /// 100,000 queued, 73 MiB with one access per key, where the cache evicts as
    /// the scan goes. The lookup finds the page the scan just read, in memory.
    fn scan(
        &self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>> {
        // The iterator holds a handle, not just sled's: while it lives,
        // the queue is not compacted under it.
        let h = self.clone();
        self.db.scan_prefix(prefix).map(move |item| {
            let (key, value) = item?;
            h.look_up(&key)?;
            Ok((key, value))
        })
    }

    /// A lookup for the cache's sake (see [`Handle::scan`]); a method, so
    /// that a closure calling it holds the whole handle.
    fn look_up(&self, key: &[u8]) -> sled::Result<bool> {
        self.db.contains_key(key)
    }

    /// Up to `limit` keys under `prefix` that sort after `after`.
    fn keys_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> sled::Result<Vec<sled::IVec>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let start = if after < prefix {
            Included(prefix.to_vec())
        } else {
            Excluded(after.to_vec())
        };
        let mut keys = Vec::new();
        for item in self.db.range::<Vec<u8>, _>((start, Unbounded)) {
            let (key, _) = item?;
            if !key.starts_with(prefix) || keys.len() == limit {
                break;
            }
            keys.push(key);
        }
        Ok(keys)
    }

    fn scan_keys(&self, prefix: &[u8]) -> impl Iterator<Item = sled::Result<sled::IVec>> {
        self.scan(prefix).map(|item| item.map(|(key, _)| key))
    }

    /// sled's flush, then the fdatasync of its log that makes it durable.
    fn sync(&self) -> sled::Result<()> {
        self.db.flush()?;
        let synced = self.log.sync_data();
        release_garbage();
        Ok(synced?)
    }

    /// Passes a sled result on, noting an I/O error (sled is poisoned by it).
    fn check<T>(&self, r: sled::Result<T>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if matches!(e, sled::Error::Io(_)) {
                self.fail(&e);
            }
            StoreError::Sled(e)
        })
    }

    fn fail(&self, e: &sled::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert_with(|| Failure::of_sled(e));
    }

    fn failure(&self) -> Option<Failure> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Inner {
    // The committer holds a handle on the database; wait for it to let go so the
    // queue can be reopened at once (sled locks its files).
    fn drop(&mut self) {
        if let Some((stop, t)) = self.compactor.take() {
            drop(stop);
            let _ = t.join();
        }
        self.commits.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        self.queue.close_cleanly();
    }
}

impl Store {
    /// Opens (or creates, durably) the queue at `path`. Never panics: a
    /// database sled cannot open is [`StoreError::Unopenable`].
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        create_durably(path)?;
        let handle = open_handle(path, cache_bytes, 0)?;
        let segment = persisted_segment_size(path).unwrap_or(SEGMENT_SIZE);
        let marker = path.join(CLEAN_MARKER);
        let crashed = !marker.exists();
        let found_note = if crashed {
            None
        } else {
            std::fs::read(&marker).ok().filter(|n| !n.is_empty())
        };
        if !crashed {
            // From now on a crash must find it gone.
            std::fs::remove_file(&marker).map_err(|source| StoreError::Io {
                path: marker.clone(),
                source,
            })?;
            sync_dir(path)?;
        }
        let history_len = handle.scan_keys(b"h").count();
        let queue = Arc::new(Queue {
            history_len: history_len.into(),
            path: path.to_path_buf(),
            cache_bytes,
            bound: records::record_bound(segment),
            crashed,
            found_note,
            note: Mutex::default(),
            open: RwLock::new(Ok(handle)),
            reopened: watch::Sender::new(0),
            last_commit: Mutex::new(std::time::Instant::now()),
        });
        let (tx, rx) = std_mpsc::channel::<Waiter>();
        let committer_queue = queue.clone();
        let committer = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || committer(&committer_queue, rx))
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let compactor = compact::spawn(&queue)?;
        Ok(Store {
            inner: Arc::new(Inner {
                queue,
                commits: Some(tx),
                committer: Some(committer),
                compactor: Some(compactor),
            }),
        })
    }

    /// Whether the last process to use the queue ended without closing it
    /// cleanly: records a change cut short may have left must be swept.
    pub fn crashed(&self) -> bool {
        self.inner.queue.crashed
    }

    /// What the last clean close was given to keep (see
    /// [`Store::set_close_note`]); None after a crash, and after the clean
    /// close of a version that kept nothing (an empty marker).
    pub fn close_note(&self) -> Option<&[u8]> {
        self.inner.queue.found_note.as_deref()
    }

    /// Kept in the clean-close marker when the queue closes cleanly, for
    /// the next open only: a note is never trusted after a crash.
    pub fn set_close_note(&self, note: Vec<u8>) {
        *self
            .inner
            .queue
            .note
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = note;
    }

    /// The largest key plus value this queue accepts (see `records`).
    pub fn bound(&self) -> usize {
        self.inner.queue.bound
    }

    pub fn path(&self) -> &Path {
        &self.inner.queue.path
    }

    /// The current handle, or the error that keeps the queue closed.
    fn handle(&self) -> Result<Handle, StoreError> {
        self.inner.queue.handle()
    }

    /// Changes each time the queue is reopened after an I/O error: writes that
    /// were not committed are gone, so in-memory schedules may be stale.
    pub fn reopened(&self) -> watch::Receiver<u64> {
        self.inner.queue.reopened.subscribe()
    }

    /// A short unique queue id: arrival second and a counter sled persists, so ids
    /// sort by arrival and never repeat across restarts.
    pub fn new_id(&self) -> Result<String, StoreError> {
        let h = self.handle()?;
        let n = h.id_base + h.check(h.db.generate_id())?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(format!("{:08X}{:06X}", secs & 0xFFFF_FFFF, n & 0xFF_FFFF))
    }

    /// Applies the writes atomically. They are NOT durable until [`Store::commit`].
    pub fn apply(&self, changes: Changes) -> Result<(), StoreError> {
        self.apply_to(changes).map(|_| ())
    }

    /// Applies the writes; the generation of the handle they went to.
    pub(super) fn apply_to(&self, changes: Changes) -> Result<u64, StoreError> {
        if let Some((key, size)) = changes.largest().filter(|(_, n)| *n > self.bound()) {
            return Err(StoreError::TooLarge {
                key: String::from_utf8_lossy(key).into_owned(),
                size,
                bound: self.bound(),
            });
        }
        let h = self.handle()?;
        self.inner
            .queue
            .history_len
            .fetch_add(changes.history_added, std::sync::atomic::Ordering::Relaxed);
        if changes.in_order {
            for (key, value) in changes.ops {
                match value {
                    Some(v) => h.check(h.db.insert(key, v))?,
                    None => h.check(h.db.remove(key))?,
                };
            }
        } else {
            let mut batch = sled::Batch::default();
            for (key, value) in changes.ops {
                match value {
                    Some(v) => batch.insert(key, v),
                    None => batch.remove(key),
                }
            }
            h.check(h.db.apply_batch(batch))?;
        }
        release_garbage();
        Ok(h.generation)
    }

    /// Waits until every write applied before this call is on stable storage.
    /// Always asks the committer, even while the queue is closed.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let generation = *self.inner.queue.reopened.borrow();
        self.commit_generation(generation).await
    }

    pub(super) async fn commit_generation(&self, generation: u64) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.inner
            .commits
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Waiter { generation, done })
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Syncs now, on this thread: for the start, before the committer has
    /// anyone to serve.
    pub fn sync_blocking(&self) -> Result<(), StoreError> {
        self.inner
            .queue
            .sync()
            .map(|_| ())
            .map_err(|f| StoreError::Sync(f.sled()))
    }

    /// apply + commit: the usual way to record a state change before acting on it.
    pub async fn write(&self, changes: Changes) -> Result<(), StoreError> {
        let generation = self.apply_to(changes)?;
        self.commit_generation(generation).await
    }

    /// The value at `key`, as last applied (synced or not).
    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let h = self.handle()?;
        h.check(h.db.get(key))
    }

    /// Whether `key` has a value, as last applied.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        let h = self.handle()?;
        h.check(h.db.contains_key(key))
    }

    /// Every record under `prefix`, in key order. A closed queue yields its
    /// error once.
    pub fn scan(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        let (scan, closed) = match self.handle() {
            Ok(h) => (Some(h.scan(prefix)), None),
            Err(e) => (None, Some(Err(e))),
        };
        closed.into_iter().chain(
            scan.into_iter()
                .flatten()
                .map(|item| item.map_err(StoreError::Sled)),
        )
    }

    /// Up to `limit` keys under `prefix` that sort after `after`, in order:
    /// one page of an index.
    pub fn keys_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        let h = self.handle()?;
        h.check(h.keys_after(prefix, after, limit))
    }

    /// The keys under `prefix`, in order.
    pub fn scan_keys(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<sled::IVec, StoreError>> + '_ {
        self.scan(prefix).map(|item| item.map(|(k, _)| k))
    }

    /// Finished messages, oldest first. Unreadable records are skipped: history is
    /// a convenience, never a reason to fail.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = Finished> + '_ {
        self.handle()
            .ok()
            .into_iter()
            .flat_map(|h| h.scan(b"h"))
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
    }

    /// Forgets history records finished before `cutoff` and all but the newest
    /// `keep`. Durable at the next commit; losing a prune to a crash is harmless.
    /// How many finished messages are remembered (approximately: writes lost
    /// in a reopen still count until the next prune recounts).
    pub fn history_len(&self) -> usize {
        self.inner
            .queue
            .history_len
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets finished messages older than `cutoff` and beyond the newest
    /// `keep`, oldest first, a thousand at a time (one batch of tens of
    /// thousands made sled hold them all in memory at once). `recount` counts
    /// the records (a scan of their keys) instead of trusting
    /// [`Store::history_len`].
    pub fn prune_history(
        &self,
        cutoff: u64,
        keep: usize,
        recount: bool,
    ) -> Result<usize, StoreError> {
        const PER_BATCH: usize = 1000;
        let h = self.handle()?;
        let total = if recount {
            h.scan_keys(b"h").count()
        } else {
            self.history_len()
        };
        let mut excess = total.saturating_sub(keep);
        let mut batch = sled::Batch::default();
        let (mut n, mut in_batch) = (0, 0);
        for key in h.scan_keys(b"h") {
            let k = key?;
            let finished = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if excess == 0 && finished >= cutoff {
                break;
            }
            excess = excess.saturating_sub(1);
            batch.remove(k);
            n += 1;
            in_batch += 1;
            if in_batch == PER_BATCH {
                h.check(h.db.apply_batch(std::mem::take(&mut batch)))?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            h.check(h.db.apply_batch(batch))?;
        }
        // Records written meanwhile are counted on top of what is left.
        let written_meanwhile = self.history_len().saturating_sub(total);
        self.inner.queue.history_len.store(
            total.saturating_sub(n) + written_meanwhile,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(n)
    }

    /// A cheap read and a look at the committer, for the health check: an
    /// error here means nothing could be acknowledged now.
    pub fn ping(&self) -> Result<(), StoreError> {
        if self
            .inner
            .committer
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
        {
            return Err(StoreError::Closed);
        }
        self.handle()?.db.get(b"p")?;
        Ok(())
    }

    pub fn disk_size(&self) -> u64 {
        self.handle()
            .ok()
            .and_then(|h| h.db.size_on_disk().ok())
            .unwrap_or(0)
    }
}
