//! A set of writes to the store, and the two ways it can be applied. Which
//! keys a change touches and which way it is applied is decided by the spool's
//! operations (`spool/mod.rs`), never by their callers.

/// A set of writes: applied atomically ([`Changes::new`]) or one by one in the
/// order given ([`Changes::in_order`]).
#[derive(Default)]
pub struct Changes {
    pub(in crate::spool) ops: Vec<(sled::IVec, Option<sled::IVec>)>,
    pub(in crate::spool) in_order: bool,
    /// History records added, for [`super::Store::history_len`].
    pub(in crate::spool) history_added: usize,
}

impl Changes {
    /// All or nothing: one sled batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applied as single writes, in order: after a crash, any prefix of them
    /// may have survived. Only for changes where every prefix is harmless:
    /// storing a new message (its body and recipients before its meta record)
    /// and taking one out (its meta record first), each possibly followed by
    /// other single records. What a prefix leaves behind is records without a
    /// meta record, which no one reads and the next start after a crash
    /// removes (`sweep_orphans`). Worth it: sled writes out its log buffer
    /// twice for every batch (sled 0.34's `pin_log`), which more than halves
    /// the relay's throughput when every message costs two batches.
    pub fn in_order() -> Self {
        Self {
            in_order: true,
            ..Self::default()
        }
    }

    pub fn insert(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) -> &mut Self {
        self.ops.push((key.into(), Some(value.into())));
        self
    }

    pub fn remove(&mut self, key: impl Into<sled::IVec>) -> &mut Self {
        self.ops.push((key.into(), None));
        self
    }

    /// The largest key plus value among the inserts.
    pub(in crate::spool) fn largest(&self) -> Option<(&[u8], usize)> {
        self.ops
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (&k[..], k.len() + v.len())))
            .max_by_key(|(_, n)| *n)
    }
}
