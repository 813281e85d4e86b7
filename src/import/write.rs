//! Writing an import: the secret files (mode 0600) and the configuration.
//!
//! Every file is written to a temporary name in its directory, fsynced, then
//! put in place: by `rename` with `--force`, otherwise by `link`, which fails
//! if the name exists. So an existing file is never replaced by accident, not
//! even by a race with another writer, and a crash leaves either no file or a
//! complete one, never half a password.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ImportError, Rendered};
use crate::config::Secret;
use crate::oauth::state::adopt_owner;

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

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the secrets directory (mode 0700) when missing; the daemon's user
/// must own it, so a directory root creates takes its parent's owner.
fn private_dir(dir: &Path) -> Result<(), ImportError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;
    if let Some(parent) = dir.parent() {
        adopt_owner(dir, parent);
    }
    Ok(())
}

fn put(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), ImportError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".into());
    let tmp = dir.join(format!(".{name}.import-{}", std::process::id()));
    let written = (|| {
        // create_new: never write into a file someone else put at that name.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(path)(e));
    }
    adopt_owner(&tmp, dir);
    let placed = if force {
        std::fs::rename(&tmp, path)
    } else {
        std::fs::hard_link(&tmp, path)
    };
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(write_err(path))?;
    crate::durable::sync_dir(dir).map_err(write_err(dir))
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
