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
//! Key layout in one tree (one tree so that a `Batch` is atomic across keys):
//! `e<id>` → envelope (JSON), `b<id>/<chunk u32 BE>` → body chunk,
//! `h<finished u64 BE><id>` → history record of a finished message (JSON).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

use super::envelope::Envelope;
use super::history::{self, Finished};

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
    #[error("corrupt envelope {id}: {reason}")]
    Corrupt { id: String, reason: String },
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
}

/// The sled database as it is open now, shared with the committer.
struct Queue {
    /// History records stored, kept as they are written so that pruning
    /// need not count them (a scan) to know it is due.
    history_len: std::sync::atomic::AtomicUsize,
    path: PathBuf,
    cache_bytes: u64,
    /// The open handle, or the error that keeps the queue closed until the next
    /// reopen attempt.
    open: RwLock<Result<Handle, Failure>>,
    /// The generation of the last handle opened; watched by whoever must know
    /// that unsynced writes may have been lost.
    reopened: watch::Sender<u64>,
}

/// One opening of the sled database.
#[derive(Clone)]
struct Handle {
    db: sled::Db,
    log: Arc<File>,
    generation: u64,
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
        let db = self.db.clone();
        self.db.scan_prefix(prefix).map(move |item| {
            let (key, value) = item?;
            db.contains_key(&key)?;
            Ok((key, value))
        })
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
        self.commits.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        self.queue.close_cleanly();
    }
}

/// Present in the queue directory only while no process has it open and the
/// last one closed it after a final sync: the next start then skips
/// [`sweep_orphans`].
const CLEAN_MARKER: &str = "closed-cleanly";

