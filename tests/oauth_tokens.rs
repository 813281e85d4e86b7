//! XOAUTH2 delivery with tokens from every kind of source, against an in-process
//! token endpoint and an upstream that accepts only tokens the endpoint issued:
//! refresh and rotation across a restart, one forced refresh after a refused
//! token, a dead grant holding the route without using up the retry time, an
//! endpoint that is down deferring without bouncing. Every test checks that no
//! token or secret reached the log.

mod common;
#[path = "common/control_route.rs"]
mod control_route;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Relay};
use control_route::ControlRoute;
use oauth_peers::{assert_no_secrets, oauth2_source, write_state, Endpoint, Mode};
use scripted::{reply, Cmd, ScriptedServer};

const USER: &str = "app@contoso.test";

fn message(tag: &str) -> Vec<u8> {
    format!("From: <{USER}>\r\nTo: <rcpt@dst.test>\r\nSubject: {tag}\r\nMessage-ID: <{tag}@contoso.test>\r\n\r\nbody {tag}\r\n").into_bytes()
}

/// A relay whose default route authenticates with XOAUTH2 from an `oauth2`
/// source at `ep`, with its state file in `state`.
fn config(ep: &Endpoint, up: &ScriptedServer, state: &Path, retry: &str) -> String {
    format!(
        r#"retry = "{retry}"
[timeouts]
upstream_command = "3s"
connect = "3s"
idle = "1s"
{source}[[route]]
name = "up"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext = true
auth = "xoauth2"
username = "{USER}"
token_source = "o365"
[routing]
default = "up"
"#,
        source = oauth2_source(&ep.url("/token"), state),
        port = up.port(),
    )
}

fn cli(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg(args[0])
        .arg("--config")
        .arg(&relay.config_path)
        .args(&args[1..])
        .output()
        .expect("run smarthost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rotated_refresh_token_survives_restart_and_refused_token_is_refreshed_once() {
    let ep = Endpoint::start();
    ep.rotate.store(true, Ordering::SeqCst);
    ep.add_refresh_token("rt-initial-7f3a9c");
    let up = ScriptedServer::start(ep.smtp_script());
    let sd = tempfile::tempdir().unwrap();
    let state = sd.path().join("o365.json");
    write_state(&state, "rt-initial-7f3a9c");
    let mut relay = Relay::start(&config(&ep, &up, &state, "F,1m,1s"));

    relay
        .send(USER, &["rcpt@dst.test"], &message("one"))
        .unwrap();
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let requests = ep.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].1.as_deref(), Some("rt-initial-7f3a9c"));

    // The rotated refresh token replaced the old one on disk, privately.
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(!saved.contains("rt-initial-7f3a9c"), "{saved}");
    let rotated = ep
        .issued
        .lock()
        .unwrap()
        .refresh_tokens
        .iter()
        .next()
        .cloned()
        .unwrap();
    assert!(saved.contains(&rotated), "{saved}");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The provider revokes the access token early; the relay restarts and
    // first tries the one in the state file, is refused, refreshes once with
    // the rotated refresh token and delivers.
    ep.revoke_access_tokens();
    relay.restart();
    relay
        .send(USER, &["rcpt@dst.test"], &message("two"))
        .unwrap();
    assert!(
        relay.wait_log("status=sent", 2, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let requests = ep.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].1.as_deref(), Some(rotated.as_str()));
    let auths = ep.auths();
    let refused = auths.iter().filter(|a| !a.2).count();
    assert_eq!(refused, 1, "{auths:?}");
    assert!(auths.iter().all(|a| a.0 == USER), "{auths:?}");
    assert!(relay.log().contains("token refused"), "{}", relay.log());
    assert_eq!(up.delivered().len(), 2);
    assert_no_secrets(&relay.log(), &ep.secrets(), "relay log");
}

/// The log's `status=bounced` lines other than those of the control message
/// `control` and of its non-delivery notice (which the control route bounces
/// in turn).
fn bounced_besides<'a>(log: &'a str, control: &str) -> Vec<&'a str> {
    let notice = format!("{control}: sender non-delivery notification: ");
    let mut ours = vec![format!("{control}: to=")];
    ours.extend(
        log.lines()
            .filter_map(|l| l.split_once(&notice))
            .map(|(_, dsn)| format!("{}: to=", dsn.trim())),
    );
    log.lines()
        .filter(|l| l.contains("status=bounced") && !ours.iter().any(|o| l.contains(o)))
        .collect()
}

