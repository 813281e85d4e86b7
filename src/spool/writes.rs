//! The records each change of a message writes or removes, in the order
//! the spool's operations rely on (see [`Changes::in_order`]).

use super::due::{self, Place, Slot};
use super::history::Finished;
use super::records::{self, Meta};
use super::store::{Changes, CHUNK_SIZE};
use super::{history, Envelope};

/// A new message's records: body chunks, recipients, its due index entry
/// (at `place`), then its meta record.
pub(super) fn put_message(changes: &mut Changes, env: &mut Envelope, body: &[u8], place: &Place) {
    let mut n = 0u32;
    for chunk in body.chunks(CHUNK_SIZE) {
        changes.insert(records::chunk_key(&env.id, n), chunk.to_vec());
        n += 1;
    }
    env.chunks = n;
    env.size = body.len() as u64;
    put_whole(changes, env, None, place);
}

/// Every recipient, then the meta record (which holds the recipient of a
/// one-recipient message itself); `was` is the slot the message is indexed
/// under now (None for a new one), `place` where it goes.
pub(super) fn put_whole(changes: &mut Changes, env: &Envelope, was: Option<&Slot>, place: &Place) {
    let all: Vec<usize> = (0..env.recipients.len()).collect();
    put_changed(changes, env, &all, was, place);
}

/// The recipients at `changed` and the meta record, with the due index
/// entry replaced around them: the new entry before any of them, the old
/// one removed after (see [`due`]). A prefix of the change then leaves an
/// entry for the due time of the old records or of the new ones.
pub(super) fn put_changed(
    changes: &mut Changes,
    env: &Envelope,
    changed: &[usize],
    was: Option<&Slot>,
    place: &Place,
) {
    let now = place.slot();
    let now = now.as_ref();
    due::insert_before(changes, &env.id, was, now);
    if env.recipients.len() > 1 {
        for &i in changed {
            put_recipient(changes, env, i);
        }
    }
    // Serializing a plain struct of strings and integers cannot fail.
    let value = serde_json::to_vec(&Meta::of(env, place)).unwrap_or_default();
    changes.insert(records::meta_key(&env.id), value);
    due::remove_after(changes, &env.id, was, now);
}

/// The meta record alone, with the due index entry replaced around it.
pub(super) fn put_meta(changes: &mut Changes, env: &Envelope, was: Option<&Slot>, place: &Place) {
    put_changed(changes, env, &[], was, place);
}

pub(super) fn put_recipient(changes: &mut Changes, env: &Envelope, i: usize) {
    let (Some(r), Ok(n)) = (env.recipients.get(i), u32::try_from(i)) else {
        return;
    };
    let value = serde_json::to_vec(&records::stored_recipient(r)).unwrap_or_default();
    changes.insert(records::recipient_key(&env.id, n), value);
}

/// The meta record first (see [`Changes::in_order`]), then its due index
/// entry (`was`) and the rest.
pub(super) fn remove_message(changes: &mut Changes, env: &Envelope, was: Option<&Slot>) {
    changes.remove(records::meta_key(&env.id));
    due::remove_after(changes, &env.id, was, None);
    let split = if env.recipients.len() > 1 {
        env.recipients.len()
    } else {
        0
    };
    for i in 0..split {
        if let Ok(n) = u32::try_from(i) {
            changes.remove(records::recipient_key(&env.id, n));
        }
    }
    for i in 0..env.chunks {
        changes.remove(records::chunk_key(&env.id, i));
    }
}

pub(super) fn put_history(changes: &mut Changes, f: &Finished) {
    let value = serde_json::to_vec(f).unwrap_or_default();
    changes.insert(history::key(f.finished, &f.id), value);
    changes.history_added += 1;
}
