//! aiosmtpd (tests/peers/aiosmtpd_server.py, Debian's python3-aiosmtpd) as the
//! real upstream smarthost, requiring STARTTLS (certificate from a test CA) and
//! AUTH XOAUTH2, with access tokens from the relay's built-in refresher
//! (`type = "oauth2"` token source) at the in-process token `Endpoint`.
//!
//! aiosmtpd accepts the tokens listed in its token file. The relay reaches the
//! endpoint through a small HTTP tap that, when publishing, writes every access
//! token it hands over into that file before the relay sees it: no race with
//! the relay's AUTH. The tap can also lengthen tokens to the size real
//! providers issue (several KB), which the endpoint's `at-<n>-<hex>` are not.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/control_route.rs"]
mod control_route;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
// The upstream of the control route (and oauth_peers' SMTP script, unused here).
#[path = "common/scripted.rs"]
mod scripted;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiosmtpd::{Files, Peer};
use base64::Engine;
use common::{wait_for, Relay};
use control_route::ControlRoute;
use oauth_peers::{assert_no_secrets, oauth2_source, write_state, Endpoint};

const USER: &str = "app@contoso.test";
const REFRESH_TOKEN: &str = "rt-aiosmtpd-3c9e71";

/// Test PKI and aiosmtpd's token file (empty: no token is accepted yet); the
/// state file goes there too.
fn files() -> Files {
    let files = Files::new();
    std::fs::write(files.path("tokens"), "").unwrap();
    files
}

/// The aiosmtpd peer: STARTTLS required, XOAUTH2 for `USER` with the tokens
/// in `files.path("tokens")`.
fn start_peer(files: &Files) -> Peer {
    let mut args = files.tls_args();
    args.extend([
        "--xoauth2-user".into(),
        USER.into(),
        "--xoauth2-token-file".into(),
        files.path("tokens").into_os_string(),
    ]);
    Peer::start(args)
}

/// An HTTP tap between the relay and the token endpoint. Every access token
/// the endpoint issues is (if `lengthen_to` is set) padded to that length, and
/// (if `publish`) appended to aiosmtpd's token file, before the response goes
/// on to the relay. Stops when dropped.
struct TokenTap {
    addr: std::net::SocketAddr,
    /// The access tokens handed to the relay, in order.
    handed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenTap {
    fn start(ep: &Endpoint, token_file: PathBuf, publish: bool, lengthen_to: usize) -> TokenTap {
        let upstream = ep
            .url("")
            .strip_prefix("http://")
            .expect("endpoint url")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tap");
        listener.set_nonblocking(true).expect("nonblocking");
        let tap = TokenTap {
            addr: listener.local_addr().expect("addr"),
            handed: Arc::default(),
            stop: Arc::default(),
        };
        let (handed, stop) = (tap.handed.clone(), tap.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    // One request at a time: the file is appended in order.
                    Ok((s, _)) => {
                        let r = relay_one(s, &upstream, &token_file, publish, lengthen_to);
                        match r {
                            Ok(Some(token)) => handed.lock().unwrap().push(token),
                            Ok(None) => {}
                            Err(e) => eprintln!("token tap: {e}"),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        tap
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn handed(&self) -> Vec<String> {
        self.handed.lock().unwrap().clone()
    }
}

impl Drop for TokenTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Forwards one HTTP/1.1 request (Content-Length body) to `upstream`, which
/// answers and closes; returns the access token handed on, if any.
fn relay_one(
    client: TcpStream,
    upstream: &str,
    token_file: &Path,
    publish: bool,
    lengthen_to: usize,
) -> std::io::Result<Option<String>> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(client.try_clone()?);
    let mut request = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        request.extend_from_slice(line.as_bytes());
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    request.extend_from_slice(&body);

    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(10)))?;
    up.write_all(&request)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("HTTP/1.1 502 X");

    let mut handed = None;
    let mut out_body = json.to_string();
    if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(json) {
        if let Some(serde_json::Value::String(at)) = map.get("access_token").cloned() {
            let token = lengthen(&at, lengthen_to);
            if publish {
                let mut all = std::fs::read_to_string(token_file).unwrap_or_default();
                all.push_str(&token);
                all.push('\n');
                let tmp = token_file.with_extension("tmp");
                std::fs::write(&tmp, all)?;
                std::fs::rename(&tmp, token_file)?;
            }
            map.insert("access_token".into(), token.clone().into());
            out_body = serde_json::Value::Object(map).to_string();
            handed = Some(token);
        }
    }
    let mut client = client;
    write!(
        client,
        "{status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out_body}",
        out_body.len()
    )?;
    client.flush()?;
    Ok(handed)
}

/// `token` padded with pseudo-random base64url characters to `len` characters
/// (JWT-like, as Microsoft's are); unchanged if `len` is not longer.
fn lengthen(token: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if len <= token.len() + 1 {
        return token.to_string();
    }
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut t = format!("{token}.");
    while t.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t.push(ALPHABET[(x % 64) as usize] as char);
    }
    t
}

/// The relay config: one STARTTLS route to the peer, verified against the test
/// CA, authenticating with XOAUTH2 from an `oauth2` source behind `tap`.
fn config(peer: &Peer, files: &Files, tap: &TokenTap) -> String {
    format!(
        r#"retry = "F,1m,1s"
[timeouts]
connect = "3s"
greeting = "5s"
upstream_command = "5s"
upstream_data = "5s"
{source}[[route]]
name = "up"
host = "localhost"
port = {port}
tls = "starttls"
ca_file = "{ca}"
auth = "xoauth2"
username = "{USER}"
token_source = "o365"
[routing]
default = "up"
"#,
        source = oauth2_source(&tap.url("/token"), &files.path("o365.json")),
        port = peer.port,
        ca = files.path("ca.pem").display(),
    )
}

/// The endpoint's secrets, the tokens written anywhere, and the base64 forms
/// of the XOAUTH2 initial responses with them.
fn secrets(ep: &Endpoint, tap: &TokenTap, extra: &[&str]) -> Vec<String> {
    let mut v = ep.secrets();
    v.extend(tap.handed());
    v.extend(extra.iter().map(|s| s.to_string()));
    let encoded: Vec<String> = v
        .iter()
        .map(|t| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("user={USER}\x01auth=Bearer {t}\x01\x01"))
        })
        .collect();
    v.extend(encoded);
    v
}

