//! `smarthost oauth login <source>`: getting the first refresh token of an
//! `oauth2` source with `grant = refresh_token`. A person has to consent once,
//! in a browser; from then on the refresh token stands for them.
//!
//! A relay has no UI of its own, so this uses the two standard ways for such a
//! program to get that consent:
//!
//! - the device authorization grant (RFC 8628), when the provider offers it for
//!   the scopes (Microsoft): the user opens a short URL on any device and types
//!   a code while we poll the token endpoint. Nothing has to reach this
//!   machine, so it works on a headless server over SSH.
//! - the authorization code grant with PKCE (RFC 7636) on a loopback redirect
//!   (RFC 8252 7.3) otherwise (Google refuses the mail scope on its device
//!   flow): the browser is sent back to a listener on this machine with a code.
//!   PKCE ties the code to this process, so a code seen by anyone else (another
//!   local program, a logged URL) is worthless; `state` makes sure the answer
//!   belongs to this login and not to a page that sent the browser there.
//!
//! The tokens become a fresh state file, written under the source's lock. A
//! running daemon notices the new file by its mtime, so it is not told.
//!
//! Nothing printed or returned as an error holds a token, an authorization or
//! device code, the PKCE verifier or the client secret; the user code of the
//! device flow is the exception, since the user has to type it.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY};
use hyper::{Method, Request, Response, StatusCode};
use ring::rand::SecureRandom as _;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::endpoint::{self, one_line, EndpointError, TokenResponse};
use super::state::{self, State, StateError};
use crate::config::{Grant, OAuth2Source, Provider, Secret, TokenKind, TokenSource};

#[cfg(test)]
mod tests;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long the browser flow waits unless told otherwise: authorization codes
/// live minutes, and a login left unattended should not hold a port forever.
const BROWSER_WAIT: Duration = Duration::from_secs(300);
/// RFC 8628 3.2: the polling interval when the server names none.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 3.5: what `slow_down` adds to the interval, for good.
const SLOW_DOWN: Duration = Duration::from_secs(5);
/// A device code without `expires_in` (which RFC 8628 requires) is given
/// Microsoft's usual lifetime rather than refused.
const DEFAULT_DEVICE_LIFETIME: u64 = 900;
/// Assumed access token lifetime without `expires_in`, as the refresher does.
const DEFAULT_LIFETIME: u64 = 3600;
/// Network failures in a row before polling gives up: one blip must not cost
/// the user a sign-in they already did, a dead endpoint must not spin forever.
const MAX_TRANSPORT_FAILURES: u32 = 3;

/// How the user's consent is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// RFC 8628: a code typed on any device.
    Device,
    /// RFC 7636 + RFC 8252: a browser on this machine, redirected to loopback.
    Browser,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `None`: the device flow if the source has a `device_url`, else the
    /// browser flow.
    pub flow: Option<Flow>,
    /// Loopback port for the browser flow; 0 = any free port. A fixed port is
    /// for apps registered with one, or for an `ssh -L` forward.
    pub port: u16,
    /// Cap on waiting for the user; default: the device code's lifetime, or 5
    /// minutes for the browser flow.
    pub wait: Option<Duration>,
    /// The output is a terminal: the time left is redrawn in place every
    /// second (`\r`). Otherwise (a log, a pipe) it is written once, on a line.
    pub live_countdown: bool,
}

