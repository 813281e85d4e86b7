//! The spool: the one module that owns a queued message's life, from the
//! moment it is accepted until it is delivered, bounced or deleted, and
//! decides how each change of it is written and synced.
//!
//! Its operations, one per change of a message (every one returns only once
//! the change is on stable storage):
//!
//! - [`Spool::accept`]: a new message, body and envelope; the caller answers
//!   `250`/`202`/exit 0 only after it returns.
//! - [`Spool::record`]: an attempt's outcomes for its recipients; a message
//!   whose recipients are all final is finished in the same write (history,
//!   removal), and a non-delivery notice is stored atomically with the states
//!   that caused it.
//! - [`Spool::hold`], [`Spool::release`], [`Spool::flush`]: the operator's
//!   hold, release and "try now".
//! - [`Spool::delete`], [`Spool::bounce`]: the operator takes a message out,
//!   silently or with a notice.
//! - [`Spool::reschedule`]: new due times (a reroute by a reload, a route's
//!   retry clocks moved on after a hold), with a route hold's end if given.
//! - [`Spool::quarantine`], [`Spool::discard`]: a damaged message is set aside
//!   (never retried) and removed by id.
//! - [`Spool::hold_route`]: a route held for its credentials, remembered.
//!
//! - [`Spool::claim`]: exclusive work on a message (an attempt, a queue
//!   command), released when the [`Claim`] is dropped.
//!
//! Reads: [`Spool::load`], [`Spool::body`], [`Spool::messages`],
//! [`Spool::history`], [`Spool::route_holds`], and [`Spool::due_after`]: the
//! due index every change keeps in step ([`due`]), from which the schedule
//! reads what is due next without holding the queue in memory.
//!
//! The layout of the records is in [`records`], the engine (sled, group
//! commit, reopen after I/O errors) in [`store`], the conversion of queues
//! written by earlier versions in [`upgrade`]. Nothing outside this module
//! knows a key or chooses a write mode.

pub mod body;
mod claims;
pub mod due;
mod edit;
pub mod envelope;
pub mod history;
mod quarantine;
pub mod records;
pub mod salvage;
mod store;
mod sweep;
pub mod tally;
mod upgrade;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use body::{BodyReader, BodyWriter};
pub use claims::Claim;
pub use due::{Place, Router, Slot};
pub use edit::Standing;
pub use envelope::{Ending, Envelope, Recipient, State};
pub use history::Finished;
use store::Store;
pub use store::StoreError;
pub use tally::Tally;

use records::Meta;
use store::Changes;
use writes::put_history;

/// A notice to queue with the change that caused it: its envelope (`id`
/// from [`Spool::new_id`]), its bytes, and what it is for the log
/// (`non-delivery`, `delay`, `delivery status`, Postfix's words).
pub struct Notice {
    pub envelope: Envelope,
    pub body: Vec<u8>,
    pub what: &'static str,
}

/// The durable queue of messages. Cheap to clone: every clone is the same
/// spool.
#[derive(Clone)]
pub struct Spool {
    store: Store,
    claims: Arc<claims::Claims>,
    /// Bytes in body files (see [`body`]), kept as they come and go.
    file_bytes: Arc<AtomicU64>,
    /// The bodies being written now (see [`Spool::sweep_bodies`]).
    writing: body::Writing,
    /// Which route each message is indexed under (see [`due`]).
    router: Arc<RwLock<Router>>,
    /// The queue's counts (see [`tally`]).
    tallies: Arc<tally::Tallies>,
    /// The counts must be made again (see [`Spool::recount`]).
    recount_needed: Arc<AtomicBool>,
    /// Held while the queue is counted again: one count at a time.
    recounting: Arc<std::sync::Mutex<()>>,
    /// Stores the counts when the last clone goes.
    _closer: Arc<tally::Closer>,
}

