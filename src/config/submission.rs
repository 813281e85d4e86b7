//! `[[submission]]` listeners and `[auth]`: clients on the LAN relay with a
//! password, over TLS (RFC 6409, RFC 8314), and may use only the senders
//! their identity owns.
//!
//! ```toml
//! [[submission]]
//! listen = ["0.0.0.0:587", "[::]:587"]
//! tls = "starttls"                # or "tls" (implicit, port 465)
//! cert = "/etc/smarthost/tls/fullchain.pem"
//! key = "/etc/smarthost/tls/privkey.pem"
//!
//! [auth]
//! passwd_file = "/etc/smarthost/passwd"   # Dovecot's passwd-file format
//! [auth.senders]
//! alice = ["alice@example.com", "@example.org"]
//! scanner = ["scanner@example.com"]
//! app = ["*"]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use crate::smtp::address::validate_mailbox;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmission {
    listen: Vec<Spanned<String>>,
    tls: Spanned<String>,
    cert: PathBuf,
    key: PathBuf,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    passwd_file: Option<PathBuf>,
    #[serde(default)]
    received_auth_header: bool,
    #[serde(default)]
    senders: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    rate: BTreeMap<String, Spanned<String>>,
}

/// How a submission listener starts TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionTls {
    /// Port 587: plain until STARTTLS, nothing but EHLO, STARTTLS, NOOP,
    /// RSET and QUIT before it.
    StartTls,
    /// Port 465: TLS from the first byte (RFC 8314).
    Implicit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionListener {
    pub listen: Vec<SocketAddr>,
    pub tls: SubmissionTls,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The socket unit's `FileDescriptorName=` for these addresses.
    pub name: String,
}

/// A sender an identity may use (Postfix's `smtpd_sender_login_maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPattern {
    Address(String),
    Domain(String),
    Any,
}

impl SenderPattern {
    fn matches(&self, sender: &str) -> bool {
        match self {
            SenderPattern::Any => true,
            SenderPattern::Address(a) => a.eq_ignore_ascii_case(sender),
            SenderPattern::Domain(d) => sender
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(d)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submission {
    pub listeners: Vec<SubmissionListener>,
    pub passwd_file: Option<PathBuf>,
    /// Name the identity in the Received header (Postfix's
    /// `smtpd_sasl_authenticated_header`, off by default: it tells every
    /// recipient a login name).
    pub received_auth_header: bool,
    pub senders: BTreeMap<String, Vec<SenderPattern>>,
    /// Messages an identity may start (`"100/h"`: MAIL commands in any
    /// window of the unit), as Postfix's anvil limits a client.
    pub rate: BTreeMap<String, super::rate::Rate>,
}

impl Submission {
    /// Whether `identity` may use `sender`: the null sender always (bounces
    /// are nobody's address), else a listed pattern, else an identity that is
    /// itself an address may send as that address.
    pub fn may_send_as(&self, identity: &str, sender: &str) -> bool {
        if sender.is_empty() {
            return true;
        }
        match self.senders.get(identity) {
            Some(patterns) => patterns.iter().any(|p| p.matches(sender)),
            None => identity.contains('@') && identity.eq_ignore_ascii_case(sender),
        }
    }
}

impl Validator<'_> {
    pub(super) fn submission(
        &mut self,
        raw: Vec<Spanned<RawSubmission>>,
        auth: RawAuth,
        base: &Path,
    ) -> Submission {
        let listeners: Vec<SubmissionListener> = raw
            .into_iter()
            .filter_map(|r| self.submission_listener(r.into_inner(), base))
            .collect();
        if !listeners.is_empty() && auth.passwd_file.is_none() {
            self.problem(
                None,
                "[[submission]] needs [auth] passwd_file: a submission listener relays only for clients that log in",
            );
        }
        let mut senders = BTreeMap::new();
        for (identity, patterns) in auth.senders {
            let parsed = patterns
                .iter()
                .filter_map(|p| self.sender_pattern(&identity, p))
                .collect();
            senders.insert(identity, parsed);
        }
        let mut rate = BTreeMap::new();
        for (identity, text) in auth.rate {
            match text.get_ref().parse::<super::rate::Rate>() {
                Ok(r) => {
                    rate.insert(identity, r);
                }
                Err(e) => self.problem(Some(text.span()), format!("auth.rate.{identity}: {e}")),
            }
        }
        Submission {
            listeners,
            passwd_file: auth.passwd_file.map(|p| base.join(p)),
            received_auth_header: auth.received_auth_header,
            senders,
            rate,
        }
    }

    fn submission_listener(&mut self, r: RawSubmission, base: &Path) -> Option<SubmissionListener> {
        let tls = match r.tls.get_ref().as_str() {
            "starttls" => SubmissionTls::StartTls,
            "tls" => SubmissionTls::Implicit,
            other => {
                self.problem(
                    Some(r.tls.span()),
                    format!("submission.tls {other:?}: use \"starttls\" (port 587) or \"tls\" (port 465)"),
                );
                return None;
            }
        };
        let mut listen = Vec::new();
        for l in &r.listen {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => listen.push(a),
                Err(_) => self.problem(
                    Some(l.span()),
                    format!(
                        "submission.listen {:?} is not IP:port (IPv6 as [::]:587)",
                        l.get_ref()
                    ),
                ),
            }
        }
        let name = r.name.unwrap_or_else(|| match tls {
            SubmissionTls::StartTls => "submission".into(),
            SubmissionTls::Implicit => "submissions".into(),
        });
        Some(SubmissionListener {
            listen,
            tls,
            cert: base.join(r.cert),
            key: base.join(r.key),
            name,
        })
    }

    fn sender_pattern(&mut self, identity: &str, p: &Spanned<String>) -> Option<SenderPattern> {
        let text = p.get_ref().trim();
        let pattern = match text {
            "*" => Some(SenderPattern::Any),
            t if t.starts_with('@') => {
                let domain = &t[1..];
                validate_mailbox(&format!("postmaster@{domain}"))
                    .is_ok()
                    .then(|| SenderPattern::Domain(domain.to_ascii_lowercase()))
            }
            t => (t.contains('@') && validate_mailbox(t).is_ok())
                .then(|| SenderPattern::Address(t.to_string())),
        };
        if pattern.is_none() {
            self.problem(
                Some(p.span()),
                format!("auth.senders.{identity}: {text:?} is not an address, @domain or \"*\""),
            );
        }
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_send_as_whom() {
        let mut s = Submission::default();
        s.senders.insert(
            "alice".into(),
            vec![
                SenderPattern::Address("alice@example.com".into()),
                SenderPattern::Domain("example.org".into()),
            ],
        );
        s.senders.insert("app".into(), vec![SenderPattern::Any]);
        assert!(s.may_send_as("alice", "Alice@Example.com"));
        assert!(s.may_send_as("alice", "anyone@EXAMPLE.org"));
        assert!(!s.may_send_as("alice", "bob@example.com"));
        assert!(!s.may_send_as("alice", "x@sub.example.org"));
        assert!(s.may_send_as("alice", ""));
        assert!(s.may_send_as("app", "whoever@example.net"));
        assert!(s.may_send_as("bob@example.com", "bob@example.com"));
        assert!(!s.may_send_as("bob@example.com", "eve@example.com"));
        assert!(!s.may_send_as("carol", "carol@example.com"));
    }
}
