//! Recent successful checks, so that a client logging in again and again
//! (a phone polling, a script sending one mail a minute) is not an ARGON2
//! computation each time.
//!
//! An entry is the user and an HMAC-SHA-256 of the prepared password under
//! a key drawn at start and never stored: what sits in memory cannot be
//! tested against a guess without that key, nor outlives the process. Only
//! successes are kept, for a short while, at most so many; everything goes
//! when the file changes, and a check that began on the old file cannot put
//! its success into the new cache ([`Cache::insert`]'s generation).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ring::hmac;

pub(crate) type Fingerprint = [u8; 32];

pub(crate) struct Cache {
    /// None when the system's random source failed: then nothing is cached.
    key: Option<hmac::Key>,
    ttl: Duration,
    capacity: usize,
    generation: u64,
    /// (user, fingerprint) → when it stops counting.
    entries: HashMap<(String, Fingerprint), Instant>,
}

impl Cache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Cache {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).ok();
        if key.is_none() {
            tracing::warn!("no random key for the login cache; every login is checked in full");
        }
        Cache {
            key,
            ttl,
            capacity,
            generation: 0,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn fingerprint(&self, password: &str) -> Option<Fingerprint> {
        let key = self.key.as_ref()?;
        Fingerprint::try_from(hmac::sign(key, password.as_bytes()).as_ref()).ok()
    }

    /// Whether this user logged in with this password a moment ago.
    pub(crate) fn hit(&mut self, user: &str, fingerprint: &Fingerprint) -> bool {
        let key = (user.to_string(), *fingerprint);
        match self.entries.get(&key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers a success of a check made on the file of `generation`;
    /// ignored if the file has changed since.
    pub(crate) fn insert(&mut self, generation: u64, user: String, fingerprint: Fingerprint) {
        if generation != self.generation || self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, until| *until > now);
        }
        if self.entries.len() >= self.capacity {
            // Full of live entries: the one closest to expiring goes.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert((user, fingerprint), now + self.ttl);
    }

    /// Forgets everything: the file is now the one of `generation`.
    pub(crate) fn clear(&mut self, generation: u64) {
        self.generation = generation;
        self.entries.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_successes_until_they_expire() {
        let mut c = Cache::new(Duration::from_millis(300), 8);
        let fp = c.fingerprint("pw").unwrap();
        assert!(!c.hit("alice", &fp));
        c.insert(0, "alice".into(), fp);
        assert!(c.hit("alice", &fp));
        assert!(!c.hit("bob", &fp));
        assert!(!c.hit("alice", &c.fingerprint("other").unwrap()));
        std::thread::sleep(Duration::from_millis(400));
        assert!(!c.hit("alice", &fp));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn stays_within_its_size() {
        let mut c = Cache::new(Duration::from_secs(60), 4);
        for i in 0..10 {
            let fp = c.fingerprint(&format!("pw{i}")).unwrap();
            c.insert(0, format!("user{i}"), fp);
            assert!(c.len() <= 4);
        }
        let last = c.fingerprint("pw9").unwrap();
        assert!(c.hit("user9", &last));
    }

    #[test]
    fn a_check_on_an_older_file_is_not_remembered() {
        let mut c = Cache::new(Duration::from_secs(60), 8);
        let fp = c.fingerprint("pw").unwrap();
        c.insert(0, "alice".into(), fp);
        c.clear(1);
        assert!(!c.hit("alice", &fp));
        c.insert(0, "alice".into(), fp);
        assert!(!c.hit("alice", &fp));
        c.insert(1, "alice".into(), fp);
        assert!(c.hit("alice", &fp));
    }

    #[test]
    fn fingerprints_are_keyed_per_process() {
        let a = Cache::new(Duration::from_secs(1), 1);
        let b = Cache::new(Duration::from_secs(1), 1);
        assert_eq!(a.fingerprint("pw"), a.fingerprint("pw"));
        assert_ne!(a.fingerprint("pw"), b.fingerprint("pw"));
    }
}