impl Spool {
    /// Opens the queue at `path` (creating it durably), converts records an
    /// earlier version wrote, and after a crash sweeps what a change cut short
    /// left behind. Nothing is accepted before it returns. Every message on
    /// one route, "default" (see [`Spool::open_routed`]).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Spool, StoreError> {
        Spool::open_routed(path, cache_bytes, Router::single("default"))
    }

    /// [`Spool::open`], indexing messages by the route `router` gives them.
    pub fn open_routed(path: &Path, cache_bytes: u64, router: Router) -> Result<Spool, StoreError> {
        let store = Store::open(path, cache_bytes)?;
        body::prepare(path)?;
        let tallies = Arc::<tally::Tallies>::default();
        let recount_needed = Arc::new(AtomicBool::new(false));
        let router = Arc::new(RwLock::new(router));
        let spool = Spool {
            _closer: Arc::new(tally::Closer::new(
                &store,
                &router,
                &tallies,
                &recount_needed,
            )),
            store,
            claims: Arc::default(),
            file_bytes: Arc::default(),
            writing: Arc::default(),
            router,
            tallies,
            recount_needed,
            recounting: Arc::default(),
        };
        let upgraded = upgrade::run(&spool.store)?;
        if upgraded > 0 {
            tracing::info!("queue: {upgraded} message(s) converted to per-recipient records");
        }
        let indexed = spool.build_due_index()?;
        if indexed > 0 {
            tracing::info!("queue: {indexed} message(s) indexed by due time");
        }
        spool.restore_tally()?;
        // What a crash left behind is swept after the start (see `sweep`).
        spool.sweep_bodies()?;
        Ok(spool)
    }

    /// Removes body files without a message: what a crash, a stop that did
    /// not wait for a session, a failed commit or a session dropped while it
    /// created its file left. At every start, and now and then (one
    /// directory listing and a lookup per file).
    pub fn sweep_bodies(&self) -> Result<(), StoreError> {
        let (removed, bytes) = body::sweep(self.path(), &self.writing, |id| {
            Ok(self.store.get(&records::meta_key(id))?.is_some()
                || self.store.get(&records::damage_key(id))?.is_some())
        })?;
        self.file_bytes.store(bytes, Ordering::Relaxed);
        if removed > 0 {
            tracing::info!("queue: removed {removed} partial message body file(s)");
        }
        Ok(())
    }

    /// Exclusive work on message `id` until the claim is dropped; None while
    /// someone else has it.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        self.claims.claim(id)
    }

    /// [`Spool::claim`], waiting up to `timeout` for the holder to let go.
    pub async fn claim_wait(&self, id: &str, timeout: Duration) -> Option<Claim> {
        self.claims.claim_wait(id, timeout).await
    }

    /// Waits until no message is claimed, or `limit` passes; false if some
    /// work was still going on then.
    pub async fn idle_within(&self, limit: Duration) -> bool {
        self.claims.idle_within(limit).await
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// A short unique queue id (see [`Store::new_id`]).
    pub fn new_id(&self) -> Result<String, StoreError> {
        self.store.new_id()
    }

    /// Where the body of new message `id` is written as it arrives; nothing
    /// of it is queued until [`Spool::accept`].
    pub fn body_writer(&self, id: &str) -> BodyWriter {
        BodyWriter::new(self.path(), id, &self.writing)
    }

    /// Stores a new message: `body` as written, `env` with its recipients.
    /// Sets `env.size`, `env.chunks` and `env.body_file`. Returns once it
    /// is synced; on an error nothing of it is queued.
    pub async fn accept(&self, env: &mut Envelope, mut body: BodyWriter) -> Result<(), StoreError> {
        // Body and recipients, then the meta record: a crash in between leaves
        // only records of a message that was never acknowledged.
        let changes = Changes::in_order();
        if !body.in_file() {
            return self
                .write_edit(changes, |e| {
                    e.add(env, body.inline());
                    Ok(())
                })
                .await;
        }
        body.finish_file().await?;
        env.size = body.size();
        env.chunks = 0;
        env.body_file = true;
        // Once the envelope may be on disk, the file is the message's: a
        // failed sync leaves it to the next start's sweep, never removes it
        // under an envelope that made it.
        let generation = self.apply_edit(changes, |e| {
            e.add_envelope(env);
            Ok(())
        })?;
        body.keep();
        self.file_bytes.fetch_add(env.size, Ordering::Relaxed);
        self.store.commit_generation(generation).await
    }

    /// A queued message, assembled from its records. A message that cannot
    /// be read is [`StoreError::Damaged`].
    pub fn load(&self, id: &str) -> Result<Option<Envelope>, StoreError> {
        if let Some(reason) = self.store.get(&records::damage_key(id))? {
            return Err(damaged(id, String::from_utf8_lossy(&reason)));
        }
        let Some(meta) = self.store.get(&records::meta_key(id))? else {
            return Ok(None);
        };
        self.assemble(id, &meta)
    }

    /// What is still readable of a quarantined message's envelope (its body
    /// may be what is lost), for a bounce that can still tell its sender.
    pub fn readable_envelope(&self, id: &str) -> Option<Envelope> {
        let meta = self.store.get(&records::meta_key(id)).ok()??;
        self.assemble(id, &meta).ok().flatten()
    }

    /// The envelope of message `id` from its meta record and recipient
    /// records; None if it left the queue while they were read (a removal
    /// takes the meta record first, then the rest).
    fn assemble(&self, id: &str, meta: &[u8]) -> Result<Option<Envelope>, StoreError> {
        let mut meta: Meta = serde_json::from_slice(meta)
            .map_err(|e| damaged(id, format!("its envelope does not decode: {e}")))?;
        if let Some(only) = meta.only.take() {
            return Ok(Some(meta.into_envelope(id, vec![only])));
        }
        let expected = meta.recipients as usize;
        let mut recipients = Vec::with_capacity(expected.min(4096));
        for item in self.store.scan(&records::numbered_prefix(b't', id)) {
            let (_, value) = item?;
            let r: Recipient = serde_json::from_slice(&value).map_err(|e| {
                let at = recipients.len();
                damaged(id, format!("recipient record {at} does not decode: {e}"))
            })?;
            recipients.push(r);
        }
        if recipients.len() != expected {
            if self.store.get(&records::meta_key(id))?.is_none() {
                return Ok(None);
            }
            let missing = expected.saturating_sub(recipients.len());
            return Err(damaged(
                id,
                format!("{missing} of its {expected} recipient records are missing"),
            ));
        }
        Ok(Some(meta.into_envelope(id, recipients)))
    }

    /// Whether every part of the message's body is there, at its size,
    /// without reading it: [`StoreError::Damaged`] if not.
    pub fn check_body(&self, env: &Envelope) -> Result<(), StoreError> {
        if env.body_file {
            return body::check_file(self.path(), env);
        }
        for i in 0..env.chunks {
            if !self.store.contains(&records::chunk_key(&env.id, i))? {
                return Err(damaged(
                    &env.id,
                    format!("body part {i} of {} is missing", env.chunks),
                ));
            }
        }
        Ok(())
    }

    /// The message's bytes, a chunk at a time. A missing part is
    /// [`StoreError::Damaged`] when the reader gets there.
    pub fn body(&self, env: &Envelope) -> BodyReader {
        BodyReader::new(&self.store, env)
    }

    /// Every queued message in id (arrival) order, bodies not read; a damaged
    /// one is an `Err(Damaged)` in its place, and the scan goes on. A queue
    /// that cannot be read yields that error.
    pub fn messages(&self) -> impl Iterator<Item = Result<Envelope, StoreError>> + '_ {
        let marked = self.damage_marks();
        let marked_ids: HashSet<String> = marked.iter().map(|(id, _)| id.clone()).collect();
        let queued = self.store.scan(b"m").filter_map(move |item| {
            let (key, meta) = match item {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            let id = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
            if marked_ids.contains(&id) {
                return None;
            }
            self.assemble(&id, &meta).transpose()
        });
        marked
            .into_iter()
            .map(|(id, reason)| Err(damaged(&id, reason)))
            .chain(queued)
    }

    /// Records the outcomes of an attempt: the recipients at `changed` (and
    /// the envelope's events and flags). A message whose recipients are now
    /// all final leaves the queue in the same write, with a history record
    /// saying `outcome`; `notice` is stored atomically with it all.
    pub async fn record(
        &self,
        env: &Envelope,
        changed: &[usize],
        outcome: &str,
        notices: &mut [Notice],
    ) -> Result<(), StoreError> {
        // One message's records alone need no batch (see Changes::in_order); a
        // notice must be stored together with the states that caused it.
        let changes = if !notices.is_empty() {
            Changes::new()
        } else {
            Changes::in_order()
        };
        self.write_edit(changes, |e| {
            if env.is_finished() {
                e.remove(env)?;
                let done = Finished::from_envelope(env, unix_now(), outcome);
                put_history(&mut e.changes, &done);
            } else {
                e.put(env, Some(changed))?;
            }
            for n in notices.iter_mut() {
                e.add(&mut n.envelope, &n.body);
            }
            Ok(())
        })
        .await?;
        if env.is_finished() {
            self.remove_body(env);
        }
        Ok(())
    }

    /// The operator's hold: kept, never tried, never expired while held.
    pub async fn hold(&self, env: &mut Envelope, now: u64) -> Result<(), StoreError> {
        env.held = true;
        env.event(now, "held by the operator");
        let env = &*env;
        self.write_edit(Changes::new(), |e| e.put(env, Some(&[])))
            .await
    }

    /// Ends the operator's hold; the message is due at once.
    pub async fn release(&self, env: &mut Envelope, now: u64) -> Result<(), StoreError> {
        env.held = false;
        self.due_now(env, now, "released by the operator").await
    }

    /// "Try now": every unfinished recipient is due at once.
    pub async fn flush(&self, env: &mut Envelope, now: u64) -> Result<(), StoreError> {
        self.due_now(env, now, "flushed by the operator").await
    }

    async fn due_now(&self, env: &mut Envelope, now: u64, why: &str) -> Result<(), StoreError> {
        for r in env.recipients.iter_mut().filter(|r| !r.state.is_final()) {
            r.next_attempt = now;
        }
        env.event(now, why);
        let env = &*env;
        self.write_edit(Changes::new(), |e| e.put(env, None)).await
    }

    /// Takes a message out without a notice; remembered as "deleted".
    pub async fn delete(&self, env: &mut Envelope, now: u64) -> Result<(), StoreError> {
        env.event(now, "deleted by the operator");
        let env_now = &*env;
        self.write_edit(Changes::in_order(), |e| {
            e.remove(env_now)?;
            put_history(
                &mut e.changes,
                &Finished::from_envelope(env_now, now, "deleted"),
            );
            Ok(())
        })
        .await?;
        self.remove_body(env);
        Ok(())
    }

    /// Takes a message out as bounced (its unfinished recipients already
    /// marked), with its notice in the same atomic write.
    pub async fn bounce(
        &self,
        env: &mut Envelope,
        now: u64,
        reason: &str,
        notices: &mut [Notice],
    ) -> Result<(), StoreError> {
        env.event(now, reason);
        let env_now = &*env;
        self.write_edit(Changes::new(), |e| {
            e.remove(env_now)?;
            put_history(
                &mut e.changes,
                &Finished::from_envelope(env_now, now, "bounced"),
            );
            for n in notices.iter_mut() {
                e.add(&mut n.envelope, &n.body);
            }
            Ok(())
        })
        .await?;
        self.remove_body(env);
        Ok(())
    }

    /// The body file of a message that has left the queue (its removal is
    /// synced): the space comes back now.
    fn remove_body(&self, env: &Envelope) {
        if env.body_file {
            body::remove(self.path(), env);
            let _ = self
                .file_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(env.size))
                });
        }
    }

    /// Stores new due times and retry clocks of several messages at once (each
    /// whole), and ends `route_hold` in the same write.
    pub async fn reschedule(
        &self,
        envs: &[&Envelope],
        route_hold: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write_edit(Changes::new(), |e| {
            for env in envs {
                e.put(env, None)?;
            }
            if let Some(route) = route_hold {
                e.changes.remove(records::route_hold_key(route));
            }
            Ok(())
        })
        .await
    }

    /// Remembers that `route` is held for its credentials (`record` is the
    /// hold's own encoding, see `delivery::hold`).
    pub async fn hold_route(&self, route: &str, record: &[u8]) -> Result<(), StoreError> {
        let mut changes = Changes::new();
        changes.insert(records::route_hold_key(route), record.to_vec());
        self.store.write(changes).await
    }

    /// The stored route holds, as (route, record).
    pub fn route_holds(&self) -> Vec<(String, Vec<u8>)> {
        self.store
            .scan(b"r")
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned(),
                    v.to_vec(),
                )
            })
            .collect()
    }

    /// Finished messages, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = Finished> + '_ {
        self.store.history()
    }

    pub fn history_len(&self) -> usize {
        self.store.history_len()
    }

    /// See [`Store::prune_history`].
    pub fn prune_history(
        &self,
        cutoff: u64,
        keep: usize,
        recount: bool,
    ) -> Result<usize, StoreError> {
        self.store.prune_history(cutoff, keep, recount)
    }

    /// Waits until everything written so far is synced.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.store.commit().await
    }

    /// See [`Store::reopened`].
    pub fn reopened(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.reopened()
    }

    /// See [`Store::ping`].
    pub fn ping(&self) -> Result<(), StoreError> {
        self.store.ping()
    }

    /// The queue's records and its body files, in bytes.
    pub fn disk_size(&self) -> u64 {
        self.store.disk_size() + self.file_bytes.load(Ordering::Relaxed)
    }

    /// [`Spool::accept`] of a message given whole.
    #[cfg(test)]
    pub async fn accept_bytes(
        &self,
        env: &mut Envelope,
        head: &[u8],
        body: &[u8],
    ) -> Result<(), StoreError> {
        let mut writer = self.body_writer(&env.id);
        writer.write(head).await?;
        writer.write(body).await?;
        self.accept(env, writer).await
    }

    #[cfg(test)]
    fn store(&self) -> &Store {
        &self.store
    }
}

fn damaged(id: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        id: id.to_string(),
        reason: reason.into(),
    }
}

fn unix_now() -> u64 {
    crate::clock::unix_now()
}
