//! The listeners: accept connections, enforce the connection limit, run a
//! [`Session`] per client.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{send, MsgFlags};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::session::Session;
use crate::admission::{Admission, Client};
use crate::intake::Intake;
use crate::intake::Peer;

/// The listen backlog: what systemd's socket units use (SOMAXCONN; the kernel
/// caps it at `net.core.somaxconn`). std's and tokio's 128 overflow under a
/// burst of connections, and a client whose SYN is dropped waits a second or
/// more before it retries.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds every configured listen address; fails if any cannot be bound, so a
/// misconfiguration is seen at start, not when mail goes missing. The one
/// exception is an address whose family the host lacks (`[::1]` on a machine with
/// IPv6 disabled): skipped with a warning, as long as another listener is bound.
pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        match listen(*a) {
            Ok(l) => out.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable && addrs.len() > 1 => {
                tracing::warn!("not listening on {a}: {e}");
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {a}: {e}"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no listen address could be bound",
        ));
    }
    Ok(out)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves all listeners until the daemon stops: the TCP ones and, if given,
/// the local submission socket that `sendmail` uses. The TCP ones share the
/// connection limit; the socket has a limit of its own, the same size, and
/// each local user at most half of it (`crate::admission`), so neither a
/// crowd on 127.0.0.1 nor one local user's idle connections lock `sendmail`
/// out. Once stopping, the listeners close at once and this returns when the
/// last session has ended (each finishes the transaction it has open).
pub async fn serve(
    intake: Intake,
    listeners: Vec<TcpListener>,
    local: Option<UnixListener>,
    submission: Vec<(TcpListener, Arc<super::submission::SubmissionCtx>)>,
) {
    let max = intake.config().limits.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    let local_limit = Arc::new(Semaphore::new(max));
    // The LAN's listeners have slots of their own: a crowd of clients
    // guessing passwords (each waiting out its failure delay) never takes
    // the slots of the programs on this machine.
    let sub_limit = Arc::new(Semaphore::new(max));
    let mut tasks = Vec::new();
    for l in listeners {
        let intake = intake.clone();
        let limit = limit.clone();
        tasks.push(tokio::spawn(accept_loop(intake, l, limit, None)));
    }
    for (l, ctx) in submission {
        let (intake, limit) = (intake.clone(), sub_limit.clone());
        tasks.push(tokio::spawn(accept_loop(intake, l, limit, Some(ctx))));
    }
    if let Some(l) = local {
        let shares = Admission::new(max, max / 2);
        let limits = (local_limit.clone(), shares);
        tasks.push(tokio::spawn(accept_local_loop(intake.clone(), l, limits)));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Every session holds a permit: all of them back means all sessions ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(all).await;
    let _ = local_limit.acquire_many(all).await;
    let _ = sub_limit.acquire_many(all).await;
}

/// Serves one TCP listener until the daemon stops: plain sessions, or with
/// `sub` those of a submission listener (TLS, logins).
async fn accept_loop(
    intake: Intake,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    sub: Option<Arc<super::submission::SubmissionCtx>>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = intake.stopped() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((permit, stream)) = admit(&limit, stream) else {
            continue;
        };
        let (intake, sub) = (intake.clone(), sub.clone());
        tokio::spawn(async move {
            match sub {
                Some(ctx) => super::submission::serve_one(intake, stream, peer, ctx).await,
                None => {
                    let (r, w) = stream.into_split();
                    Session::new(intake, Peer::Tcp(peer), r, w).run(true).await;
                }
            }
            drop(permit);
        });
    }
}

async fn accept_local_loop(
    intake: Intake,
    listener: UnixListener,
    (limit, shares): (Arc<Semaphore>, Arc<Admission>),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = intake.stopped() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept on the submission socket failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // The kernel's word for who is on the other end, for the Received header.
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!("submission socket: cannot read peer credentials: {e}");
                continue;
            }
        };
        let Some(share) = shares.admit(Client::Uid(uid)) else {
            refuse(&stream);
            continue;
        };
        let Some((permit, stream)) = admit(&limit, stream) else {
            continue;
        };
        let intake = intake.clone();
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            Session::new(intake, Peer::Local { uid }, r, w)
                .run(true)
                .await;
            drop((permit, share));
        });
    }
}

/// Takes a connection slot, or tells the client to come back later and closes
/// the connection. The refusal is one non-blocking send (a fresh socket's buffer
/// has room), so a flood of refusals never blocks the accept loop and holds
/// neither tasks nor descriptors beyond the limit.
fn admit<S: AsRawFd>(limit: &Arc<Semaphore>, stream: S) -> Option<(OwnedSemaphorePermit, S)> {
    match limit.clone().try_acquire_owned() {
        Ok(permit) => Some((permit, stream)),
        Err(_) => {
            refuse(&stream);
            None
        }
    }
}

fn refuse<S: AsRawFd>(stream: &S) {
    let _ = send(
        stream.as_raw_fd(),
        b"421 4.3.2 Too many connections, try again later\r\n",
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}
