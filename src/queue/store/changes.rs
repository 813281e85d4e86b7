//! A set of writes to the queue, and the keys they go to (the layout is in
//! the store's module comment).

use super::*;

/// A set of writes: applied atomically ([`Changes::new`]) or one by one in the
/// order given ([`Changes::in_order`]).
#[derive(Default)]
pub struct Changes {
    pub(super) ops: Vec<(sled::IVec, Option<sled::IVec>)>,
    pub(super) in_order: bool,
    /// History records added, for [`Store::history_len`].
    pub(super) history_added: usize,
}

impl Changes {
    /// All or nothing: one sled batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applied as single writes, in order: after a crash, any prefix of them
    /// may have survived. Only for changes where every prefix is harmless:
    /// storing a new message (its body chunks before its envelope) and taking
    /// one out (its envelope before its chunks), each possibly followed by
    /// other single records. What a prefix leaves behind is a body without an
    /// envelope, which no one reads and the next start after a crash removes
    /// ([`sweep_orphans`]). Worth it: sled writes out its log buffer twice for
    /// every batch (sled 0.34's `pin_log`), which more than halves the relay's
    /// throughput when every message costs two batches.
    pub fn in_order() -> Self {
        Self {
            in_order: true,
            ..Self::default()
        }
    }

    pub(super) fn insert(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub(super) fn remove(&mut self, key: Vec<u8>) {
        self.ops.push((key.into(), None));
    }

    pub fn put_envelope(&mut self, env: &Envelope) -> &mut Self {
        // Serializing a plain struct of strings and integers cannot fail.
        let value = serde_json::to_vec(env).unwrap_or_default();
        self.insert(envelope_key(&env.id), value);
        self
    }

    /// A new message: its body chunks and its envelope (whose `chunks` and `size`
    /// are set here from the body).
    pub fn put_message(&mut self, env: &mut Envelope, body: &[u8]) -> &mut Self {
        self.put_message_parts(env, &[], body)
    }

    /// [`Changes::put_message`] of `head` followed by `body`, chunked straight
    /// from the two without first copying them into one buffer: a message
    /// in flight is then held twice (the session's buffer and the chunks), not
    /// three times.
    pub fn put_message_parts(&mut self, env: &mut Envelope, head: &[u8], body: &[u8]) -> &mut Self {
        let total = head.len() + body.len();
        let mut n = 0u32;
        let mut at = 0;
        while at < total {
            let end = (at + CHUNK_SIZE).min(total);
            let mut chunk = Vec::with_capacity(end - at);
            if at < head.len() {
                chunk.extend_from_slice(&head[at..end.min(head.len())]);
            }
            if end > head.len() {
                chunk.extend_from_slice(&body[at.max(head.len()) - head.len()..end - head.len()]);
            }
            self.insert(chunk_key(&env.id, n), chunk);
            n += 1;
            at = end;
        }
        env.chunks = n;
        env.size = total as u64;
        self.put_envelope(env)
    }

    /// Remembers a finished message for `queue find`.
    pub fn put_history(&mut self, f: &Finished) -> &mut Self {
        let value = serde_json::to_vec(f).unwrap_or_default();
        self.insert(history::key(f.finished, &f.id), value);
        self.history_added += 1;
        self
    }

    /// A route held for its credentials (see `delivery::hold`).
    pub fn put_route_hold(&mut self, route: &str, record: &[u8]) -> &mut Self {
        self.insert(route_hold_key(route), record);
        self
    }

    pub fn remove_route_hold(&mut self, route: &str) -> &mut Self {
        self.remove(route_hold_key(route));
        self
    }

    /// The envelope goes first: see [`Changes::in_order`].
    pub fn remove_message(&mut self, env: &Envelope) -> &mut Self {
        self.remove(envelope_key(&env.id));
        for i in 0..env.chunks {
            self.remove(chunk_key(&env.id, i));
        }
        self
    }
}

pub(super) fn envelope_key(id: &str) -> Vec<u8> {
    prefixed(b'e', id.as_bytes())
}

pub(super) fn prefixed(kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(kind);
    k.extend_from_slice(rest);
    k
}

pub(super) fn route_hold_key(route: &str) -> Vec<u8> {
    prefixed(b'r', route.as_bytes())
}

pub(super) fn chunk_key(id: &str, i: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 6);
    k.push(b'b');
    k.extend_from_slice(id.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&i.to_be_bytes());
    k
}
