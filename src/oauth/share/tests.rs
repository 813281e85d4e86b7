use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::TokenKind;

const TOKEN: &str = "ya29.shared-token-xyz";
const PASSWORD: &str = "s3cret-pw";

fn source(name: &str, path: std::path::PathBuf, account: &str) -> TokenSource {
    TokenSource {
        name: name.into(),
        kind: TokenKind::File(path),
        timeout: Duration::from_secs(5),
        share_as: vec![account.into()],
    }
}

/// A `file` source shared as app@example.com, and one whose file is missing
/// (a dead source) shared as gone@example.com.
fn setup() -> (
    tempfile::TempDir,
    Arc<Tokens>,
    BTreeMap<String, TokenSource>,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut sources = BTreeMap::new();
    sources.insert("app".into(), source("app", file, "app@example.com"));
    sources.insert(
        "gone".into(),
        source("gone", dir.path().join("missing"), "gone@example.com"),
    );
    let http =
        crate::oauth::tokens::http_client(crate::upstream::tls::client_config(None).unwrap(), None)
            .unwrap();
    let tokens = Arc::new(Tokens::new(&sources, http));
    (dir, tokens, sources)
}

#[test]
fn source_for_matches_whole_address_ignoring_case() {
    let (_dir, _tokens, sources) = setup();
    assert_eq!(
        source_for(&sources, "App@Example.COM").map(|s| s.name.as_str()),
        Some("app")
    );
    assert!(source_for(&sources, "app@example.co").is_none());
    assert!(source_for(&sources, "pp@example.com").is_none());
    assert!(source_for(&sources, "").is_none());
}

#[test]
fn request_lines() {
    assert_eq!(parse_request(b"SMTP a@b\r"), Ok("a@b"));
    assert_eq!(parse_request(b"smtp  a@b "), Ok("a@b"));
    assert_eq!(parse_request(b"IMAP a@b"), Err("only SMTP is supported"));
    assert_eq!(parse_request(b"SMTP,x=1 a@b"), Ok("a@b"));
    assert!(parse_request(b"SMTP").is_err());
    assert!(parse_request(b"SMTP a@b c").is_err());
    assert!(parse_request(b"SMTP a\x01b").is_err());
    assert!(parse_request(b"SMTP \xff").is_err());
}

async fn start_socket() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, tokens, sources) = setup();
    let path = dir.path().join("sub/share.sock");
    let listener = crate::control::server::bind_socket(&path, 0o660, None).unwrap();
    tokio::spawn(serve_socket(listener, tokens, sources));
    (dir, path)
}

async fn ask(path: &std::path::Path, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    // The server closes with our excess unread: Linux then reports ECONNRESET
    // after the reply, which is not what is under test.
    let _ = s.read_to_end(&mut reply).await;
    reply
}

#[tokio::test]
async fn socket_hands_out_the_xoauth2_string() {
    let (_dir, path) = start_socket().await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    // cloud_mdir_sync's answer: the XOAUTH2 string and not a byte more.
    let want = format!("user=app@example.com\x01auth=Bearer {TOKEN}\x01\x01");
    assert_eq!(
        ask(&path, b"SMTP app@example.com\r\n").await,
        want.as_bytes()
    );
    assert_eq!(ask(&path, b"SMTP app@example.com\n").await, want.as_bytes());
    // cms-oauth's request: no newline, then a half-close.
    assert_eq!(
        ask_eof(&path, b"SMTP app@example.com").await,
        want.as_bytes()
    );
    // The account is echoed as asked; the protocol word is case-insensitive.
    let want = format!("user=APP@example.com\x01auth=Bearer {TOKEN}\x01\x01");
    assert_eq!(ask(&path, b"smtp APP@example.com\n").await, want.as_bytes());
}

async fn ask_eof(path: &std::path::Path, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    reply
}

#[tokio::test]
async fn socket_refusals_are_an_empty_answer() {
    let (_dir, path) = start_socket().await;
    let cases: Vec<Vec<u8>> = vec![
        b"SMTP nobody@example.com\n".to_vec(),
        b"IMAP app@example.com\n".to_vec(),
        b"SMTP gone@example.com\n".to_vec(),
        b"garbage\n".to_vec(),
        [b"SMTP ".to_vec(), vec![b'a'; 2000], b"\n".to_vec()].concat(),
    ];
    // As cloud_mdir_sync does: the connection closes with nothing said.
    for request in cases {
        assert_eq!(ask(&path, &request).await, b"", "{request:?}");
    }
    assert_eq!(ask(&path, &[b'x'; 5000]).await, b"");
    // The same server still answers a good request after all of them.
    let reply = ask(&path, b"SMTP app@example.com\n").await;
    assert!(reply.ends_with(b"\x01\x01"), "{reply:?}");
}

async fn start_http() -> (tempfile::TempDir, String) {
    let (dir, tokens, sources) = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(serve_http(listener, tokens, sources, Secret::new(PASSWORD)));
    (dir, base)
}

#[tokio::test]
async fn http_success_with_basic_auth() {
    let (_dir, base) = start_http().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(format!("{base}?account=app%40example.com&proto=smtp"))
        .basic_auth("whoever", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"user": "app@example.com", "accessToken": TOKEN})
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // a table of refused requests and their statuses
async fn http_refusals_never_carry_the_token() {
    let (_dir, base) = start_http().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = "?account=app@example.com&proto=smtp";
    let cases = [
        (client.get(format!("{base}{ok}")), 401),
        (
            client
                .get(format!("{base}{ok}"))
                .basic_auth("x", Some("wrong")),
            401,
        ),
        (
            client
                .get(format!("{base}{ok}"))
                .basic_auth("x", Some(&PASSWORD[..4])),
            401,
        ),
        (client.get(format!("{base}{ok}")).bearer_auth(PASSWORD), 401),
        (
            client
                .get(format!("{base}?account=nobody@example.com&proto=smtp"))
                .basic_auth("x", Some(PASSWORD)),
            404,
        ),
        (
            client
                .get(format!("{base}?account=app@example.com&proto=imap"))
                .basic_auth("x", Some(PASSWORD)),
            400,
        ),
        (
            client
                .get(format!("{base}?proto=smtp"))
                .basic_auth("x", Some(PASSWORD)),
            400,
        ),
        (
            client
                .post(format!("{base}{ok}"))
                .basic_auth("x", Some(PASSWORD)),
            405,
        ),
        (
            client
                .get(format!("{base}?account=gone@example.com"))
                .basic_auth("x", Some(PASSWORD)),
            502,
        ),
    ];
    for (request, status) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        if status == 401 {
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Basic realm=\"smarthost\""
            );
        }
        let body = resp.text().await.unwrap();
        assert!(!body.contains(TOKEN), "{status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string(), "{body}");
    }
}
