//! The state file of an `oauth2` token source: the refresh token, and the access
//! token it last gave with its expiry. JSON, mode 0600, replaced atomically
//! (temp file, fsync, rename, directory fsync) so a crash leaves either the old or
//! the new refresh token, never none: with rotating refresh tokens the old one
//! may already be dead once the new one is issued.
//!
//! Whoever refreshes or replaces the tokens holds an exclusive `flock` on
//! `<state_file>.lock` from reading to writing, so the daemon, `oauth login` and
//! `oauth token` never race each other into a lost rotation.
//!
//! The directory belongs to the daemon's user while `oauth login` runs as
//! root: every file here is reached through [`crate::safe_fs`], so a link
//! planted at any of these names is refused rather than written through.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::safe_fs::{Dir, SafeFsError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a smarthost token state file ({reason})")]
    Format { path: String, reason: String },
    /// A link or a foreign file where the state, its lock or their
    /// directory should be.
    #[error(transparent)]
    Refused(#[from] SafeFsError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the file holds. Secrets are plain strings only inside this module's
/// (de)serialization; everywhere else they travel as [`Secret`].
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When the refresh token was last exchanged successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<u64>,
    /// When `oauth login` stored the refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Who logged in, when the provider said (for `oauth status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("refreshed_at", &self.refreshed_at)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

impl State {
    pub fn refresh_token(&self) -> Option<Secret> {
        self.refresh_token.clone().map(Secret::new)
    }
    pub fn access_token(&self) -> Option<Secret> {
        self.access_token.clone().map(Secret::new)
    }
    pub fn set_refresh_token(&mut self, token: &Secret) {
        self.refresh_token = Some(token.expose().to_string());
    }
    pub fn set_access_token(&mut self, token: &Secret, expires_at: Option<u64>) {
        self.access_token = Some(token.expose().to_string());
        self.expires_at = expires_at;
    }
    pub fn clear_access_token(&mut self) {
        self.access_token = None;
        self.expires_at = None;
    }
}

/// Reads the state; `Ok(None)` when there is no file yet (never logged in).
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let (dir, name) = split(path);
    let dir = match Dir::open(dir) {
        Err(e) if e.is_not_found() => return Ok(None),
        other => other?,
    };
    let Some((mut file, _)) = dir.read(name)? else {
        return Ok(None);
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(io(path))?;
    // The parse error text could quote the file: keep only its position.
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| StateError::Format {
            path: path.display().to_string(),
            reason: format!("line {} column {}", e.line(), e.column()),
        })
}

/// The state file's directory and name.
fn split(path: &Path) -> (&Path, &OsStr) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (dir, path.file_name().unwrap_or(OsStr::new("state")))
}

/// Replaces the state atomically and durably, mode 0600. As root (`oauth
/// login`) everything made in the daemon's directory is given to its owner,
/// through the open files: see [`crate::safe_fs`].
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let (dir, name) = split(path);
    let dir = Dir::create(dir, 0o700)?;
    let mut temp = dir.temp(&name.to_string_lossy(), 0o600)?;
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    let written = (|| {
        temp.file.write_all(&bytes)?;
        temp.file.write_all(b"\n")?;
        temp.file.sync_all()
    })();
    if let Err(e) = written {
        let _ = dir.remove(&temp.name);
        return Err(io(path)(e));
    }
    if let Err(e) = dir.put(&temp.file, &temp.name, name, true) {
        let _ = dir.remove(&temp.name);
        return Err(e.into());
    }
    dir.sync(&temp.file)?;
    Ok(())
}

/// Held while reading, refreshing and writing a source's tokens.
pub struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the exclusive lock, blocking: call from a blocking context.
pub fn lock(state: &Path) -> Result<Lock, StateError> {
    let path = lock_path(state);
    let (dir, name) = split(&path);
    let f = Dir::create(dir, 0o700)?.open_or_create(name, 0o600)?;
    let flock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io(&path)(std::io::Error::from(e)))?;
    Ok(Lock { _flock: flock })
}

/// Takes the lock without blocking the async runtime.
pub async fn lock_async(state: &Path) -> Result<Lock, StateError> {
    let p = state.to_path_buf();
    match tokio::task::spawn_blocking(move || lock(&p)).await {
        Ok(r) => r,
        Err(e) => Err(io(state)(std::io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_private_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth").join("src.json");
        assert!(load(&path).unwrap().is_none());
        let mut s = State::default();
        s.set_refresh_token(&Secret::new("rt-1"));
        s.set_access_token(&Secret::new("at-1"), Some(100));
        save(&path, &s).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.refresh_token().unwrap().expose(), "rt-1");
        assert_eq!(back.expires_at, Some(100));
        assert!(!format!("{back:?}").contains("rt-1"));
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        std::fs::write(&path, "{ not json rt-1").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(!err.contains("rt-1"), "{err}");
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let held = lock(&path).unwrap();
        let p2 = path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = lock(&p2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
        t.join().unwrap();
    }

    #[test]
    fn root_writes_files_the_daemon_can_read() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let owner = dir.path().join("lib");
        std::fs::create_dir(&owner).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            // As `oauth login` under sudo: the daemon's directory belongs to it.
            nix::unistd::chown(
                &owner,
                Some(nix::unistd::Uid::from_raw(65534)),
                Some(nix::unistd::Gid::from_raw(65534)),
            )
            .unwrap();
        }
        let path = owner.join("oauth").join("s.json");
        let mut st = State::default();
        st.set_refresh_token(&Secret::new("rt"));
        save(&path, &st).unwrap();
        drop(lock(&path).unwrap());
        let expected = std::fs::metadata(&owner).unwrap().uid();
        for p in [
            path.clone(),
            path.parent().unwrap().to_path_buf(),
            lock_path(&path),
        ] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().uid(),
                expected,
                "{}",
                p.display()
            );
        }
    }
}
