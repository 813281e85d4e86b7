//! Fault: the smarthost presents an expired certificate (signed by the CA the
//! route trusts, for the right name). The relay refuses the handshake, sends
//! no credentials and no mail, and defers; a control route to the same CA with
//! a valid certificate delivers, so the expiry is the only difference.

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;

use faults_net::{Cert, CertScenario, Handshake};

#[test]
fn expired_certificate_defers_without_credentials() {
    let s = CertScenario::start(Cert::Expired, "expired");

    // The log and the queue: deferred at every attempt, for the expiry.
    s.assert_deferred(is_expiry);
    // The upstream: EHLO and STARTTLS in clear text (no AUTH, although it was
    // offered), then the relay's "certificate expired" alert; nothing over TLS.
    s.faulty.assert_stopped_at_starttls(|h| {
        *h == Handshake::Failed("received fatal alert: CertificateExpired".into())
    });
    s.assert_control_delivered();
}

/// rustls's words for a certificate that ended on 2021-01-01 (1609459200):
/// `... verification time <now> (UNIX), but certificate is not valid after
/// 1609459200 (<n> seconds ago)`.
fn is_expiry(reason: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    reason
        .strip_prefix(
            "TLS handshake failed: invalid peer certificate: certificate expired: verification time ",
        )
        .and_then(|r| r.split_once(" (UNIX), but certificate is not valid after 1609459200 ("))
        .and_then(|(now, rest)| Some((now, rest.strip_suffix(" seconds ago)")?)))
        .is_some_and(|(now, ago)| number(now) && number(ago))
}
