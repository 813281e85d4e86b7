//! Secrets: read from files that only the owner can read, never shown.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

/// Reads a secret file, refusing one that group or others can read: a password
/// that every local user can read is already leaked.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("password_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "password_file {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("password_file {}: {e}", path.display()))?;
    // A trailing newline is an editor artefact, never part of the password.
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("password_file {} is empty", path.display()));
    }
    Ok(Secret::new(secret))
}
