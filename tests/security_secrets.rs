//! Secrets never show: every kind of secret configured at once (a route's
//! password file for PLAIN and for LOGIN, an OAuth2 client secret and refresh
//! token, the access tokens it gets, a command's, a file's and an HTTP
//! authentication server's tokens, the password in that server's URL, the
//! token-sharing password), each with a distinctive value, then every output
//! an operator or a log reader sees: the daemon's log through refused AUTH and
//! refused sharing requests, `check`, `route`, `queue list`, `queue show`,
//! `queue find`, `oauth status`, the errors of a secret file with loose
//! permissions and of a bad configuration, and the `Debug` form of the loaded
//! configuration (what a panic message or a debug log would print).
//!
//! Each secret is looked for as is and base64-encoded, at each of the three
//! alignments it can have inside a longer encoded string (AUTH PLAIN's
//! `\0user\0password`, XOAUTH2's `user=..\x01auth=Bearer ..`).

mod common;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{free_port, Relay};
use oauth_peers::{write_state, Endpoint};
use scripted::{reply, standard, Cmd, ScriptedServer};

const USER: &str = "relay@example.org";
const PLAIN_PW: &str = "pw-plain-SECRET-4e1f9a22c0";
const LOGIN_PW: &str = "pw-login-SECRET-77b0d3e5a1";
const CLIENT_SECRET: &str = "client-secret-XYZ";
const REFRESH: &str = "rt-SECRET-0c9d8e7f6a5b";
const CMD_TOKEN: &str = "cmd-tok-SECRET-1b2c3d4e5f";
const FILE_TOKEN: &str = "file-tok-SECRET-6a7b8c9d0e";
const SHARE_PW: &str = "share-pw-SECRET-3f2e1d0c9b";
const WRONG_SHARE_PW: &str = "wrong-share-SECRET-a1b2c3d4";

/// Every form in which `secret` could leak.
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    for k in 0..3 {
        let mut bytes = vec![b'x'; k];
        bytes.extend_from_slice(secret.as_bytes());
        let enc = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // The characters whose six bits all come from the secret.
        let end = k + secret.len();
        let inner: String = enc
            .char_indices()
            .filter(|(j, _)| 6 * j / 8 >= k && (6 * j + 5) / 8 < end)
            .map(|(_, c)| c)
            .collect();
        // Too short a run would match by chance.
        if inner.len() >= 12 {
            out.push(inner);
        }
    }
    out
}

fn assert_clean(text: &str, secrets: &[String], what: &str) {
    for s in secrets {
        for f in forms(s) {
            assert!(
                !text.contains(&f),
                "{what} shows the secret {s:?} (as {f:?}):\n{text}"
            );
        }
    }
}

