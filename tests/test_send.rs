//! `smarthost test-send`, the real binary, against real and scripted peers:
//! aiosmtpd with verified STARTTLS and AUTH PLAIN or LOGIN (the message
//! arrives, the transcript shows each step with AUTH redacted); an XOAUTH2
//! route with tokens from an `oauth2` source (which token, whether fresh, a
//! refused token replaced once); a refused password, a refused connection,
//! an unverifiable certificate and a refused recipient (exit codes and the
//! FAILED line); an unknown route (usage, the routes listed). No password, token or refresh token may appear in any output, and
//! the queue is never created.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::path::{Path, PathBuf};
use std::process::Command;

use aiosmtpd::{assert_no_password, password_peer, Files, USER};
use oauth_peers::{assert_no_secrets, oauth2_source, write_state, Endpoint};
use scripted::ScriptedServer;

const RCPT: &str = "user@example.net";

/// Writes the config with these routes beside the files; the queue would be
/// in `queue` there.
fn write_config(files: &Files, routes: &str, default: &str) -> PathBuf {
    let path = files.path("smarthost.toml");
    let text = format!(
        r#"hostname = "relay.test"
listen = ["127.0.0.1:{port}"]
queue_path = "{queue}"
[timeouts]
connect = "3s"
greeting = "5s"
upstream_command = "5s"
upstream_data = "5s"
{routes}
[routing]
default = "{default}"
[local]
socket_dir = "{run}"
drop_dir = "{drop}"
"#,
        port = common::free_port(),
        queue = files.path("queue").display(),
        run = files.path("run").display(),
        drop = files.path("drop").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A STARTTLS route with a password to `port`.
fn password_route(files: &Files, name: &str, port: u16, auth: &str, password_file: &str) -> String {
    format!(
        r#"[[route]]
name = "{name}"
host = "localhost"
port = {port}
tls = "starttls"
ca_file = "{ca}"
auth = "{auth}"
username = "{USER}"
password_file = "{pw}"
"#,
        ca = files.path("ca.pem").display(),
        pw = files.path(password_file).display(),
    )
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn test_send(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg("test-send")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SMARTHOST_CONFIG")
        .output()
        .expect("run smarthost test-send");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown when a test fails (cargo captures it otherwise).
    println!("exit {}\n{}\nstderr:\n{}", o.code, o.stdout, o.stderr);
    o
}

/// Each of `expected` occurs in a line of `stdout`, in this order (other lines
/// between).
fn assert_in_order(stdout: &str, expected: &[&str]) {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut at = 0;
    for want in expected {
        match lines[at..].iter().position(|l| l.contains(want)) {
            Some(i) => at += i + 1,
            None => panic!("{want:?} not found (in order) in:\n{stdout}"),
        }
    }
}

fn delivered_over_starttls_with(auth: &str, redacted: &[&str]) {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    let config = write_config(
        &files,
        &password_route(&files, "up", peer.port, auth, "pw"),
        "up",
    );
    let out = test_send(&config, &["--route", "up", "--to", RCPT]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_transcript(&out, peer.port, redacted);
    assert_peer_got_the_test_message(&peer);
    // Nothing was queued: the queue was never even opened.
    assert!(!files.path("queue").exists());
}

/// `test-send`'s transcript of a delivery to aiosmtpd on `port` over STARTTLS,
/// with `redacted` the lines of the authentication exchange; no password in
/// its output.
fn assert_transcript(out: &Output, port: u16, redacted: &[&str]) {
    let relay = format!("localhost[127.0.0.1]:{port}");
    let mut expected = vec![
        "[route up: smtp localhost:",
        "[message from <relay-user@example.com> to <user@example.net>: ",
        "[connecting to localhost[127.0.0.1]:",
        "S: 220 ",
        "C: EHLO relay.test",
        "S: 250-",
        "C: STARTTLS",
        "S: 220 ",
        "[TLS handshake: TLSv1.",
        "C: EHLO relay.test",
    ];
    expected.extend_from_slice(redacted);
    expected.extend_from_slice(&[
        "S: 235 ",
        "C: MAIL FROM:<relay-user@example.com> SIZE=",
        "S: 250 ",
        "C: RCPT TO:<user@example.net>",
        "S: 250 ",
        "C: DATA",
        "S: 354 ",
        "C: From: \"smarthost test-send\" <relay-user@example.com>",
        "C: Subject: smarthost test-send via route up",
        "C: ",
        "C: [",
        "C: .",
        "S: 250 2.0.0 Ok: saved as msg0001",
        "C: QUIT",
        "S: 221 ",
    ]);
    assert_in_order(&out.stdout, &expected);
    assert!(
        out.stdout.contains(
            "server certificate: subject CN=localhost, issuer CN=smarthost test CA, expires "
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(" bytes of message body]"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some(
            format!("test-send: delivered to {RCPT} via {relay} (250 2.0.0 Ok: saved as msg0001)")
                .as_str()
        )
    );
    assert_no_password(&out.stdout);
    assert_no_password(&out.stderr);
}

/// aiosmtpd saved one message, the test message, from `USER` logged in over
/// TLS.
fn assert_peer_got_the_test_message(peer: &aiosmtpd::Peer) {
    let messages = peer.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (meta, content) = &messages[0];
    assert_eq!(meta["mail_from"], USER);
    assert_eq!(meta["rcpt_tos"], serde_json::json!([RCPT]));
    assert_eq!(meta["login"], USER);
    assert_eq!(meta["tls"], true);
    let content = String::from_utf8_lossy(content);
    for header in [
        "Subject: smarthost test-send via route up\r\n",
        "To: user@example.net\r\n",
        "Message-ID: <test-send.",
        "Date: ",
    ] {
        assert!(content.contains(header), "{header:?} in:\n{content}");
    }
    assert!(
        content.contains("from smarthost on relay.test"),
        "{content}"
    );
}

#[test]
fn plain_over_verified_starttls_delivers_and_redacts() {
    delivered_over_starttls_with("plain", &["C: AUTH PLAIN [redacted]"]);
}

#[test]
fn login_over_verified_starttls_delivers_and_redacts() {
    delivered_over_starttls_with(
        "login",
        &[
            "C: AUTH LOGIN",
            // aiosmtpd's prompts, "User Name\0" and "Password\0".
            "S: 334 VXNlciBOYW1lAA==",
            "C: [redacted]",
            "S: 334 UGFzc3dvcmQA",
            "C: [redacted]",
        ],
    );
}

#[test]
fn refused_password_fails_with_77_and_never_shows_it() {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    let config = write_config(
        &files,
        &password_route(&files, "up", peer.port, "plain", "wrong-pw"),
        "up",
    );
    let out = test_send(
        &config,
        &["--route", "up", "--to", RCPT, "--from", "app@example.com"],
    );
    assert_eq!(out.code, 77, "{}{}", out.stdout, out.stderr);
    assert_in_order(
        &out.stdout,
        &[
            "[TLS handshake: ",
            "C: AUTH PLAIN [redacted]",
            "S: 535 5.7.8",
            "C: QUIT",
        ],
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "test-send: FAILED: localhost[127.0.0.1]:{}: AUTH PLAIN: 535 5.7.8",
            peer.port
        )),
        "{last}"
    );
    assert!(!out.stdout.contains("C: MAIL"), "{}", out.stdout);
    assert_no_password(&out.stdout);
    assert_no_password(&out.stderr);
    assert!(peer.messages().is_empty());
}

#[test]
fn refused_connection_fails_with_75() {
    let files = Files::with_passwords();
    // Nothing listens there.
    let port = common::free_port();
    let route = format!(
        "[[route]]\nname = \"down\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\n"
    );
    let config = write_config(&files, &route, "down");
    let out = test_send(&config, &["--route", "down", "--to", RCPT]);
    assert_eq!(out.code, 75, "{}{}", out.stdout, out.stderr);
    // No credentials: the sender falls back to the relay's own postmaster.
    assert_in_order(
        &out.stdout,
        &[
            "[message from <postmaster@relay.test> to <user@example.net>: ",
            &format!("[connecting to 127.0.0.1[127.0.0.1]:{port}]"),
            &format!("test-send: FAILED: 127.0.0.1[127.0.0.1]:{port}: connect: "),
        ],
    );
    assert!(out.stdout.contains("refused"), "{}", out.stdout);
}

#[test]
fn unverifiable_certificate_fails_with_75_before_auth() {
    let files = Files::with_passwords();
    let peer = password_peer(Some(&files));
    // No ca_file: the system roots do not know the test CA.
    let route = password_route(&files, "up", peer.port, "plain", "pw").replace(
        &format!("ca_file = \"{}\"\n", files.path("ca.pem").display()),
        "",
    );
    let config = write_config(&files, &route, "up");
    let out = test_send(&config, &["--route", "up", "--to", RCPT]);
    assert_eq!(out.code, 75, "{}{}", out.stdout, out.stderr);
    assert_in_order(&out.stdout, &["C: STARTTLS", "S: 220 "]);
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "test-send: FAILED: localhost[127.0.0.1]:{}: TLS handshake failed: invalid peer certificate",
            peer.port
        )),
        "{last}"
    );
    assert!(!out.stdout.contains("[TLS handshake: "), "{}", out.stdout);
    assert!(!out.stdout.contains("AUTH"), "{}", out.stdout);
    assert_no_password(&out.stdout);
}

#[test]
fn refused_recipient_fails_with_69() {
    let up = ScriptedServer::start(|_, cmd| match cmd {
        scripted::Cmd::Rcpt { .. } => scripted::reply("550 5.7.1 Relaying denied"),
        other => scripted::standard(other),
    });
    let files = Files::new();
    let route = format!(
        "[[route]]\nname = \"local\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        up.port()
    );
    let config = write_config(&files, &route, "local");
    let out = test_send(&config, &["--route", "local", "--to", RCPT]);
    assert_eq!(out.code, 69, "{}{}", out.stdout, out.stderr);
    assert_in_order(
        &out.stdout,
        &[
            "C: RCPT TO:<user@example.net>",
            "S: 550 5.7.1 Relaying denied",
            &format!(
                "test-send: FAILED: 127.0.0.1[127.0.0.1]:{} refused the message: 550 5.7.1 Relaying denied",
                up.port()
            ),
        ],
    );
    // DATA went out with the pipelined envelope and was refused: no message.
    assert!(!out.stdout.contains("S: 354"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("bytes of message body]"),
        "{}",
        out.stdout
    );
    assert!(up.delivered().is_empty());
}

#[test]
fn unknown_route_is_a_usage_error_listing_the_routes() {
    let files = Files::with_passwords();
    let routes = format!(
        "{}{}",
        password_route(&files, "office365", 2, "plain", "pw"),
        password_route(&files, "mailgun", 2, "plain", "pw")
    );
    let config = write_config(&files, &routes, "office365");
    let out = test_send(&config, &["--route", "gmail", "--to", RCPT]);
    assert_eq!(out.code, 64, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(
        out.stderr.trim(),
        "smarthost test-send: no route named \"gmail\"; the routes are: mailgun, office365"
    );
}

const OAUTH_USER: &str = "app@contoso.test";

/// A plain-text loopback route (the scripted peer has no TLS) with XOAUTH2
/// tokens from an `oauth2` source at `ep`.
fn xoauth2_routes(ep: &Endpoint, up: &ScriptedServer, state: &Path) -> String {
    format!(
        r#"{source}[[route]]
name = "o365"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext = true
auth = "xoauth2"
username = "{OAUTH_USER}"
token_source = "o365"
"#,
        source = oauth2_source(&ep.url("/token"), state),
        port = up.port(),
    )
}

#[test]
fn xoauth2_route_says_which_token_and_never_shows_it() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-testsend-51c2");
    let up = ScriptedServer::start(ep.smtp_script());
    let files = Files::with_passwords();
    let state = files.path("o365.json");
    write_state(&state, "rt-testsend-51c2");
    let config = write_config(&files, &xoauth2_routes(&ep, &up, &state), "o365");
    let args = ["--route", "o365", "--to", "rcpt@dst.test"];

    // No access token yet: one is fetched with the refresh token.
    let out = test_send(&config, &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_in_order(
        &out.stdout,
        &[
            "[route o365: smtp 127.0.0.1:",
            "[token source o365: oauth2 provider=generic grant=refresh_token",
            &format!("[token for {OAUTH_USER} from token source o365: fetched from the source now, expires in 60 min]"),
            "S: 220 ",
            "C: EHLO relay.test",
            "C: AUTH XOAUTH2 [redacted ",
            "S: 235 ",
            &format!("C: MAIL FROM:<{OAUTH_USER}>"),
            "test-send: delivered to rcpt@dst.test via 127.0.0.1[127.0.0.1]:",
        ],
    );
    assert_eq!(ep.requests().len(), 1);

    // The state file holds that token now: it is used, not refreshed.
    let out2 = test_send(&config, &args);
    assert_eq!(out2.code, 0, "{}{}", out2.stdout, out2.stderr);
    assert!(
        out2.stdout
            .contains("from token source o365: cached, still valid, expires in "),
        "{}",
        out2.stdout
    );
    assert_eq!(ep.requests().len(), 1);

    // A revoked token: the JSON error challenge, then one fresh token.
    ep.revoke_access_tokens();
    let out3 = test_send(&config, &args);
    assert_eq!(out3.code, 0, "{}{}", out3.stdout, out3.stderr);
    assert_in_order(
        &out3.stdout,
        &[
            "from token source o365: cached, still valid",
            "C: AUTH XOAUTH2 [redacted ",
            "S: 334 ",
            "[challenge decoded: {\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"https://mail.google.com/\"}]",
            "C: [redacted]",
            "S: 535 5.7.8",
            "[127.0.0.1[127.0.0.1]:",
            "[token refused; fetching a new token and trying once more]",
            "from token source o365: fetched from the source now",
            "C: AUTH XOAUTH2 [redacted ",
            "S: 235 ",
            "test-send: delivered to rcpt@dst.test",
        ],
    );
    assert_eq!(up.delivered().len(), 3);

    let secrets = ep.secrets();
    for out in [&out, &out2, &out3] {
        assert_no_secrets(&out.stdout, &secrets, "stdout");
        assert_no_secrets(&out.stderr, &secrets, "stderr");
    }
}

#[test]
fn dead_token_source_fails_with_77() {
    let ep = Endpoint::start();
    let up = ScriptedServer::start(ep.smtp_script());
    let files = Files::with_passwords();
    // Never logged in: no state file.
    let state = files.path("o365.json");
    let config = write_config(&files, &xoauth2_routes(&ep, &up, &state), "o365");
    let out = test_send(&config, &["--route", "o365", "--to", "rcpt@dst.test"]);
    assert_eq!(out.code, 77, "{}{}", out.stdout, out.stderr);
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("test-send: FAILED: no OAuth2 token: ")
            && last.contains("smarthost oauth login o365"),
        "{last}"
    );
    assert!(up.connections().is_empty());
}
