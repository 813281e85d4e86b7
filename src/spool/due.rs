//! The due index: one key `w<due u64 BE><id>` for every queued message that
//! is not held and has a recipient still to try, `due` being the earliest
//! `next_attempt` of those recipients. Keys sort by due time, so the schedule
//! reads the next messages due a page at a time instead of keeping every
//! queued message in memory or reading the whole queue at each start.
//!
//! The entry is written in the same change as the message's meta record,
//! which carries the due time it was indexed under ([`Meta::due`]), so the
//! next change knows which entry to replace. In a change applied in order
//! (see `Changes::in_order`) the new entry goes before the meta record and
//! the old one is removed after it: whatever prefix a crash leaves, a
//! queued message is never missing from the index. What it may leave is an
//! entry too many, which readers drop when the meta record disagrees.
//!
//! Queues written before the index existed get it built once, at the first
//! open (see [`Spool::build_due_index`]), marked done by [`BUILT`].
//!
//! [`Meta::due`]: super::records::Meta::due

use serde::Deserialize;

use super::envelope::Envelope;
use super::records;
use super::store::Changes;
use super::writes::put_meta;
use super::{Spool, StoreError};

/// The first byte of every index key.
pub const KIND: u8 = b'w';
/// Present once the index covers every queued message.
pub const BUILT: &[u8] = b"xdue-index-built";
/// Messages indexed per write while the index is built.
const BUILD_BATCH: usize = 1000;

/// The due time a message is indexed under: None for a held message and one
/// with nothing left to try.
pub fn of(env: &Envelope) -> Option<u64> {
    if env.held {
        None
    } else {
        env.next_due()
    }
}

pub fn key(at: u64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(KIND);
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The due time and id of an index key.
pub fn parse(key: &[u8]) -> Option<(u64, String)> {
    let rest = key.strip_prefix(&[KIND])?;
    let (at, id) = rest.split_at_checked(8)?;
    let at = u64::from_be_bytes(at.try_into().ok()?);
    let id = std::str::from_utf8(id).ok()?;
    (!id.is_empty()).then(|| (at, id.to_string()))
}

/// The due time recorded in a meta record, without decoding the rest.
fn recorded(meta: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct DueOnly {
        #[serde(default)]
        due: Option<u64>,
    }
    serde_json::from_slice::<DueOnly>(meta).ok()?.due
}

/// The entry `env` gets, before its meta record is written.
pub(super) fn insert_before(changes: &mut Changes, env: &Envelope, was: Option<u64>) {
    match of(env) {
        Some(at) if Some(at) != was => {
            changes.insert(key(at, &env.id), Vec::new());
        }
        _ => {}
    }
}

/// The entry `env` had, removed after its meta record is written (or
/// removed).
pub(super) fn remove_after(changes: &mut Changes, id: &str, was: Option<u64>, now: Option<u64>) {
    match was {
        Some(at) if Some(at) != now => {
            changes.remove(key(at, id));
        }
        _ => {}
    }
}

impl Spool {
    /// The due time the stored message `id` is indexed under.
    pub(super) fn indexed_due(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .store
            .get(&records::meta_key(id))?
            .and_then(|m| recorded(&m)))
    }

    /// Up to `limit` index entries after `after` (due time, id), in due
    /// order: the messages due next. An entry may be stale (the message
    /// left or moved on); the meta record decides.
    pub fn due_after(
        &self,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let after = after.map_or_else(Vec::new, |(at, id)| key(at, id));
        let keys = self.store.keys_after(&[KIND], &after, limit)?;
        Ok(keys.iter().filter_map(|k| parse(k)).collect())
    }

    /// Makes the index agree with `env` as stored, if it does not: what a
    /// crash or a reopen cut short, or an older version that wrote to the
    /// queue, may leave. True if anything was written (made durable by the
    /// next commit; a repair lost to a crash is made again).
    pub fn repair_due(&self, env: &Envelope) -> Result<bool, StoreError> {
        let want = of(env);
        let was = self.indexed_due(&env.id)?;
        let present = match want {
            Some(at) => self.store.contains(&key(at, &env.id))?,
            None => true,
        };
        if was == want && present {
            return Ok(false);
        }
        let mut changes = Changes::new();
        if let Some(at) = want {
            changes.insert(key(at, &env.id), Vec::new());
        }
        put_meta(&mut changes, env, want);
        remove_after(&mut changes, &env.id, was, want);
        self.store.apply(changes)?;
        Ok(true)
    }

    /// Removes index entries whose message is gone: what an in-order change
    /// cut short by a crash leaves behind.
    pub(super) fn sweep_due_orphans(&self, changes: &mut Changes) -> Result<usize, StoreError> {
        let mut removed = 0;
        for k in self.store.scan_keys(&[KIND]) {
            let k = k?;
            let Some((_, id)) = parse(&k) else {
                continue;
            };
            let gone = [records::meta_key(&id), records::damage_key(&id)]
                .iter()
                .map(|m| self.store.get(m).map(|v| v.is_none()))
                .collect::<Result<Vec<bool>, _>>()?
                .into_iter()
                .all(|none| none);
            if gone {
                changes.remove(k);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Indexes every queued message of a queue written before the index
    /// existed; once (see [`BUILT`]). A crash midway starts it over at the
    /// next open, which rewrites the same entries.
    pub(super) fn build_due_index(&self) -> Result<usize, StoreError> {
        if self.store.get(BUILT)?.is_some() {
            return Ok(0);
        }
        let mut built = 0;
        let mut changes = Changes::new();
        let mut pending = 0;
        for env in self.messages() {
            let env = match env {
                Ok(env) => env,
                Err(StoreError::Damaged { .. }) => continue,
                Err(e) => return Err(e),
            };
            put_meta(&mut changes, &env, None);
            built += 1;
            pending += 1;
            if pending == BUILD_BATCH {
                self.store.apply(std::mem::take(&mut changes))?;
                pending = 0;
            }
        }
        changes.insert(BUILT.to_vec(), b"1".to_vec());
        self.store.apply(changes)?;
        self.store.sync_blocking()?;
        Ok(built)
    }
}

#[cfg(test)]
mod tests;
