//! One change of the queue as the spool builds it: the records it writes,
//! its messages' entries in the due index and their counts, all from one
//! router, with the counts locked until the change is applied (see
//! [`Spool::apply_edit`]). Every operation that changes a message goes
//! through here, so none can move a message without moving its index entry
//! and its counts with it.

use serde::Deserialize;

use super::due::{Place, Router, Slot};
use super::envelope::Envelope;
use super::records;
use super::store::Changes;
use super::tally::Share;
use super::writes::{put_changed, put_message, put_whole, remove_message};
use super::{Spool, StoreError};

/// What a message's stored meta record says about where it stands.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// Its index entry.
    pub due: Option<Slot>,
    /// What it adds to the counts; None if it is not queued.
    pub share: Option<Share>,
}

/// The fields of a meta record [`Stored`] needs, without the rest.
#[derive(Deserialize)]
struct Light {
    #[serde(default, deserialize_with = "super::due::lenient")]
    due: Option<Slot>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    pending: Option<u64>,
    #[serde(default)]
    held: bool,
    #[serde(default)]
    route_sender: String,
}

/// Whether an index entry a refill read still stands, from the message's
/// meta record alone (a page of thousands is read at a time).
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// The message is due then, on that route.
    Stands,
    /// Left, moved on, held or quarantined: not for the schedule.
    Stale,
    /// Indexed there, but the routing table in force sends it elsewhere.
    Elsewhere,
    /// Its meta record does not decode: the caller reads it whole.
    Unreadable,
}

pub(super) struct Edit<'a> {
    spool: &'a Spool,
    router: &'a Router,
    pub changes: Changes,
    /// Each message changed: its id, its share before and after.
    counts: Vec<(String, Option<Share>, Option<Share>)>,
}

impl Edit<'_> {
    /// Where `env` goes, by the router this change is built with.
    pub fn place(&self, env: &Envelope) -> Place {
        self.router.place(env)
    }

    /// A new message, its body in records.
    pub fn add(&mut self, env: &mut Envelope, body: &[u8]) {
        let place = self.place(env);
        put_message(&mut self.changes, env, body, &place);
        self.counted(&env.id, None, Some(share(env, &place)));
    }

    /// A new message whose body is a file of its own.
    pub fn add_envelope(&mut self, env: &Envelope) {
        let place = self.place(env);
        put_whole(&mut self.changes, env, None, &place);
        self.counted(&env.id, None, Some(share(env, &place)));
    }

    /// A queued message as `env` says now: its meta record and the
    /// recipients at `changed` (all of them if None).
    pub fn put(&mut self, env: &Envelope, changed: Option<&[usize]>) -> Result<(), StoreError> {
        let was = self.spool.stored(&env.id, self.router)?;
        let place = self.place(env);
        let all: Vec<usize>;
        let changed = match changed {
            Some(c) => c,
            None => {
                all = (0..env.recipients.len()).collect();
                &all
            }
        };
        put_changed(&mut self.changes, env, changed, was.due.as_ref(), &place);
        self.counted(&env.id, was.share, Some(share(env, &place)));
        Ok(())
    }

    /// A message taken out of the queue.
    pub fn remove(&mut self, env: &Envelope) -> Result<(), StoreError> {
        let was = self.spool.stored(&env.id, self.router)?;
        remove_message(&mut self.changes, env, was.due.as_ref());
        self.counted(&env.id, was.share, None);
        Ok(())
    }

    /// Sets message `id` aside as damaged, unless it already is: true if
    /// newly. Its counts go, read under the same lock as the change.
    pub fn quarantine(&mut self, id: &str, reason: &str) -> Result<bool, StoreError> {
        if self.spool.store.contains(&records::damage_key(id))? {
            return Ok(false);
        }
        let before = self.spool.stored(id, self.router)?.share;
        self.changes.insert(
            records::damage_key(id),
            records::capped(reason, 1000).into_bytes(),
        );
        self.counted(id, before, None);
        Ok(true)
    }

    /// A change of counts the records make without [`Edit::put`] or
    /// [`Edit::remove`] (a discard).
    pub fn counted(&mut self, id: &str, before: Option<Share>, after: Option<Share>) {
        if before != after {
            self.counts.push((id.to_string(), before, after));
        }
    }
}

fn share(env: &Envelope, place: &Place) -> Share {
    Share::of(env, place.route.clone())
}

