//! Routes: relayhost, the relay maps and sender-dependent relays, each turned
//! into a route with its credentials.

use super::*;

impl Postfix {
    pub(super) fn upstream(
        &mut self,
        policy: &TlsPolicy,
        hops: &[Nexthop],
        auth: Auth,
        origin: &str,
    ) -> Option<(Upstream, String)> {
        let first = hops.first()?;
        let mut kept: Vec<&Nexthop> = Vec::new();
        for h in hops {
            if h.port == first.port {
                kept.push(h);
            } else {
                self.plan.untranslated(
                    origin,
                    h.written.clone(),
                    "a route has one port: only the destinations with the first one's port are kept",
                );
            }
        }
        let tls = self.tls_for(policy, hops);
        let written: Vec<&str> = kept.iter().map(|h| h.written.as_str()).collect();
        let mut note = format!("Postfix next-hop {}", written.join(", "));
        let looked_up: Vec<&str> = kept
            .iter()
            .filter(|h| h.mx && h.host.parse::<std::net::IpAddr>().is_err())
            .map(|h| h.host.as_str())
            .collect();
        if !looked_up.is_empty() {
            note.push_str(&format!(
                " (without brackets Postfix tried MX records of {} first; smarthost connects to the host itself)",
                looked_up.join(", ")
            ));
        }
        let helo = self.helo.clone();
        Some((
            Upstream {
                hosts: kept.iter().map(|h| h.host.clone()).collect(),
                port: first.port,
                tls,
                ca_file: policy.ca_file.clone(),
                helo,
                auth,
            },
            note,
        ))
    }

    pub(super) fn routes(&mut self) {
        let policy = self.tls_policy();
        let sasl = self.sasl();
        self.helo_name();
        let relay_map = self.table("sender_dependent_relayhost_maps");
        let default_hops = self.relayhost();
        let relay_origin = self.origin("relayhost");
        if let Some(hops) = &default_hops {
            let auth = self.host_credentials(sasl.as_ref(), hops);
            if let Some((up, note)) = self.upstream(&policy, hops, auth, &relay_origin) {
                let r = self.plan.route(up, note);
                self.plan
                    .set_default(r, format!("relayhost ({relay_origin})"));
            }
        }
        for key in self.sender_keys(&relay_map, sasl.as_ref()) {
            self.sender(
                &key,
                &relay_map,
                sasl.as_ref(),
                default_hops.as_deref(),
                &policy,
            );
        }
        if !self.plan.has_default() {
            if let Some(r) = self.plan.busiest_route() {
                self.plan.untranslated(
                    relay_origin,
                    "relayhost",
                    "empty: Postfix sent other senders' mail straight to the recipients' MX hosts, which smarthost does not do; routing.default is the route most senders use",
                );
                self.plan
                    .set_default(r, "no relayhost: the route most senders use");
            }
        }
    }

    /// `smtp_helo_name`, kept for the routes when it is not the host name.
    fn helo_name(&mut self) {
        let Some(h) = self.get("smtp_helo_name") else {
            return;
        };
        let own = self.get("myhostname");
        let raw = self
            .main
            .params
            .get("smtp_helo_name")
            .map(|p| p.raw.clone());
        let is_default = matches!(raw.as_deref(), Some("$myhostname" | "${myhostname}"))
            || own.as_deref() == Some(h.as_str());
        if h.is_empty() || is_default {
            return;
        }
        if h.bytes().all(|b| b.is_ascii_graphic()) {
            self.helo = Some(h);
        } else {
            self.report("smtp_helo_name", &h, "not a host name; routes use hostname");
        }
    }

    /// The next-hops of `relayhost`, when it names any.
    fn relayhost(&mut self) -> Option<Vec<Nexthop>> {
        let r = self.get("relayhost").filter(|r| !r.is_empty())?;
        match parse_nexthops(&r) {
            Ok(h) => Some(h),
            Err(e) => {
                let origin = self.origin("relayhost");
                self.plan.untranslated(origin, "relayhost", e.to_string());
                None
            }
        }
    }

