//! Fault: the smarthost presents a certificate for another name
//! (`mail.wrong.test`, signed by the CA the route trusts, valid now). The
//! relay refuses the handshake, sends no credentials and no mail, and defers;
//! a control route to the same CA with a certificate for `localhost` delivers.

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;

use faults_net::{Cert, CertScenario, Handshake};

const REASON: &str = "TLS handshake failed: invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only valid for DnsName(\"mail.wrong.test\")";

#[test]
fn certificate_for_the_wrong_name_defers_without_credentials() {
    let s = CertScenario::start(Cert::WrongName, "wrong-name");

    // The log and the queue: deferred at every attempt, naming both names.
    s.assert_deferred(|r| r == REASON);
    // The upstream: EHLO and STARTTLS in clear text (no AUTH, although it was
    // offered), then the relay's "bad certificate" alert; nothing over TLS.
    s.faulty.assert_stopped_at_starttls(|h| {
        *h == Handshake::Failed("received fatal alert: BadCertificate".into())
    });
    s.assert_control_delivered();
}
