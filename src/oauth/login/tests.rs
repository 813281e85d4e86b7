//! The two login flows against an in-process authorization server that
//! follows RFC 8628 (device grant) and RFC 7636 (PKCE): it checks what the
//! client sends and answers the way real servers do, errors included.

use super::*;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant as StdInstant;

use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const CLIENT_ID: &str = "smarthost-test";
const CLIENT_SECRET: &str = "cs-SECRET-1f9a";
const ACCESS: &str = "at-SECRET-77c1";
const REFRESH: &str = "rt-SECRET-3b2e";
const DEVICE_CODE: &str = "dc-SECRET-GmRhmhcxhwAzkoEqiMEg";
const USER_CODE: &str = "WDJB-MJHT";
const AUTH_CODE: &str = "ac-SECRET-SplxlOBeZQQYbYS6WxSbIA";
const SCOPES: &str = "mail offline_access";

/// How the server's user behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    /// Device: pending, pending, slow_down, then tokens.
    Approve,
    /// Device: tokens at once, but without a refresh token.
    ApproveNoRefresh,
    /// Device: pending, then access_denied.
    Deny,
    /// Device: pending forever.
    NeverApproved,
    /// Device: pending, then expired_token.
    ExpiredToken,
    /// Browser: redirect with a code.
    BrowserApprove,
    /// Browser: redirect with error=access_denied.
    BrowserDeny,
}

struct Auth {
    script: Script,
    /// Client authentication by HTTP Basic (generic) or form fields.
    basic: bool,
    device_expires_in: u64,
    polls: Vec<StdInstant>,
    /// The challenge and redirect_uri of the code handed out.
    issued: Option<(String, String)>,
    verifier_seen: Option<String>,
    /// The scope of the last authorization request.
    scope_seen: Option<String>,
    exchanged: u32,
    /// What the client did against the RFCs; must stay empty.
    problems: Vec<String>,
}

struct Req {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    form: HashMap<String, String>,
}

struct Reply {
    status: u16,
    body: String,
    location: Option<String>,
}

fn pairs(s: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(s).into_owned().collect()
}

fn json(status: u16, v: serde_json::Value) -> Reply {
    Reply {
        status,
        body: v.to_string(),
        location: None,
    }
}

fn oauth_error(status: u16, error: &str) -> Reply {
    json(status, serde_json::json!({ "error": error }))
}

fn id_token() -> String {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.sig",
        part(serde_json::json!({"alg": "RS256"})),
        part(serde_json::json!({"sub": "1", "email": "alice@example.com"}))
    )
}

fn tokens(with_refresh: bool) -> Reply {
    let mut v = serde_json::json!({
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": SCOPES,
        "id_token": id_token(),
    });
    if with_refresh {
        v["refresh_token"] = REFRESH.into();
    }
    json(200, v)
}

/// The server side of PKCE, computed here rather than with the code under test.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

impl Auth {
    fn client_auth(&mut self, req: &Req) -> Option<Reply> {
        let ok = if self.basic {
            let want = format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            req.headers.get("authorization") == Some(&want)
                && !req.form.contains_key("client_secret")
        } else {
            req.form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && req.form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        };
        if ok {
            None
        } else {
            self.problems
                .push(format!("bad client authentication on {}", req.path));
            Some(oauth_error(401, "invalid_client"))
        }
    }

