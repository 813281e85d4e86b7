//! Damaged messages: set aside when a record cannot be read (never tried
//! again, listed with the reason, counted out of the queue), and removed
//! by id, whatever state their records are in.

use std::sync::atomic::Ordering;

use super::store::Changes;
use super::{body, due, records, Spool, StoreError};

impl Spool {
    /// How many messages are quarantined (a scan of their marks alone).
    pub fn damaged_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for key in self.store.scan_keys(b"d") {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Marks a message found damaged as quarantined, unless it is already:
    /// true if newly marked. Durable with the next commit (found again at
    /// the next read if lost to a crash).
    pub fn mark_damaged(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        let mut marked = false;
        self.apply_edit_locked(Changes::new(), |e| {
            marked = e.quarantine(id, reason)?;
            Ok(())
        })?;
        Ok(marked)
    }

    /// The quarantined messages and why.
    pub(super) fn damage_marks(&self) -> Vec<(String, String)> {
        self.store
            .scan(b"d")
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    /// Sets a damaged message aside: listed with `reason`, never tried again.
    pub async fn quarantine(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        self.write_edit_locked(Changes::new(), |e| e.quarantine(id, reason).map(|_| ()))
            .await
    }

    /// Removes every record of a message, whatever state they are in: the way
    /// out for a damaged one. False if there was nothing of it.
    pub async fn discard(&self, id: &str) -> Result<bool, StoreError> {
        let mut changes = Changes::in_order();
        let router = self.router().clone();
        let was = self.stored(id, &router)?;
        // The marks that make it a message go first, as in any removal.
        for key in [records::meta_key(id), records::legacy_key(id)] {
            changes.remove(key);
        }
        due::remove_after(&mut changes, id, was.due.as_ref(), None);
        let mut found = self.store.get(&records::meta_key(id))?.is_some()
            || self.store.get(&records::legacy_key(id))?.is_some()
            || self.store.get(&records::damage_key(id))?.is_some();
        for kind in [b't', b'b'] {
            for key in self.store.scan_keys(&records::numbered_prefix(kind, id)) {
                changes.remove(key?);
                found = true;
            }
        }
        changes.remove(records::damage_key(id));
        self.write_edit_locked(changes, |e| {
            // Read again under the counts' lock: a quarantine may have
            // counted it out meanwhile.
            let before = self.share_of(id, &router)?;
            e.counted(id, before, None);
            Ok(())
        })
        .await?;
        let size =
            std::fs::symlink_metadata(self.path().join(body::DIR).join(id)).map_or(0, |m| m.len());
        body::remove_id(self.path(), id);
        let _ = self
            .file_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(size))
            });
        Ok(found)
    }
}
