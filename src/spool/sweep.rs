//! What a crash leaves behind: records without their message (a change
//! applied in order and cut short), swept after an unclean stop. The sweep
//! reads every record, so the daemon runs it after it is ready, beside the
//! work (see `Shared::audit`): orphans are never read by anyone meanwhile.

use std::collections::HashMap;

use super::store::Changes;
use super::{due, records, Spool, StoreError};

impl Spool {
    /// Removes records whose message is gone: recipient records, body
    /// chunks and due index entries. Safe beside a running daemon: each
    /// candidate is checked again, and removed, under the lock every change
    /// is applied under, so a message being stored has all its records
    /// then or none. Durable with the next commit (a sweep lost to a crash
    /// is made again). Blocking.
    pub fn sweep_orphans(&self) -> Result<usize, StoreError> {
        let candidates = self.orphan_candidates()?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let _counting = self.tallies.counting();
        let mut changes = Changes::in_order();
        let mut gone: HashMap<String, bool> = HashMap::new();
        let mut removed = 0;
        for (id, key) in candidates {
            let orphan = match gone.get(&id) {
                Some(o) => *o,
                None => {
                    let o = self.is_gone(&id)?;
                    gone.insert(id, o);
                    o
                }
            };
            if orphan {
                changes.remove(key);
                removed += 1;
            }
        }
        self.store.apply(changes)?;
        Ok(removed)
    }

    /// Keys that look orphaned, with their message's id: read without the
    /// lock, so checked again by the caller.
    fn orphan_candidates(&self) -> Result<Vec<(String, sled::IVec)>, StoreError> {
        let mut found = Vec::new();
        let mut last: Option<(Vec<u8>, bool)> = None;
        for kind in [b't', b'b'] {
            for key in self.store.scan_keys(&[kind]) {
                let key = key?;
                let Some(id) = records::id_of_numbered(&key) else {
                    continue;
                };
                let orphan = match &last {
                    Some((prev, orphan)) if prev.as_slice() == id => *orphan,
                    _ => {
                        let orphan = self.is_gone(&String::from_utf8_lossy(id))?;
                        last = Some((id.to_vec(), orphan));
                        orphan
                    }
                };
                if orphan {
                    found.push((String::from_utf8_lossy(id).into_owned(), key));
                }
            }
        }
        for key in self.store.scan_keys(&[due::KIND]) {
            let key = key?;
            let Some((_, id)) = due::parse(&key) else {
                continue;
            };
            if self.is_gone(&id)? {
                found.push((id, key));
            }
        }
        Ok(found)
    }

    /// Whether message `id` has no meta record, old-form record or
    /// quarantine mark: nothing makes it a message.
    fn is_gone(&self, id: &str) -> Result<bool, StoreError> {
        for key in [
            records::meta_key(id),
            records::legacy_key(id),
            records::damage_key(id),
        ] {
            if self.store.contains(&key)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the last stop was a crash, whose leftovers
    /// [`Spool::sweep_orphans`] removes.
    pub fn crashed(&self) -> bool {
        self.store.crashed()
    }
}
