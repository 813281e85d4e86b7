//! Fault: nothing listens on the smarthost's port; every connection is refused.
//! Each attempt is deferred with the refusal, the message stays queued and is
//! retried on schedule, nothing bounces, and once the smarthost listens the
//! next retry delivers it, once, to every recipient.

mod common;
#[path = "common/faults_net.rs"]
mod faults_net;

use faults_net::{
    assert_fault_deferred, queue_find, send, start_relay, wait_sent, AfterStartTls, Cert, DeadPort,
    Handshake, Pki, TlsUpstream, SENDER,
};

const REFUSED: &str = "connect: Connection refused (os error 111)";

#[test]
fn connection_refused_defers() {
    let pki = Pki::new();
    let dead = DeadPort::new();
    let port = dead.port;
    let relay = start_relay(&format!(
        "{}[routing]\ndefault = \"up\"\n",
        pki.starttls_route_to("up", "127.0.0.1", port)
    ));
    let rcpts = ["bob@dst.test", "carol@dst.test"];
    let id = send(&relay, &rcpts, "refused");

    // The log and the queue: each recipient deferred at each attempt, for the
    // refusal, naming the address that refused.
    let relay_name = format!("127.0.0.1[127.0.0.1]:{port}");
    for r in rcpts {
        assert_fault_deferred(&relay, &id, r, &relay_name, |e| e == REFUSED);
    }
    // With one address there is nothing to fall back to, and nothing to warn of.
    assert!(!relay.log().contains("trying the next"), "{}", relay.log());

    // The smarthost comes up on that port: the next retry delivers, in one
    // transaction for both recipients, over TLS after AUTH.
    let upstream = TlsUpstream::start_on(
        dead.listen(),
        AfterStartTls::Handshake(pki.server_config(Cert::Good)),
    );
    for r in rcpts {
        let lines = wait_sent(&relay, &id, r);
        let last = lines.last().unwrap();
        assert_eq!(
            (last.relay.as_str(), last.reason.as_str()),
            (relay_name.as_str(), "250 2.0.0 Ok: queued as TLSUP"),
            "{}",
            last.line
        );
    }
    let delivered = upstream.delivered();
    assert_eq!(delivered.len(), 1, "{}", upstream.dump());
    assert_eq!(
        (delivered[0].from.as_str(), &delivered[0].rcpts[..]),
        (SENDER, &rcpts.map(String::from)[..])
    );
    let conns = upstream.connections();
    assert_eq!(conns[0].handshake, Handshake::Done, "{}", upstream.dump());
    assert!(
        conns[0].secure[1].starts_with("AUTH PLAIN "),
        "{}",
        upstream.dump()
    );
    let found = queue_find(&relay, &id);
    assert_eq!(found["outcome"], "delivered", "{found}");
}
