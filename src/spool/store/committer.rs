//! The group-commit thread, and the queue's sync, close and reopen it drives.

use super::*;
use std::io::Write;

/// Group commit: one sync for every waiter that arrived while the last one ran.
/// A waiter whose writes went to a handle that has since been replaced gets an
/// error: they were lost with it. Between requests, a failed queue is reopened.
pub(super) fn committer(queue: &Queue, rx: std_mpsc::Receiver<Waiter>) {
    let mut reopen_failures = 0u32;
    loop {
        let first = match rx.recv_timeout(REOPEN_EVERY) {
            Ok(w) => Some(w),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(cause) = queue.failure() {
            let path = queue.path.display();
            match queue.reopen(cause) {
                Ok(()) => {
                    reopen_failures = 0;
                    tracing::warn!(
                        "queue {path} reopened after an I/O error; writes not yet synced were lost"
                    );
                }
                Err(e) => {
                    reopen_failures += 1;
                    // Once a second while the disk stays full: log 1, 2, 4, 8, ...
                    if reopen_failures.is_power_of_two() {
                        tracing::error!(
                            "queue {path}: cannot reopen ({reopen_failures} tries): {e}"
                        );
                    }
                }
            }
        }
        let Some(first) = first else { continue };
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let synced = queue.sync();
        *queue.last_commit.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        if let Err(e) = &synced {
            tracing::error!(error = %e.text, "queue sync failed; nothing in this group was acknowledged");
        }
        for w in waiters {
            let result = match &synced {
                Ok(g) if *g == w.generation => Ok(()),
                Ok(_) => Err(StoreError::Reopened),
                Err(f) => Err(StoreError::Sync(f.sled())),
            };
            let _ = w.done.send(result);
        }
    }
}

impl Queue {
    /// How long since the committer last synced a group.
    pub(super) fn idle_for(&self) -> Duration {
        self.last_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The last user is gone: sync what is left and leave the marker, unless
    /// the queue failed (writes may have been cut short by the reopen).
    pub(super) fn close_cleanly(&self) {
        if self.failure().is_some() || *self.reopened.borrow() != 0 || self.sync().is_err() {
            return;
        }
        let marker = self.path.join(CLEAN_MARKER);
        let note = std::mem::take(&mut *self.note.lock().unwrap_or_else(|p| p.into_inner()));
        let written = File::create(&marker).and_then(|mut f| {
            f.write_all(&note)?;
            f.sync_all()
        });
        if written.is_ok() {
            let _ = sync_dir(&self.path);
        }
    }

    pub(super) fn handle(&self) -> Result<Handle, StoreError> {
        match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => Ok(h.clone()),
            Err(f) => Err(StoreError::Sled(f.sled())),
        }
    }

    /// Flushes the current handle and fdatasyncs its log: its generation, or
    /// the error (after which the handle is marked failed).
    pub(super) fn sync(&self) -> Result<u64, Failure> {
        let h = match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => h.clone(),
            Err(f) => return Err(f.clone()),
        };
        let synced = h.sync();
        if let Err(e) = &synced {
            h.fail(e);
        }
        synced
            .map(|_| h.generation)
            .map_err(|e| Failure::of_sled(&e))
    }

    /// Why the queue must be reopened (sled failed, or the last reopen did),
    /// or None while it works.
    pub(super) fn failure(&self) -> Option<Failure> {
        match &*self.open.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(h) => h.failure(),
            Err(f) => Some(f.clone()),
        }
    }

    /// Drops the failed handle and opens the database again. sled locks its
    /// files, so this fails while a caller still holds the old handle (an
    /// iterator), and on a disk still full; the committer then tries again
    /// later. Meanwhile every operation fails with the error that closed the
    /// queue.
    pub(super) fn reopen(&self, cause: Failure) -> Result<(), StoreError> {
        let generation = *self.reopened.borrow() + 1;
        let old = std::mem::replace(
            &mut *self.open.write().unwrap_or_else(|p| p.into_inner()),
            Err(cause),
        );
        drop(old);
        let (slot, result) = match open_handle(&self.path, self.cache_bytes, generation) {
            Ok(h) => (Ok(h), Ok(())),
            Err(e) => (Err(Failure::of(&e)), Err(e)),
        };
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = slot;
        if result.is_ok() {
            self.reopened.send_replace(generation);
        }
        result
    }
}