fn assert_no_leaks(relay: &Relay, peer: &Peer, secrets: &[String]) {
    assert_no_secrets(&relay.log(), secrets, "relay log");
    assert_no_secrets(&peer.stderr(), secrets, "aiosmtpd stderr");
    assert_no_secrets(&peer.events_text(), secrets, "aiosmtpd events");
}

fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: <{USER}>\r\nTo: <rcpt@dst.test>\r\nSubject: {tag}\r\nMessage-ID: <{tag}@contoso.test>\r\n\r\nbody {tag}\r\n"
    )
    .into_bytes()
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

/// One message delivered with a token of `lengthen_to` characters (0: as the
/// endpoint issued it); returns the token the relay used.
fn delivered_with_refreshed_token(lengthen_to: usize) -> String {
    let files = files();
    let ep = Endpoint::start();
    ep.add_refresh_token(REFRESH_TOKEN);
    write_state(&files.path("o365.json"), REFRESH_TOKEN);
    let tap = TokenTap::start(&ep, files.path("tokens"), true, lengthen_to);
    let peer = start_peer(&files);
    let relay = Relay::start(&config(&peer, &files, &tap));

    let msg = message("xoauth2");
    let id = relay.send(USER, &["rcpt@dst.test"], &msg).expect("queued");
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(20)),
        "{}\naiosmtpd stderr:\n{}",
        relay.log(),
        peer.stderr()
    );
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{id}: to=<rcpt@dst.test> ")))
        .unwrap_or_else(|| panic!("no delivery line for {id}:\n{log}"));
    assert!(
        line.contains(&format!("relay=localhost[127.0.0.1]:{} ", peer.port))
            && line.contains("attempts=1 status=sent (250 2.0.0 Ok: saved as msg0001)"),
        "{line}"
    );
    let token = assert_one_token_fetched(&ep, &tap);
    assert_delivered_once(&peer, &msg);
    assert_auth_only_after_tls(&peer);
    assert_no_leaks(&relay, &peer, &secrets(&ep, &tap, &[]));
    token
}

/// The built-in refresher fetched exactly one token, with the refresh token;
/// that token (lengthened or not) was the one handed to the relay.
fn assert_one_token_fetched(ep: &Endpoint, tap: &TokenTap) -> String {
    let requests = ep.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0],
        ("refresh_token".to_string(), Some(REFRESH_TOKEN.to_string()))
    );
    let handed = tap.handed();
    assert_eq!(handed.len(), 1, "{handed:?}");
    let token = handed[0].clone();
    let issued = ep.issued.lock().unwrap().access_tokens.clone();
    assert!(
        issued
            .iter()
            .any(|at| token == *at || token.starts_with(&format!("{at}."))),
        "{issued:?}"
    );
    token
}

/// aiosmtpd saved `msg` once, from `USER` logged in over TLS.
fn assert_delivered_once(peer: &Peer, msg: &[u8]) {
    let messages = peer.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (meta, content) = &messages[0];
    assert_eq!(meta["login"], USER);
    assert_eq!(meta["tls"], true);
    assert_eq!(meta["mail_from"], USER);
    assert_eq!(meta["rcpt_tos"], serde_json::json!(["rcpt@dst.test"]));
    assert_eq!(common::strip_received(content), msg);
}

