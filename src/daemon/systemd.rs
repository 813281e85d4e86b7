//! What systemd asks of a service: readiness and status notifications on
//! `$NOTIFY_SOCKET` (sd_notify(3)), the watchdog, and listening sockets handed
//! over by socket activation (sd_listen_fds(3)). Without systemd every call here
//! is a no-op, so `smarthost serve` behaves the same from a shell.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {0}")]
    Env(std::io::Error),
    #[error("socket activation: descriptor {fd} is not a listening TCP socket ({why}); smarthost.socket must use ListenStream= with TCP addresses")]
    NotTcp { fd: RawFd, why: String },
}

/// Sends states to the service manager. A failure is logged, never fatal: mail
/// flows whether or not systemd hears about it.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// The queue is open and every listener is bound: systemd may start units
/// ordered after us (and `systemctl start` returns).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Marks the start of a reload; `ready` ends it. MONOTONIC_USEC lets systemd
/// (Type=notify-reload, v253+) tell this reload from an earlier one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often systemd wants a WATCHDOG=1 (`WatchdogSec=`), if at all.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// The TCP listeners systemd passed (`smarthost.socket`), or `None` when the
/// daemon was not socket-activated and binds its configured addresses itself.
pub fn activated_listeners() -> Result<Option<Vec<(TcpListener, String)>>, ActivationError> {
    let fds = sd_notify::listen_fds_with_names().map_err(ActivationError::Env)?;
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // The name (FileDescriptorName=) tells a submission listener from
        // the plain ones.
        out.push((take_listener(fd)?, name));
    }
    Ok(Some(out))
}

fn take_listener(fd: RawFd) -> Result<TcpListener, ActivationError> {
    use nix::sys::socket::{getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};
    let not_tcp = |why: String| ActivationError::NotTcp { fd, why };
    // SAFETY: sd_listen_fds(3): descriptors 3..3+LISTEN_FDS belong to this
    // process (LISTEN_PID was checked) and nothing else in it uses them; each is
    // taken exactly once, here, so the OwnedFd is their only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let kind = getsockopt(&owned, sockopt::SockType).map_err(|e| not_tcp(e.to_string()))?;
    if kind != SockType::Stream {
        return Err(not_tcp(format!("socket type {kind:?}")));
    }
    if !getsockopt(&owned, sockopt::AcceptConn).map_err(|e| not_tcp(e.to_string()))? {
        return Err(not_tcp("not listening".into()));
    }
    let addr: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&owned))
            .map_err(|e| not_tcp(e.to_string()))?;
    match addr.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {}
        other => return Err(not_tcp(format!("address family {other:?}"))),
    }
    let listener = TcpListener::from(owned);
    // tokio needs it non-blocking; systemd hands sockets over blocking.
    listener
        .set_nonblocking(true)
        .map_err(|e| not_tcp(e.to_string()))?;
    Ok(listener)
}
