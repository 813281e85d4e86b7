//! The check a submission session calls for AUTH PLAIN and LOGIN.
//!
//! The file is read at start, looked at again (its metadata only) at most
//! once per [`Options::check_every`] when a login comes, and read again when
//! it changed, or on [`Verifier::reload`]. A file that cannot be read makes
//! every login [`Verdict::Unavailable`] (454, try again later) rather than
//! refused, since the client's password may be right.
//!
//! Hash checks run on tokio's blocking threads, at most
//! [`Options::pool`] at once (the core count): a flood of logins waits for
//! those, and the relay's own tasks keep their threads. A login that cannot
//! start its check within [`Options::queue_wait`] is told to come back. A user
//! who is not in the file is checked against a decoy of the file's most
//! common scheme and cost ([`PasswdFile`]), so the time a refusal takes does
//! not say whether the user exists.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{RwLock, Semaphore};

use super::cache::Cache;
use super::hash::StoredHash;
use super::passwd::{self, FileStamp, LoadError, LoadReport, PasswdFile};
use super::precis;

/// The knobs; [`Options::default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hash checks at once: the core count.
    pub pool: usize,
    /// How long a login waits for a place in the pool before it is told to
    /// try again later.
    pub queue_wait: Duration,
    /// How long a success is remembered (60 s).
    pub cache_ttl: Duration,
    /// How many successes are remembered at most (1024).
    pub cache_entries: usize,
    /// How often, at most, the file's metadata is looked at (1 s).
    pub check_every: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pool: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            queue_wait: Duration::from_secs(15),
            cache_ttl: Duration::from_secs(60),
            cache_entries: 1024,
            check_every: Duration::from_secs(1),
        }
    }
}

/// The answer to a login.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The password is right; `identity` is the user name as the file has
    /// it (NFC), the name to log and to look up the senders of.
    Ok { identity: String },
    /// Wrong password, unknown user, or a password PRECIS refuses.
    Refused,
    /// The check could not be made now: answer 454 and log the reason.
    Unavailable(Unavailable),
}

/// Why a login could not be checked. Holds no password and no hash.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{0}")]
    File(#[from] LoadError),
    #[error("password checks are backed up: none could start within {0:?}")]
    Busy(Duration),
    #[error("a password check did not complete")]
    CheckFailed,
}

struct State {
    file: Result<Arc<PasswdFile>, LoadError>,
    stamp: Option<FileStamp>,
    checked: Instant,
    /// Counts the reads of the file, so the cache can tell an old check's
    /// result from a current one.
    generation: u64,
}

