//! `[oauth] proxy`: a corporate network that reaches the token endpoint only
//! through an HTTP proxy. The relay's refresh goes through the proxy (an
//! absolute-form request, basic auth from `proxy_credentials_file`), the
//! mail is delivered with the token it got, and the proxy's password never
//! reaches the log. The proxy is a small forwarding one in this test.

mod common;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Relay;
use oauth_peers::{assert_no_secrets, oauth2_source, write_state, Endpoint};
use scripted::ScriptedServer;

const USER: &str = "app@contoso.test";
const PROXY_PASSWORD: &str = "proxy-pass-5e1d";

/// The request heads the proxy forwarded.
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP proxy for plain-http absolute-form requests: it records the
/// head, rewrites the request line to origin form and relays both ways.
fn start_proxy() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || forward(client, &record));
        }
    });
    (port, seen)
}

fn forward(mut client: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    seen.lock().unwrap().push(text.clone());
    let first = text.lines().next().unwrap_or_default();
    let mut words = first.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let Some(rest) = target.strip_prefix("http://") else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut server) = TcpStream::connect(authority) else {
        return;
    };
    let head_end = text.find("\r\n").unwrap_or(0);
    let rewritten = format!("{method} {path} HTTP/1.1{}", &text[head_end..]);
    let _ = server.write_all(rewritten.as_bytes());
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
    let _ = std::io::copy(&mut server, &mut client);
}

#[test]
fn oauth_token_endpoint_through_a_proxy() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-proxy-1");
    let up = ScriptedServer::start(ep.smtp_script());
    let (proxy, seen) = start_proxy();
    let token_url = ep.url("/token");
    let body = format!(
        "{source}[[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nallow_plaintext = true\nauth = \"xoauth2\"\nusername = \"{USER}\"\ntoken_source = \"o365\"\n[routing]\ndefault = \"up\"\n[oauth]\nproxy = \"http://127.0.0.1:{proxy}\"\nproxy_credentials_file = \"{{dir}}/proxy.cred\"\n",
        source = oauth2_source(&token_url, std::path::Path::new("{dir}/o365.json")),
        port = up.port(),
    );
    let relay = Relay::start_with(&body, &[], |dir| {
        write_state(&dir.join("o365.json"), "rt-proxy-1");
        let cred = dir.join("proxy.cred");
        std::fs::write(&cred, format!("proxyuser:{PROXY_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    let message = format!("From: <{USER}>\r\nSubject: via proxy\r\n\r\nhi\r\n");
    relay
        .send(USER, &["rcpt@dst.test"], message.as_bytes())
        .expect("queued");
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let heads = seen.lock().unwrap().clone();
    let refresh = heads
        .iter()
        .find(|h| h.starts_with(&format!("POST {token_url} HTTP/1.1")))
        .unwrap_or_else(|| panic!("no token request through the proxy: {heads:?}"));
    use base64::Engine;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("proxyuser:{PROXY_PASSWORD}"));
    assert!(
        refresh.to_ascii_lowercase().contains(&format!(
            "proxy-authorization: basic {}",
            auth.to_ascii_lowercase()
        )),
        "{refresh}"
    );
    assert_eq!(ep.requests().len(), 1, "the endpoint saw the refresh");
    let mut secrets = ep.secrets();
    secrets.push(PROXY_PASSWORD.to_string());
    assert_no_secrets(&relay.log(), &secrets, "relay log");
}