/// STARTTLS, the handshake, then (only then) AUTH, accepted at once.
fn assert_auth_only_after_tls(peer: &Peer) {
    let events = peer.events();
    let pos = |e: &str| {
        events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no {e}: {events:?}"))
    };
    let ok = format!("AUTH-OK XOAUTH2 {USER}");
    assert!(
        pos("STARTTLS") < pos("TLS-OK")
            && pos("TLS-OK") < pos("AUTH")
            && pos("AUTH") < pos(&ok)
            && pos(&ok) < pos("MAIL"),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("AUTH-"))
            .collect::<Vec<_>>(),
        vec![&ok],
        "{events:?}"
    );
}

#[test]
fn refreshed_token_authenticates_over_verified_starttls() {
    let token = delivered_with_refreshed_token(0);
    assert!(token.starts_with("at-1-"), "{token}");
}

#[test]
fn four_kb_refreshed_token_is_accepted() {
    let token = delivered_with_refreshed_token(4096);
    assert_eq!(token.len(), 4096);
    // The AUTH line was about 5.5 KB: beyond aiosmtpd's default 512-octet
    // command limit, within RFC 4954's 12288.
    let line = "AUTH XOAUTH2 ".len()
        + base64::engine::general_purpose::STANDARD
            .encode(format!("user={USER}\x01auth=Bearer {token}\x01\x01"))
            .len();
    assert!(line > 5400, "{line}");
}

#[test]
fn refused_token_is_refreshed_once_then_route_held() {
    let files = files();
    // aiosmtpd accepts only a token the endpoint never issued.
    let other = "other-token-5a1f0e-not-issued";
    std::fs::write(files.path("tokens"), format!("{other}\n")).unwrap();
    let ep = Endpoint::start();
    ep.add_refresh_token(REFRESH_TOKEN);
    write_state(&files.path("o365.json"), REFRESH_TOKEN);
    let tap = TokenTap::start(&ep, files.path("tokens"), false, 0);
    let peer = start_peer(&files);
    let control = ControlRoute::start();
    let relay = Relay::start(&(config(&peer, &files, &tap) + &control.config()));

    let id = relay
        .send(USER, &["rcpt@dst.test"], &message("refused"))
        .expect("queued");
    assert!(
        relay.wait_log("HELD", 1, Duration::from_secs(20)),
        "{}\naiosmtpd stderr:\n{}",
        relay.log(),
        peer.stderr()
    );
    assert_refused_refreshed_refused(&relay, &ep, &tap);
    assert_two_refused_sessions(&peer);

    // Held, not retried: no further token requests, nothing delivered, the
    // message still queued and shown as held. The control message first fails
    // after the hold; its third retry, one retry interval after another, comes
    // well after the held message's next try, and the hold watcher's next look
    // (every 2 s), would have.
    let control_id = control.send(&relay);
    control.wait(&relay, &control_id, "attempts=4 status=deferred");
    assert_eq!(ep.requests().len(), 2, "{:?}", ep.requests());
    assert!(peer.messages().is_empty());
    let (code, out, err) = cli(&relay, &["queue", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&id) && out.contains("Route up is HELD"),
        "{out}"
    );
    assert_no_leaks(&relay, &peer, &secrets(&ep, &tap, &[other]));
    assert_no_secrets(&out, &secrets(&ep, &tap, &[other]), "queue list");
}

/// Refused, refreshed once, refused again: the JSON challenge was read and
/// answered (aiosmtpd then sent 535; any other answer gets a 501). Two token
/// requests, both with the refresh token; nothing sent or bounced.
fn assert_refused_refreshed_refused(relay: &Relay, ep: &Endpoint, tap: &TokenTap) {
    let log = relay.log();
    assert_eq!(log.matches("token refused").count(), 1, "{log}");
    assert!(log.contains("535 5.7.8"), "{log}");
    assert!(log.contains("status=401"), "{log}");
    assert!(
        !log.contains("status=sent") && !log.contains("status=bounced"),
        "{log}"
    );
    let requests = ep.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.1.as_deref() == Some(REFRESH_TOKEN)),
        "{requests:?}"
    );
    assert_eq!(tap.handed().len(), 2);
}

/// Both sessions: TLS, AUTH refused, QUIT (the exchange ended in step); no
/// AUTH accepted and no MAIL.
fn assert_two_refused_sessions(peer: &Peer) {
    let fail = format!("AUTH-FAIL XOAUTH2 {USER}");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let ev = peer.events();
            ev.windows(2)
                .filter(|w| w[0] == fail && w[1] == "QUIT")
                .count()
                == 2
        }),
        "{:?}",
        peer.events()
    );
    let events = peer.events();
    assert_eq!(events.iter().filter(|e| *e == "TLS-OK").count(), 2);
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("AUTH-OK") || e == "MAIL"),
        "{events:?}"
    );
}