/// Why the login did not produce a saved refresh token. The texts never
/// contain a token, a code, the verifier or the client secret.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("token source {0} is not of type = \"oauth2\": there is nothing to log in to")]
    NotOAuth2(String),
    #[error(
        "token source {0} uses grant = \"client_credentials\": its client secret gets the tokens, no login is needed"
    )]
    ClientCredentials(String),
    /// The source lacks what the flow needs.
    #[error("token source {name}: {what}")]
    Setup { name: String, what: String },
    #[error("device authorization endpoint: {0}")]
    DeviceEndpoint(EndpointError),
    #[error("token endpoint: {0}")]
    TokenEndpoint(EndpointError),
    #[error("the sign-in was declined")]
    Declined,
    #[error("the code expired, run again")]
    Expired,
    #[error("no sign-in within {0}; run again")]
    TimedOut(String),
    /// The provider sent the browser back with an error (RFC 6749 4.1.2.1).
    #[error("the sign-in failed: {0}")]
    Authorization(EndpointError),
    #[error(
        "the provider returned no refresh token: check that the scopes include offline_access (Microsoft) / the app asks for offline access"
    )]
    NoRefreshToken,
    #[error("cannot listen on {addr} for the browser's redirect: {source}")]
    Listener {
        addr: String,
        source: std::io::Error,
    },
    #[error("the system's random number generator failed")]
    Random,
    #[error("cannot show the sign-in instructions: {0}")]
    Output(std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Chooses the flow (explicit, else Device if device_url, else Browser if
/// authorize_url, else an error naming what to configure), runs it, saves the
/// state. Returns the saved State's account (if known).
pub async fn login(
    http: &reqwest::Client,
    source: &TokenSource,
    opts: &Options,
    out: &mut (dyn Write + Send),
) -> Result<Option<String>, LoginError> {
    let name = &source.name;
    let TokenKind::OAuth2(src) = &source.kind else {
        return Err(LoginError::NotOAuth2(name.clone()));
    };
    if src.grant != Grant::RefreshToken {
        return Err(LoginError::ClientCredentials(name.clone()));
    }
    let resp = match choose_flow(name, src, opts.flow)? {
        Flow::Device => device_flow(http, source, src, opts, out).await?,
        Flow::Browser => browser_flow(http, source, src, opts, out).await?,
    };
    let Some(refresh_token) = &resp.refresh_token else {
        return Err(LoginError::NoRefreshToken);
    };
    let account = resp.id_token.as_deref().and_then(account_from_id_token);
    let now = crate::clock::unix_now();
    let mut st = State::default();
    st.set_refresh_token(refresh_token);
    st.set_access_token(
        &resp.access_token,
        Some(now.saturating_add(resp.expires_in.unwrap_or(DEFAULT_LIFETIME))),
    );
    st.obtained_at = Some(now);
    st.refreshed_at = Some(now);
    st.scope = resp.scope.clone();
    st.account = account.clone();
    // The daemon may be refreshing the old token right now: writing under its
    // lock keeps its save from landing after ours and undoing the login.
    let _lock = state::lock_async(&src.state_file).await?;
    let path = src.state_file.clone();
    match tokio::task::spawn_blocking(move || state::save(&path, &st)).await {
        Ok(r) => r?,
        Err(e) => {
            return Err(LoginError::State(StateError::Io {
                path: src.state_file.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }))
        }
    }
    Ok(account)
}

fn choose_flow(name: &str, src: &OAuth2Source, wanted: Option<Flow>) -> Result<Flow, LoginError> {
    let setup = |what: &str| LoginError::Setup {
        name: name.to_string(),
        what: what.to_string(),
    };
    match wanted {
        Some(Flow::Device) if src.device_url.is_none() => Err(setup(
            "the device flow needs device_url (the provider's device authorization endpoint)",
        )),
        Some(Flow::Browser) if src.authorize_url.is_none() => Err(setup(
            "the browser flow needs authorize_url (the provider's authorization endpoint)",
        )),
        Some(f) => Ok(f),
        None if src.device_url.is_some() => Ok(Flow::Device),
        None if src.authorize_url.is_some() => Ok(Flow::Browser),
        None => Err(setup(
            "set device_url (device authorization endpoint, RFC 8628) or authorize_url (authorization endpoint, for the browser flow) to log in",
        )),
    }
}

// ---- Device authorization grant (RFC 8628) ----

/// RFC 8628 3.2, as far as we need it.
struct DeviceAuthorization {
    device_code: Secret,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: u64,
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    /// The pre-RFC name, still sent by Google and old Microsoft endpoints.
    verification_url: Option<String>,
    verification_uri_complete: Option<String>,
    expires_in: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn device_flow(
    http: &reqwest::Client,
    source: &TokenSource,
    src: &OAuth2Source,
    opts: &Options,
    out: &mut (dyn Write + Send),
) -> Result<TokenResponse, LoginError> {
    let Some(device_url) = src.device_url.as_deref() else {
        return Err(LoginError::Setup {
            name: source.name.clone(),
            what: "the device flow needs device_url".into(),
        });
    };
    let scope = src.login_scopes();
    let mut form = Vec::new();
    if !scope.is_empty() {
        form.push(("scope", scope.as_str()));
    }
    let (status, body) = endpoint::post_raw(http, device_url, src, &form, source.timeout)
        .await
        .map_err(LoginError::DeviceEndpoint)?;
    let auth = parse_device(status, &body).map_err(LoginError::DeviceEndpoint)?;

    let o = LoginError::Output;
    writeln!(
        out,
        "To log in token source {}, open this page in a browser (on any device):\n\n    {}\n\nand enter the code:  {}\n",
        source.name, auth.verification_uri, auth.user_code
    )
    .map_err(o)?;
    if let Some(complete) = &auth.verification_uri_complete {
        writeln!(out, "(or open {complete} , which has the code filled in)\n").map_err(o)?;
    }
    out.flush().map_err(o)?;

    let lifetime = Duration::from_secs(auth.expires_in);
    let (limit, gave_up) = match opts.wait {
        Some(w) if w < lifetime => (w, LoginError::TimedOut(show_duration(w))),
        _ => (lifetime, LoginError::Expired),
    };
    let poll = poll_device(
        http,
        src,
        &auth.device_code,
        Duration::from_secs(auth.interval),
        source.timeout,
    );
    match with_countdown(out, opts.live_countdown, Instant::now() + limit, poll).await {
        Some(r) => r,
        None => Err(gave_up),
    }
}

/// Reads the device authorization answer. Like [`endpoint::parse`], it never
/// quotes the body: it holds the device code.
fn parse_device(status: u16, body: &[u8]) -> Result<DeviceAuthorization, EndpointError> {
    let raw: Option<RawDevice> = serde_json::from_slice(body).ok();
    device_refusal(status, raw.as_ref())?;
    let Some(raw) = raw else {
        return Err(EndpointError::Transport(
            "answer is not a JSON device authorization response".into(),
        ));
    };
    let missing = |what: &str| EndpointError::Transport(format!("answer has no {what}"));
    let device_code = raw
        .device_code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("device_code"))?;
    // Printed for the user to read: no terminal control sequences from the net.
    let user_code = raw
        .user_code
        .map(|c| one_line(&c, 64))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("user_code"))?;
    let verification_uri = raw
        .verification_uri
        .or(raw.verification_url)
        .map(|u| one_line(&u, 500))
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing("verification_uri"))?;
    let verification_uri_complete = raw
        .verification_uri_complete
        .map(|u| one_line(&u, 1000))
        .filter(|u| !u.is_empty());
    let expires_in = number(raw.expires_in).unwrap_or(DEFAULT_DEVICE_LIFETIME);
    // 0 would mean hammering the endpoint; an absurd value would outlive the code.
    let interval = number(raw.interval)
        .unwrap_or(DEFAULT_INTERVAL)
        .clamp(1, 600);
    Ok(DeviceAuthorization {
        device_code: Secret::new(device_code),
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in,
        interval,
    })
}