    fn route(&mut self, req: &Req, base: &str) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/device") => {
                if let Some(r) = self.client_auth(req) {
                    return r;
                }
                if req.form.get("scope").map(String::as_str) != Some(SCOPES) {
                    self.problems
                        .push(format!("device scope {:?}", req.form.get("scope")));
                    return oauth_error(400, "invalid_scope");
                }
                json(
                    200,
                    serde_json::json!({
                        "device_code": DEVICE_CODE,
                        "user_code": USER_CODE,
                        "verification_uri": format!("{base}/device"),
                        "verification_uri_complete": format!("{base}/device?user_code={USER_CODE}"),
                        "expires_in": self.device_expires_in,
                        "interval": 1,
                    }),
                )
            }
            ("POST", "/token") => {
                if let Some(r) = self.client_auth(req) {
                    return r;
                }
                match req.form.get("grant_type").map(String::as_str) {
                    Some(DEVICE_GRANT) => self.device_token(req),
                    Some("authorization_code") => self.code_token(req),
                    other => {
                        self.problems.push(format!("grant_type {other:?}"));
                        oauth_error(400, "unsupported_grant_type")
                    }
                }
            }
            ("GET", "/authorize") => self.authorize(req),
            _ => Reply {
                status: 404,
                body: String::new(),
                location: None,
            },
        }
    }

    fn device_token(&mut self, req: &Req) -> Reply {
        if req.form.get("device_code").map(String::as_str) != Some(DEVICE_CODE) {
            self.problems.push("wrong device_code".into());
            return oauth_error(400, "invalid_grant");
        }
        self.polls.push(StdInstant::now());
        let n = self.polls.len();
        match (self.script, n) {
            (Script::Approve, 1 | 2) => oauth_error(400, "authorization_pending"),
            (Script::Approve, 3) => oauth_error(400, "slow_down"),
            (Script::Approve, _) => tokens(true),
            (Script::ApproveNoRefresh, _) => tokens(false),
            (Script::Deny, 1) => oauth_error(400, "authorization_pending"),
            (Script::Deny, _) => oauth_error(400, "access_denied"),
            (Script::NeverApproved, _) => oauth_error(400, "authorization_pending"),
            (Script::ExpiredToken, 1) => oauth_error(400, "authorization_pending"),
            (Script::ExpiredToken, _) => oauth_error(400, "expired_token"),
            (s, _) => {
                self.problems.push(format!("device poll in script {s:?}"));
                oauth_error(400, "unauthorized_client")
            }
        }
    }

    /// RFC 7636 4.6: the verifier must hash to the challenge the code was
    /// issued for, and RFC 6749 4.1.3: the redirect_uri must be the same.
    fn code_token(&mut self, req: &Req) -> Reply {
        let Some((challenge, redirect)) = self.issued.clone() else {
            self.problems
                .push("code exchanged before it was issued".into());
            return oauth_error(400, "invalid_grant");
        };
        let verifier = req.form.get("code_verifier").cloned().unwrap_or_default();
        self.verifier_seen = Some(verifier.clone());
        let ok = req.form.get("code").map(String::as_str) == Some(AUTH_CODE)
            && req.form.get("redirect_uri") == Some(&redirect)
            && (43..=128).contains(&verifier.len())
            && s256(&verifier) == challenge
            && self.exchanged == 0;
        if !ok {
            self.problems.push("code exchange refused".into());
            return oauth_error(400, "invalid_grant");
        }
        self.exchanged += 1;
        tokens(true)
    }

    fn authorize(&mut self, req: &Req) -> Reply {
        let q = &req.query;
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        // The configured scopes, then the provider's identity scopes.
        let scope = get("scope");
        self.scope_seen = Some(scope.to_string());
        let identity = scope.strip_prefix(SCOPES).unwrap_or("?");
        if !identity
            .split_whitespace()
            .all(|s| ["openid", "email", "profile"].contains(&s))
        {
            self.problems.push(format!("authorize scope={scope:?}"));
        }
        for (k, want) in [
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("code_challenge_method", "S256"),
            ("access_type", "offline"),
            ("prompt", "consent"),
        ] {
            if get(k) != want {
                self.problems.push(format!("authorize {k}={:?}", get(k)));
            }
        }
        let redirect = get("redirect_uri").to_string();
        if !redirect.starts_with("http://127.0.0.1:") || !redirect.ends_with('/') {
            self.problems.push(format!("redirect_uri {redirect}"));
        }
        if get("code_challenge").len() != 43 || get("state").is_empty() {
            self.problems.push("challenge or state".into());
        }
        if q.contains_key("client_secret") {
            self.problems
                .push("client secret in the authorization URL".into());
        }
        self.issued = Some((get("code_challenge").to_string(), redirect.clone()));
        let answer: Vec<(&str, &str)> = match self.script {
            Script::BrowserDeny => vec![
                ("error", "access_denied"),
                ("error_description", "The user said no"),
                ("state", get("state")),
            ],
            _ => vec![("code", AUTH_CODE), ("state", get("state"))],
        };
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(answer)
            .finish();
        Reply {
            status: 302,
            body: String::new(),
            location: Some(format!("{redirect}?{query}")),
        }
    }
}

struct Server {
    base: String,
    auth: Arc<Mutex<Auth>>,
}

