//! Message bodies on their way in and out, never whole in memory.
//!
//! A body of at most [`INLINE_MAX`] bytes is kept in memory while it arrives
//! and stored in the queue's records with its envelope: one group-committed
//! write, which is what makes small messages fast. A larger body goes to a
//! file of its own, `bodies/<id>`, written as it arrives whenever
//! [`FILE_WRITE`] bytes are pending (the first write creates the file); it is
//! synced (data, then the directory entry) before its envelope is written, so
//! an acknowledged message never points at a body that is not on disk. A
//! file is removed as soon as its message leaves the queue, which gives the
//! space back at once (sled keeps the space of records it no longer needs).
//!
//! A body that is never accepted (the client left mid-DATA, the message was
//! refused) is removed when its [`BodyWriter`] is dropped; one a crash cut
//! short has no envelope, and [`sweep`] removes it at the next start.
//!
//! Delivery reads a body with a [`BodyReader`], one chunk at a time.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::records;
use super::store::{Store, StoreError};
use super::Envelope;

/// The largest body kept in memory while it arrives and stored with the
/// envelope. Small mail needs the records' group commit (one sync for many
/// messages; a file costs two syncs of its own), but measured side by side
/// 100 KB messages went faster as files than as records (954 and 797
/// against 756 and 762 msg/s, 20 sessions; 1.05-1.27 against 1.47-1.50 CPU
/// seconds per 1,000): sled writes a large value more than once. 200
/// sessions at once hold at most 13 MiB of such buffers.
pub const INLINE_MAX: usize = 64 * 1024;
/// Bytes gathered in memory before each write to a body file, the first
/// (which creates the file) included: a message of up to this size goes to
/// the disk in one trip to the blocking pool, with its sync. 200 sessions
/// at once hold at most 26 MiB of such buffers.
pub const FILE_WRITE: usize = 128 * 1024;
/// Bytes read from a body file per chunk: a 100 KB message in one trip to
/// the blocking pool. Deliveries are few (bounded by the routes'
/// connections), so the buffer costs little.
pub const FILE_READ: usize = 128 * 1024;
/// The directory of body files, inside the queue directory.
pub const DIR: &str = "bodies";

/// A body being received. Dropping it before [`Spool::accept`] took it
/// removes whatever of it reached the disk.
///
/// [`Spool::accept`]: super::Spool::accept
pub struct BodyWriter {
    dir: PathBuf,
    id: String,
    /// The ids of bodies being written, which a sweep must leave alone.
    writing: Writing,
    /// Bytes not yet in the file (or the whole body while it is small).
    pending: Vec<u8>,
    /// Set once the body outgrew [`INLINE_MAX`]; None while a blocking write
    /// has it.
    file: Option<File>,
    spilled: bool,
    size: u64,
    kept: bool,
}

/// The ids of the bodies being written now.
pub(super) type Writing = Arc<Mutex<HashSet<String>>>;

fn writing(set: &Writing) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl BodyWriter {
    pub(super) fn new(queue: &Path, id: &str, set: &Writing) -> BodyWriter {
        writing(set).insert(id.to_string());
        BodyWriter {
            dir: queue.join(DIR),
            id: id.to_string(),
            writing: set.clone(),
            // Most mail fits: no regrowth for it.
            pending: Vec::with_capacity(16 * 1024),
            file: None,
            spilled: false,
            size: 0,
            kept: false,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `bytes`. A body that outgrows [`INLINE_MAX`] moves to its
    /// file here; the file is written whenever [`FILE_WRITE`] bytes are due.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.pending.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.pending.len() >= FILE_WRITE {
            self.write_pending(false).await?;
        }
        Ok(())
    }

    /// Whether the body is (to be) stored in a file of its own.
    pub(super) fn in_file(&self) -> bool {
        self.spilled || self.size > INLINE_MAX as u64
    }

    /// The body of a small message, whole.
    pub(super) fn inline(&self) -> &[u8] {
        &self.pending
    }

    /// Writes what is left, syncs the file and its directory entry: after
    /// this, the file survives a power cut.
    pub(super) async fn finish_file(&mut self) -> Result<(), StoreError> {
        self.write_pending(true).await
    }

    /// The accepted message owns the file now.
    pub(super) fn keep(&mut self) {
        self.kept = true;
    }

    /// Writes what is pending, creating the file first on the first write:
    /// one trip to the blocking pool either way (each
    /// trip is two thread switches, a large share of a 100 KB message's cost).
    async fn write_pending(&mut self, sync: bool) -> Result<(), StoreError> {
        let file = self.file.take();
        if file.is_none() && self.spilled {
            return Err(io_error(&self.path(), "the body file is gone"));
        }
        // Set first: a session dropped while the file is being created
        // still removes it (or the next sweep does).
        self.spilled = true;
        let bytes = std::mem::take(&mut self.pending);
        let dir = self.dir.clone();
        let (file, mut bytes) = blocking(&self.path(), move |path| {
            let mut file = match file {
                Some(f) => f,
                None => create(path)?,
            };
            file.write_all(&bytes)
                .map_err(|e| (path.to_path_buf(), e))?;
            if sync {
                file.sync_data().map_err(|e| (path.to_path_buf(), e))?;
                crate::durable::sync_dir(&dir).map_err(|e| (dir.clone(), e))?;
            }
            Ok((file, bytes))
        })
        .await?;
        bytes.clear();
        // One large piece may have grown the buffer; the next writes need
        // no more than a write's worth.
        bytes.shrink_to(FILE_WRITE);
        self.pending = bytes;
        self.file = Some(file);
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.id)
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        writing(&self.writing).remove(&self.id);
        if self.spilled && !self.kept {
            self.file.take();
            match std::fs::remove_file(self.path()) {
                Ok(()) => tracing::info!(id = %self.id, "partial message removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(id = %self.id, "cannot remove partial message: {e}"),
            }
        }
    }
}

