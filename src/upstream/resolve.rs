//! Name resolution for smarthosts with hickory-resolver: every address of every
//! configured host, in order, so a dead first address does not stop delivery.
//!
//! A name that does not resolve, whatever the reason (NXDOMAIN included), is a
//! temporary failure of the attempt, never a bounce: the smarthost's name is the
//! operator's configuration, not the recipient's address, so a typo or a lapsed
//! zone must keep the mail queued until someone fixes it.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;

use crate::config::Dns;

/// Why names cannot be resolved: the resolver could not be set up, or one
/// lookup failed (which defers that attempt).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("DNS resolver: {0}")]
    Setup(String),
    #[error("cannot resolve {host}: {reason}")]
    Lookup { host: String, reason: String },
    #[error("cannot resolve {host}: no addresses")]
    NoAddresses { host: String },
}

#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The name servers of `[dns]`, or the system's when it names none.
    pub fn new(dns: &Dns) -> Result<Self, ResolveError> {
        if dns.nameservers.is_empty() {
            return Self::from_system();
        }
        let servers = dns.nameservers.iter().map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        });
        let config = ResolverConfig::from_name_servers(servers.collect());
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .map_err(|e| ResolveError::Setup(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// The system's resolver settings. Without a usable /etc/resolv.conf (a bare
    /// container) the relay still starts: IP literals and the hosts file work, and
    /// names fail per attempt (deferred) instead of the daemon refusing to run.
    pub fn from_system() -> Result<Self, ResolveError> {
        let builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("no system DNS configuration ({e}); only IP addresses and /etc/hosts will resolve");
                TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioRuntimeProvider::default(),
                )
            }
        };
        let inner = builder
            .build()
            .map_err(|e| ResolveError::Setup(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// All socket addresses for `host:port`. An IP literal (optionally in
    /// brackets) is used as is; names go through the hosts file, then DNS.
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self
            .inner
            .lookup_ip(bare)
            .await
            .map_err(|e| ResolveError::Lookup {
                host: host.to_string(),
                reason: describe(&e),
            })?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(ResolveError::NoAddresses {
                host: host.to_string(),
            });
        }
        Ok(addrs)
    }
}

/// A lookup failure in the words of `dig`, for the log and `mailq`.
fn describe(e: &NetError) -> String {
    match e {
        _ if e.is_nx_domain() => "no such domain (NXDOMAIN)".into(),
        _ if e.is_no_records_found() => "no addresses".into(),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            "server failure (SERVFAIL)".into()
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            "query refused (REFUSED)".into()
        }
        other => other.to_string(),
    }
}