/// The endpoint's refusal: its OAuth error (a server error's as a transport
/// failure, to be retried), or a status other than 200.
fn device_refusal(status: u16, raw: Option<&RawDevice>) -> Result<(), EndpointError> {
    if let Some(RawDevice {
        error: Some(error),
        error_description,
        ..
    }) = raw
    {
        if status >= 500 {
            return Err(EndpointError::Transport(format!(
                "HTTP {status} ({})",
                one_line(error, 64)
            )));
        }
        return Err(EndpointError::OAuth {
            error: one_line(error, 64),
            description: error_description.clone(),
        });
    }
    if status != 200 {
        return Err(EndpointError::Transport(format!("HTTP {status}")));
    }
    Ok(())
}

/// Some servers send numbers as strings.
fn number(v: Option<serde_json::Value>) -> Option<u64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Polls the token endpoint (RFC 8628 3.4, 3.5) until the user has acted.
/// Prints nothing: the countdown owns the writer meanwhile.
async fn poll_device(
    http: &reqwest::Client,
    src: &OAuth2Source,
    device_code: &Secret,
    mut interval: Duration,
    timeout: Duration,
) -> Result<TokenResponse, LoginError> {
    let mut failures = 0;
    loop {
        tokio::time::sleep(interval).await;
        let form = [
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code.expose()),
        ];
        match endpoint::post(http, &src.token_url, src, &form, timeout).await {
            Ok(t) => return Ok(t),
            Err(EndpointError::OAuth { error, description }) => {
                failures = 0;
                match error.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval = interval.saturating_add(SLOW_DOWN),
                    // Microsoft says `authorization_declined` for the same thing.
                    "access_denied" | "authorization_declined" => return Err(LoginError::Declined),
                    "expired_token" => return Err(LoginError::Expired),
                    _ => {
                        return Err(LoginError::TokenEndpoint(EndpointError::OAuth {
                            error,
                            description,
                        }))
                    }
                }
            }
            Err(e @ EndpointError::Transport(_)) => {
                failures += 1;
                if failures >= MAX_TRANSPORT_FAILURES {
                    return Err(LoginError::TokenEndpoint(e));
                }
                // RFC 8628 3.5: back off when the server does not answer.
                interval = interval.saturating_mul(2).min(Duration::from_secs(60));
            }
        }
    }
}

