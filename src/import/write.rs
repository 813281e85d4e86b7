//! Writing an import: the secret files (mode 0600) and the configuration.
//!
//! Every file is written to a temporary name in its directory, fsynced, then
//! put in place: by `rename` with `--force`, otherwise by `link`, which fails
//! if the name exists. So an existing file is never replaced by accident, not
//! even by a race with another writer, and a crash leaves either no file or a
//! complete one, never half a password.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{ImportError, Rendered};
use crate::config::Secret;
use crate::safe_fs::{Dir, SafeFsError};

/// A password for a route's `password_file`.
#[derive(Debug)]
pub struct SecretFile {
    pub path: PathBuf,
    pub value: Secret,
}

/// Writes the secrets, then the configuration to `output` (when given; the
/// caller prints it otherwise). Without `force` nothing is written if any of
/// the files exists already.
pub fn write(rendered: &Rendered, output: Option<&Path>, force: bool) -> Result<(), ImportError> {
    if !force {
        let existing: Vec<String> = rendered
            .secrets
            .iter()
            .map(|s| s.path.as_path())
            .chain(output)
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(ImportError::Exists(existing));
        }
    }
    for s in &rendered.secrets {
        if let Some(dir) = s.path.parent() {
            private_dir(dir)?;
        }
        // Exactly the password: read_secret_file would drop a trailing newline
        // anyway, and none is needed.
        put(&s.path, s.value.expose().as_bytes(), 0o600, force)?;
    }
    if let Some(path) = output {
        put(path, rendered.config.as_bytes(), 0o644, force)?;
    }
    Ok(())
}

/// Creates the secrets directory (mode 0700) when missing; the daemon's user
/// must own it, so a directory root creates takes its parent's owner.
fn private_dir(dir: &Path) -> Result<(), ImportError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    Dir::create(dir, 0o700)?;
    Ok(())
}

/// Writes `bytes` under a temporary name and puts it in place, all through
/// descriptors ([`crate::safe_fs`]): the secrets directory may belong to the
/// daemon's user, who must not be able to turn root's write or chown into
/// one of a file of their choosing.
fn put(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), ImportError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = Dir::open(dir)?;
    let name = path.file_name().unwrap_or(OsStr::new("import"));
    let mut temp = dir.temp(&format!("{}.import", name.to_string_lossy()), mode)?;
    let written = temp
        .file
        .write_all(bytes)
        .and_then(|()| temp.file.sync_all());
    let placed = match written {
        Ok(()) => dir.put(&temp.file, &temp.name, name, force),
        Err(e) => Err(SafeFsError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    };
    let _ = dir.remove(&temp.name);
    placed?;
    dir.sync(&temp.file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rendered(dir: &Path) -> Rendered {
        Rendered {
            config: "# config\n".into(),
            secrets: vec![SecretFile {
                path: dir.join("secrets/up.password"),
                value: Secret::new("hunter2:with:colons"),
            }],
            notes: Vec::new(),
            untranslated: Vec::new(),
        }
    }

    #[test]
    fn secrets_are_private_and_never_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let r = rendered(dir.path());
        let out = dir.path().join("smarthost.toml");
        write(&r, Some(&out), false).unwrap();
        let secret = &r.secrets[0].path;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(secret), 0o600);
        assert_eq!(mode(secret.parent().unwrap()), 0o700);
        assert_eq!(
            std::fs::read_to_string(secret).unwrap(),
            "hunter2:with:colons"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "# config\n");

        std::fs::write(secret, "changed by hand").unwrap();
        let err = write(&r, Some(&out), false).unwrap_err().to_string();
        assert!(
            err.contains("up.password") && err.contains("smarthost.toml"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(std::fs::read_to_string(secret).unwrap(), "changed by hand");

        write(&r, Some(&out), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(secret).unwrap(),
            "hunter2:with:colons"
        );
        assert_eq!(mode(secret), 0o600);
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(secret.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
