//! Claims: whoever holds a message's [`Claim`] is the only one reading,
//! changing or removing it (a delivery attempt, a queue command, a reload's
//! reroute). Held in memory only: a restart ends every claim with the
//! process that held it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct Claims {
    busy: Mutex<HashSet<String>>,
    released: Notify,
}

/// Exclusive work on one message; released when dropped.
#[must_use = "a claim is released as soon as it is dropped"]
pub struct Claim {
    claims: Arc<Claims>,
    id: String,
}

impl Claim {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.id);
        self.claims.released.notify_waiters();
    }
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claim on `id`, or None if someone else has it.
    pub(super) fn claim(self: &Arc<Self>, id: &str) -> Option<Claim> {
        self.lock().insert(id.to_string()).then(|| Claim {
            claims: self.clone(),
            id: id.to_string(),
        })
    }

    /// Claims `id`, waiting up to `timeout` for its holder to let go.
    pub(super) async fn claim_wait(self: &Arc<Self>, id: &str, timeout: Duration) -> Option<Claim> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(claim) = self.claim(id) {
                return Some(claim);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until no message is claimed, or `limit` passes; false if some
    /// claim was still held then.
    pub(super) async fn idle_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.lock().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claim_is_exclusive_until_dropped() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim("A").expect("free");
        assert!(claims.claim("A").is_none());
        assert!(claims.claim("B").is_some(), "others are free");
        assert!(!claims.idle_within(Duration::from_millis(10)).await);
        let waiter = {
            let claims = claims.clone();
            tokio::spawn(async move {
                claims
                    .claim_wait("A", Duration::from_secs(10))
                    .await
                    .is_some()
            })
        };
        drop(first);
        assert!(waiter.await.unwrap());
        assert!(claims.idle_within(Duration::from_secs(1)).await);
    }
}