/// The upstream of the dead-grant test: XOAUTH2 with `ep`'s tokens, and RCPT
/// refused with 451 on the 1st and 2nd try, then accepted.
fn upstream_deferring_twice(ep: &Endpoint) -> ScriptedServer {
    let rcpt_calls = Arc::new(AtomicUsize::new(0));
    let script = ep.smtp_script();
    let calls = rcpt_calls.clone();
    ScriptedServer::start(move |ctx, cmd| match cmd {
        Cmd::Rcpt { .. } if calls.fetch_add(1, Ordering::SeqCst) < 2 => {
            reply("451 4.3.0 try again later")
        }
        other => script(ctx, other),
    })
}

/// While held: message `id` queued, shown as held, `oauth status` says what
/// to do.
fn assert_shown_held(relay: &Relay, id: &str) {
    let (code, out, _) = cli(relay, &["queue", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(id) && out.contains("Route up is HELD"),
        "{out}"
    );
    let (code, out, err) = cli(relay, &["oauth", "status"]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(out.contains("works: NO (needs you)"), "{out}");
    assert!(out.contains("do: smarthost oauth login o365"), "{out}");
    assert!(out.contains("route up HELD"), "{out}");
}

#[test]
fn dead_grant_holds_route_without_spending_retry_time_then_resumes() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-A-51c0de");
    let up = upstream_deferring_twice(&ep);
    let sd = tempfile::tempdir().unwrap();
    let state = sd.path().join("o365.json");
    write_state(&state, "rt-A-51c0de");
    // The retry time runs out 4 s after the first failure.
    let control = ControlRoute::start();
    let relay = Relay::start(&(config(&ep, &up, &state, "F,4s,1s") + &control.config()));

    let id = relay
        .send(USER, &["rcpt@dst.test"], &message("held"))
        .unwrap();
    assert!(
        relay.wait_log("status=deferred", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    // The grant dies: the cached token is refused, and so is the refresh.
    ep.set_mode(Mode::InvalidGrant);
    ep.revoke_access_tokens();
    assert!(
        relay.wait_log("HELD", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    assert!(log.contains("invalid_grant"), "{log}");
    assert!(log.contains("smarthost oauth login o365"), "{log}");
    assert_shown_held(&relay, &id);

    // Longer than the whole retry time passes on hold: the control message,
    // first refused after the held message's first failure, runs out of retry
    // time and bounces, later than the held message would have.
    let control_id = control.send(&relay);
    control.wait(&relay, &control_id, "status=bounced");
    let log = relay.log();
    assert!(bounced_besides(&log, &control_id).is_empty(), "{log}");

    // The operator logs in again: a new state file appears.
    ep.set_mode(Mode::Normal);
    ep.add_refresh_token("rt-B-9e2b7d");
    write_state(&state, "rt-B-9e2b7d");
    assert!(
        relay.wait_log("resumed after", 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    // One more 451 after the resume still defers (the held time was given
    // back), and the next try delivers.
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    assert!(bounced_besides(&log, &control_id).is_empty(), "{log}");
    assert_eq!(
        log.matches(&format!("{id}: to=<rcpt@dst.test>")).count(),
        3,
        "{log}"
    );
    assert_eq!(up.delivered().len(), 1);
    assert_no_secrets(&log, &ep.secrets(), "relay log");
}

#[test]
fn token_endpoint_down_defers_and_never_bounces() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-down-44aa");
    ep.set_mode(Mode::Down);
    let up = ScriptedServer::start(ep.smtp_script());
    let sd = tempfile::tempdir().unwrap();
    let state = sd.path().join("o365.json");
    write_state(&state, "rt-down-44aa");
    let relay = Relay::start(&config(&ep, &up, &state, "F,2s,1s"));
    relay
        .send(USER, &["rcpt@dst.test"], &message("down"))
        .unwrap();
    // Deferred again and again, past the 2 s retry time, without a bounce:
    // three retry slots more than the three that fill it are logged, each one
    // a deferral.
    assert!(
        relay.wait_log("status=deferred", 6, Duration::from_secs(30)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    assert!(
        log.contains("no OAuth2 token") && log.contains("HTTP 503"),
        "{log}"
    );
    assert!(
        !log.contains("status=bounced") && !log.contains("HELD"),
        "{log}"
    );
    ep.set_mode(Mode::Normal);
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(90)),
        "{}",
        relay.log()
    );
    assert_no_secrets(&relay.log(), &ep.secrets(), "relay log");
}

/// A credential-server on a UNIX socket: reads `SMTP <user>\n` to EOF and
/// answers the XOAUTH2 string with `token`.
fn credential_server(path: &Path, token: String) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut req = String::new();
            let _ = s.read_to_string(&mut req);
            if req == "STOP\n" {
                return;
            }
            let user = req
                .trim_end()
                .strip_prefix("SMTP ")
                .unwrap_or("")
                .to_string();
            let _ = writeln!(s, "user={user}\x01auth=Bearer {token}\x01\x01");
        }
    })
}

/// The token source tables of [`every_token_source_delivers`], each with the
/// files (in `d`) or the credential server its kind needs, and `ep` accepting
/// its token: (name, the table's keys after `name`), and the credential
/// server's thread.
fn every_token_source(
    ep: &Endpoint,
    d: &Path,
) -> (Vec<(&'static str, String)>, std::thread::JoinHandle<()>) {
    // command: prints a token; file: holds one; socket: a credential server.
    std::fs::write(d.join("cmd-token"), "cmd-tok-0b1c2d\n").unwrap();
    ep.accept_token("cmd-tok-0b1c2d");
    private_file(d.join("file-token"), "file-tok-1a2b3c\n");
    ep.accept_token("file-tok-1a2b3c");
    let sock = d.join("cred.sock");
    let server = credential_server(&sock, "sock-tok-5e6f70".into());
    ep.accept_token("sock-tok-5e6f70");
    let secret_file = d.join("client.secret");
    std::fs::write(&secret_file, format!("{}\n", ep.client.1)).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let http_url = ep.url("/auth").replace(
        "http://",
        &format!("http://{}:{}@", ep.client.0, ep.client.1),
    );

    let sources = vec![
        ("cmd", format!("type = \"command\"\ncommand = [\"/bin/cat\", \"{}\"]", d.join("cmd-token").display())),
        // Shared, so that `oauth token` may hand its token to a script.
        ("file", format!("type = \"file\"\npath = \"{}\"\nshare_as = [\"file@contoso.test\"]", d.join("file-token").display())),
        ("sock", format!("type = \"socket\"\npath = \"{}\"", sock.display())),
        ("http", format!("type = \"http\"\nurl = \"{http_url}\"")),
        (
            "app",
            format!(
                "type = \"oauth2\"\ngrant = \"client_credentials\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\ntoken_url = \"{}\"\nscopes = [\"https://outlook.office365.com/.default\"]",
                ep.client.0,
                secret_file.display(),
                ep.url("/token")
            ),
        ),
    ];
    (sources, server)
}

/// A relay with one XOAUTH2 route to `port` per source, named after it and
/// taken by senders at `<name>.test`.
fn every_source_config(sources: &[(&str, String)], port: u16) -> String {
    let mut body = String::from(
        "retry = \"F,1m,1s\"\n[timeouts]\nupstream_command = \"3s\"\nconnect = \"3s\"\nidle = \"1s\"\n",
    );
    let mut senders = String::new();
    for (name, spec) in sources {
        body.push_str(&format!(
            "[[token_source]]\nname = \"{name}\"\n{spec}\n[[route]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nallow_plaintext = true\nauth = \"xoauth2\"\nusername = \"{name}@contoso.test\"\ntoken_source = \"{name}\"\n",
        ));
        senders.push_str(&format!("\"{name}.test\" = \"{name}\"\n"));
    }
    body.push_str(&format!(
        "[routing]\ndefault = \"cmd\"\n[routing.senders]\n{senders}"
    ));
    body
}

#[test]
fn every_token_source_delivers() {
    let ep = Endpoint::start();
    let up = ScriptedServer::start(ep.smtp_script());
    let sd = tempfile::tempdir().unwrap();
    let d = sd.path();
    let (sources, server) = every_token_source(&ep, d);
    let relay = Relay::start(&every_source_config(&sources, up.port()));

    for (name, _) in &sources {
        let from = format!("someone@{name}.test");
        relay
            .send(&from, &["rcpt@dst.test"], &message(name))
            .unwrap();
    }
    assert!(
        relay.wait_log("status=sent", sources.len(), Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let auths = ep.auths();
    for (name, _) in &sources {
        let user = format!("{name}@contoso.test");
        assert!(
            auths.iter().any(|a| a.0 == user && a.2),
            "{name}: {auths:?}"
        );
    }
    assert!(auths.iter().all(|a| a.2), "{auths:?}");

    assert_rewritten_token_file_is_read(&relay, &up, &ep, d, sources.len());
    assert_cli_works_without_secrets(&relay, &ep, sources.len());

    // Stop the credential server.
    let mut s = std::os::unix::net::UnixStream::connect(d.join("cred.sock")).unwrap();
    use std::io::Write;
    let _ = s.write_all(b"STOP\n");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = server.join();
}

/// A rewritten token file is read again, by the next connection (the relay
/// has sent `sent` messages so far).
fn assert_rewritten_token_file_is_read(
    relay: &Relay,
    up: &ScriptedServer,
    ep: &Endpoint,
    d: &Path,
    sent: usize,
) {
    // Wait for the idle connections (idle = 1s) to be closed, or the next
    // message reuses one already authenticated with the old token.
    assert!(
        wait_for(Duration::from_secs(10), || up
            .connections()
            .iter()
            .all(|c| c.closed)),
        "idle upstream connections were not closed"
    );
    private_file(d.join("file-token.new"), "file-tok-2d3e4f\n");
    std::fs::rename(d.join("file-token.new"), d.join("file-token")).unwrap();
    ep.accept_token("file-tok-2d3e4f");
    relay
        .send("x@file.test", &["rcpt@dst.test"], &message("file2"))
        .unwrap();
    assert!(
        relay.wait_log("status=sent", sent + 1, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    assert!(ep.auths().iter().any(|a| a.1 == "file-tok-2d3e4f"));
}

/// `oauth token` hands a script the current token; `oauth status` says all
/// `sources` work; neither they, `check` nor the log show a secret.
fn assert_cli_works_without_secrets(relay: &Relay, ep: &Endpoint, sources: usize) {
    let (code, out, err) = cli(relay, &["oauth", "token", "file"]);
    assert_eq!((code, out.trim()), (0, "file-tok-2d3e4f"), "{err}");
    // A source that shares nothing gives the daemon's tokens to nobody.
    let (code, out, err) = cli(relay, &["oauth", "token", "cmd"]);
    assert!(
        code != 0 && out.is_empty() && err.contains("share_as"),
        "{code} {out}{err}"
    );
    let (code, status, err) = cli(relay, &["oauth", "status"]);
    assert_eq!(code, 0, "{status}{err}");
    assert_eq!(status.matches("works: yes").count(), sources, "{status}");

    let mut secrets = ep.secrets();
    secrets.extend(["cmd-tok-0b1c2d", "file-tok-1a2b3c", "sock-tok-5e6f70"].map(String::from));
    assert_no_secrets(&relay.log(), &secrets, "relay log");
    assert_no_secrets(&status, &secrets, "oauth status");
    let (_, check, _) = cli(relay, &["check"]);
    assert!(
        check.contains("token_source=http") || check.contains("http http://127.0.0.1"),
        "{check}"
    );
    assert_no_secrets(&check, &secrets, "check");
}

#[test]
fn daemon_shares_tokens_over_socket_and_http() {
    let sd = tempfile::tempdir().unwrap();
    let d = sd.path();
    private_file(d.join("tok"), "shared-tok-77aa\n");
    let pw = d.join("share.pw");
    std::fs::write(&pw, "share-pass-31x\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = common::free_port();
    let relay = Relay::start(&format!(
        r#"[oauth]
share_socket = "{{dir}}/share.sock"
share_http = "127.0.0.1:{port}"
share_http_password_file = "{}"
[[token_source]]
name = "f"
type = "file"
path = "{}"
share_as = ["{USER}"]
[[route]]
name = "d"
type = "directory"
path = "{{dir}}/out"
[routing]
default = "d"
"#,
        pw.display(),
        d.join("tok").display()
    ));
    assert_shared_over_socket(&relay);
    assert_shared_over_http(port);
    let log = relay.log();
    assert!(log.contains("sharing tokens on"), "{log}");
    assert_no_secrets(
        &log,
        &["shared-tok-77aa".into(), "share-pass-31x".into()],
        "relay log",
    );
}

/// The share socket (group-writable) answers `SMTP <user>` with the XOAUTH2
/// string of the shared token, without a newline, as cloud_mdir_sync does.
fn assert_shared_over_socket(relay: &Relay) {
    use std::io::{Read, Write};
    let sock = relay.path("share.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(format!("SMTP {USER}\n").as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer,
        format!("user={USER}\x01auth=Bearer shared-tok-77aa\x01\x01")
    );
}

/// The share HTTP listener on `port` hands the token to the right password
/// only.
fn assert_shared_over_http(port: u16) {
    use base64::Engine;
    use std::io::{Read, Write};
    let get = |auth: &str| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET /token?account={USER}&proto=smtp HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode(auth)
        )
        .unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        r
    };
    let ok = get("any:share-pass-31x");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(r#""accessToken":"shared-tok-77aa""#), "{ok}");
    let refused = get("any:wrong");
    assert!(
        refused.starts_with("HTTP/1.1 401") && !refused.contains("shared-tok"),
        "{refused}"
    );
}

#[test]
fn route_hold_survives_a_kill_and_never_logged_in_source_holds() {
    let ep = Endpoint::start();
    let up = ScriptedServer::start(ep.smtp_script());
    let sd = tempfile::tempdir().unwrap();
    // No state file at all: nobody has run `oauth login` yet.
    let state = sd.path().join("o365.json");
    let mut relay = Relay::start(&config(&ep, &up, &state, "F,1m,1s"));
    let id = relay
        .send(USER, &["rcpt@dst.test"], &message("kill"))
        .unwrap();
    assert!(
        relay.wait_log("HELD", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    assert!(
        relay.log().contains("no refresh token yet"),
        "{}",
        relay.log()
    );

    // SIGKILL: the hold was on disk before it took effect.
    relay.restart();
    assert!(
        relay.wait_log("route up: held since", 1, Duration::from_secs(10)),
        "{}",
        relay.log()
    );
    let (_, out, _) = cli(&relay, &["queue", "list"]);
    assert!(
        out.contains(&id) && out.contains("Route up is HELD"),
        "{out}"
    );
    // No attempt was ever counted against the message.
    assert_eq!(
        relay.log().matches(&format!("{id}: to=<")).count(),
        0,
        "{}",
        relay.log()
    );

    ep.add_refresh_token("rt-late-0c0c");
    write_state(&state, "rt-late-0c0c");
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let (_, out, _) = cli(&relay, &["queue", "list"]);
    assert!(!out.contains("HELD"), "{out}");
    assert_no_secrets(&relay.log(), &ep.secrets(), "relay log");
}

#[test]
fn oauth_login_with_a_device_code_then_mail_flows() {
    let ep = Endpoint::start();
    let up = ScriptedServer::start(ep.smtp_script());
    let sd = tempfile::tempdir().unwrap();
    let state = sd.path().join("o365.json");
    let body = config(&ep, &up, &state, "F,1m,1s").replace(
        "scopes = [",
        &format!("device_url = \"{}\"\nscopes = [", ep.url("/device")),
    );
    let relay = Relay::start(&body);
    let (code, out, err) = cli(&relay, &["oauth", "login", "o365"]);
    assert_eq!(code, 0, "{out}{err}");
    // What the user must open and type.
    assert!(
        out.contains("https://login.example/device") && out.contains("WDJB-MJHT"),
        "{out}"
    );
    assert!(out.contains("signed in"), "{out}");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("rt-dev-"), "{saved}");

    relay
        .send(USER, &["rcpt@dst.test"], &message("after-login"))
        .unwrap();
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let (code, status, _) = cli(&relay, &["oauth", "status"]);
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains("works: yes") && status.contains("refresh token stored"),
        "{status}"
    );
    let mut secrets = ep.secrets();
    secrets.push("dc-secret-5150".into());
    for text in [&out, &err, &status, &relay.log()] {
        assert_no_secrets(text, &secrets, "login output or log");
    }
}

/// A token file as a helper writes it: mode 0600, like every secret.
fn private_file(path: impl AsRef<std::path::Path>, text: &str) {
    let path = path.as_ref();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