// ---- Authorization code grant with PKCE on a loopback redirect ----

/// A fresh PKCE pair (RFC 7636 4.1, 4.2): 32 random bytes as the verifier
/// (43 characters), and its S256 challenge.
pub fn pkce_pair() -> Result<(String, String), LoginError> {
    let verifier = random_b64(32)?;
    let challenge = challenge_for(&verifier);
    Ok((verifier, challenge))
}

/// BASE64URL(SHA256(verifier)), the S256 method of RFC 7636 4.2.
pub fn challenge_for(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn random_b64(len: usize) -> Result<String, LoginError> {
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| LoginError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Where the browser is sent back to. Microsoft registers loopback redirects
/// as `http://localhost`, and matches the host; others follow RFC 8252 8.3,
/// which prefers the literal IP (`localhost` may resolve elsewhere).
fn redirect_uri(provider: Provider, port: u16) -> String {
    match provider {
        Provider::Microsoft => format!("http://localhost:{port}/"),
        _ => format!("http://127.0.0.1:{port}/"),
    }
}

/// The authorization request (RFC 6749 4.1.1 with RFC 7636 4.3).
pub fn authorization_url(
    src: &OAuth2Source,
    redirect_uri: &str,
    state: &str,
    challenge: &str,
) -> String {
    let scope = src.login_scopes();
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", src.client_id.as_str()),
        ("redirect_uri", redirect_uri),
    ];
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    pairs.extend([
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    if src.provider == Provider::Google {
        // Without both, Google issues a refresh token only on the first
        // consent ever, and this may not be it.
        pairs.extend([("access_type", "offline"), ("prompt", "consent")]);
    }
    let base = src.authorize_url.as_deref().unwrap_or_default();
    match url::Url::parse(base) {
        // Keeps any query the configured URL already has.
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.into()
        }
        Err(_) => {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}{q}")
        }
    }
}

async fn browser_flow(
    http: &reqwest::Client,
    source: &TokenSource,
    src: &OAuth2Source,
    opts: &Options,
    out: &mut (dyn Write + Send),
) -> Result<TokenResponse, LoginError> {
    let (listener, port) = listen(opts).await?;
    let redirect_uri = redirect_uri(src.provider, port);
    let (verifier, challenge) = pkce_pair()?;
    let state = random_b64(16)?;
    let url = authorization_url(src, &redirect_uri, &state, &challenge);

    let (tx, mut rx) = mpsc::channel(1);
    let redirect = Arc::new(Redirect {
        state,
        done: AtomicBool::new(false),
        tx,
    });
    let servers = start_servers(listener, port, src.provider, &redirect).await;

    let o = LoginError::Output;
    writeln!(
        out,
        "To log in token source {}, open this URL in a browser on this machine:\n\n    {url}\n\nWhen you have signed in, the browser is sent back to {redirect_uri}.\n(If the browser runs on another machine, forward the port first: ssh -L {port}:127.0.0.1:{port} <this host>)\n",
        source.name
    )
    .map_err(o)?;
    out.flush().map_err(o)?;

    let wait = opts.wait.unwrap_or(BROWSER_WAIT);
    let live = opts.live_countdown;
    let outcome = with_countdown(out, live, Instant::now() + wait, rx.recv()).await;
    drop(servers);
    let code = code_from(outcome, wait, &redirect_uri)?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.expose()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    endpoint::post(http, &src.token_url, src, &form, source.timeout)
        .await
        .map_err(LoginError::TokenEndpoint)
}

/// Listens for the redirect on 127.0.0.1 at the configured port (0: any);
/// returns the listener and its port.
async fn listen(opts: &Options) -> Result<(TcpListener, u16), LoginError> {
    let addr = format!("127.0.0.1:{}", opts.port);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, opts.port))
        .await
        .map_err(|source| LoginError::Listener {
            addr: addr.clone(),
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| LoginError::Listener { addr, source })?
        .port();
    Ok((listener, port))
}