/// Removes body chunks whose envelope is gone: what an `in_order` change cut
/// short by a crash leaves behind. Only the keys and one envelope lookup per
/// message are touched.
fn sweep_orphans(h: &Handle) -> Result<usize, StoreError> {
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

/// A set of writes: applied atomically ([`Changes::new`]) or one by one in the
/// order given ([`Changes::in_order`]).
#[derive(Default)]
pub struct Changes {
    ops: Vec<(sled::IVec, Option<sled::IVec>)>,
    in_order: bool,
    /// History records added, for [`Store::history_len`].
    history_added: usize,
}

impl Changes {
    /// All or nothing: one sled batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applied as single writes, in order: after a crash, any prefix of them
    /// may have survived. Only for changes where every prefix is harmless:
    /// storing a new message (its body chunks before its envelope) and taking
    /// one out (its envelope before its chunks), each possibly followed by
    /// other single records. What a prefix leaves behind is a body without an
    /// envelope, which no one reads and the next start after a crash removes
    /// ([`sweep_orphans`]). Worth it: sled writes out its log buffer twice for
    /// every batch (sled 0.34's `pin_log`), which more than halves the relay's
    /// throughput when every message costs two batches.
    pub fn in_order() -> Self {
        Self {
            in_order: true,
            ..Self::default()
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.ops.push((key.into(), None));
    }

    pub fn put_envelope(&mut self, env: &Envelope) -> &mut Self {
        // Serializing a plain struct of strings and integers cannot fail.
        let value = serde_json::to_vec(env).unwrap_or_default();
        self.insert(envelope_key(&env.id), value);
        self
    }

    /// A new message: its body chunks and its envelope (whose `chunks` and `size`
    /// are set here from the body).
    pub fn put_message(&mut self, env: &mut Envelope, body: &[u8]) -> &mut Self {
        self.put_message_parts(env, &[], body)
    }

    /// [`Changes::put_message`] of `head` followed by `body`, chunked straight
    /// from the two without first copying them into one buffer: a message
    /// in flight is then held twice (the session's buffer and the chunks), not
    /// three times.
    pub fn put_message_parts(&mut self, env: &mut Envelope, head: &[u8], body: &[u8]) -> &mut Self {
        let total = head.len() + body.len();
        let mut n = 0u32;
        let mut at = 0;
        while at < total {
            let end = (at + CHUNK_SIZE).min(total);
            let mut chunk = Vec::with_capacity(end - at);
            if at < head.len() {
                chunk.extend_from_slice(&head[at..end.min(head.len())]);
            }
            if end > head.len() {
                chunk.extend_from_slice(&body[at.max(head.len()) - head.len()..end - head.len()]);
            }
            self.insert(chunk_key(&env.id, n), chunk);
            n += 1;
            at = end;
        }
        env.chunks = n;
        env.size = total as u64;
        self.put_envelope(env)
    }

    /// Remembers a finished message for `queue find`.
    pub fn put_history(&mut self, f: &Finished) -> &mut Self {
        let value = serde_json::to_vec(f).unwrap_or_default();
        self.insert(history::key(f.finished, &f.id), value);
        self.history_added += 1;
        self
    }

    /// A route held for its credentials (see `delivery::hold`).
    pub fn put_route_hold(&mut self, route: &str, record: &[u8]) -> &mut Self {
        self.insert(route_hold_key(route), record);
        self
    }

    pub fn remove_route_hold(&mut self, route: &str) -> &mut Self {
        self.remove(route_hold_key(route));
        self
    }

    /// The envelope goes first: see [`Changes::in_order`].
    pub fn remove_message(&mut self, env: &Envelope) -> &mut Self {
        self.remove(envelope_key(&env.id));
        for i in 0..env.chunks {
            self.remove(chunk_key(&env.id, i));
        }
        self
    }
}

fn envelope_key(id: &str) -> Vec<u8> {
    prefixed(b'e', id.as_bytes())
}

fn prefixed(kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(kind);
    k.extend_from_slice(rest);
    k
}

fn route_hold_key(route: &str) -> Vec<u8> {
    prefixed(b'r', route.as_bytes())
}

fn chunk_key(id: &str, i: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 6);
    k.push(b'b');
    k.extend_from_slice(id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&i.to_be_bytes());
    k
}

impl Store {
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let handle = open_handle(path, cache_bytes, 0)?;
        let marker = path.join(CLEAN_MARKER);
        if marker.exists() {
            // From now on a crash must find it gone.
            std::fs::remove_file(&marker).map_err(|source| StoreError::Io {
                path: marker.clone(),
                source,
            })?;
            sync_dir(path)?;
        } else {
            // Before anything is accepted: a new message's chunks must not be
            // taken for an orphan before its envelope is written.
            let removed = sweep_orphans(&handle)?;
            if removed > 0 {
                tracing::info!(
                    "queue: removed {removed} body chunks left without an envelope by a crash"
                );
                handle.sync().map_err(StoreError::Sync)?;
            }
        }
        let history_len = handle.scan_keys(b"h").count();
        let queue = Arc::new(Queue {
            history_len: history_len.into(),
            path: path.to_path_buf(),
            cache_bytes,
            open: RwLock::new(Ok(handle)),
            reopened: watch::Sender::new(0),
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
        Ok(Store {
            inner: Arc::new(Inner {
                queue,
                commits: Some(tx),
                committer: Some(committer),
            }),
        })
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
        let n = h.check(h.db.generate_id())?;
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
    fn apply_to(&self, changes: Changes) -> Result<u64, StoreError> {
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

    async fn commit_generation(&self, generation: u64) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.inner
            .commits
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Waiter { generation, done })
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// apply + commit: the usual way to record a state change before acting on it.
    pub async fn write(&self, changes: Changes) -> Result<(), StoreError> {
        let generation = self.apply_to(changes)?;
        self.commit_generation(generation).await
    }

    pub fn envelope(&self, id: &str) -> Result<Option<Envelope>, StoreError> {
        let h = self.handle()?;
        match h.check(h.db.get(envelope_key(id)))? {
            None => Ok(None),
            Some(v) => decode(id, &v).map(Some),
        }
    }

    pub fn body(&self, env: &Envelope) -> Result<Vec<u8>, StoreError> {
        let h = self.handle()?;
        let mut body = Vec::with_capacity(usize::try_from(env.size).unwrap_or(0));
        for i in 0..env.chunks {
            match h.check(h.db.get(chunk_key(&env.id, i)))? {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => {
                    return Err(StoreError::Corrupt {
                        id: env.id.clone(),
                        reason: format!("body chunk {i} of {} missing", env.chunks),
                    })
                }
            }
        }
        Ok(body)
    }

    /// Every envelope in the queue, for the start-up scan. Bodies are not read.
    /// A closed queue yields its error once.
    pub fn envelopes(&self) -> impl Iterator<Item = Result<Envelope, StoreError>> + '_ {
        let (scan, closed) = match self.handle() {
            Ok(h) => (Some(h.scan(b"e")), None),
            Err(e) => (None, Some(Err(e))),
        };
        closed
            .into_iter()
            .chain(scan.into_iter().flatten().map(|item| {
                let (k, v) = item?;
                let id = String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned();
                decode(&id, &v)
            }))
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

    /// The stored route holds, as (route, record).
    pub fn route_holds(&self) -> Vec<(String, Vec<u8>)> {
        self.handle()
            .ok()
            .into_iter()
            .flat_map(|h| h.scan(b"r"))
            .filter_map(|item| item.ok())
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned(),
                    v.to_vec(),
                )
            })
            .collect()
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

impl Queue {
    /// The last user is gone: sync what is left and leave the marker, unless
    /// the queue failed (writes may have been cut short by the reopen).
    fn close_cleanly(&self) {
        if self.failure().is_some() || *self.reopened.borrow() != 0 || self.sync().is_err() {
            return;
        }
        let marker = self.path.join(CLEAN_MARKER);
        let written = File::create(&marker).and_then(|f| f.sync_all());
        if written.is_ok() {
            let _ = sync_dir(&self.path);
        }
    }

    fn handle(&self) -> Result<Handle, StoreError> {
        match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => Ok(h.clone()),
            Err(f) => Err(StoreError::Sled(f.sled())),
        }
    }

    /// Flushes the current handle and fdatasyncs its log: its generation, or
    /// the error (after which the handle is marked failed).
    fn sync(&self) -> Result<u64, Failure> {
        let h = match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => h.clone(),
            Err(f) => return Err(f.clone()),
        };
        let synced = h.sync();
        if let Err(e) = &synced {
            h.fail(e);
        }
        synced
            .map(|_| h.generation)
            .map_err(|e| Failure::of_sled(&e))
    }

    /// Why the queue must be reopened (sled failed, or the last reopen did),
    /// or None while it works.
    fn failure(&self) -> Option<Failure> {
        match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => h.failure(),
            Err(f) => Some(f.clone()),
        }
    }

    /// Drops the failed handle and opens the database again. sled locks its
    /// files, so this fails while a caller still holds the old handle (an
    /// iterator), and on a disk still full; the committer then tries again
    /// later. Meanwhile every operation fails with the error that closed the
    /// queue.
    fn reopen(&self, cause: Failure) -> Result<(), StoreError> {
        let generation = *self.reopened.borrow() + 1;
        let old = std::mem::replace(
            &mut *self.open.write().unwrap_or_else(|p| p.into_inner()),
            Err(cause),
        );
        drop(old);
        let (slot, result) = match open_handle(&self.path, self.cache_bytes, generation) {
            Ok(h) => (Ok(h), Ok(())),
            Err(e) => (Err(Failure::of(&e)), Err(e)),
        };
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = slot;
        if result.is_ok() {
            self.reopened.send_replace(generation);
        }
        result
    }
}

