//! Handing smarthost's access tokens to other local programs (msmtp, git
//! send-email, an exim on the same machine), so that one refresh token serves
//! them all. Providers rotate refresh tokens: two programs refreshing the same
//! grant independently would each invalidate the other's, so the others ask us.
//!
//! Two servers, speaking the protocols smarthost itself consumes as external
//! sources (PRODUCT.md, "External token sources"):
//!
//! - the credential-server protocol on a UNIX socket, where the socket file's
//!   mode and group are the access control;
//! - the authentication-server protocol over HTTP on loopback, where any local
//!   user can connect, so a basic-auth password is the access control.
//!
//! Only accounts listed in a source's `share_as` are served: sharing is opt-in
//! per source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ring::hmac;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use super::{TokenError, Tokens};
use crate::config::{Secret, TokenSource};
use crate::upstream::sasl::xoauth2_initial;

/// A request line is `SMTP <address>`; anything longer is not a client of ours.
const MAX_LINE: usize = 1024;
/// How long a client may take to send its request (socket line or HTTP head):
/// an idle connection must not hold a task forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on writing the reply, for a client that connects and never reads.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which source serves an account: the source whose `share_as` contains the
/// account (case-insensitive compare of the whole address).
pub fn source_for<'a>(
    sources: &'a BTreeMap<String, TokenSource>,
    account: &str,
) -> Option<&'a TokenSource> {
    // ASCII case folding only: Unicode folding could make two distinct
    // addresses equal, and the account comes from an untrusted client.
    sources
        .values()
        .find(|s| s.share_as.iter().any(|a| a.eq_ignore_ascii_case(account)))
}

/// The credential-server protocol, byte for byte as cloud_mdir_sync's server
/// speaks it (its clients, `cms-oauth` and patched msmtp, expect exactly
/// that): `SMTP <account>` in, ended by a newline or by the client's
/// half-close; the XOAUTH2 initial response out, with no newline; nothing
/// at all for an account not shared or a token that cannot be had (the
/// reason goes to the log), then close.
pub async fn serve_socket(
    listener: UnixListener,
    tokens: Arc<Tokens>,
    sources: BTreeMap<String, TokenSource>,
) {
    let sources = Arc::new(sources);
    // Its own slots, a share per local user (`crate::admission`).
    let slots = crate::admission::Admission::new(64, 16);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let client = crate::admission::peer(&stream).ok();
                let Some(ticket) = client.and_then(|c| slots.admit(c)) else {
                    continue;
                };
                let tokens = tokens.clone();
                let sources = sources.clone();
                tokio::spawn(async move {
                    socket_connection(stream, &tokens, &sources).await;
                    drop(ticket);
                });
            }
            Err(e) => {
                // Usually EMFILE: back off rather than spin.
                tracing::warn!("token share socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What the first line of a socket connection turned out to be.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Line> {
    // One byte more than allowed tells a full-length line from an over-long one.
    let mut reader = BufReader::new(stream.take(MAX_LINE as u64 + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    // A line ended by EOF (the client shut its side down) is taken as is.
    Ok(Line::Text(buf))
}

async fn socket_connection(
    mut stream: UnixStream,
    tokens: &Tokens,
    sources: &BTreeMap<String, TokenSource>,
) {
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => {
            tracing::warn!("token share via socket: no request within {READ_TIMEOUT:?}");
            Vec::new()
        }
        Ok(Err(e)) => {
            tracing::debug!("token share via socket: reading the request: {e}");
            return;
        }
        Ok(Ok(Line::TooLong)) => {
            tracing::warn!("token share via socket: request line over {MAX_LINE} bytes");
            Vec::new()
        }
        Ok(Ok(Line::Text(line))) => socket_answer(&line, tokens, sources).await,
    };
    let write = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("token share via socket: writing the reply: {e}"),
        Err(_) => tracing::debug!("token share via socket: client did not read the reply"),
    }
}

/// The answer to one request (without its `\n`): the XOAUTH2 string, or
/// nothing.
async fn socket_answer(
    line: &[u8],
    tokens: &Tokens,
    sources: &BTreeMap<String, TokenSource>,
) -> Vec<u8> {
    let account = match parse_request(line) {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!("token share via socket: {reason}");
            return Vec::new();
        }
    };
    let Some(source) = source_for(sources, account) else {
        tracing::warn!("token share via socket: no source shared as {account:?}");
        return Vec::new();
    };
    match tokens.bearer(&source.name, account, false).await {
        Ok(b) => {
            tracing::info!("shared token of {} to {account} via socket", source.name);
            xoauth2_initial(account, b.token.expose())
        }
        Err(e) => {
            tracing::warn!("token share via socket: {} for {account}: {e}", source.name);
            Vec::new()
        }
    }
}