/// Serves the redirect on `listener`, and for Microsoft on [::1] too.
async fn start_servers(
    listener: TcpListener,
    port: u16,
    provider: Provider,
    redirect: &Arc<Redirect>,
) -> Servers {
    let mut servers = Servers(vec![tokio::spawn(serve(listener, Arc::clone(redirect)))]);
    if provider == Provider::Microsoft {
        // `localhost` may resolve to ::1 first; browsers fall back to 127.0.0.1
        // when refused, but listening there too spares that detour.
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
            servers
                .0
                .push(tokio::spawn(serve(v6, Arc::clone(redirect))));
        }
    }
    servers
}

/// The authorization code from what the wait for the redirect gave.
fn code_from(
    outcome: Option<Option<Result<Secret, EndpointError>>>,
    wait: Duration,
    redirect_uri: &str,
) -> Result<Secret, LoginError> {
    match outcome {
        None => Err(LoginError::TimedOut(show_duration(wait))),
        Some(Some(Ok(code))) => Ok(code),
        Some(Some(Err(e))) => Err(LoginError::Authorization(e)),
        // Cannot happen while `redirect` holds the sender.
        Some(None) => Err(LoginError::Listener {
            addr: redirect_uri.to_string(),
            source: std::io::Error::other("the listener stopped"),
        }),
    }
}

