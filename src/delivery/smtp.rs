//! Delivery over an SMTP route: one transaction on the worker's kept
//! connection, and a new connection (resolved, connected, TLS, authenticated)
//! when there is none or the kept one has gone stale.

use std::collections::HashMap;

use tokio_rustls::TlsConnector;

use crate::config::{Config, Route, SmtpRoute, Transport};
use crate::dsn::notice::Action;
use crate::local::generic::{Generic, HeaderSwap};
use crate::outcome::Outcome;
use crate::spool::{BodyReader, Envelope, Spool, StoreError};
use crate::upstream::downgrade::{self, Prepared};
use crate::upstream::{self, Connection, Failure};

use super::{hold, Delivery, DeliveryError, HoldRoute, Tried};

impl Delivery {
    pub(super) fn tls_for(&self, route: &str) -> Option<TlsConnector> {
        self.current().tls.get(route).cloned()
    }

    /// One transaction over the route's (reused or new) connection: an outcome per
    /// recipient, the relay for the log, the host for the DSN's Remote-MTA.
    pub(super) async fn smtp_attempt(
        &self,
        route: &Route,
        smtp: &SmtpRoute,
        env: &Envelope,
        due: &[usize],
        conn: &mut Option<Connection>,
    ) -> Result<Tried, HoldRoute> {
        let config = self.config();
        let t = &config.timeouts;
        // A no-op unless the last transaction on it was abandoned half-way.
        if let Some(c) = conn.as_mut() {
            if !c.reset(t).await {
                *conn = None;
            }
        }
        // smtp_generic_maps: the sender as the world must see it.
        let sender = config.local.generic.sender(&env.sender);
        let outgoing = outgoing(env, &sender, due);
        // A kept connection that the server closed while it idled fails before
        // a word about this message: one new connection, and the message loses
        // nothing (no attempt counted, no recipient failed).
        let mut reconnected = false;
        loop {
            let c = match conn {
                Some(c) => c,
                None => match self
                    .open(route, smtp, &config, outgoing.recipients.len())
                    .await?
                {
                    Ok(c) => conn.insert(c),
                    Err(failed) => return Ok(failed),
                },
            };
            // Read afresh for each try: a retry sends the whole message again.
            let n = outgoing.recipients.len();
            let (takes_8bit, relay) = (c.takes_8bit(), c.relay.clone());
            let generic = &config.local.generic;
            let mut body = match self
                .outbound_body(env, generic, takes_8bit, &relay, n)
                .await
            {
                Ok(body) => body,
                Err(tried) => return Ok(tried),
            };
            let tr = c.send(&outgoing, &mut body, t).await;
            if let Some(e) = &tr.unreadable {
                tracing::error!(id = %env.id, "message not sent: {e}");
            }
            let relay = c.relay.clone();
            let host = c.host.clone();
            let c_takes_dsn = c.takes_dsn();
            if !tr.reusable {
                *conn = None;
            }
            if tr.stale && !reconnected {
                tracing::info!(
                    "{relay}: kept connection closed by the server ({}); reconnecting",
                    tr.outcomes.first().map_or("", Outcome::detail)
                );
                reconnected = true;
                continue;
            }
            return Ok(Tried {
                success: (!c_takes_dsn).then_some(Action::Relayed),
                outcomes: tr.outcomes,
                relay,
                remote_host: Some(host),
            });
        }
    }

    /// The message as this connection must get it: converted where a line
    /// is too long or the server takes no 8-bit octets (see
    /// `upstream::downgrade`), or, where it cannot be, a bounce for all `n`
    /// recipients without a word to the server.
    async fn outbound_body(
        &self,
        env: &Envelope,
        generic: &Generic,
        takes_8bit: bool,
        relay: &str,
        n: usize,
    ) -> Result<BodyReader, Tried> {
        let spool = &self.shared.spool;
        let swap = match mapped_header(spool, env, generic).await {
            Ok(swap) => swap,
            Err(e) => {
                let o = Outcome::deferred(format!("reading the queued message: {e}"));
                return Err(Tried::nothing(o, n, relay.to_string()));
            }
        };
        let open = || match &swap {
            None => spool.body(env),
            Some((skip, head)) => {
                let size = env.size - *skip as u64 + head.len() as u64;
                let swap = HeaderSwap::new(*skip, head.clone());
                spool.body(env).transformed(size, Box::new(swap))
            }
        };
        let seven_bit = env.eight_bit && !takes_8bit;
        if !env.long_lines && !seven_bit {
            return Ok(open());
        }
        match downgrade::prepare(&open, seven_bit).await {
            Ok(Prepared::AsIs(body)) => Ok(body),
            Ok(Prepared::Converted { body, folds }) => {
                if folds {
                    tracing::warn!(
                        id = %env.id,
                        relay,
                        "a line over 998 octets in a signed or encoded part was broken with CRLF SPACE; its text changes"
                    );
                }
                Ok(body)
            }
            Ok(Prepared::Refused(r)) => {
                let o = Outcome::bounced(r.status, r.reason);
                Err(Tried::nothing(o, n, relay.to_string()))
            }
            Err(e) => {
                let o = Outcome::deferred(format!("reading the queued message: {e}"));
                Err(Tried::nothing(o, n, relay.to_string()))
            }
        }
    }

