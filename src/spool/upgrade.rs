//! Converts a queue written by main 951fa14 and earlier, where a message's
//! whole envelope (every recipient, every reply) was one `e<id>` record, to
//! the per-recipient records of [`super::records`].
//!
//! Crash-safe by construction: each message is converted in one atomic batch
//! that writes its new records and removes the old one, so after a kill at any
//! point a message is either still in the old form (converted at the next
//! start) or wholly in the new one. Body chunks keep their keys.

use super::envelope::Envelope;
use super::records;
use super::store::{Changes, Store, StoreError};

/// Converts every old-form message; returns how many. One that does not
/// decode is quarantined, its record kept for `queue delete`.
pub(super) fn run(store: &Store) -> Result<usize, StoreError> {
    let mut converted = 0;
    // Keys first: the scan must not run over records it is replacing.
    let keys: Vec<sled::IVec> = store.scan_keys(b"e").collect::<Result<_, _>>()?;
    for key in keys {
        let id = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
        let Some(value) = store.get(&key)? else {
            continue;
        };
        if store.get(&records::damage_key(&id))?.is_some() {
            continue;
        }
        let mut changes = Changes::new();
        let ok = convert(&mut changes, &key, &value);
        store.apply(changes)?;
        let pause = test_pause();
        if pause.is_some() {
            // So that a test's kill finds this conversion on disk.
            store.sync_blocking()?;
        }
        if ok {
            converted += 1;
            tracing::debug!(id, "queue: converted to per-recipient records");
        } else {
            tracing::error!(
                "queue: message {id} is damaged: its envelope (old form) does not decode"
            );
        }
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
    }
    if converted > 0 {
        store.sync_blocking()?;
    }
    Ok(converted)
}

/// Adds the conversion of one old-form record (`key`, `value`) to `changes`:
/// the new records and the old one's removal, or, for a record that does not
/// decode, a quarantine mark (the old record is kept for `queue delete`).
/// True if it was converted.
pub(super) fn convert(changes: &mut Changes, key: &[u8], value: &[u8]) -> bool {
    let id = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
    match serde_json::from_slice::<Envelope>(value) {
        Ok(mut env) => {
            env.id = id;
            // Indexed by `Spool::build_due_index`, which runs next.
            super::writes::put_whole(changes, &env, None, &super::Place::default());
            changes.remove(key.to_vec());
            true
        }
        Err(e) => {
            let reason = format!("its envelope (old form) does not decode: {e}");
            changes.insert(records::damage_key(&id), reason.into_bytes());
            false
        }
    }
}

/// With `SMARTHOST_TEST_UPGRADE_PAUSE_MS` set, each conversion is synced and
/// followed by that pause, so a test can SIGKILL the daemon in the middle of
/// an upgrade with part of it on disk. Never set in production; costs one
/// lookup per converted message.
fn test_pause() -> Option<std::time::Duration> {
    std::env::var("SMARTHOST_TEST_UPGRADE_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}
