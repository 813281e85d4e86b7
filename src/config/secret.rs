//! Secrets: read from files that only the owner can read, never shown.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    #[error("password_file {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `mode` holds the permission bits only.
    #[error(
        "password_file {} is readable by group or others (mode {mode:o}); chmod 600 it",
        .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("password_file {} is empty", .0.display())]
    Empty(PathBuf),
}

/// Reads a secret file, refusing one that group or others can read: a password
/// that every local user can read is already leaked.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let text = path.to_string_lossy();
    if CREDENTIALS.iter().any(|p| text.contains(p)) {
        return Err(SecretError::NoCredentialsDirectory(path.to_path_buf()));
    }
    let unreadable = |source: std::io::Error| SecretError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
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
}