    /// A new connection for the route, or what its failure means for the
    /// attempt's `n` recipients.
    async fn open(
        &self,
        route: &Route,
        smtp: &SmtpRoute,
        config: &Config,
        n: usize,
    ) -> Result<Result<Connection, Tried>, HoldRoute> {
        let t = &config.timeouts;
        let Some(tls) = self.tls_for(&route.name) else {
            let o = Outcome::deferred(format!("no TLS settings for route {}", route.name));
            return Ok(Err(Tried::nothing(o, n, "none".into())));
        };
        let resolver = self.resolver();
        let ctx = upstream::Context {
            hostname: &config.hostname,
            resolver: &resolver,
            tls: &tls,
            timeouts: t,
            tokens: &self.shared.tokens,
            transcript: None,
        };
        match upstream::connect(smtp, &ctx).await {
            Ok(c) => Ok(Ok(c)),
            Err(e) => {
                let source = hold::token_source(route);
                let dead = match e.kind {
                    Failure::TokenDead => true,
                    // A refused password is the operator's too, but an
                    // unheld route bounces at the end of the schedule, which
                    // is what Postfix users expect of a password route.
                    Failure::AuthRejected => source.is_some(),
                    _ => false,
                };
                if dead {
                    return Err(HoldRoute {
                        source: source.map(str::to_string),
                        reason: e.reason,
                    });
                }
                if e.kind == Failure::AuthRejected {
                    tracing::error!(
                        "route {}: configuration error: authentication failed: {} (mail stays queued)",
                        route.name,
                        e.reason
                    );
                }
                let relay = e.relay.unwrap_or_else(|| "none".into());
                let o = if e.kind == Failure::TokenUnavailable {
                    Outcome::Waiting { reason: e.reason }
                } else {
                    Outcome::deferred(e.reason)
                };
                Ok(Err(Tried::nothing(o, n, relay)))
            }
        }
    }
}

/// The header section of `env` with its sender fields mapped, and how many
/// bytes of the queued message it replaces; None when nothing maps.
async fn mapped_header(
    spool: &Spool,
    env: &Envelope,
    generic: &Generic,
) -> Result<Option<(usize, Vec<u8>)>, StoreError> {
    if generic.is_empty() {
        return Ok(None);
    }
    let mut head = spool.body(env).header_section().await?;
    // A header section longer than what was read ends in a cut line: only
    // whole lines are looked at.
    if !head.ends_with(b"\n") {
        let whole = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        head.truncate(whole);
    }
    Ok(generic.rewrite_header(&head).map(|new| (head.len(), new)))
}

/// The envelope of the recipients `due`, as it goes upstream.
fn outgoing<'a>(env: &'a Envelope, sender: &'a str, due: &[usize]) -> upstream::Outgoing<'a> {
    upstream::Outgoing {
        sender,
        recipients: due
            .iter()
            .filter_map(|&i| env.recipients.get(i))
            .map(|r| (r.address.as_str(), r.dsn()))
            .collect(),
        smtputf8: env.smtputf8,
        eight_bit: env.eight_bit,
        dsn: &env.dsn,
    }
}

/// The TLS client settings of every SMTP route (its own CA file, or the system's).
pub(super) fn route_tls(config: &Config) -> Result<HashMap<String, TlsConnector>, DeliveryError> {
    let mut tls = HashMap::new();
    for route in config.routes.values() {
        if let Transport::Smtp(s) = &route.transport {
            let c =
                upstream::tls::connector(s.ca_file.as_deref()).map_err(|e| DeliveryError::Tls {
                    route: route.name.clone(),
                    reason: e.to_string(),
                })?;
            tls.insert(route.name.clone(), c);
        }
    }
    Ok(tls)
}
