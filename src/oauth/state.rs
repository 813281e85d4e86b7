//! The state file of an `oauth2` token source: the refresh token, and the access
//! token it last gave with its expiry. JSON, mode 0600, replaced atomically
//! (temp file, fsync, rename, directory fsync) so a crash leaves either the old or
//! the new refresh token, never none: with rotating refresh tokens the old one
//! may already be dead once the new one is issued.
//!
//! Whoever refreshes or replaces the tokens holds an exclusive `flock` on
//! `<state_file>.lock` from reading to writing, so the daemon, `oauth login` and
//! `oauth token` never race each other into a lost rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a smarthost token state file ({reason})")]
    Format { path: String, reason: String },
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
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    // The parse error text could quote the file: keep only its position.
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| StateError::Format {
            path: path.display().to_string(),
            reason: format!("line {} column {}", e.line(), e.column()),
        })
}

/// Creates the state directory (mode 0700) if it is missing.
fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    if let Some(parent) = dir.parent() {
        adopt_owner(dir, parent);
    }
    Ok(())
}

/// `oauth login` runs as root, the daemon as its own user: a file root creates
/// in the daemon's directory is given to that directory's owner, or the daemon
/// could not read its own refresh token.
pub(crate) fn adopt_owner(path: &Path, like: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(like) {
        let _ = nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
        );
    }
}

/// Replaces the state atomically and durably, mode 0600.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    prepare_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.write_all(b"\n").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    adopt_owner(&tmp, dir);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    crate::durable::sync_dir(dir).map_err(io(dir))?;
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
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    prepare_dir(dir)?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    adopt_owner(&path, dir);
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