/// The account of a `SMTP <account>` line; cloud_mdir_sync's grammar also
/// allows options after the protocol (`SMTP,opt <account>`), which are
/// ignored. The error is a short reason for the log.
fn parse_request(line: &[u8]) -> Result<&str, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| "request is not UTF-8")?;
    let (proto, account) = line
        .trim()
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or("expected \"SMTP <account>\"")?;
    let proto = proto.split(',').next().unwrap_or(proto);
    if !proto.eq_ignore_ascii_case("SMTP") {
        return Err("only SMTP is supported");
    }
    let account = account.trim();
    // Control characters would end up inside the SASL string (\x01 is its
    // separator) and in the logs.
    if account.is_empty() || account.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected \"SMTP <account>\"");
    }
    Ok(account)
}

struct HttpShared {
    tokens: Arc<Tokens>,
    sources: BTreeMap<String, TokenSource>,
    /// The password is checked as an HMAC tag with `ring::hmac::verify`, whose
    /// comparison is constant-time and documented as such (ring 0.17.14
    /// deprecates `constant_time::verify_slices_are_equal` as internal). The key
    /// needs no secrecy: it only makes equal passwords give equal tags, and
    /// comparing tags also hides the password's length.
    key: hmac::Key,
    tag: hmac::Tag,
}

const PASSWORD_KEY: &[u8] = b"smarthost oauth share_http password";

/// The authentication-server protocol: `GET <path>?account=<name>&proto=smtp`
/// behind HTTP basic auth, answered with `{"user": .., "accessToken": ..}`.
pub async fn serve_http(
    listener: TcpListener,
    tokens: Arc<Tokens>,
    sources: BTreeMap<String, TokenSource>,
    password: Secret,
) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, PASSWORD_KEY);
    let tag = hmac::sign(&key, password.expose().as_bytes());
    let shared = Arc::new(HttpShared {
        tokens,
        sources,
        key,
        tag,
    });
    crate::local_http::serve(listener, "token share over http", move |req| {
        let shared = shared.clone();
        async move { http_answer(req, &shared).await }
    })
    .await;
}

async fn http_answer(req: Request<Incoming>, shared: &HttpShared) -> Response<Full<Bytes>> {
    // Authentication comes first, so that a client without the password learns
    // nothing, not even which accounts exist.
    if !authorized(req.headers(), &shared.key, &shared.tag) {
        tracing::warn!("token share over http: request without the right password refused");
        let mut resp = json(StatusCode::UNAUTHORIZED, "authentication required");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"smarthost\""),
        );
        return resp;
    }
    if req.method() != Method::GET {
        let mut resp = json(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let mut account = None;
    let mut proto = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*k {
            "account" if account.is_none() => account = Some(v.into_owned()),
            "proto" if proto.is_none() => proto = Some(v.into_owned()),
            _ => {}
        }
    }
    // No proto is taken as SMTP: the published protocol makes it optional.
    if let Some(p) = &proto {
        if !p.eq_ignore_ascii_case("smtp") {
            return json(StatusCode::BAD_REQUEST, "only proto=smtp is supported");
        }
    }
    let Some(account) = account.filter(|a| !a.is_empty()) else {
        return json(StatusCode::BAD_REQUEST, "account is required");
    };
    let Some(source) = source_for(&shared.sources, &account) else {
        tracing::warn!("token share over http: no source shared as {account:?}");
        return json(StatusCode::NOT_FOUND, "unknown account");
    };
    match shared.tokens.bearer(&source.name, &account, false).await {
        Ok(b) => {
            tracing::info!("shared token of {} to {account} via http", source.name);
            let body = serde_json::json!({ "user": account, "accessToken": b.token.expose() });
            respond(StatusCode::OK, body.to_string())
        }
        Err(e) => {
            tracing::warn!("token share over http: {} for {account}: {e}", source.name);
            let status = match e {
                TokenError::Temporary(_) => StatusCode::SERVICE_UNAVAILABLE,
                TokenError::Dead(_) => StatusCode::BAD_GATEWAY,
            };
            json(status, &e.to_string())
        }
    }
}

/// Whether the request carries HTTP basic credentials with the password whose
/// tag is `tag` (any user name: the password alone is the access control).
fn authorized(headers: &HeaderMap, key: &hmac::Key, tag: &hmac::Tag) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(rest.trim_ascii()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    hmac::verify(key, &decoded[colon + 1..], tag.as_ref()).is_ok()
}

fn json(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    respond(status, serde_json::json!({ "error": error }).to_string())
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The body is a bearer token: no cache, proxy or browser may keep it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;
