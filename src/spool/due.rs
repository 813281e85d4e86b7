//! The due index: one key `w<route>\0<due u64 BE><id>` for every queued
//! message that is not held and has a recipient still to try, `due` being
//! the earliest `next_attempt` of those recipients and `route` the route its
//! sender has (the spool's [`Router`], which the daemon keeps in step with
//! the configuration in force). Keys sort by route, then due time, so each
//! route's schedule reads its next messages due a page at a time instead of
//! keeping every queued message in memory or reading the whole queue at each
//! start, and a route that is slow or rate-limited never stands in the way
//! of another's.
//!
//! The entry is written in the same change as the message's meta record,
//! which carries the [`Slot`] it was indexed under ([`Meta::due`]), so the
//! next change knows which entry to replace. In a change applied in order
//! (see `Changes::in_order`) the new entry goes before the meta record and
//! the old one is removed after it, so a crash leaves an entry for the meta
//! record's due time or an entry too many, which readers drop when the
//! records disagree. (A crash between the recipient records of a message
//! of several can leave records due at a time no entry has: the count
//! after every crash, `Shared::audit`, repairs those.)
//!
//! Queues written before the index existed get it built once, at the first
//! open (see [`Spool::build_due_index`]), marked done by [`BUILT`].
//!
//! [`Meta::due`]: super::records::Meta::due

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;
use super::store::Changes;
use super::tally::Share;
use super::writes::put_meta;
use super::{Spool, StoreError};

/// The first byte of every index key.
pub const KIND: u8 = b'w';
/// Present once the index covers every queued message. (Not the name an
/// earlier, reverted form of the index used, keyed by due time alone: a
/// queue it wrote is indexed anew.)
pub const BUILT: &[u8] = b"xdue-index-by-route";
/// Messages indexed per write while the index is built.
const BUILD_BATCH: usize = 1000;

/// Where a message stands in the index: its route and due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub route: String,
    pub at: u64,
}

/// Where a message goes: its route, and when it is due there (None for a
/// held message and one with nothing left to try).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    pub route: String,
    pub at: Option<u64>,
}

impl Place {
    /// Its slot in the index, if it has one.
    pub fn slot(&self) -> Option<Slot> {
        self.at.map(|at| Slot {
            route: self.route.clone(),
            at,
        })
    }
}

/// Reads a meta record's `due`: a [`Slot`], or None for anything else (the
/// bare due time the reverted form of the index wrote), which the index's
/// build and the repairs then replace.
pub fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Slot>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Due {
        Slot(Slot),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Due>::deserialize(d)? {
        Some(Due::Slot(slot)) => Some(slot),
        _ => None,
    })
}

/// The route of a message from its routing sender. Route names never hold
/// a control character (the configuration refuses them), so a NUL ends one
/// in a key.
#[derive(Clone)]
pub struct Router {
    route_of: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Tells one routing table from another across a restart (see
    /// `tally`'s close note): a queue closed under another table is
    /// checked for messages indexed under a route they no longer have.
    pub fingerprint: String,
}

impl Router {
    pub fn new(route_of: impl Fn(&str) -> String + Send + Sync + 'static) -> Router {
        Router {
            route_of: Arc::new(route_of),
            fingerprint: String::new(),
        }
    }

    pub fn with_fingerprint(self, fingerprint: String) -> Router {
        Router {
            fingerprint,
            ..self
        }
    }

    /// Every message on the one route `name`: for tools and tests that
    /// open a queue without a configuration.
    pub fn single(name: &str) -> Router {
        let name = name.to_string();
        Router::new(move |_| name.clone())
    }

    /// The route of messages from `route_sender`.
    pub fn route_of(&self, route_sender: &str) -> String {
        (self.route_of)(route_sender)
    }

    /// Where `env` goes now.
    pub fn place(&self, env: &Envelope) -> Place {
        Place {
            route: (self.route_of)(&env.route_sender),
            at: if env.held { None } else { env.next_due() },
        }
    }

    /// The slot `env` is indexed under: None for a held message and one
    /// with nothing left to try.
    pub fn slot(&self, env: &Envelope) -> Option<Slot> {
        self.place(env).slot()
    }
}

/// The keys of one route's entries all start so.
pub fn prefix(route: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + route.len());
    key.push(KIND);
    key.extend_from_slice(route.as_bytes());
    key.push(0);
    key
}

