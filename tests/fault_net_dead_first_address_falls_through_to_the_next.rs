//! Fault: the smarthost has two addresses and nothing listens on the first
//! (connection refused). The same attempt goes on to the second address and
//! delivers there; the log says the first failed and names the second as the
//! relay. Both where the addresses come from DNS (two A records, the case of a
//! provider's round-robin name) and where the route lists two hosts.

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;
#[path = "common/scripted.rs"]
mod scripted;

use common::strip_received;
use faults_net::{
    message, plain_route_config, queue_find, recipient, start_relay, wait_sent, DnsAnswer,
    DnsServer, ROUTE, SENDER, SMARTHOST,
};
use scripted::ScriptedServer;

/// Sends one message through `config` (made for `upstream`'s port); `dead`
/// and `live` are the relays the log names for 127.0.0.2 and 127.0.0.1.
fn falls_through(upstream: &ScriptedServer, config: &str, dead: &str, live: &str) {
    let relay = start_relay(config);
    let msg = message("fall-through");
    let id = relay
        .send(SENDER, &["bob@dst.test"], &msg)
        .expect("accepted");

    // The log: the dead address refused, the next one tried, in one attempt
    // that delivered through the live address.
    let lines = wait_sent(&relay, &id, "bob@dst.test");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            lines[0].attempts,
            lines[0].status.as_str(),
            lines[0].relay.as_str(),
            lines[0].route.as_str(),
            lines[0].reason.as_str()
        ),
        (1, "sent", live, ROUTE, "250 2.0.0 Ok: queued as SCRIPTED"),
        "{}",
        lines[0].line
    );
    let log = relay.log();
    let warning =
        format!("{dead}: connect: Connection refused (os error 111); trying the next address");
    let warned = log
        .find(&warning)
        .unwrap_or_else(|| panic!("{warning:?} in\n{log}"));
    assert!(warned < log.find(&lines[0].line).unwrap(), "{log}");
    assert_eq!(log.matches("trying the next").count(), 1, "{log}");

    // The queue: delivered through the live address.
    assert!(relay.wait_log(&format!("{id}: removed"), 1, faults_net::PATIENCE));
    let found = queue_find(&relay, &id);
    assert_eq!(found["outcome"], "delivered", "{found}");
    let bob = recipient(&found, "bob@dst.test");
    assert_eq!(
        (&bob["state"], &bob["relay"]),
        (&"delivered".into(), &live.into()),
        "{found}"
    );

    // The upstream: one connection, one transaction, the message intact.
    assert_eq!(upstream.connections().len(), 1, "{}", upstream.dump());
    let txs = upstream.transactions();
    assert_eq!(txs.len(), 1, "{}", upstream.dump());
    assert!(txs[0].delivered());
    assert_eq!(txs[0].rcpt_addresses(), ["bob@dst.test"]);
    assert_eq!(strip_received(txs[0].data.as_deref().unwrap()), &msg[..]);
}

#[test]
fn dead_first_dns_address_falls_through_to_the_second() {
    let upstream = ScriptedServer::accepting();
    let dns = DnsServer::start(|name| {
        if name == SMARTHOST {
            DnsAnswer::Addresses(vec![
                "127.0.0.2".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ])
        } else {
            DnsAnswer::NxDomain
        }
    });
    let port = upstream.port();
    falls_through(
        &upstream,
        &plain_route_config(&[SMARTHOST], port, Some(&dns)),
        &format!("{SMARTHOST}[127.0.0.2]:{port}"),
        &format!("{SMARTHOST}[127.0.0.1]:{port}"),
    );
    let questions = dns.questions();
    assert!(
        questions
            .iter()
            .any(|q| q.name == SMARTHOST && q.qtype == "A"),
        "{questions:?}"
    );
}

#[test]
fn dead_first_host_falls_through_to_the_second() {
    let upstream = ScriptedServer::accepting();
    let port = upstream.port();
    falls_through(
        &upstream,
        &plain_route_config(&["127.0.0.2", "127.0.0.1"], port, None),
        &format!("127.0.0.2[127.0.0.2]:{port}"),
        &format!("127.0.0.1[127.0.0.1]:{port}"),
    );
}
