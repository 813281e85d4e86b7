//! Secrets: read from files that only their owner can read, never shown.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::safe_fs::{Dir, SafeFsError};

/// A secret read from a file. Its Debug and Display never show the value, so it can
/// sit inside structures that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a secret path names systemd's credentials directory (`LoadCredential=`),
/// which is only known when the service starts.
const CREDENTIALS: [&str; 2] = ["${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"];

/// The file a secret setting names: relative to the config's directory, or in
/// systemd's credentials directory when it starts with `$CREDENTIALS_DIRECTORY/`
/// (so the unit's `LoadCredential=` can hand the daemon secrets that stay
/// root-owned on disk). Without that variable the path is kept as written, and
/// reading it explains what is missing.
pub fn secret_path(base: &Path, written: &Path) -> PathBuf {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
    secret_path_in(base, written, dir.as_deref().map(Path::new))
}

fn secret_path_in(base: &Path, written: &Path, credentials: Option<&Path>) -> PathBuf {
    let text = written.to_string_lossy();
    for prefix in CREDENTIALS {
        if let (Some(name), Some(dir)) = (text.strip_prefix(prefix), credentials) {
            return dir.join(name);
        }
    }
    base.join(written)
}

/// Why a secret file was not used. The text names the file, never its
/// content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{} names $CREDENTIALS_DIRECTORY, which is not set: it exists only in a \
         service started by systemd with LoadCredential= (to check by hand: \
         CREDENTIALS_DIRECTORY=/path/to/credentials smarthost check)",
        .0.display()
    )]
    NoCredentialsDirectory(PathBuf),
    #[error("secret file {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A link, a second hard link, or not a regular file.
    #[error("secret file {0}")]
    Unsafe(#[from] SafeFsError),
    /// `mode` holds the permission bits only.
    #[error(
        "secret file {} is readable by group or others, or writable by them (mode {mode:o}); chmod 600 it",
        .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("secret file {} is larger than 64 KiB", .0.display())]
    TooLarge(PathBuf),
    #[error("secret file {} is empty", .0.display())]
    Empty(PathBuf),
}

/// The most a secret file may hold: passwords and tokens are short.
const MAX_SECRET: u64 = 64 * 1024;

/// Opens a secret file once, without following a link where others could
/// have put one, and checks the open file (so a swap between check and read
/// changes nothing): regular, one name, no access for group or others, and
/// in a directory others can write, its owner's ([`crate::safe_fs`]).
/// Every secret (passwords, client secrets, token files) goes through this
/// one rule.
pub fn open_secret(path: &Path) -> Result<File, SecretError> {
    let text = path.to_string_lossy();
    if CREDENTIALS.iter().any(|p| text.contains(p)) {
        return Err(SecretError::NoCredentialsDirectory(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or(path.as_os_str());
    let dir = Dir::open(dir)?;
    let Some((file, st)) = dir.read_linked(name)? else {
        return Err(SecretError::Unreadable {
            path: path.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    };
    if st.st_mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_path_buf(),
            mode: st.st_mode & 0o777,
        });
    }
    Ok(file)
}

/// Reads a secret file ([`open_secret`]'s rule): a password that every local
/// user can read is already leaked, one they can write is theirs.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let file = open_secret(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SECRET {
        return Err(SecretError::TooLarge(path.to_path_buf()));
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretError::Unreadable {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    // A trailing newline is an editor artefact, never part of the password.
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(SecretError::Empty(path.to_path_buf()));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_directory() {
        let base = Path::new("/etc/smarthost");
        let creds = Some(Path::new("/run/credentials/smarthost.service"));
        assert_eq!(
            secret_path_in(base, Path::new("secrets/pw"), creds),
            PathBuf::from("/etc/smarthost/secrets/pw")
        );
        assert_eq!(
            secret_path_in(base, Path::new("/abs/pw"), creds),
            PathBuf::from("/abs/pw")
        );
        for written in ["$CREDENTIALS_DIRECTORY/pw", "${CREDENTIALS_DIRECTORY}/pw"] {
            assert_eq!(
                secret_path_in(base, Path::new(written), creds),
                PathBuf::from("/run/credentials/smarthost.service/pw")
            );
            let unset = secret_path_in(base, Path::new(written), None);
            let err = read_secret_file(&unset).unwrap_err();
            assert!(
                matches!(err, SecretError::NoCredentialsDirectory(_)),
                "{err}"
            );
            assert!(err.to_string().contains("LoadCredential="), "{err}");
        }
    }

    /// A racer flips the name between a private and a public file: the
    /// public content is never returned, whichever way each try falls.
    #[test]
    fn a_secret_swapped_between_check_and_read_is_never_used() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let (private, public) = (file("a", "good", 0o600), file("b", "LEAKED", 0o644));
        let name = dir.path().join("pw");
        std::os::unix::fs::symlink(&private, &name).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let racer = {
            let (stop, name, tmp) = (stop.clone(), name.clone(), dir.path().join("pw.new"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for target in [&public, &private] {
                        let _ = std::fs::remove_file(&tmp);
                        std::os::unix::fs::symlink(target, &tmp).unwrap();
                        std::fs::rename(&tmp, &name).unwrap();
                    }
                }
            })
        };
        let (mut good, mut refused, mut tries) = (0, 0, 0);
        while tries < 1000 || (good == 0 || refused == 0) && tries < 200_000 {
            tries += 1;
            match read_secret_file(&name) {
                Ok(s) => {
                    assert_eq!(s.expose(), "good", "try {tries}");
                    good += 1;
                }
                Err(SecretError::Exposed { .. }) => refused += 1,
                Err(e) => panic!("try {tries}: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        assert!(
            good > 0 && refused > 0,
            "the race was not run: {good} {refused}"
        );
    }
}
