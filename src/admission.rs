//! Who may hold a connection on a local server. Every local user can reach
//! the daemon's UNIX sockets and loopback ports, so each server has a cap of
//! its own (one crowded server never takes another's slots or the process's
//! descriptors) and each client a share of it: the user on the other end of a
//! UNIX socket (`SO_PEERCRED`), or the address on TCP. A connection over
//! either is closed at once, so it holds nothing; one user holding its whole
//! share leaves the rest for everybody else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who is on the other end, as far as shares go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Uid(u32),
    Ip(IpAddr),
}

/// One server's slots.
#[derive(Debug)]
pub struct Admission {
    cap: usize,
    share: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    client: Client,
}

impl Admission {
    /// `cap` slots in all, at most `share` of them for one client.
    pub fn new(cap: usize, share: usize) -> Arc<Admission> {
        Arc::new(Admission {
            cap: cap.max(1),
            share: share.clamp(1, cap.max(1)),
            held: Mutex::default(),
        })
    }

    /// A slot for `client`, or None when the server or the client's share
    /// is full.
    pub fn admit(self: &Arc<Self>, client: Client) -> Option<Ticket> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.by_client.get(&client).copied().unwrap_or(0);
        if held.total >= self.cap || mine >= self.share {
            return None;
        }
        held.total += 1;
        held.by_client.insert(client, mine + 1);
        Some(Ticket {
            admission: self.clone(),
            client,
        })
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self
            .admission
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

/// The user on the other end of a UNIX socket.
pub fn peer(stream: &tokio::net::UnixStream) -> std::io::Result<Client> {
    stream.peer_cred().map(|c| Client::Uid(c.uid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_the_rest_is_left_for_others() {
        let a = Admission::new(4, 2);
        let (x, y) = (Client::Uid(65534), Client::Uid(0));
        let t1 = a.admit(x).unwrap();
        let _t2 = a.admit(x).unwrap();
        assert!(a.admit(x).is_none(), "x's share is full");
        let _t3 = a.admit(y).unwrap();
        let _t4 = a.admit(y).unwrap();
        assert!(a.admit(Client::Uid(7)).is_none(), "the server is full");
        drop(t1);
        assert_eq!(a.held(), 3);
        assert!(a.admit(x).is_some(), "a slot given back is x's again");
    }
}
