//! `[metrics]`: the optional HTTP listener for `/metrics` and `/healthz`.
//! Absent means no listener.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Spanned<String>,
    #[serde(default)]
    allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `/metrics` and `/healthz` are served over plain HTTP.
    pub listen: SocketAddr,
}

impl Validator<'_> {
    /// The listener must be loopback unless `allow_remote = true`: the metrics
    /// name every route and count its mail, which is nobody else's business,
    /// and the listener has no authentication.
    pub(super) fn metrics(&mut self, raw: Option<Spanned<RawMetrics>>) -> Option<MetricsSettings> {
        let raw = raw?.into_inner();
        let listen = match raw.listen.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    Some(raw.listen.span()),
                    format!(
                        "metrics.listen {:?} is not IP:port, e.g. \"127.0.0.1:9325\"",
                        raw.listen.get_ref()
                    ),
                );
                return None;
            }
        };
        if !listen.ip().is_loopback() && !raw.allow_remote {
            self.problem(
                Some(raw.listen.span()),
                format!(
                    "metrics.listen {listen} is not a loopback address: the metrics have no authentication and name every route; use 127.0.0.1 (or set metrics.allow_remote = true and firewall the port)"
                ),
            );
            return None;
        }
        Some(MetricsSettings { listen })
    }
}
