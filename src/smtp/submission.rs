//! Submission listeners (RFC 6409, RFC 8314): what a session on one knows
//! beyond the plain listener (its TLS, the password check, the failed-login
//! throttle), and how one of their connections is served. A client there relays only once it has
//! logged in over TLS, and only for the senders its identity owns.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_rustls::TlsAcceptor;

use super::session::Session;
use super::tls::CertStore;
use crate::auth::Verifier;
use crate::config::SubmissionTls;
use crate::intake::{Intake, Peer};

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed AUTH commands one connection may make before it is closed.
pub const MAX_FAILURES_PER_CONNECTION: u32 = 3;

/// What sessions on one submission listener share.
pub struct SubmissionCtx {
    pub tls: SubmissionTls,
    pub certs: Arc<CertStore>,
    pub acceptor: TlsAcceptor,
    pub verifier: Arc<Verifier>,
    pub throttle: Arc<Throttle>,
    pub rates: Arc<IdentityRates>,
}

/// `[auth.rate]`: the MAIL commands each identity gave in its window, on
/// every listener together.
#[derive(Default)]
pub struct IdentityRates {
    seen: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
}

impl IdentityRates {
    /// Takes one message of `identity`'s allowance, or says no (and takes
    /// nothing) when `rate` is used up in the window ending now.
    pub fn take(&self, identity: &str, rate: crate::config::rate::Rate) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let now = Instant::now();
        let times = seen.entry(identity.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= rate.window())
        {
            times.pop_front();
        }
        if times.len() >= rate.count as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// Failed logins by client address (an IPv6 client by its /64, which one
/// host usually has whole): each failure is answered later than the one
/// before, so guessing from one network slows down whatever number of
/// connections it opens.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// A client's failures are forgotten this long after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest wait before a refusal.
const MAX_DELAY: Duration = Duration::from_secs(16);
/// Bound on the addresses remembered: a flood from many addresses cannot
/// grow the map without end.
const MAX_CLIENTS: usize = 65_536;

impl Throttle {
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            v4 => v4,
        }
    }

    /// Records a failure of `ip` and returns how long to wait before saying
    /// so: half a second for the first, doubling to [`MAX_DELAY`].
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return MAX_DELAY;
        };
        let now = Instant::now();
        if map.len() >= MAX_CLIENTS {
            map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if map.len() >= MAX_CLIENTS {
                map.clear();
            }
        }
        let entry = map.entry(Self::key(ip)).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let exp = entry.0.saturating_sub(1).min(5);
        (Duration::from_millis(500) * (1u32 << exp)).min(MAX_DELAY)
    }

    /// A successful login clears its address's record.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Self::key(ip));
        }
    }
}

/// One connection: TLS first on an implicit-TLS listener; on a STARTTLS
/// one, plain until the client asks, then a fresh session over TLS (RFC
/// 3207 4.2: nothing said before the handshake counts after it).
pub(super) async fn serve_one(
    intake: Intake,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<SubmissionCtx>,
) {
    let stream = match ctx.tls {
        SubmissionTls::Implicit => stream,
        SubmissionTls::StartTls => {
            let (r, w) = stream.into_split();
            let session =
                Session::submission(intake.clone(), Peer::Tcp(peer), r, w, ctx.clone(), false);
            let Some((r, w)) = session.run(true).await else {
                return;
            };
            match r.reunite(w) {
                Ok(s) => s,
                Err(_) => return,
            }
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake with [{}] failed: {e}", peer.ip());
            return;
        }
        Err(_) => {
            tracing::info!("TLS handshake with [{}] timed out", peer.ip());
            return;
        }
    };
    let (r, w) = tokio::io::split(tls);
    let greet = ctx.tls == SubmissionTls::Implicit;
    let session = Session::submission(intake, Peer::Tcp(peer), r, w, ctx, true);
    let _ = session.run(greet).await;
}

/// `smarthost check` for the submission settings: each listener's
/// certificate pair loaded as the daemon would, the passwd-file read and its
/// warnings (never a hash). Err: what stops the daemon from starting.
pub fn check(config: &crate::config::Config) -> Result<String, String> {
    use std::fmt::Write;
    let sub = &config.submission;
    let mut out = String::new();
    for l in &sub.listeners {
        let addrs: Vec<String> = l.listen.iter().map(|a| a.to_string()).collect();
        CertStore::load(&l.cert, &l.key).map_err(|e| format!("submission {}: {e}", l.name))?;
        let tls = match l.tls {
            SubmissionTls::StartTls => "starttls",
            SubmissionTls::Implicit => "tls",
        };
        let _ = writeln!(
            out,
            "submission {}: {} tls={tls} cert={} (loads)",
            l.name,
            addrs.join(","),
            l.cert.display()
        );
    }
    if let Some(path) = &sub.passwd_file {
        let (_, report, _) =
            crate::auth::PasswdFile::read(path).map_err(|e| format!("auth.passwd_file: {e}"))?;
        let _ = writeln!(out, "auth: {} ({} users)", path.display(), report.users);
        for w in &report.warnings {
            let _ = writeln!(out, "  warning: {}: {w}", path.display());
        }
        for (identity, patterns) in &sub.senders {
            let shown: Vec<String> = patterns
                .iter()
                .map(|p| match p {
                    crate::config::SenderPattern::Any => "*".to_string(),
                    crate::config::SenderPattern::Domain(d) => format!("@{d}"),
                    crate::config::SenderPattern::Address(a) => a.clone(),
                })
                .collect();
            let _ = writeln!(out, "  {identity} may send as {}", shown.join(", "));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_gets_its_rate_and_no_more() {
        let rates = IdentityRates::default();
        let r = crate::config::rate::Rate::new(2, crate::config::rate::Unit::Hour);
        assert!(rates.take("alice", r) && rates.take("alice", r));
        assert!(!rates.take("alice", r));
        assert!(rates.take("bob", r));
    }

    #[test]
    fn delays_grow_per_address_and_ipv6_counts_by_64() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let delays: Vec<u128> = (0..7).map(|_| t.failed(a).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 16000]);
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.failed(b).as_millis(), 500);
        t.succeeded(a);
        assert_eq!(t.failed(a).as_millis(), 500);
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(t.failed(v6a).as_millis(), 500);
        assert_eq!(t.failed(v6b).as_millis(), 1000);
    }
}
