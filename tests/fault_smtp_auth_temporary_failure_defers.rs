//! The smarthost answers AUTH with `454 4.7.0` (RFC 4954 6: temporary
//! authentication failure, e.g. its user database is unreachable). That is its
//! own trouble, not a refused password: the attempt is deferred with the reply,
//! without a configuration error, and the mail goes out once the server is
//! well again.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, ScriptedServer};

const RCPTS: [&str; 1] = ["bob@dst.test"];
const TEMPORARY: &str = "454 4.7.0 Temporary authentication failure";

#[test]
fn temporary_auth_failure_defers_without_a_configuration_error() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        c if is_auth(c) => reply(TEMPORARY),
        _ => healthy(cmd),
    });
    let secrets = tempfile::tempdir().expect("tempdir");
    let relay = relay(&server, &password_route(secrets.path()));
    let (id, msg) = submit(&relay, &RCPTS, "auth-454");

    assert_deferred(
        &relay,
        &server,
        &id,
        &RCPTS,
        &format!("AUTH PLAIN: {TEMPORARY}"),
    );
    let log = relay.log();
    assert!(!log.contains("configuration error"), "{log}");
    assert!(!log.contains("held"), "{log}");

    assert_only_commands(&server, &["EHLO relay.test", AUTH_PLAIN_LINE, "QUIT"]);

    recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
}