    /// The sender keys in the order the files give them, relay map first;
    /// keys Postfix never matched against a sender are reported instead.
    fn sender_keys(&mut self, relay_map: &Table, sasl: Option<&Sasl>) -> Vec<Entry> {
        let mut keys: Vec<Entry> = Vec::new();
        for e in &relay_map.entries {
            if e.key.contains('@') {
                keys.push(e.clone());
            } else {
                self.plan.untranslated(
                    e.origin.clone(),
                    e.key.clone(),
                    format!("no @: Postfix matches it only as a local user name, not as a domain (for the domain write @{})", e.key),
                );
            }
        }
        if let Some(s) = sasl {
            for e in s.table.entries.iter().filter(|e| e.key.contains('@')) {
                if !s.sender_dependent {
                    self.plan.note(format!(
                        "{}: {} is a sender entry, which Postfix used only with smtp_sender_dependent_authentication = yes; not used here either",
                        e.origin, e.key
                    ));
                } else if !keys.iter().any(|k| k.key == e.key) {
                    keys.push(e.clone());
                }
            }
        }
        if keys.iter().any(|k| !k.key.starts_with('@')) {
            if let Some(d) = self.get("recipient_delimiter").filter(|d| !d.is_empty()) {
                let origin = self.origin("recipient_delimiter");
                self.plan.untranslated(
                    origin,
                    format!("recipient_delimiter = {d}"),
                    "Postfix also matched user+extension@domain to a user@domain entry; smarthost matches addresses exactly",
                );
            }
        }
        keys
    }

    /// One sender key of either map, routed and authenticated as Postfix
    /// would for a sender it matches.
    pub(super) fn sender(
        &mut self,
        key: &Entry,
        relay_map: &Table,
        sasl: Option<&Sasl>,
        default_hops: Option<&[Nexthop]>,
        policy: &TlsPolicy,
    ) {
        let (local, domain) = key.key.rsplit_once('@').unwrap_or(("", &key.key));
        if domain.is_empty() {
            self.plan
                .untranslated(key.origin.clone(), key.key.clone(), "no domain after @");
            return;
        }
        let at_domain = format!("@{domain}");
        let pattern = if local.is_empty() {
            domain.to_string()
        } else {
            key.key.clone()
        };
        let Some((hops, via)) = self.relay_for(key, &at_domain, relay_map, default_hops) else {
            return;
        };
        let sender_entry = sasl.filter(|s| s.sender_dependent).and_then(|s| {
            s.table
                .get(&key.key)
                .or_else(|| s.table.get(&at_domain))
                .cloned()
        });
        let (auth, login) = match (sasl, sender_entry) {
            (Some(s), Some(e)) => (
                self.credentials(s, &e),
                Some(format!("login from {} {}", e.origin, e.key)),
            ),
            _ => (self.host_credentials(sasl, &hops), None),
        };
        if let Some((up, note)) = self.upstream(policy, &hops, auth, &via) {
            let r = self.plan.route(up, note);
            if let Some(login) = login {
                self.plan.route_note(r, login);
            }
            self.plan.sender(&pattern, r, &key.origin, &key.key);
        }
    }

    /// The next-hops for a sender key and where they were set: the relay
    /// map's entry for the address, then for `@domain`, else relayhost.
    /// None (reported) when neither gives a usable relay.
    fn relay_for(
        &mut self,
        key: &Entry,
        at_domain: &str,
        relay_map: &Table,
        default_hops: Option<&[Nexthop]>,
    ) -> Option<(Vec<Nexthop>, String)> {
        let mut relay = Relay::Default;
        for k in [key.key.as_str(), at_domain] {
            if let Some(e) = relay_map.get(k) {
                // DUNNO: stop looking and use relayhost.
                if !e.value.eq_ignore_ascii_case("dunno") {
                    relay = Relay::Map(e);
                }
                break;
            }
        }
        match relay {
            Relay::Map(e) => match parse_nexthops(&e.value) {
                Ok(h) => Some((h, e.origin.clone())),
                Err(why) => {
                    self.plan
                        .untranslated(e.origin.clone(), e.key.clone(), why.to_string());
                    None
                }
            },
            Relay::Default => match default_hops {
                Some(h) => Some((h.to_vec(), self.origin("relayhost"))),
                None => {
                    self.plan.untranslated(
                        key.origin.clone(),
                        key.key.clone(),
                        "neither the relay map nor relayhost names a relay for this sender: Postfix sent its mail to the recipients' MX hosts; it takes routing.default",
                    );
                    None
                }
            },
        }
    }
}