/// A new body file: never an existing one, never through a link.
fn create(path: &Path) -> Result<File, (PathBuf, std::io::Error)> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| (path.to_path_buf(), e))
}

fn open(path: &Path) -> Result<File, std::io::Error> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Runs file I/O off the async workers: a slow disk must not stall every
/// session on the same thread.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce(&Path) -> Result<T, (PathBuf, std::io::Error)> + Send + 'static,
) -> Result<T, StoreError> {
    let owned = path.to_path_buf();
    match tokio::task::spawn_blocking(move || work(&owned)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err((path, source))) => Err(StoreError::Io { path, source }),
        Err(e) => Err(io_error(path, &format!("body writer stopped: {e}"))),
    }
}

fn io_error(path: &Path, text: &str) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(text.to_string()),
    }
}

/// A queued message's body, a chunk at a time. A part that is missing or a
/// size that does not match is [`StoreError::Damaged`].
pub struct BodyReader {
    id: String,
    size: u64,
    read: u64,
    done: bool,
    source: Source,
}

/// A streaming rewrite of a body as it is read (see
/// `upstream::downgrade`): bytes in, bytes out, and whatever is left at the
/// end.
pub trait Transform: Send {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>);
    fn finish(&mut self, out: &mut Vec<u8>);
}

enum Source {
    /// A message made in memory (`test-send`, tests).
    Memory(Option<Vec<u8>>),
    /// Another body read through a transform; `finished` once its end has
    /// been given to the transform.
    Transformed {
        inner: Box<BodyReader>,
        transform: Box<dyn Transform>,
        finished: bool,
    },
    Records {
        store: Store,
        next: u32,
        chunks: u32,
    },
    File {
        path: PathBuf,
        file: Option<File>,
    },
}

impl BodyReader {
    pub(super) fn new(store: &Store, env: &Envelope) -> BodyReader {
        let source = if env.body_file {
            Source::File {
                path: store.path().join(DIR).join(&env.id),
                file: None,
            }
        } else {
            Source::Records {
                store: store.clone(),
                next: 0,
                chunks: env.chunks,
            }
        };
        BodyReader {
            id: env.id.clone(),
            size: env.size,
            read: 0,
            done: false,
            source,
        }
    }

    /// A body held in memory, read as one chunk.
    pub fn from_bytes(bytes: Vec<u8>) -> BodyReader {
        BodyReader {
            id: String::new(),
            size: bytes.len() as u64,
            read: 0,
            done: false,
            source: Source::Memory(Some(bytes)),
        }
    }

    /// This body as `transform` rewrites it; `size` is what it comes to
    /// (the caller counted it), checked like any body's size.
    pub fn transformed(self, size: u64, transform: Box<dyn Transform>) -> BodyReader {
        BodyReader {
            id: self.id.clone(),
            size,
            read: 0,
            done: false,
            source: Source::Transformed {
                inner: Box::new(self),
                transform,
                finished: false,
            },
        }
    }

    /// The body's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, or None at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let chunk = match &mut self.source {
            Source::Memory(bytes) => bytes.take().filter(|b| !b.is_empty()),
            Source::Transformed {
                inner,
                transform,
                finished,
            } => transformed_chunk(inner, transform.as_mut(), finished).await?,
            Source::Records {
                store,
                next,
                chunks,
            } => record_chunk(store, &self.id, next, *chunks)?,
            Source::File { path, file } => {
                // The recorded size ends the body: no trip to the disk to
                // find the end of the file.
                let left = self.size.saturating_sub(self.read).min(FILE_READ as u64);
                if left == 0 {
                    None
                } else {
                    file_chunk(&self.id, path, file, left).await?
                }
            }
        };
        match chunk {
            Some(c) => {
                self.read += c.len() as u64;
                if self.read > self.size {
                    return Err(self.wrong_size());
                }
                Ok(Some(c))
            }
            None if self.read != self.size => Err(self.wrong_size()),
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// The whole body in one buffer: for tests, and for a notice that
    /// returns a small message (the caller checks the size first).
    pub async fn read_all(mut self) -> Result<Vec<u8>, StoreError> {
        let mut all = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0).min(1 << 20));
        while let Some(c) = self.next().await? {
            all.extend_from_slice(&c);
        }
        Ok(all)
    }

    /// The header section (bounded, see [`header_section`]): for a bounce
    /// and `queue show`, which need nothing else of the message.
    ///
    /// [`header_section`]: crate::message_text::header_section
    pub async fn header_section(mut self) -> Result<Vec<u8>, StoreError> {
        const ENOUGH: usize = 64 * 1024 + 2;
        let mut head = Vec::new();
        while head.len() <= ENOUGH && !ends_header_section(&head) {
            match self.next().await? {
                Some(c) => head.extend_from_slice(&c),
                None => break,
            }
        }
        Ok(crate::message_text::header_section(&head).to_vec())
    }

    fn wrong_size(&self) -> StoreError {
        StoreError::Damaged {
            id: self.id.clone(),
            reason: format!("its body has more or fewer bytes than its {}", self.size),
        }
    }
}