fn secret_file(path: &Path, value: &str) {
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `smarthost ARGS[0] --config FILE ARGS[1..]`: (exit code, stdout + stderr).
fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg(args[0])
        .arg("--config")
        .arg(config)
        .args(&args[1..])
        .output()
        .expect("run smarthost");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// An upstream that offers PLAIN and LOGIN and refuses every password.
fn refusing_upstream() -> ScriptedServer {
    let user_b64 = base64::engine::general_purpose::STANDARD.encode(USER);
    ScriptedServer::start(move |_, cmd| match cmd {
        Cmd::Ehlo(_) => reply("250-refuser.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"),
        Cmd::Other(l) if l.starts_with("AUTH LOGIN") => reply("334 VXNlcm5hbWU6"),
        Cmd::Other(l) if *l == user_b64 => reply("334 UGFzc3dvcmQ6"),
        Cmd::Other(_) => reply("535 5.7.8 Authentication credentials invalid"),
        other => standard(other),
    })
}

/// One GET to the token-sharing server with `password`: the status line.
fn share_get(port: u16, password: &str, account: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect share");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("any:{password}"));
    write!(
        s,
        "GET /token?account={account}&proto=smtp HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines().next().unwrap_or_default().to_string()
}

#[test]
fn no_secret_in_any_output() {
    let ep = Endpoint::start();
    ep.add_refresh_token(REFRESH);
    ep.accept_token(CMD_TOKEN);
    ep.accept_token(FILE_TOKEN);
    let xo_up = ScriptedServer::start(ep.smtp_script());
    let refuser = refusing_upstream();
    let sd = tempfile::tempdir().unwrap();
    let d = sd.path();
    write_secret_files(d);
    let share_port = free_port();
    let relay = Relay::start(&format!(
        "{}{}{ROUTING}",
        routes(refuser.port(), xo_up.port(), d),
        token_sources(&ep, d, share_port)
    ));
    let config = relay.config_path.clone();
    let (plain_id, login_id) = send_and_settle(&relay);
    assert_eq!(
        share_get(share_port, SHARE_PW, "shared@contoso.test")
            .split(' ')
            .nth(1),
        Some("200")
    );
    assert_eq!(
        share_get(share_port, WRONG_SHARE_PW, "shared@contoso.test")
            .split(' ')
            .nth(1),
        Some("401")
    );

    let mut outputs = operator_outputs(&config, &plain_id, &login_id);
    outputs.extend(error_outputs(&config, d, &http_url(&ep)));
    // The loaded configuration's Debug form, as a panic or a debug log shows it.
    let loaded = smarthost::config::Config::load(&config).expect("config loads");
    outputs.push(("Debug of the configuration".into(), format!("{loaded:#?}")));

    let mut secrets: Vec<String> = [
        PLAIN_PW,
        LOGIN_PW,
        CLIENT_SECRET,
        REFRESH,
        CMD_TOKEN,
        FILE_TOKEN,
        SHARE_PW,
        WRONG_SHARE_PW,
    ]
    .map(String::from)
    .to_vec();
    secrets.extend(ep.secrets());
    secrets.sort();
    secrets.dedup();
    // The HTTP source and the XOAUTH2 route got access tokens from the endpoint.
    assert!(secrets.len() > 9, "{secrets:?}");
    for (what, text) in &outputs {
        assert_clean(text, &secrets, what);
    }
    assert_clean(&relay.log(), &secrets, "the daemon's log");
    let log = relay.log();
    assert!(log.contains("535"), "{log}");
}

/// The password files, the client secret, the sharing password, the token
/// file and the OAuth2 state in `d` (all 0600), and `d/token.sh`, a command
/// printing its token.
fn write_secret_files(d: &Path) {
    secret_file(&d.join("plain.pw"), PLAIN_PW);
    secret_file(&d.join("login.pw"), LOGIN_PW);
    secret_file(&d.join("client.secret"), CLIENT_SECRET);
    secret_file(&d.join("share.pw"), SHARE_PW);
    secret_file(&d.join("file.token"), FILE_TOKEN);
    write_state(&d.join("o365.json"), REFRESH);
    let script = d.join("token.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' '{CMD_TOKEN}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// PLAIN by default, LOGIN for `login.test`, XOAUTH2 for `xo.test`.
const ROUTING: &str = r#"[routing]
default = "plain"
[routing.senders]
"login.test" = "login"
"xo.test" = "xo"
"#;

/// The HTTP authentication server's URL at `ep`, with its password in it.
fn http_url(ep: &Endpoint) -> String {
    ep.url("/auth").replace(
        "http://",
        &format!("http://{}:{}@", ep.client.0, ep.client.1),
    )
}

/// The routes: PLAIN and LOGIN to the refusing upstream on `refuser`,
/// XOAUTH2 to the one on `xo`.
fn routes(refuser: u16, xo: u16, d: &Path) -> String {
    let clear = "tls = \"none\"\nallow_plaintext = true";
    format!(
        r#"retry = "F,1h,30m"
[timeouts]
upstream_command = "3s"
connect = "3s"
idle = "1s"
[[route]]
name = "plain"
host = "127.0.0.1"
port = {refuser}
{clear}
auth = "plain"
username = "{USER}"
password_file = "{d}/plain.pw"
[[route]]
name = "login"
host = "127.0.0.1"
port = {refuser}
{clear}
auth = "login"
username = "{USER}"
password_file = "{d}/login.pw"
[[route]]
name = "xo"
host = "127.0.0.1"
port = {xo}
{clear}
auth = "xoauth2"
username = "app@contoso.test"
token_source = "o365"
"#,
        d = d.display(),
    )
}

/// Every kind of token source, the file one shared over HTTP on `share_port`.
fn token_sources(ep: &Endpoint, d: &Path, share_port: u16) -> String {
    format!(
        r#"[[token_source]]
name = "o365"
type = "oauth2"
provider = "generic"
client_id = "{client_id}"
client_secret_file = "{d}/client.secret"
token_url = "{token_url}"
scopes = ["https://outlook.office.com/SMTP.Send", "offline_access"]
state_file = "{d}/o365.json"
[[token_source]]
name = "cmd"
type = "command"
command = ["{d}/token.sh"]
[[token_source]]
name = "file"
type = "file"
path = "{d}/file.token"
share_as = ["shared@contoso.test"]
[[token_source]]
name = "http"
type = "http"
url = "{http_url}"
account = "app@contoso.test"
[oauth]
share_http = "127.0.0.1:{share_port}"
share_http_password_file = "{d}/share.pw"
"#,
        d = d.display(),
        client_id = ep.client.0,
        token_url = ep.url("/token"),
        http_url = http_url(ep),
    )
}

/// One message by each route: PLAIN and LOGIN refused (deferred), XOAUTH2
/// sent; the ids of the first two.
fn send_and_settle(relay: &Relay) -> (String, String) {
    let msg = |tag: &str| format!("Subject: {tag}\r\n\r\nbody\r\n").into_bytes();
    let plain_id = relay
        .send("a@plain.test", &["r@dst.test"], &msg("plain"))
        .expect("queued");
    let login_id = relay
        .send("a@login.test", &["r@dst.test"], &msg("login"))
        .expect("queued");
    relay
        .send("a@xo.test", &["r@dst.test"], &msg("xo"))
        .expect("queued");
    assert!(
        relay.wait_log("status=deferred", 2, Duration::from_secs(30))
            && relay.wait_log("status=sent", 1, Duration::from_secs(30)),
        "{}",
        relay.log()
    );
    (plain_id, login_id)
}

/// What the operator's commands print, each of which must succeed: (command,
/// output).
fn operator_outputs(config: &Path, plain_id: &str, login_id: &str) -> Vec<(String, String)> {
    let mut outputs = Vec::new();
    for args in [
        vec!["check"],
        vec!["route", "a@plain.test"],
        vec!["route", "a@xo.test"],
        vec!["queue", "list"],
        vec!["queue", "list", "--json"],
        vec!["queue", "show", plain_id],
        vec!["queue", "show", login_id, "--json"],
        vec!["queue", "find", plain_id],
        vec!["oauth", "status"],
    ] {
        let (code, text) = cli(config, &args);
        assert_eq!(code, 0, "{args:?}: {text}");
        outputs.push((args.join(" "), text));
    }
    // What they show is real: the refused logins and the working sources.
    let list = &outputs[3].1;
    assert!(list.contains("535") && list.contains(plain_id), "{list}");
    assert_eq!(
        outputs[8].1.matches("works: yes").count(),
        4,
        "{}",
        outputs[8].1
    );
    outputs
}

/// The errors of a secret file others could read and of a configuration
/// broken on the line of `http_url` (which holds a password): (what, output).
fn error_outputs(config: &Path, d: &Path, http_url: &str) -> Vec<(String, String)> {
    let mut outputs = Vec::new();
    // A secret file others could read: refused, named, not shown.
    std::fs::set_permissions(d.join("login.pw"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = cli(config, &["check"]);
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains("login.pw") && text.contains("chmod 600"),
        "{text}"
    );
    outputs.push(("check with a 0644 secret".into(), text));
    std::fs::set_permissions(d.join("login.pw"), std::fs::Permissions::from_mode(0o600)).unwrap();

    // A bad configuration, wrong right on the line that holds a URL password.
    let broken = d.join("broken.toml");
    let text = std::fs::read_to_string(config).unwrap();
    let bad_line = format!("url = \"{http_url}\"");
    std::fs::write(
        &broken,
        text.replace(&bad_line, &format!("{bad_line} oops")),
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let (code, text) = cli(&broken, &[cmd]);
        assert_eq!(code, 78, "{cmd}: {text}");
        assert!(text.contains("line "), "{text}");
        outputs.push((format!("{cmd} of a broken file"), text));
    }
    outputs
}
