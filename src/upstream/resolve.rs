//! Name resolution for smarthosts with hickory-resolver: every address of every
//! configured host, in order, so a dead first address does not stop delivery.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;

#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The system's resolver settings. Without a usable /etc/resolv.conf (a bare
    /// container) the relay still starts: IP literals and the hosts file work, and
    /// names fail per attempt (deferred) instead of the daemon refusing to run.
    pub fn from_system() -> Result<Self, String> {
        let builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("no system DNS configuration ({e}); only IP addresses and /etc/hosts will resolve");
                TokioResolver::builder_with_config(
                    hickory_resolver::config::ResolverConfig::default(),
                    hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
                )
            }
        };
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Resolver { inner })
    }

    /// All socket addresses for `host:port`. An IP literal (optionally in
    /// brackets) is used as is; names go through the hosts file, then DNS.
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self
            .inner
            .lookup_ip(bare)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(format!("cannot resolve {host}: no addresses"));
        }
        Ok(addrs)
    }
}