fn ends_header_section(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\r\n") || bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The next non-empty output of a transform, reading the inner body until
/// there is some or it ends.
async fn transformed_chunk(
    inner: &mut BodyReader,
    transform: &mut dyn Transform,
    finished: &mut bool,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    while out.is_empty() && !*finished {
        // Boxed: a body read through a transform reads another body.
        match Box::pin(inner.next()).await? {
            Some(chunk) => transform.feed(&chunk, &mut out),
            None => {
                transform.finish(&mut out);
                *finished = true;
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn record_chunk(
    store: &Store,
    id: &str,
    next: &mut u32,
    chunks: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    if *next >= chunks {
        return Ok(None);
    }
    let i = *next;
    *next += 1;
    match store.get(&records::chunk_key(id, i))? {
        Some(chunk) => Ok(Some(chunk.to_vec())),
        None => Err(StoreError::Damaged {
            id: id.to_string(),
            reason: format!("body part {i} of {chunks} is missing"),
        }),
    }
}

async fn file_chunk(
    id: &str,
    path: &Path,
    slot: &mut Option<File>,
    want: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match slot.take() {
        Some(f) => f,
        None => match open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Damaged {
                    id: id.to_string(),
                    reason: "its body file is missing".into(),
                })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        },
    };
    let (file, chunk) = blocking(path, move |path| {
        let mut chunk = Vec::with_capacity(usize::try_from(want).unwrap_or(FILE_READ));
        let mut limited = (&file).take(want);
        limited
            .read_to_end(&mut chunk)
            .map_err(|e| (path.to_path_buf(), e))?;
        Ok((file, chunk))
    })
    .await?;
    if chunk.is_empty() {
        return Ok(None);
    }
    *slot = Some(file);
    Ok(Some(chunk))
}

/// Whether the body file of `env` is there, at its size.
pub(super) fn check_file(queue: &Path, env: &Envelope) -> Result<(), StoreError> {
    let path = queue.join(DIR).join(&env.id);
    let damaged = |reason: String| StoreError::Damaged {
        id: env.id.clone(),
        reason,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() == env.size => Ok(()),
        Ok(m) if m.is_file() => Err(damaged(format!(
            "its body file has {} bytes, not {}",
            m.len(),
            env.size
        ))),
        Ok(_) => Err(damaged("its body file is not a file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(damaged("its body file is missing".into()))
        }
        Err(source) => Err(StoreError::Io { path, source }),
    }
}

/// Removes the body file of a message that has left the queue. A file that
/// stays (an I/O error) is only space: the next start's [`sweep`] takes it.
pub(super) fn remove(queue: &Path, env: &Envelope) {
    if env.body_file {
        remove_id(queue, &env.id);
    }
}

pub(super) fn remove_id(queue: &Path, id: &str) {
    match std::fs::remove_file(queue.join(DIR).join(id)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(id = %id, "cannot remove the body file: {e}"),
    }
}

/// Creates the body directory (mode 0700, durably) if it is missing.
pub(super) fn prepare(queue: &Path) -> Result<(), StoreError> {
    let dir = queue.join(DIR);
    let io = |source| StoreError::Io {
        path: dir.clone(),
        source,
    };
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io(std::io::Error::other(
                "exists and is not a directory; move it away",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    crate::durable::sync_dir(queue).map_err(|source| StoreError::Io {
        path: queue.to_path_buf(),
        source,
    })
}

/// Removes every body file whose message is not queued (`queued` says which
/// ids are) and that is not being written: what a crash, a failed commit or
/// a session dropped mid-spill left. Returns how many went and the bytes the
/// others take. A file that cannot be removed is only space: logged, left.
pub(super) fn sweep(
    queue: &Path,
    set: &Writing,
    queued: impl Fn(&str) -> Result<bool, StoreError>,
) -> Result<(usize, u64), StoreError> {
    let dir = queue.join(DIR);
    let io = |source| StoreError::Io {
        path: dir.clone(),
        source,
    };
    let (mut removed, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if writing(set).contains(&name) || queued(&name)? {
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
        }
    }
    Ok((removed, bytes))
}

#[cfg(test)]
mod tests;
