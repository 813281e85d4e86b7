//! Fault: the smarthost's name does not resolve: the name server answers
//! SERVFAIL, or NXDOMAIN. Either way the attempt is deferred with the DNS
//! error, nothing is connected to, and once the name resolves the message
//! goes out.
//!
//! NXDOMAIN defers too, and does not bounce: the name that failed is the
//! smarthost's, from the operator's configuration, not anything the sender
//! wrote. A typo in `host`, a zone that lapsed or a split-horizon DNS answering
//! from the wrong view are mistakes the operator fixes, after which the queued
//! mail must still go out; bouncing it would punish every sender for a
//! configuration error. (The retry schedule still ends in a bounce if nobody
//! fixes it, as for any deferral.)

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;
#[path = "common/scripted.rs"]
mod scripted;

use faults_net::{
    assert_fault_deferred, plain_route_config, queue_find, recipient, send, start_relay, wait_sent,
    DnsAnswer, DnsServer, SMARTHOST,
};
use scripted::ScriptedServer;

/// The name server answers `answer` for the smarthost: deferred twice for
/// `reason`, nothing connected to; then it answers 127.0.0.1 and the next
/// retry delivers.
fn unresolvable_defers_then_delivers(answer: DnsAnswer, tag: &str, reason: &str) {
    let dns = DnsServer::start(move |_| answer.clone());
    let upstream = ScriptedServer::accepting();
    let relay = start_relay(&plain_route_config(
        &[SMARTHOST],
        upstream.port(),
        Some(&dns),
    ));
    let id = send(&relay, &["bob@dst.test"], tag);

    // The log and the queue: deferred, naming host:port (no address was
    // found), not bounced.
    let unresolved = format!("{SMARTHOST}:{}", upstream.port());
    assert_fault_deferred(&relay, &id, "bob@dst.test", &unresolved, |r| r == reason);
    // The name server was asked, for the smarthost's name and nothing else;
    // the smarthost was not reached.
    let questions = dns.questions();
    assert!(!questions.is_empty());
    assert!(
        questions.iter().all(|q| q.name == SMARTHOST),
        "{questions:?}"
    );
    assert!(questions.iter().any(|q| q.qtype == "A"), "{questions:?}");
    assert!(upstream.connections().is_empty(), "{}", upstream.dump());

    // The name resolves again: the next retry delivers, once.
    dns.set_answers(|_| DnsAnswer::Addresses(vec!["127.0.0.1".parse().unwrap()]));
    let sent = wait_sent(&relay, &id, "bob@dst.test");
    let last = sent.last().unwrap();
    assert_eq!(
        (last.status.as_str(), last.relay.clone()),
        (
            "sent",
            format!("{SMARTHOST}[127.0.0.1]:{}", upstream.port())
        ),
        "{}",
        last.line
    );
    assert!(sent[..sent.len() - 1]
        .iter()
        .all(|l| l.status == "deferred"));
    let delivered = upstream.delivered();
    assert_eq!(delivered.len(), 1, "{}", upstream.dump());
    assert_eq!(delivered[0].rcpt_addresses(), ["bob@dst.test"]);
    let found = queue_find(&relay, &id);
    assert_eq!(found["outcome"], "delivered", "{found}");
    assert_eq!(recipient(&found, "bob@dst.test")["state"], "delivered");
}

#[test]
fn servfail_defers() {
    unresolvable_defers_then_delivers(
        DnsAnswer::ServFail,
        "servfail",
        "cannot resolve smarthost.fault.test: server failure (SERVFAIL)",
    );
}

#[test]
fn nxdomain_defers_not_bounces() {
    unresolvable_defers_then_delivers(
        DnsAnswer::NxDomain,
        "nxdomain",
        "cannot resolve smarthost.fault.test: no such domain (NXDOMAIN)",
    );
}