pub fn key(slot: &Slot, id: &str) -> Vec<u8> {
    let mut key = prefix(&slot.route);
    key.extend_from_slice(&slot.at.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The slot and id of an index key.
pub fn parse(key: &[u8]) -> Option<(Slot, String)> {
    let rest = key.strip_prefix(&[KIND])?;
    let end = memchr::memchr(0, rest)?;
    let route = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    let (at, id) = rest[end + 1..].split_at_checked(8)?;
    let at = u64::from_be_bytes(at.try_into().ok()?);
    let id = std::str::from_utf8(id).ok()?;
    (!id.is_empty()).then(|| (Slot { route, at }, id.to_string()))
}

/// The entry a message gets (`now`), before its meta record is written.
pub(super) fn insert_before(
    changes: &mut Changes,
    id: &str,
    was: Option<&Slot>,
    now: Option<&Slot>,
) {
    match now {
        Some(slot) if Some(slot) != was => {
            changes.insert(key(slot, id), Vec::new());
        }
        _ => {}
    }
}

/// The entry a message had (`was`), removed after its meta record is
/// written (or removed).
pub(super) fn remove_after(
    changes: &mut Changes,
    id: &str,
    was: Option<&Slot>,
    now: Option<&Slot>,
) {
    match was {
        Some(slot) if Some(slot) != now => {
            changes.remove(key(slot, id));
        }
        _ => {}
    }
}

impl Spool {
    /// Routes the messages of every later change with `router` (a reload
    /// that changed the routing table). Returns once no change routed by
    /// the old one is still being applied: whatever reads the queue after
    /// this sees every such change, and can move its messages on.
    pub fn set_router(&self, router: Router) {
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    /// The slot `env` is indexed under by the router in force.
    pub fn slot(&self, env: &Envelope) -> Option<Slot> {
        self.router().slot(env)
    }

    pub(super) fn router(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes the index has entries under, configured or not (a
    /// restart under a table without one of them): one seek a route.
    pub fn index_routes(&self) -> Result<Vec<String>, StoreError> {
        let mut routes = Vec::new();
        let mut after = Vec::new();
        while let Some(key) = self.store.keys_after(&[KIND], &after, 1)?.pop() {
            let Some((slot, _)) = parse(&key) else {
                // Not an entry of ours: step past it.
                after = key.to_vec();
                continue;
            };
            // Past every key of the route: ids are ASCII, below 0xFF.
            after = prefix(&slot.route);
            after.extend_from_slice(&[0xFF; 64]);
            routes.push(slot.route);
        }
        Ok(routes)
    }

    /// The slot the stored message `id` is indexed under, if any.
    pub fn indexed(&self, id: &str) -> Result<Option<Slot>, StoreError> {
        let router = self.router().clone();
        Ok(self.stored(id, &router)?.due)
    }

    /// Up to `limit` index entries of `route` after `after` (due time, id),
    /// in due order: the route's messages due next. An entry may be stale
    /// (the message left or moved on); the meta record decides.
    pub fn due_after(
        &self,
        route: &str,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let prefix = prefix(route);
        let after = after.map_or_else(Vec::new, |(at, id)| {
            key(
                &Slot {
                    route: route.to_string(),
                    at,
                },
                id,
            )
        });
        let keys = self.store.keys_after(&prefix, &after, limit)?;
        Ok(keys
            .iter()
            .filter_map(|k| parse(k))
            .map(|(slot, id)| (slot.at, id))
            .collect())
    }

    /// Makes the index and the counts agree with `env` as stored and the
    /// router in force, if they do not: what a crash or a reopen cut short,
    /// a routing table changed since, or an older version that wrote to the
    /// queue, may leave. The caller has the message claimed, or nobody else
    /// can write it yet. True if anything was written (made durable by the
    /// next commit; a repair lost to a crash is made again).
    pub fn repair_due(&self, env: &Envelope) -> Result<bool, StoreError> {
        let router = self.router().clone();
        let was = self.stored(&env.id, &router)?;
        let place = router.place(env);
        let want = place.slot();
        let present = match &want {
            Some(slot) => self.store.contains(&key(slot, &env.id))?,
            None => true,
        };
        let share = Share::of(env, place.route.clone());
        if was.due == want && present && was.share.as_ref() == Some(&share) {
            return Ok(false);
        }
        self.apply_edit(Changes::new(), |e| {
            if let Some(slot) = e.place(env).slot() {
                e.changes.insert(key(&slot, &env.id), Vec::new());
            }
            e.put(env, Some(&[]))
        })?;
        Ok(true)
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
        let router = self.router().clone();
        for env in self.messages() {
            let env = match env {
                Ok(env) => env,
                Err(StoreError::Damaged { .. }) => continue,
                Err(e) => return Err(e),
            };
            // A build cut short by a crash wrote some entries already.
            let was = self.stored(&env.id, &router)?.due;
            put_meta(&mut changes, &env, was.as_ref(), &router.place(&env));
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
