//! What a crash leaves behind: records without their message, swept at the
//! start after an unclean stop.

use super::store::Changes;
use super::{records, Spool, StoreError};

impl Spool {
    /// Removes records whose message is gone: what an in-order change cut
    /// short by a crash leaves behind. Only keys and one lookup per message
    /// are read.
    pub(super) fn sweep_orphans(&self) -> Result<usize, StoreError> {
        let mut changes = Changes::in_order();
        let mut removed = 0;
        for kind in [b't', b'b'] {
            let mut last: Option<(Vec<u8>, bool)> = None;
            for key in self.store.scan_keys(&[kind]) {
                let key = key?;
                let Some(id) = records::id_of_numbered(&key) else {
                    continue;
                };
                let orphan = match &last {
                    Some((prev, orphan)) if prev.as_slice() == id => *orphan,
                    _ => {
                        let id_text = String::from_utf8_lossy(id);
                        let orphan = [
                            records::meta_key(&id_text),
                            records::legacy_key(&id_text),
                            records::damage_key(&id_text),
                        ]
                        .iter()
                        .map(|k| self.store.get(k).map(|v| v.is_none()))
                        .collect::<Result<Vec<bool>, _>>()?
                        .into_iter()
                        .all(|none| none);
                        last = Some((id.to_vec(), orphan));
                        orphan
                    }
                };
                if orphan {
                    changes.remove(key);
                    removed += 1;
                }
            }
        }
        removed += self.sweep_due_orphans(&mut changes)?;
        if removed > 0 {
            self.store.apply(changes)?;
            self.store.sync_blocking()?;
        }
        Ok(removed)
    }
}
