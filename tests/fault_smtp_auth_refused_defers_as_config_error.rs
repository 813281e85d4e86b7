//! The smarthost refuses the route's password (`535`). That is the operator's
//! problem, never the recipients': the attempt is deferred, the relay logs a
//! configuration error naming the route and the reply, sends QUIT, and keeps
//! the mail; no other mechanism is tried and no envelope leaves. A password
//! route is not held (only token routes are): its mail bounces at the end of
//! the retry schedule, as Postfix users expect, unless the password is fixed.

mod common;
#[path = "common/faults_smtp.rs"]
mod faults_smtp;
#[path = "common/scripted.rs"]
mod scripted;

use faults_smtp::*;
use scripted::{reply, ScriptedServer};

const RCPTS: [&str; 2] = ["bob@dst.test", "carol@dst.test"];
const REFUSED: &str = "535 5.7.8 Error: authentication failed: bad username or password";

#[test]
fn refused_password_defers_and_logs_a_configuration_error() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        c if is_auth(c) => reply(REFUSED),
        _ => healthy(cmd),
    });
    let secrets = tempfile::tempdir().expect("tempdir");
    let relay = relay(&server, &password_route(secrets.path()));
    let (id, msg) = submit(&relay, &RCPTS, "auth-535");

    let reason = format!("AUTH PLAIN: {REFUSED}");
    assert_deferred(&relay, &server, &id, &RCPTS, &reason);
    let log = relay.log();
    let config_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration error"))
        .collect();
    assert_eq!(config_errors.len(), 1, "{log}");
    assert!(config_errors[0].contains("ERROR"), "logged loudly: {log}");
    assert!(
        config_errors[0].contains(&format!(
            "route up: configuration error: authentication failed: AUTH PLAIN: {REFUSED} (mail stays queued)"
        )),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "never the password: {log}");
    assert!(!log.contains("held"), "a password route is not held: {log}");

    // The configured mechanism once, with the configured credentials; then QUIT.
    assert_only_commands(&server, &["EHLO relay.test", AUTH_PLAIN_LINE, "QUIT"]);

    // The operator fixes the password on the smarthost's side; a flush sends it.
    let tx = recover_and_deliver(&server, &relay, &id, &RCPTS, 2, &msg);
    let verbs = first_verbs(&server, tx.conn, 3);
    assert_eq!(verbs, ["EHLO", "AUTH", "MAIL"], "{}", server.dump());
}