impl Spool {
    /// Builds a change with the router in force and applies it, the router
    /// held throughout (see [`Spool::set_router`]), the counts locked while
    /// it is applied and counted (see `tally`); the generation it went to,
    /// for the commit. The change is built outside the counts' lock: what
    /// it reads of a message (its share before) only its claim's holder
    /// changes. The counts follow only a change that applied; one that
    /// failed halfway is counted again once the queue is reopened.
    pub(super) fn apply_edit(
        &self,
        changes: Changes,
        build: impl FnOnce(&mut Edit) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.apply_edit_as(changes, build, false)
    }

    /// [`Spool::apply_edit`] built under the counts' lock too: for a change
    /// made without the message's claim (a quarantine, a discard), whose
    /// reading of the message must not race another's.
    pub(super) fn apply_edit_locked(
        &self,
        changes: Changes,
        build: impl FnOnce(&mut Edit) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.apply_edit_as(changes, build, true)
    }

    fn apply_edit_as(
        &self,
        changes: Changes,
        build: impl FnOnce(&mut Edit) -> Result<(), StoreError>,
        lock_first: bool,
    ) -> Result<u64, StoreError> {
        let router = self.router();
        let mut counting = lock_first.then(|| self.tallies.counting());
        let mut edit = Edit {
            spool: self,
            router: &router,
            changes,
            counts: Vec::new(),
        };
        build(&mut edit)?;
        let Edit {
            changes, counts, ..
        } = edit;
        let mut counting = counting.take().unwrap_or_else(|| self.tallies.counting());
        let generation = match self.store.apply_to(changes) {
            Ok(g) => g,
            Err(e) => {
                self.recount_later();
                return Err(e);
            }
        };
        for (id, before, after) in counts {
            counting.change(&id, before.as_ref(), after.as_ref());
        }
        Ok(generation)
    }

    /// [`Spool::apply_edit_locked`], then the commit.
    pub(super) async fn write_edit_locked(
        &self,
        changes: Changes,
        build: impl FnOnce(&mut Edit) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let generation = self.apply_edit_locked(changes, build)?;
        self.store.commit_generation(generation).await
    }

    /// [`Spool::apply_edit`], then the commit: returns once it is synced.
    pub(super) async fn write_edit(
        &self,
        changes: Changes,
        build: impl FnOnce(&mut Edit) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let generation = self.apply_edit(changes, build)?;
        self.store.commit_generation(generation).await
    }

    /// Where the stored message `id` stands, from its meta record (and,
    /// for a record written before the counts, its recipients and
    /// `router`). A quarantined message is not counted.
    pub(super) fn stored(&self, id: &str, router: &Router) -> Result<Stored, StoreError> {
        let Some(meta) = self.store.get(&records::meta_key(id))? else {
            return Ok(Stored::default());
        };
        let damaged = self.store.contains(&records::damage_key(id))?;
        let Ok(light) = serde_json::from_slice::<Light>(&meta) else {
            // Undecodable: not counted (it is quarantined when read).
            return Ok(Stored::default());
        };
        let share = match (light.route, light.pending) {
            _ if damaged => None,
            (Some(route), Some(pending)) => Some(Share {
                route,
                pending,
                held: light.held,
            }),
            _ => match self.load(id) {
                Ok(Some(env)) => Some(share(&env, &router.place(&env))),
                Ok(None) | Err(StoreError::Damaged { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        Ok(Stored {
            due: light.due,
            share,
        })
    }

    /// Whether the index entry of message `id` at `slot` stands.
    pub fn standing(&self, id: &str, slot: &Slot) -> Result<Standing, StoreError> {
        let Some(meta) = self.store.get(&records::meta_key(id))? else {
            return Ok(Standing::Stale);
        };
        if self.store.contains(&records::damage_key(id))? {
            return Ok(Standing::Stale);
        }
        let Ok(light) = serde_json::from_slice::<Light>(&meta) else {
            return Ok(Standing::Unreadable);
        };
        if light.held || light.due.as_ref() != Some(slot) {
            return Ok(Standing::Stale);
        }
        let route = self.router().route_of(&light.route_sender);
        Ok(if route == slot.route {
            Standing::Stands
        } else {
            Standing::Elsewhere
        })
    }

    /// What message `id` adds to the counts: nothing if it is gone or
    /// quarantined.
    pub(super) fn share_of(&self, id: &str, router: &Router) -> Result<Option<Share>, StoreError> {
        Ok(self.stored(id, router)?.share)
    }
}
