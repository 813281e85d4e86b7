//! A tmpfs of its own for the tests that fill the queue's disk: mounted small
//! in a temporary directory, unmounted (lazily) when dropped, with the relay's
//! queue directory on it.
//!
//! Include it with `#[path = "common/tmpfs.rs"] mod tmpfs;` beside
//! `mod common;`. Mounting a tmpfs needs root.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{require, Relay};

/// A tmpfs of its own, unmounted on drop.
pub struct Tmpfs {
    pub mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `32m`).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&mnt)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { mnt, _dir: dir })
    }

    /// [`Tmpfs::mount`], or None when it cannot be mounted (not root): then
    /// the test says so and returns (skips), except under `CI=true`, where
    /// that is a failure (see [`require`]).
    pub fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(fs) => Some(fs),
            Err(e) => {
                require(&format!("a tmpfs of its own (root): {e}"), false);
                None
            }
        }
    }

    /// [`Relay::start_with`] `body`, its queue the directory `queue` on this
    /// tmpfs (a symbolic link from the relay's directory).
    pub fn start_relay(&self, body: &str) -> Relay {
        let queue = self.mnt.join("queue");
        std::fs::create_dir(&queue).expect("queue directory");
        Relay::start_with(body, &[], |dir: &Path| {
            std::os::unix::fs::symlink(&queue, dir.join("queue")).expect("symlink")
        })
    }

    /// Bytes an unprivileged writer could still put on it.
    pub fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mnt)
            .unwrap_or_else(|e| panic!("statvfs {}: {e}", self.mnt.display()));
        st.blocks_available() * st.fragment_size()
    }

    /// Writes a file until the filesystem is full; its size.
    pub fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.mnt.join(name)).expect("create filler");
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                    break;
                }
            }
        }
        // A last partial block.
        let mut byte = [0u8; 1];
        while f.write(&byte).is_ok_and(|k| k == 1) {
            n += 1;
            byte[0] = byte[0].wrapping_add(1);
        }
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the relay may not have let go of its files yet.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}
