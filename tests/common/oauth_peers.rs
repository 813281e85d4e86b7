//! In-process OAuth2 peers for the token tests: a token endpoint (RFC 6749
//! refresh-token and client-credentials grants, plus the authentication-server
//! GET of the `http` token source) and an SMTP script that accepts XOAUTH2 only
//! with a token the endpoint issued and has not revoked.
//!
//! The endpoint is plain HTTP/1.1 on 127.0.0.1:0, one thread per connection,
//! and stops when dropped. Include it with
//! `#[path = "common/oauth_peers.rs"] mod oauth_peers;`.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// 503 to every token request.
    Down,
    /// `invalid_grant` to every refresh.
    InvalidGrant,
}

#[derive(Default)]
pub struct Issued {
    /// Refresh tokens the endpoint accepts.
    pub refresh_tokens: HashSet<String>,
    /// Access tokens the SMTP side accepts.
    pub access_tokens: HashSet<String>,
    /// Every token request: (grant_type, refresh_token used).
    pub requests: Vec<(String, Option<String>)>,
    pub serial: usize,
    /// Every XOAUTH2 attempt the SMTP side saw: (user, token, accepted).
    pub auths: Vec<(String, String, bool)>,
}

pub struct Endpoint {
    pub issued: Arc<Mutex<Issued>>,
    mode: Arc<Mutex<Mode>>,
    /// Rotate the refresh token on every refresh.
    pub rotate: Arc<AtomicBool>,
    pub expires_in: Arc<Mutex<u64>>,
    /// Client credentials for the client-credentials grant and the basic auth
    /// of the authentication-server GET.
    pub client: (String, String),
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    pub fn start() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind endpoint");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let ep = Endpoint {
            issued: Arc::new(Mutex::new(Issued::default())),
            mode: Arc::new(Mutex::new(Mode::Normal)),
            rotate: Arc::new(AtomicBool::new(false)),
            expires_in: Arc::new(Mutex::new(3600)),
            client: ("client-1".into(), "client-secret-XYZ".into()),
            addr,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (issued, mode, rotate, expires, stop, client) = (
            ep.issued.clone(),
            ep.mode.clone(),
            ep.rotate.clone(),
            ep.expires_in.clone(),
            ep.stop.clone(),
            ep.client.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (i, m, r, e, c) = (
                            issued.clone(),
                            mode.clone(),
                            rotate.clone(),
                            expires.clone(),
                            client.clone(),
                        );
                        std::thread::spawn(move || {
                            let _ = serve(s, &i, &m, &r, &e, &c);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ep
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn add_refresh_token(&self, rt: &str) {
        self.issued.lock().unwrap().refresh_tokens.insert(rt.into());
    }

    /// Makes the SMTP side accept a token from elsewhere (a command, a file).
    pub fn accept_token(&self, t: &str) {
        self.issued.lock().unwrap().access_tokens.insert(t.into());
    }

    /// Revokes every access token issued so far (the SMTP side refuses them).
    pub fn revoke_access_tokens(&self) {
        self.issued.lock().unwrap().access_tokens.clear();
    }

    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.issued.lock().unwrap().requests.clone()
    }

    pub fn auths(&self) -> Vec<(String, String, bool)> {
        self.issued.lock().unwrap().auths.clone()
    }

    /// Every token and secret this endpoint handed out or accepted, for the
    /// no-secret-in-logs checks.
    pub fn secrets(&self) -> Vec<String> {
        let i = self.issued.lock().unwrap();
        let mut v: Vec<String> = i
            .refresh_tokens
            .iter()
            .chain(i.access_tokens.iter())
            .cloned()
            .collect();
        v.extend(i.requests.iter().filter_map(|(_, rt)| rt.clone()));
        v.extend(i.auths.iter().map(|(_, t, _)| t.clone()));
        v.push(self.client.1.clone());
        v.sort();
        v.dedup();
        v
    }

    /// The SMTP script of a smarthost that takes XOAUTH2 with this endpoint's
    /// access tokens: 235, or Google's JSON error challenge and then 535.
    pub fn smtp_script(
        &self,
    ) -> impl Fn(&super::scripted::Ctx, &super::scripted::Cmd<'_>) -> super::scripted::Action
           + Send
           + Sync
           + 'static {
        use super::scripted::{reply, standard, Cmd};
        let issued = self.issued.clone();
        let challenged: Arc<Mutex<HashSet<usize>>> = Arc::default();
        move |ctx, cmd| {
            match cmd {
            Cmd::Ehlo(_) => reply(
                "250-scripted.test\r\n250-AUTH XOAUTH2 OAUTHBEARER\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES",
            ),
            Cmd::Other(line) if line.starts_with("AUTH XOAUTH2 ") => {
                let b64 = &line["AUTH XOAUTH2 ".len()..];
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).to_string();
                let user = text
                    .strip_prefix("user=")
                    .and_then(|r| r.split('\x01').next())
                    .unwrap_or("")
                    .to_string();
                let token = text
                    .split("auth=Bearer ")
                    .nth(1)
                    .and_then(|r| r.split('\x01').next())
                    .unwrap_or("")
                    .to_string();
                let mut i = issued.lock().unwrap();
                let ok = i.access_tokens.contains(&token);
                i.auths.push((user, token, ok));
                if ok {
                    reply("235 2.7.0 Accepted")
                } else {
                    challenged.lock().unwrap().insert(ctx.conn);
                    let json = r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
                    reply(&format!(
                        "334 {}",
                        base64::engine::general_purpose::STANDARD.encode(json)
                    ))
                }
            }
            Cmd::Other(line) if challenged.lock().unwrap().remove(&ctx.conn) => {
                assert!(line.is_empty(), "XOAUTH2 challenge answered with {line:?}");
                reply("535 5.7.8 Username and Password not accepted")
            }
            other => standard(other),
        }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    s: TcpStream,
    issued: &Mutex<Issued>,
    mode: &Mutex<Mode>,
    rotate: &AtomicBool,
    expires: &Mutex<u64>,
    client: &(String, String),
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let mut length = 0usize;
    let mut auth = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (status, json) = if method == "POST" && target.starts_with("/device") {
        // RFC 8628 3.2: the device authorization response.
        (
            200,
            r#"{"device_code":"dc-secret-5150","user_code":"WDJB-MJHT","verification_uri":"https://login.example/device","expires_in":60,"interval":1}"#.to_string(),
        )
    } else if method == "GET" {
        authentication_server(target, &auth, issued, client)
    } else {
        token(
            &body,
            &auth,
            issued,
            *mode.lock().unwrap(),
            rotate,
            *expires.lock().unwrap(),
            client,
        )
    };
    let mut s = s;
    write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    s.flush()
}

fn token(
    body: &[u8],
    auth: &str,
    issued: &Mutex<Issued>,
    mode: Mode,
    rotate: &AtomicBool,
    expires_in: u64,
    client: &(String, String),
) -> (u16, String) {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let rt = form.get("refresh_token").cloned();
    let mut i = issued.lock().unwrap();
    i.requests.push((grant.clone(), rt.clone()));
    if mode == Mode::Down {
        return (503, r#"{"error":"temporarily_unavailable"}"#.into());
    }
    match grant.as_str() {
        "refresh_token" => refresh_grant(&mut i, &rt.unwrap_or_default(), mode, rotate, expires_in),
        "client_credentials" => client_credentials_grant(&mut i, &form, auth, client, expires_in),
        "urn:ietf:params:oauth:grant-type:device_code" => {
            device_code_grant(&mut i, &form, &grant, expires_in)
        }
        _ => (400, r#"{"error":"unsupported_grant_type"}"#.into()),
    }
}

fn refresh_grant(
    i: &mut Issued,
    rt: &str,
    mode: Mode,
    rotate: &AtomicBool,
    expires_in: u64,
) -> (u16, String) {
    if mode == Mode::InvalidGrant || !i.refresh_tokens.contains(rt) {
        return (
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS70008: The refresh token has expired due to inactivity."}"#.into(),
        );
    }
    i.serial += 1;
    let at = format!("at-{}-{:08x}", i.serial, rand_ish(i.serial));
    i.access_tokens.insert(at.clone());
    let mut extra = String::new();
    if rotate.load(Ordering::SeqCst) {
        let new_rt = format!("rt-{}-{:08x}", i.serial, rand_ish(i.serial + 99));
        i.refresh_tokens.remove(rt);
        i.refresh_tokens.insert(new_rt.clone());
        extra = format!(r#","refresh_token":"{new_rt}""#);
    }
    (
        200,
        format!(
            r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":{expires_in}{extra}}}"#
        ),
    )
}

fn client_credentials_grant(
    i: &mut Issued,
    form: &std::collections::HashMap<String, String>,
    auth: &str,
    client: &(String, String),
    expires_in: u64,
) -> (u16, String) {
    // RFC 6749 2.3.1: HTTP Basic (what smarthost uses for generic
    // endpoints) or the form fields (Google, Microsoft).
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1))
    );
    let ok = auth == basic
        || (form.get("client_id") == Some(&client.0)
            && form.get("client_secret") == Some(&client.1));
    if !ok {
        return (401, r#"{"error":"invalid_client"}"#.into());
    }
    i.serial += 1;
    let at = format!("app-{}-{:08x}", i.serial, rand_ish(i.serial));
    i.access_tokens.insert(at.clone());
    (
        200,
        format!(r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":{expires_in}}}"#),
    )
}

fn device_code_grant(
    i: &mut Issued,
    form: &std::collections::HashMap<String, String>,
    grant: &str,
    expires_in: u64,
) -> (u16, String) {
    if form.get("device_code").map(String::as_str) != Some("dc-secret-5150") {
        return (400, r#"{"error":"invalid_grant"}"#.into());
    }
    // The user signs in between the first and the second poll.
    let polls = i.requests.iter().filter(|r| r.0 == grant).count();
    if polls < 2 {
        return (400, r#"{"error":"authorization_pending"}"#.into());
    }
    i.serial += 1;
    let at = format!("at-{}-{:08x}", i.serial, rand_ish(i.serial));
    let rt = format!("rt-dev-{:08x}", rand_ish(i.serial + 7));
    i.access_tokens.insert(at.clone());
    i.refresh_tokens.insert(rt.clone());
    (
        200,
        format!(
            r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"{rt}","scope":"SMTP.Send offline_access"}}"#
        ),
    )
}

/// EmailEngine's authentication-server GET: basic auth with the client pair.
fn authentication_server(
    target: &str,
    auth: &str,
    issued: &Mutex<Issued>,
    client: &(String, String),
) -> (u16, String) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1))
    );
    if auth != expected {
        return (401, r#"{"error":"unauthorized"}"#.into());
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if q.get("proto").map(String::as_str) != Some("smtp") {
        return (400, r#"{"error":"proto"}"#.into());
    }
    let Some(account) = q.get("account") else {
        return (400, r#"{"error":"account"}"#.into());
    };
    let mut i = issued.lock().unwrap();
    i.serial += 1;
    let at = format!("ee-{}-{:08x}", i.serial, rand_ish(i.serial));
    i.access_tokens.insert(at.clone());
    i.requests.push(("authentication-server".into(), None));
    (
        200,
        format!(r#"{{"user":"{account}","accessToken":"{at}"}}"#),
    )
}

/// Unguessable enough that a token substring cannot appear in a log by chance.
fn rand_ish(n: usize) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    t ^ (n as u32).wrapping_mul(2654435761)
}

/// Writes a token state file as `smarthost oauth login` would (mode 0600).
pub fn write_state(path: &std::path::Path, refresh_token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp-test");
    std::fs::write(
        &tmp,
        format!(r#"{{"refresh_token":"{refresh_token}","obtained_at":1700000000}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A `[[token_source]]` named `o365` of the built-in refresher (`client-1`,
/// Microsoft's SMTP scopes) at `token_url`, its refresh token in `state`.
pub fn oauth2_source(token_url: &str, state: &std::path::Path) -> String {
    format!(
        r#"[[token_source]]
name = "o365"
type = "oauth2"
provider = "generic"
client_id = "client-1"
token_url = "{token_url}"
scopes = ["https://outlook.office.com/SMTP.Send", "offline_access"]
state_file = "{}"
"#,
        state.display()
    )
}

/// Asserts none of `secrets` occurs in `text`.
pub fn assert_no_secrets(text: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !s.is_empty() && !text.contains(s.as_str()),
            "{what} contains the secret {s:?}:\n{text}"
        );
    }
}