impl Server {
    async fn start(script: Script, basic: bool, device_expires_in: u64) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let auth = Arc::new(Mutex::new(Auth {
            script,
            basic,
            device_expires_in,
            polls: Vec::new(),
            issued: None,
            verifier_seen: None,
            scope_seen: None,
            exchanged: 0,
            problems: Vec::new(),
        }));
        let (a, b) = (auth.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (a, b) = (a.clone(), b.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, &a, &b).await;
                });
            }
        });
        Server { base, auth }
    }

    fn source(&self, provider: Provider, device: bool, state_file: &Path) -> TokenSource {
        TokenSource {
            name: "test".into(),
            kind: TokenKind::OAuth2(OAuth2Source {
                provider,
                client_id: CLIENT_ID.into(),
                client_secret: Some(Secret::new(CLIENT_SECRET)),
                client_secret_file: None,
                grant: Grant::RefreshToken,
                scopes: vec!["mail".into(), "offline_access".into()],
                token_url: format!("{}/token", self.base),
                device_url: device.then(|| format!("{}/device", self.base)),
                authorize_url: Some(format!("{}/authorize", self.base)),
                state_file: state_file.to_path_buf(),
                refresh_before: Duration::from_secs(300),
                keepalive: Duration::from_secs(86400),
            }),
            timeout: Duration::from_secs(10),
            share_as: Vec::new(),
        }
    }

    fn problems(&self) -> Vec<String> {
        self.auth.lock().unwrap().problems.clone()
    }
}