/// Opens sled and the log file the committer fdatasyncs.
fn open_handle(path: &Path, cache_bytes: u64, generation: u64) -> Result<Handle, StoreError> {
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
fn persisted_segment_size(path: &Path) -> Option<usize> {
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
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
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

fn decode(id: &str, bytes: &[u8]) -> Result<Envelope, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Group commit: one sync for every waiter that arrived while the last one ran.
/// A waiter whose writes went to a handle that has since been replaced gets an
/// error: they were lost with it. Between requests, a failed queue is reopened.
fn committer(queue: &Queue, rx: std_mpsc::Receiver<Waiter>) {
    let mut reopen_failures = 0u32;
    loop {
        let first = match rx.recv_timeout(REOPEN_EVERY) {
            Ok(w) => Some(w),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(cause) = queue.failure() {
            let path = queue.path.display();
            match queue.reopen(cause) {
                Ok(()) => {
                    reopen_failures = 0;
                    tracing::warn!(
                        "queue {path} reopened after an I/O error; writes not yet synced were lost"
                    );
                }
                Err(e) => {
                    reopen_failures += 1;
                    // Once a second while the disk stays full: log 1, 2, 4, 8, ...
                    if reopen_failures.is_power_of_two() {
                        tracing::error!(
                            "queue {path}: cannot reopen ({reopen_failures} tries): {e}"
                        );
                    }
                }
            }
        }
        let Some(first) = first else { continue };
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let synced = queue.sync();
        if let Err(e) = &synced {
            tracing::error!(error = %e.text, "queue sync failed; nothing in this group was acknowledged");
        }
        for w in waiters {
            let result = match &synced {
                Ok(g) if *g == w.generation => Ok(()),
                Ok(_) => Err(StoreError::Reopened),
                Err(f) => Err(StoreError::Sync(f.sled())),
            };
            let _ = w.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Recipient;

    fn envelope(store: &Store) -> Envelope {
        Envelope {
            id: store.new_id().unwrap(),
            sender: "a@example.com".into(),
            route_sender: "a@example.com".into(),
            recipients: vec![Recipient::new("b@example.net", 0)],
            arrived: 0,
            size: 0,
            chunks: 0,
            smtputf8: false,
            eight_bit: false,
            client: "t".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn roundtrip_large_body_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let body: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut env = envelope(&store);
        let mut c = Changes::new();
        c.put_message(&mut env, &body);
        store.write(c).await.unwrap();
        assert_eq!(env.chunks, 4);
        let back = store.envelope(&env.id).unwrap().unwrap();
        assert_eq!(back, env);
        assert_eq!(store.body(&back).unwrap(), body);
        // Nothing may go to sled's unsynced blob files.
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0);

        let mut c = Changes::new();
        c.remove_message(&back);
        store.write(c).await.unwrap();
        assert!(store.envelope(&env.id).unwrap().is_none());
        assert_eq!(store.envelopes().count(), 0);
    }

    /// Space comes back: pushing many times the queue's size through it leaves the
    /// files bounded (sled reuses freed segments) rather than growing with traffic.
    #[tokio::test]
    async fn churn_does_not_grow_disk_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let body = vec![b'x'; 20 * 1024];
        for i in 0..6000 {
            let mut env = envelope(&store);
            let mut c = Changes::new();
            c.put_message(&mut env, &body);
            store.apply(c).unwrap();
            let mut c = Changes::new();
            c.remove_message(&env);
            store.apply(c).unwrap();
            // The daemon commits with every acknowledgement; committing here too
            // makes reclaiming independent of when sled's own flusher gets the
            // CPU (on a loaded machine it may not run at all during the loop).
            if i % 50 == 49 {
                store.commit().await.unwrap();
            }
        }
        store.commit().await.unwrap();
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        // 120 MiB went through; what stays is a handful of 8 MiB segments (how
        // many depends on when sled's background flusher ran, so allow half).
        assert!(on_disk < 64 * 1024 * 1024, "{on_disk} bytes on disk");
        assert_eq!(store.envelopes().count(), 0);
    }

    /// A snapshot that sled never finished (a full disk or a crash while it
    /// wrote it) must not keep the queue from opening.
    #[tokio::test]
    async fn an_unfinished_snapshot_does_not_keep_the_queue_closed() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let mut env = envelope(&store);
            let mut c = Changes::new();
            c.put_message(&mut env, b"Subject: kept\r\n\r\nhi\r\n");
            store.write(c).await.unwrap();
            env.id
        };
        let partial = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&partial, b"half a snapshot, cut off by ENOSPC").unwrap();
        let store = Store::open(dir.path(), 1 << 20).expect("opens despite the partial snapshot");
        assert!(store.envelope(&id).unwrap().is_some());
        assert!(!partial.exists());
    }

    #[test]
    fn a_full_disk_is_told_by_the_error_kind() {
        let io = |errno| sled::Error::Io(std::io::Error::from_raw_os_error(errno));
        // ENOSPC, EDQUOT; sled's clone keeps only the kind and a text.
        assert!(StoreError::Sled(io(28)).is_disk_full());
        assert!(StoreError::Sync(io(28).clone()).is_disk_full());
        assert!(StoreError::Sync(io(122)).is_disk_full());
        assert!(!StoreError::Sled(io(5)).is_disk_full());
        assert!(!StoreError::Reopened.is_disk_full());
    }

    #[tokio::test]
    async fn history_is_kept_in_order_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut c = Changes::new();
        for (i, finished) in [300u64, 100, 200, 400].into_iter().enumerate() {
            let mut env = envelope(&store);
            env.id = format!("M{i}");
            c.put_history(&Finished::from_envelope(&env, finished, "delivered"));
        }
        store.write(c).await.unwrap();
        assert_eq!(store.history_len(), 4);
        let order: Vec<u64> = store.history().map(|f| f.finished).collect();
        assert_eq!(order, vec![100, 200, 300, 400]);
        // Older than 250 goes; so does anything beyond the newest 3.
        assert_eq!(store.prune_history(250, 3, false).unwrap(), 2);
        let left: Vec<u64> = store.history().map(|f| f.finished).collect();
        assert_eq!(left, vec![300, 400]);
        assert_eq!(store.history_len(), 2);
        assert_eq!(store.prune_history(0, 1, true).unwrap(), 1);
        assert_eq!(store.history().count(), 1);
        assert_eq!(store.history_len(), 1);
        drop(store);
        // Counted again when the queue opens.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.history_len(), 1);
    }

    #[tokio::test]
    async fn ids_are_unique_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for _ in 0..100 {
                assert!(seen.insert(store.new_id().unwrap()));
            }
            store.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn concurrent_commits_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut env = envelope(&store);
                let mut c = Changes::new();
                c.put_message(&mut env, b"Subject: x\r\n\r\nhi\r\n");
                store.write(c).await.map(|_| env.id)
            }));
        }
        for t in tasks {
            let id = t.await.unwrap().unwrap();
            assert!(store.envelope(&id).unwrap().is_some());
        }
        assert_eq!(store.envelopes().count(), 50);
    }

    /// A queue created with 8 MiB segments (before they became 1 MiB) opens
    /// with them, its messages intact.
    #[tokio::test]
    async fn an_older_segment_size_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(8 << 20)
                .open()
                .unwrap();
            db.flush().unwrap();
        }
        assert_eq!(persisted_segment_size(dir.path()), Some(8 << 20));
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut env = envelope(&store);
        let mut c = Changes::in_order();
        c.put_message(&mut env, b"Subject: old queue\r\n\r\nhi\r\n");
        store.write(c).await.unwrap();
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.envelope(&env.id).unwrap().is_some());
        assert_eq!(persisted_segment_size(dir.path()), Some(8 << 20));
    }

    /// A head and a body chunked as one message, at every split point.
    #[tokio::test]
    async fn message_parts_chunk_like_one_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let whole: Vec<u8> = (0..(2 * CHUNK_SIZE + 100))
            .map(|i| (i % 253) as u8)
            .collect();
        for split in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            2 * CHUNK_SIZE + 100,
        ] {
            let (head, body) = whole.split_at(split);
            let mut env = envelope(&store);
            let mut c = Changes::in_order();
            c.put_message_parts(&mut env, head, body);
            store.write(c).await.unwrap();
            assert_eq!(env.chunks, 3, "split at {split}");
            assert_eq!(env.size, whole.len() as u64);
            assert_eq!(store.body(&env).unwrap(), whole, "split at {split}");
        }
    }

    fn chunk_keys(store: &Store) -> usize {
        let h = store.handle().unwrap();
        h.db.scan_prefix(b"b").count()
    }

    /// A message stored and taken out again in order leaves nothing behind; a
    /// store cut short by a crash leaves chunks without an envelope, which the
    /// next start removes, and only after a crash (the clean marker says so).
    #[tokio::test]
    async fn in_order_changes_and_the_orphan_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(CLEAN_MARKER);
        let body = vec![b'x'; 2 * CHUNK_SIZE + 1];
        let (kept, orphan_id) = {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert!(
                !marker.exists(),
                "the marker is removed while the queue is open"
            );
            let mut gone = envelope(&store);
            let mut c = Changes::in_order();
            c.put_message(&mut gone, &body);
            store.write(c).await.unwrap();
            let mut c = Changes::in_order();
            c.remove_message(&gone);
            store.write(c).await.unwrap();

            let mut kept = envelope(&store);
            let mut c = Changes::in_order();
            c.put_message(&mut kept, &body);
            store.write(c).await.unwrap();

            // What a crash between the chunks and the envelope leaves.
            let orphan_id = store.new_id().unwrap();
            let mut c = Changes::in_order();
            c.insert(chunk_key(&orphan_id, 0), b"cut short".to_vec());
            c.insert(chunk_key(&orphan_id, 1), b"cut short".to_vec());
            store.write(c).await.unwrap();
            assert_eq!(chunk_keys(&store), 5);
            (kept, orphan_id)
        };
        assert!(marker.exists(), "a clean close leaves the marker");

        // A clean start does not sweep (and removes the marker).
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert!(!marker.exists());
            assert_eq!(chunk_keys(&store), 5);
        }
        // After a crash (no marker) the orphan goes, the queued message stays.
        std::fs::remove_file(&marker).unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(chunk_keys(&store), 3);
        assert!(store.envelope(&orphan_id).unwrap().is_none());
        let back = store.envelope(&kept.id).unwrap().unwrap();
        assert_eq!(store.body(&back).unwrap(), body);
    }
}
