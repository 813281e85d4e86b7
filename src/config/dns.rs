//! `[dns]`: which name servers resolve the smarthosts' names. Without the table
//! the system's resolver settings (`/etc/resolv.conf`) apply, as before.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// The port of a name server given without one.
const DNS_PORT: u16 = 53;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    nameservers: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Asked in order over UDP (TCP for long answers) instead of the system's
    /// name servers; empty means the system resolver.
    pub nameservers: Vec<SocketAddr>,
}

/// `"192.0.2.53"`, `"192.0.2.53:5353"`, `"2001:db8::53"` or `"[2001:db8::53]:5353"`.
fn nameserver(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, DNS_PORT).into()))
}

impl Validator<'_> {
    pub(super) fn dns(&mut self, raw: RawDns) -> Dns {
        let Some(list) = raw.nameservers else {
            return Dns::default();
        };
        if list.get_ref().is_empty() {
            self.problem(
                Some(list.span()),
                "dns.nameservers is empty; remove it to use the system resolver",
            );
        }
        let mut nameservers = Vec::new();
        for entry in list.get_ref() {
            match nameserver(entry.get_ref()) {
                Some(addr) => nameservers.push(addr),
                None => self.problem(
                    Some(entry.span()),
                    format!(
                        "dns.nameservers: {:?} is not an IP address or IP:port (IPv6 as [::1]:53)",
                        entry.get_ref()
                    ),
                ),
            }
        }
        Dns { nameservers }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[[route]]\nname = \"c\"\ntype = \"directory\"\npath = \"/tmp/x\"\n[routing]\ndefault = \"c\"\n";

    #[test]
    fn nameservers_with_and_without_ports() {
        let c = Config::parse(BASE, "t.toml", Path::new("/")).unwrap();
        assert!(c.dns.nameservers.is_empty(), "system resolver by default");
        let text = format!(
            "{BASE}[dns]\nnameservers = [\"192.0.2.53\", \"127.0.0.1:5353\", \"2001:db8::53\", \"[::1]:5353\"]\n"
        );
        let c = Config::parse(&text, "t.toml", Path::new("/")).unwrap();
        let got: Vec<String> = c.dns.nameservers.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            [
                "192.0.2.53:53",
                "127.0.0.1:5353",
                "[2001:db8::53]:53",
                "[::1]:5353"
            ]
        );
    }

    #[test]
    fn bad_nameservers_are_reported_with_line() {
        let text = format!("{BASE}[dns]\nnameservers = [\"ns1.example.com\"]\n");
        let err = Config::parse(&text, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml:8:") && err.contains("\"ns1.example.com\" is not an IP address"),
            "{err}"
        );
        let text = format!("{BASE}[dns]\nnameservers = []\n");
        let err = Config::parse(&text, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.nameservers is empty"), "{err}");
        let text = format!("{BASE}[dns]\nservers = [\"192.0.2.53\"]\n");
        assert!(Config::parse(&text, "t.toml", Path::new("/")).is_err());
    }
}