/// The listener tasks; stop accepting when the flow ends, however it ends.
/// Connections already accepted finish on their own, so the browser still
/// gets its page.
struct Servers(Vec<JoinHandle<()>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What the redirect listener knows: the expected `state`, and where the
/// first answer carrying it goes (a code, or the provider's error).
struct Redirect {
    state: String,
    done: AtomicBool,
    tx: mpsc::Sender<Result<Secret, EndpointError>>,
}

async fn serve(listener: TcpListener, redirect: Arc<Redirect>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of descriptors and the like: wait rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let redirect = redirect.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = redirect.answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl Redirect {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        // Browsers also ask for /favicon.ico and the like.
        if req.uri().path() != "/" {
            return page(StatusCode::NOT_FOUND, "smarthost: not found");
        }
        if req.method() != Method::GET {
            return page(StatusCode::METHOD_NOT_ALLOWED, "smarthost: not allowed");
        }
        let (mut state, mut code, mut error, mut description) = (None, None, None, None);
        let query = req.uri().query().unwrap_or("");
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "state" => state = Some(v.into_owned()),
                "code" => code = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                "error_description" => description = Some(v.into_owned()),
                _ => {}
            }
        }
        // Anything without our state was not started by this login (a stale
        // tab, or a page trying to slip its own code in): refuse it, but keep
        // waiting for the real answer.
        if state.as_deref() != Some(self.state.as_str()) {
            return page(
                StatusCode::BAD_REQUEST,
                "smarthost: this answer does not belong to the sign-in that is waiting (state mismatch); use the URL smarthost printed",
            );
        }
        let outcome = match (code, error) {
            (_, Some(error)) => Err(EndpointError::OAuth {
                error: one_line(&error, 64),
                description,
            }),
            (Some(code), None) if !code.is_empty() => Ok(Secret::new(code)),
            _ => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "smarthost: the answer has neither a code nor an error",
                )
            }
        };
        if self.done.swap(true, Ordering::SeqCst) {
            return page(
                StatusCode::CONFLICT,
                "smarthost: this sign-in has already finished; you can close this tab",
            );
        }
        let reply = match &outcome {
            Ok(_) => page(
                StatusCode::OK,
                "smarthost: signed in, you can close this tab",
            ),
            Err(e) => page(
                StatusCode::BAD_REQUEST,
                &format!("smarthost: the sign-in failed: {e}"),
            ),
        };
        // The channel has room for this one answer, and `done` admits one.
        let _ = self.tx.try_send(outcome);
        reply
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let text = html_escape(text);
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>smarthost</title></head>\n<body><p>{text}</p></body></html>\n"
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page's own URL holds the code: keep it out of any Referer.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

// ---- Shared pieces ----

/// Drives `fut` while showing the time left on one line, until it finishes
/// (`Some`) or `deadline` passes (`None`). The countdown is cosmetic, so a
/// failing writer does not stop the login. Only a `live` one (a terminal)
/// redraws itself with `\r`; a log gets one plain line.
async fn with_countdown<T>(
    out: &mut (dyn Write + Send),
    live: bool,
    deadline: Instant,
    fut: impl Future<Output = T>,
) -> Option<T> {
    if !live {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = writeln!(out, "waiting for sign-in... {} left", show_left(left));
        let _ = out.flush();
        return tokio::time::timeout_at(deadline, fut).await.ok();
    }
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            r = &mut fut => break Some(r),
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = tick.tick() => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Trailing spaces wipe the longer previous text (10:00 -> 9:59).
                let _ = write!(out, "\rwaiting for sign-in... {} left  ", show_left(left));
                let _ = out.flush();
            }
        }
    };
    let _ = writeln!(out);
    let _ = out.flush();
    result
}

/// `14:32`, or `1:02:03` past an hour; rounded up so `0:00` is never shown
/// while there is time left.
fn show_left(left: Duration) -> String {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn show_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Who logged in, from the OpenID id_token's claims. Only for display, so
/// the signature is not checked (it came straight from the token endpoint
/// over TLS anyway).
fn account_from_id_token(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["email", "preferred_username"]
        .iter()
        .filter_map(|k| claims.get(k).and_then(|v| v.as_str()))
        .map(|s| one_line(s, 200))
        .find(|s| !s.is_empty())
}