/// The passwd-file check, shared by every submission session.
pub struct Verifier {
    path: PathBuf,
    options: Options,
    state: RwLock<State>,
    cache: Mutex<Cache>,
    pool: Arc<Semaphore>,
    checks: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the file now, blocking (once, at start-up: its warnings belong
    /// in the start's log), with the default [`Options`]. A file that cannot
    /// be read is logged, and logins are [`Verdict::Unavailable`] until it
    /// can be.
    pub fn new(path: impl AsRef<Path>) -> Verifier {
        Verifier::with_options(path, Options::default())
    }

    pub fn with_options(path: impl AsRef<Path>, options: Options) -> Verifier {
        let path = path.as_ref().to_path_buf();
        let read = PasswdFile::read(&path);
        log_read(&path, &read, None);
        let mut state = State {
            file: Err(LoadError::NotAFile(path.clone())),
            stamp: None,
            checked: Instant::now(),
            generation: 0,
        };
        let _ = install(&mut state, read);
        Verifier {
            cache: Mutex::new(Cache::new(options.cache_ttl, options.cache_entries)),
            pool: Arc::new(Semaphore::new(options.pool.max(1))),
            checks: AtomicU64::new(0),
            path,
            options,
            state: RwLock::new(state),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a login. `username` as the client sent it (NFC-normalized
    /// here), `password` the raw bytes (PRECIS OpaqueString here).
    pub async fn verify(&self, username: &str, password: &[u8]) -> Verdict {
        let user = precis::username(username);
        let Some(password) = precis::password(password) else {
            return Verdict::Refused;
        };
        let (file, generation) = match self.current().await {
            Ok(current) => current,
            Err(e) => return Verdict::Unavailable(e.into()),
        };
        let entry = file.entry(&user);
        let fingerprint = self.cache().fingerprint(&password);
        if let (Some(_), Some(fp)) = (entry, &fingerprint) {
            if self.cache().hit(&user, fp) {
                return Verdict::Ok { identity: user };
            }
        }
        let known = entry.is_some();
        let hash = entry.unwrap_or(file.decoy()).clone();
        match self.check(hash, password).await {
            Ok(true) if known => {
                if let Some(fp) = fingerprint {
                    self.cache().insert(generation, user.clone(), fp);
                }
                Verdict::Ok { identity: user }
            }
            Ok(_) => Verdict::Refused,
            Err(e) => Verdict::Unavailable(e),
        }
    }

    /// Whether the file has a line for `username` (for logging a failure
    /// with the name only when it is a user's, not a mistyped password).
    pub async fn knows(&self, username: &str) -> bool {
        let user = precis::username(username);
        self.current()
            .await
            .is_ok_and(|(file, _)| file.entry(&user).is_some())
    }

    /// Reads the file again now, whether or not it changed (SIGHUP), and
    /// forgets the remembered logins.
    pub async fn reload(&self) -> Result<LoadReport, LoadError> {
        let mut state = self.state.write().await;
        self.read_into(&mut state).await
    }

    /// How many hash checks were run (not answered from the cache).
    pub fn hash_checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file as it is now, re-read first if it changed.
    async fn current(&self) -> Result<(Arc<PasswdFile>, u64), LoadError> {
        {
            let state = self.state.read().await;
            if state.checked.elapsed() < self.options.check_every {
                return snapshot(&state);
            }
        }
        let mut state = self.state.write().await;
        // Another login may have looked while this one waited for the lock.
        if state.checked.elapsed() >= self.options.check_every {
            state.checked = Instant::now();
            let path = self.path.clone();
            let now = tokio::task::spawn_blocking(move || passwd::stamp(&path))
                .await
                .ok()
                .flatten();
            if state.file.is_err() || now.is_none() || now != state.stamp {
                let _ = self.read_into(&mut state).await;
            }
        }
        snapshot(&state)
    }

    async fn read_into(&self, state: &mut State) -> Result<LoadReport, LoadError> {
        state.checked = Instant::now();
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || PasswdFile::read(&path))
            .await
            .unwrap_or_else(|_| {
                let interrupted = std::io::Error::other("the read did not complete");
                Err(LoadError::Read {
                    path: self.path.clone(),
                    error: Arc::new(interrupted),
                })
            });
        log_read(&self.path, &read, state.file.as_ref().err());
        let report = install(state, read);
        state.generation += 1;
        self.cache().clear(state.generation);
        report
    }

    /// One hash check in the pool.
    async fn check(&self, hash: StoredHash, password: String) -> Result<bool, Unavailable> {
        let wait = self.options.queue_wait;
        let permit = match tokio::time::timeout(wait, self.pool.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Unavailable::CheckFailed),
            Err(_) => return Err(Unavailable::Busy(wait)),
        };
        self.checks.fetch_add(1, Ordering::Relaxed);
        // The permit goes with the work: a session that gives up waiting
        // does not free a place while its check still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.matches(&password)
        })
        .await
        .map_err(|_| Unavailable::CheckFailed)
    }
}

fn snapshot(state: &State) -> Result<(Arc<PasswdFile>, u64), LoadError> {
    state
        .file
        .as_ref()
        .map(|f| (f.clone(), state.generation))
        .map_err(Clone::clone)
}

type Read = Result<(PasswdFile, LoadReport, FileStamp), LoadError>;

fn install(state: &mut State, read: Read) -> Result<LoadReport, LoadError> {
    match read {
        Ok((file, report, stamp)) => {
            state.file = Ok(Arc::new(file));
            state.stamp = Some(stamp);
            Ok(report)
        }
        Err(e) => {
            state.file = Err(e.clone());
            state.stamp = None;
            Err(e)
        }
    }
}

/// Logs a read: the users and each warning, or the error. `before` is the
/// last read's error, so a file that stays unreadable is logged once, not
/// at every look.
fn log_read(path: &Path, read: &Read, before: Option<&LoadError>) {
    match read {
        Ok((_, report, _)) => {
            tracing::info!("passwd-file {}: {} users", path.display(), report.users);
            for w in &report.warnings {
                tracing::warn!("passwd-file {}: {w}", path.display());
            }
        }
        Err(e) if before.is_some_and(|b| b.to_string() == e.to_string()) => {}
        Err(e) => tracing::error!("{e}"),
    }
}

#[cfg(test)]
mod tests;