/// Just enough HTTP/1.1: one request per connection, Content-Length bodies.
async fn handle(
    stream: tokio::net::TcpStream,
    auth: &Mutex<Auth>,
    base: &str,
) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let req = Req {
        method,
        path: path.to_string(),
        query: pairs(query.as_bytes()),
        headers,
        form: pairs(&body),
    };
    let reply = auth.lock().unwrap().route(&req, base);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    if let Some(l) = &reply.location {
        head.push_str(&format!("Location: {l}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = r.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(reply.body.as_bytes()).await?;
    stream.shutdown().await
}

fn tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

fn http() -> reqwest::Client {
    crate::oauth::tokens::http_client(tls(), None).unwrap()
}

/// Plays the browser: follows the authorization server's redirect.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls())
        .build()
        .unwrap()
}

fn assert_no_secrets(what: &str, text: &str, extra: &[&str]) {
    for s in [CLIENT_SECRET, ACCESS, REFRESH, DEVICE_CODE, AUTH_CODE]
        .iter()
        .chain(extra)
    {
        assert!(!text.contains(s), "{what} shows a secret {s:?}: {text}");
    }
}

fn assert_saved(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let st = state::load(path).unwrap().unwrap();
    assert_eq!(st.refresh_token().unwrap().expose(), REFRESH);
    assert_eq!(st.access_token().unwrap().expose(), ACCESS);
    let now = crate::clock::unix_now();
    let exp = st.expires_at.unwrap();
    assert!(exp > now + 3500 && exp <= now + 3600, "{exp} vs {now}");
    assert!(st.obtained_at.is_some() && st.refreshed_at.is_some());
    assert_eq!(st.scope.as_deref(), Some(SCOPES));
    assert_eq!(st.account.as_deref(), Some("alice@example.com"));
}

async fn device_login(
    script: Script,
    expires_in: u64,
) -> (
    Server,
    tempfile::TempDir,
    Result<Option<String>, LoginError>,
    String,
) {
    let server = Server::start(script, true, expires_in).await;
    let dir = tempfile::tempdir().unwrap();
    let source = server.source(Provider::Generic, true, &dir.path().join("test.json"));
    let mut out = Vec::new();
    // As on a terminal: the countdown redraws itself.
    let opts = Options {
        live_countdown: true,
        ..Options::default()
    };
    let r = login(&http(), &source, &opts, &mut out).await;
    (server, dir, r, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn device_flow_polls_as_rfc8628_says() {
    let (server, dir, r, out) = device_login(Script::Approve, 600).await;
    assert_eq!(r.unwrap().as_deref(), Some("alice@example.com"));
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let polls = server.auth.lock().unwrap().polls.clone();
    assert_eq!(polls.len(), 4);
    let gap = |i: usize| polls[i + 1] - polls[i];
    assert!(gap(0) >= Duration::from_millis(950), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(950), "{:?}", gap(1));
    // slow_down: interval + 5 s from then on (RFC 8628 3.5).
    assert!(gap(2) >= Duration::from_millis(5950), "{:?}", gap(2));

    assert!(out.contains(&format!("{}/device", server.base)), "{out}");
    assert!(out.contains(USER_CODE), "{out}");
    assert!(
        out.contains(&format!("device?user_code={USER_CODE}")),
        "{out}"
    );
    assert!(out.contains("\rwaiting for sign-in... "), "{out}");
    assert!(out.contains(" left"), "{out}");
    assert!(out.ends_with('\n'));
    assert_no_secrets("output", &out, &[]);
    assert_saved(&dir.path().join("test.json"));
}

#[tokio::test]
async fn device_flow_declined_or_expired_by_server() {
    let (server, dir, r, out) = device_login(Script::Deny, 600).await;
    let e = r.unwrap_err();
    assert!(matches!(e, LoginError::Declined), "{e:?}");
    assert_eq!(e.to_string(), "the sign-in was declined");
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    assert!(!dir.path().join("test.json").exists());
    assert_no_secrets("output", &out, &[]);

    let (_, dir, r, _) = device_login(Script::ExpiredToken, 600).await;
    let e = r.unwrap_err();
    assert_eq!(e.to_string(), "the code expired, run again");
    assert!(!dir.path().join("test.json").exists());
}

#[tokio::test]
async fn device_flow_gives_up_when_the_code_expires() {
    let started = StdInstant::now();
    let (server, dir, r, out) = device_login(Script::NeverApproved, 2).await;
    let e = r.unwrap_err();
    assert!(matches!(e, LoginError::Expired), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!server.auth.lock().unwrap().polls.is_empty());
    assert!(!dir.path().join("test.json").exists());
    assert!(
        out.contains("0:02 left") || out.contains("0:01 left"),
        "{out}"
    );
    assert!(out.ends_with('\n'));
}

#[tokio::test]
async fn device_flow_needs_a_refresh_token() {
    let (_, dir, r, _) = device_login(Script::ApproveNoRefresh, 600).await;
    let e = r.unwrap_err();
    assert!(matches!(e, LoginError::NoRefreshToken), "{e:?}");
    assert!(e.to_string().contains("offline_access"));
    assert_no_secrets("error", &e.to_string(), &[]);
    assert!(!dir.path().join("test.json").exists());
}

/// A writer the test can read while `login` runs.
struct ChanWriter(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct BrowserLogin {
    task: JoinHandle<Result<Option<String>, LoginError>>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    printed: String,
    url: url::Url,
}

/// Starts a browser login and reads the authorization URL it prints.
async fn start_browser_login(source: TokenSource, opts: Options) -> BrowserLogin {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut w = ChanWriter(tx);
        login(&http(), &source, &opts, &mut w).await
    });
    let mut printed = String::new();
    // The countdown starts once the instructions are complete.
    while !printed.contains("waiting for sign-in") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .expect("login ended before showing the URL");
        printed.push_str(&String::from_utf8_lossy(&chunk));
    }
    let url = printed
        .split_whitespace()
        .find(|w| w.contains("/authorize?"))
        .map(|u| url::Url::parse(u).unwrap())
        .expect("no authorization URL printed");
    BrowserLogin {
        task,
        rx,
        printed,
        url,
    }
}

impl BrowserLogin {
    fn param(&self, k: &str) -> String {
        self.url
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    async fn finish(mut self) -> (Result<Option<String>, LoginError>, String) {
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap();
        while let Some(c) = self.rx.recv().await {
            self.printed.push_str(&String::from_utf8_lossy(&c));
        }
        (r, self.printed)
    }
}

#[tokio::test]
async fn browser_flow_with_pkce_on_loopback() {
    let server = Server::start(Script::BrowserApprove, false, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("test.json");
    let source = server.source(Provider::Google, false, &state_file);
    let flow = start_browser_login(source, Options::default()).await;
    let redirect = flow.param("redirect_uri");
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let b = browser();

    // Not ours: refused, and the login keeps waiting.
    let r = b
        .get(format!("{redirect}?code=stolen&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state mismatch"));
    let r = b
        .get(format!("{redirect}favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!flow.task.is_finished());

    // The user signs in: the server redirects the browser back with a code.
    let r = b.get(flow.url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("smarthost: signed in, you can close this tab"));

    let (r, out) = flow.finish().await;
    assert_eq!(r.unwrap().as_deref(), Some("alice@example.com"));
    let auth = server.auth.lock().unwrap();
    assert!(auth.problems.is_empty(), "{:?}", auth.problems);
    assert_eq!(auth.exchanged, 1);
    let verifier = auth.verifier_seen.clone().unwrap();
    // Google: the mail scope and the identity scopes its id_token needs.
    assert_eq!(
        auth.scope_seen.as_deref(),
        Some("mail offline_access openid email")
    );
    drop(auth);
    assert!(
        out.contains("waiting for sign-in... ") && out.ends_with('\n'),
        "{out}"
    );
    // Not a terminal (the default): one plain line, no `\r` for a log.
    assert!(!out.contains('\r'), "{out:?}");
    assert_eq!(out.matches("waiting for sign-in").count(), 1, "{out}");
    assert_no_secrets("output", &out, &[&verifier]);
    assert_saved(&state_file);
}

#[tokio::test]
async fn browser_flow_fails_on_a_provider_error() {
    let server = Server::start(Script::BrowserDeny, false, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("test.json");
    let source = server.source(Provider::Google, false, &state_file);
    let flow = start_browser_login(source, Options::default()).await;
    let r = browser().get(flow.url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
    let (r, out) = flow.finish().await;
    let e = r.unwrap_err();
    assert!(matches!(e, LoginError::Authorization(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the sign-in failed: access_denied: The user said no"
    );
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    assert_no_secrets("output", &out, &[]);
    assert!(!state_file.exists());
}

#[tokio::test]
async fn browser_flow_stops_waiting_and_reports_a_busy_port() {
    let server = Server::start(Script::BrowserApprove, false, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let source = server.source(Provider::Google, false, &dir.path().join("test.json"));
    let opts = Options {
        wait: Some(Duration::from_secs(1)),
        ..Options::default()
    };
    let mut out = Vec::new();
    let e = login(&http(), &source, &opts, &mut out).await.unwrap_err();
    assert_eq!(e.to_string(), "no sign-in within 1s; run again");

    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = Options {
        port: busy.local_addr().unwrap().port(),
        ..Options::default()
    };
    let e = login(&http(), &source, &opts, &mut out).await.unwrap_err();
    assert!(matches!(e, LoginError::Listener { .. }), "{e:?}");
}

#[tokio::test]
async fn refuses_sources_without_a_login() {
    let server = Server::start(Script::Approve, true, 600).await;
    let dir = tempfile::tempdir().unwrap();
    let mut source = server.source(Provider::Generic, false, &dir.path().join("t.json"));
    let mut out = Vec::new();
    let opts = Options {
        flow: Some(Flow::Device),
        ..Options::default()
    };
    let e = login(&http(), &source, &opts, &mut out).await.unwrap_err();
    assert!(e.to_string().contains("needs device_url"), "{e}");

    if let TokenKind::OAuth2(o) = &mut source.kind {
        o.authorize_url = None;
    }
    let e = login(&http(), &source, &Options::default(), &mut out)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("device_url") && e.to_string().contains("authorize_url"),
        "{e}"
    );

    if let TokenKind::OAuth2(o) = &mut source.kind {
        o.grant = Grant::ClientCredentials;
    }
    let e = login(&http(), &source, &Options::default(), &mut out)
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::ClientCredentials(_)), "{e:?}");

    source.kind = TokenKind::File(dir.path().join("token"));
    let e = login(&http(), &source, &Options::default(), &mut out)
        .await
        .unwrap_err();
    assert!(matches!(e, LoginError::NotOAuth2(_)), "{e:?}");
    assert!(out.is_empty());
}

#[test]
fn flow_choice() {
    let server_less = |device: bool, authorize: bool| OAuth2Source {
        provider: Provider::Generic,
        client_id: "c".into(),
        client_secret: None,
        client_secret_file: None,
        grant: Grant::RefreshToken,
        scopes: vec![],
        token_url: "https://t/".into(),
        device_url: device.then(|| "https://d/".into()),
        authorize_url: authorize.then(|| "https://a/".into()),
        state_file: "s".into(),
        refresh_before: Duration::ZERO,
        keepalive: Duration::ZERO,
    };
    let both = server_less(true, true);
    assert_eq!(choose_flow("x", &both, None).unwrap(), Flow::Device);
    assert_eq!(
        choose_flow("x", &both, Some(Flow::Browser)).unwrap(),
        Flow::Browser
    );
    assert_eq!(
        choose_flow("x", &server_less(false, true), None).unwrap(),
        Flow::Browser
    );
    assert!(choose_flow("x", &server_less(true, false), Some(Flow::Browser)).is_err());
}

#[test]
fn rfc7636_appendix_b() {
    let octets: [u8; 32] = [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37,
        77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
    ];
    let verifier = URL_SAFE_NO_PAD.encode(octets);
    assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    assert_eq!(
        challenge_for(&verifier),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn pkce_pairs_are_fresh_and_well_formed() {
    let (v1, c1) = pkce_pair().unwrap();
    let (v2, _) = pkce_pair().unwrap();
    assert_eq!(v1.len(), 43);
    assert!(v1
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(c1, challenge_for(&v1));
    assert_eq!(c1.len(), 43);
    assert_ne!(v1, v2);
}

#[test]
fn authorization_urls() {
    let mut src = OAuth2Source {
        provider: Provider::Google,
        client_id: "id 1".into(),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        client_secret_file: None,
        grant: Grant::RefreshToken,
        scopes: vec!["https://mail.google.com/".into(), "openid".into()],
        token_url: "https://t/".into(),
        device_url: None,
        authorize_url: Some("https://accounts.example/auth?hd=example.com".into()),
        state_file: "s".into(),
        refresh_before: Duration::ZERO,
        keepalive: Duration::ZERO,
    };
    let u = url::Url::parse(&authorization_url(&src, "http://127.0.0.1:5/", "st", "ch")).unwrap();
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(q["hd"], "example.com");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "id 1");
    assert_eq!(q["redirect_uri"], "http://127.0.0.1:5/");
    assert_eq!(q["scope"], "https://mail.google.com/ openid email");
    assert_eq!(q["state"], "st");
    assert_eq!(q["code_challenge"], "ch");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert!(!u.as_str().contains(CLIENT_SECRET));

    src.provider = Provider::Microsoft;
    let u = authorization_url(&src, "http://localhost:5/", "st", "ch");
    assert!(!u.contains("access_type") && !u.contains("prompt"), "{u}");
    assert_eq!(redirect_uri(Provider::Microsoft, 5), "http://localhost:5/");
    assert_eq!(redirect_uri(Provider::Google, 5), "http://127.0.0.1:5/");
}

#[test]
fn device_answers() {
    let d = parse_device(
        200,
        br#"{"device_code":"d","user_code":"AB\u001b[2JCD","verification_url":"https://g.co/device","expires_in":"1800"}"#,
    )
    .unwrap();
    assert_eq!(d.verification_uri, "https://g.co/device");
    assert_eq!(d.user_code, "AB [2JCD");
    assert_eq!((d.expires_in, d.interval), (1800, 5));
    assert!(d.verification_uri_complete.is_none());

    let e = parse_device(
        400,
        br#"{"error":"invalid_client","error_description":"no"}"#,
    )
    .err()
    .unwrap();
    assert_eq!(e.to_string(), "invalid_client: no");
    let e = parse_device(200, br#"{"user_code":"x","device_code":"dc-zzz"}"#)
        .err()
        .unwrap();
    assert!(!e.to_string().contains("zzz"), "{e}");
    assert!(parse_device(502, b"<html>").is_err());
}

#[test]
fn id_token_account() {
    assert_eq!(
        account_from_id_token(&id_token()).as_deref(),
        Some("alice@example.com")
    );
    let ms = format!(
        "x.{}.y",
        URL_SAFE_NO_PAD.encode(r#"{"preferred_username":"bob@contoso.com"}"#)
    );
    assert_eq!(
        account_from_id_token(&ms).as_deref(),
        Some("bob@contoso.com")
    );
    assert_eq!(account_from_id_token("not a jwt"), None);
    assert_eq!(account_from_id_token("a.!!!.c"), None);
}

#[test]
fn countdown_text() {
    assert_eq!(show_left(Duration::from_secs(872)), "14:32");
    assert_eq!(show_left(Duration::from_millis(59_001)), "1:00");
    assert_eq!(show_left(Duration::from_secs(3723)), "1:02:03");
    assert_eq!(show_left(Duration::ZERO), "0:00");
}
