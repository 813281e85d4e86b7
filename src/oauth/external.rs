//! Access tokens that something outside smarthost keeps fresh.
//!
//! Many sites already run a program that owns the OAuth2 refresh token (a
//! mail client's helper, a password manager, a sync daemon). Rather than make
//! the operator hand that refresh token to smarthost too, which would give two
//! programs racing to rotate the same grant, smarthost can ask the existing
//! owner for a current access token. Four ways of asking are supported, each
//! matching a convention that existing tools already speak:
//!
//! * **command** – msmtp's `passwordeval`: run a program (directly, no shell,
//!   so no quoting surprises) and take its standard output as the token.
//! * **file** – a helper writes the token to a file. A cheap [`stamp`] of the
//!   file lets the caller notice a rewrite without reading the token again.
//! * **socket** – cloud_mdir_sync's credential server: connect to its UNIX
//!   socket, send `SMTP <user>`, half-close (the server reads the request up
//!   to end of file), and read back the ready XOAUTH2 string
//!   `user=<u>\x01auth=Bearer <token>\x01\x01`, possibly base64-encoded.
//! * **http** – EmailEngine's authentication server: `GET <url>` with
//!   `account=<id>&proto=smtp` appended, answered by JSON
//!   `{"user": ..., "accessToken": ...}`. Credentials for that server travel in
//!   the URL's userinfo and are sent as HTTP Basic authentication, which makes
//!   the configured URL itself a secret; [`redact_url`] gives the printable form.
//!
//! Failures are split the way the queue needs them: [`TokenError::Temporary`]
//! when asking again later may work (a daemon restarting, a timeout, a server
//! error), [`TokenError::Dead`] when the operator has to change something (a
//! missing program or file, refused credentials, a reply that is not a
//! token). Error texts name the source and what went wrong, and never carry
//! anything that may hold a token: a command's standard output, a socket
//! reply, an HTTP body or URL credentials. A failing command's standard error
//! is shown, shortened to one line, because that is where it explains itself.

use std::fmt::Display;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use url::Url;

use super::{Bearer, TokenError};
use crate::config::{open_secret, Secret, SecretError};
use crate::safe_fs::SafeFsError;

/// Largest command output, file, socket reply or HTTP body accepted. Real
/// tokens are a few KiB at most (Microsoft's run to ~2.5 KiB); the cap only
/// stops a misconfigured source from filling memory.
const MAX_REPLY: usize = 64 * 1024;

/// How much of a failing command's stderr is kept, and how much is shown.
const STDERR_KEPT: usize = 4096;
const STDERR_SHOWN: usize = 200;

/// A fingerprint of a token file: when it differs from the last one, the file
/// was rewritten and the token should be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// Runs `argv` (no shell) and returns its standard output, trimmed, as the token.
pub async fn command(argv: &[String], timeout: Duration) -> Result<Secret, TokenError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(TokenError::Dead("command: no program given".into()));
    };
    let source = format!("command {program}");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the child on timeout (or when our caller gives up) must not
        // leave a stuck helper behind.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_error(&source, e))?;
    let (out, err, status) = match tokio::time::timeout(timeout, run_to_end(&mut child)).await {
        Ok(done) => done,
        Err(_) => {
            return Err(temporary(
                &source,
                format!(
                    "no answer within {}, killed",
                    humantime::format_duration(timeout)
                ),
            ))
        }
    };
    let (out, too_long) =
        out.map_err(|e| temporary(&source, format!("reading its output: {e}")))?;
    if too_long {
        return Err(dead(&source, "printed more than 64 KiB, not a token"));
    }
    let status = status.map_err(|e| temporary(&source, format!("waiting for it: {e}")))?;
    if !status.success() {
        return Err(exit_error(&source, status, &err));
    }
    token_from(&source, &out).map(Secret::new)
}

/// What a token command printed (capped), what it said on stderr, and how it ended.
async fn run_to_end(
    child: &mut tokio::process::Child,
) -> (
    std::io::Result<(Vec<u8>, bool)>,
    Vec<u8>,
    std::io::Result<std::process::ExitStatus>,
) {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Each pipe is moved into its reader so it is closed as soon as that
    // reader stops: a command printing more than the cap then gets EPIPE
    // instead of blocking until the timeout.
    let out = async move {
        match stdout {
            Some(pipe) => read_capped(pipe, MAX_REPLY).await,
            None => Ok((Vec::new(), false)),
        }
    };
    let err = async move {
        match stderr {
            Some(pipe) => read_stderr(pipe).await,
            None => Vec::new(),
        }
    };
    let (out, err) = tokio::join!(out, err);
    (out, err, child.wait().await)
}

/// A token command that failed: how it ended, with the first line of its stderr.
fn exit_error(source: &str, status: std::process::ExitStatus, err: &[u8]) -> TokenError {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    let stderr = one_line(err, STDERR_SHOWN);
    if stderr.is_empty() {
        temporary(source, how)
    } else {
        temporary(source, format!("{how}: {stderr}"))
    }
}

/// Reads the token from `path`, with the stamp of the file it was read from.
/// The file is a secret like any other ([`open_secret`]): one that others
/// could write would let them choose the token.
pub async fn file(path: &Path) -> Result<(Secret, FileStamp), TokenError> {
    let source = format!("file {}", path.display());
    // The walk to the file is several blocking calls: off the runtime.
    let owned = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || open_secret(&owned))
        .await
        .map_err(|e| temporary(&source, e.to_string()))?;
    let file = match opened {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(SecretError::Unreadable { source: e, .. }) => return Err(file_error(&source, e)),
        Err(SecretError::Unsafe(SafeFsError::Io { source: e, .. })) => {
            return Err(file_error(&source, e))
        }
        Err(e) => return Err(dead(&source, e.to_string())),
    };
    // Stamp the open file rather than the path, so the stamp belongs to the
    // contents we read even if the file is replaced meanwhile.
    let meta = file.metadata().await.map_err(|e| file_error(&source, e))?;
    let stamp = FileStamp::of(&meta);
    let (bytes, too_long) = read_capped(file, MAX_REPLY)
        .await
        .map_err(|e| file_error(&source, e))?;
    if too_long {
        return Err(dead(&source, "is larger than 64 KiB, not a token"));
    }
    let token = token_from(&source, &bytes)?;
    Ok((Secret::new(token), stamp))
}

/// The current stamp of `path`, or `None` if it cannot be examined. Only the
/// metadata is read, so this is cheap enough to call before every use.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|meta| FileStamp::of(&meta))
}

/// Asks a cloud_mdir_sync credential server listening on `path` for `user`'s token.
pub async fn socket(path: &Path, user: &str, timeout: Duration) -> Result<Bearer, TokenError> {
    let source = format!("socket {}", path.display());
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // The request is one line of space-separated words.
        return Err(dead(
            &source,
            format!("user {user:?} cannot be asked for: it must be one word"),
        ));
    }
    let ask = ask_socket(path, user, &source);
    let (reply, too_long) = match tokio::time::timeout(timeout, ask).await {
        Ok(done) => done?,
        Err(_) => {
            return Err(temporary(
                &source,
                format!("no reply within {}", humantime::format_duration(timeout)),
            ))
        }
    };
    if too_long {
        return Err(dead(&source, "reply is longer than 64 KiB"));
    }
    let reply = reply.trim_ascii();
    if reply.is_empty() {
        // cloud_mdir_sync closes without a word for an account it does not
        // manage; for one it manages it waits until it has a token.
        return Err(dead(
            &source,
            format!("no token for {user} (is the account configured in its CredentialServer?)"),
        ));
    }
    let (reply_user, token) = parse_xoauth2(reply)
        .or_else(|| {
            let decoded = BASE64_LENIENT.decode(reply).ok()?;
            parse_xoauth2(decoded.trim_ascii())
        })
        .ok_or_else(|| {
            dead(
                &source,
                "reply is not an XOAUTH2 string (user=...\\x01auth=Bearer ...\\x01\\x01)",
            )
        })?;
    let token = token_from(&source, &token)?;
    Ok(Bearer {
        user: reply_user,
        token: Secret::new(token),
        expires_at: None,
        fresh: true,
    })
}

/// Sends the credential server the request line and reads its one-line reply.
async fn ask_socket(path: &Path, user: &str, source: &str) -> Result<(Vec<u8>, bool), TokenError> {
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(source, e))?;
    stream
        .write_all(format!("SMTP {user}\n").as_bytes())
        .await
        .map_err(|e| temporary(source, format!("sending the request: {e}")))?;
    // The server reads the request until end of file before it answers.
    stream
        .shutdown()
        .await
        .map_err(|e| temporary(source, format!("sending the request: {e}")))?;
    read_reply_line(&mut stream)
        .await
        .map_err(|e| temporary(source, format!("reading the reply: {e}")))
}

/// Asks an EmailEngine-style authentication server at `url` for `account`'s token.
pub async fn http(
    client: &reqwest::Client,
    url: &Secret,
    account: &str,
    timeout: Duration,
) -> Result<Bearer, TokenError> {
    let source = format!("http {}", redact_url(url.expose()));
    let request = token_request(client, url, account, &source)?;
    let body = match tokio::time::timeout(timeout, read_body(request, &source)).await {
        Ok(done) => done?,
        Err(_) => {
            return Err(temporary(
                &source,
                format!("no reply within {}", humantime::format_duration(timeout)),
            ))
        }
    };
    bearer_from_json(&source, &body)
}

/// The GET request for `account`'s token, with the URL's credentials moved
/// into a basic-auth header.
fn token_request(
    client: &reqwest::Client,
    url: &Secret,
    account: &str,
    source: &str,
) -> Result<reqwest::RequestBuilder, TokenError> {
    // url's parse errors describe the problem without quoting the input.
    let mut target =
        Url::parse(url.expose()).map_err(|e| dead(source, format!("not a valid URL: {e}")))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(dead(source, "only http and https URLs are supported"));
    }
    // Taken out of the URL by hand (reqwest would do it too) so that the
    // credentials can never reach an error's URL, and go in a header that
    // reqwest marks as sensitive.
    let login = percent_decode(target.username());
    let password = target.password().map(percent_decode);
    let has_credentials = !login.is_empty() || password.is_some();
    // Cannot fail: http(s) URLs always have a host.
    let _ = target.set_username("");
    let _ = target.set_password(None);
    target
        .query_pairs_mut()
        .append_pair("account", account)
        .append_pair("proto", "smtp");
    let mut request = client
        .get(target)
        .header(reqwest::header::ACCEPT, "application/json");
    if has_credentials {
        request = request.basic_auth(login, password);
    }
    Ok(request)
}

/// Sends the request and reads a successful reply's body, at most 64 KiB.
async fn read_body(request: reqwest::RequestBuilder, source: &str) -> Result<Vec<u8>, TokenError> {
    let mut response = request.send().await.map_err(|e| request_error(source, e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(source, status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| request_error(source, e))?
    {
        if body.len() + chunk.len() > MAX_REPLY {
            return Err(dead(source, "reply is longer than 64 KiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The token and user from the server's JSON reply.
fn bearer_from_json(source: &str, body: &[u8]) -> Result<Bearer, TokenError> {
    // serde_json's messages can quote the offending value, which may be the
    // token, so only the fact of the failure is reported.
    let reply: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| dead(source, "reply is not JSON"))?;
    let token = reply
        .get("accessToken")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| dead(source, "reply has no accessToken"))?;
    let token = token_from(source, token.as_bytes())?;
    let user = reply
        .get("user")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| dead(source, "reply has no user"))?;
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // It goes into the XOAUTH2 string, where \x01 is a separator.
        return Err(dead(source, "reply has a user that is not one word"));
    }
    Ok(Bearer {
        user: user.to_string(),
        token: Secret::new(token),
        expires_at: None,
        fresh: true,
    })
}

/// `url` without its userinfo, fit for logs and `check` output.
pub fn redact_url(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url) {
        // Both fail only for URLs that cannot carry userinfo anyway.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        return parsed.to_string();
    }
    // Unparseable: still cut anything before an '@' in the authority, which
    // is where credentials would be.
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn temporary(source: &str, what: impl Display) -> TokenError {
    TokenError::Temporary(format!("{source}: {what}"))
}

fn dead(source: &str, what: impl Display) -> TokenError {
    TokenError::Dead(format!("{source}: {what}"))
}

/// Checks that `raw`, trimmed, is one line of visible ASCII: anything else in
/// an AUTH command would be rejected at best and smuggle protocol at worst.
fn token_from(source: &str, raw: &[u8]) -> Result<String, TokenError> {
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(dead(source, "returned an empty token"));
    }
    if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(dead(source, "returned something that is not a token"));
    }
    String::from_utf8(token.to_vec())
        .map_err(|_| dead(source, "returned something that is not a token"))
}

/// Splits `user=<u>\x01auth=Bearer <token>\x01\x01` into user and token.
fn parse_xoauth2(raw: &[u8]) -> Option<(String, Vec<u8>)> {
    let rest = raw.strip_prefix(b"user=")?.strip_suffix(b"\x01\x01")?;
    let split = rest.iter().position(|&b| b == 0x01)?;
    let (user, auth) = (&rest[..split], &rest[split + 1..]);
    let auth = auth.strip_prefix(b"auth=")?;
    let space = auth.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&auth[..space], &auth[space + 1..]);
    // cloud_mdir_sync copies the provider's token_type, whose case varies.
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let user = std::str::from_utf8(user).ok()?;
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some((user.to_string(), token.to_vec()))
}

/// Some helpers hand out the XOAUTH2 string already base64-encoded for the
/// AUTH command, with or without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads at most `cap` bytes; the flag says whether there was more.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: R,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    reader.take(cap as u64 + 1).read_to_end(&mut buf).await?;
    let too_long = buf.len() > cap;
    buf.truncate(cap);
    Ok((buf, too_long))
}

/// Reads up to end of file or the first newline, at most [`MAX_REPLY`] bytes.
async fn read_reply_line<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<(Vec<u8>, bool)> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((reply, false));
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(newline) = reply.iter().position(|&b| b == b'\n') {
            reply.truncate(newline);
            return Ok((reply, false));
        }
        if reply.len() > MAX_REPLY {
            return Ok((reply, true));
        }
    }
}

/// Keeps the start of stderr and drains the rest, so that a chatty command
/// does not block on a full pipe.
async fn read_stderr<R: AsyncRead + Unpin>(mut reader: R) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

/// Diagnostic text folded onto one line and cut to `max` characters.
fn one_line(raw: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(raw).replace(|c: char| c.is_control(), " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn spawn_error(source: &str, e: std::io::Error) -> TokenError {
    const ENOEXEC: i32 = 8;
    match e.kind() {
        ErrorKind::NotFound => dead(source, "not found"),
        ErrorKind::PermissionDenied => dead(source, "not executable (permission denied)"),
        _ if e.raw_os_error() == Some(ENOEXEC) => dead(source, format!("cannot be run: {e}")),
        // Out of processes or memory: may well pass.
        _ => temporary(source, format!("cannot be started: {e}")),
    }
}

fn file_error(source: &str, e: std::io::Error) -> TokenError {
    match e.kind() {
        ErrorKind::NotFound => dead(source, "does not exist"),
        ErrorKind::PermissionDenied => dead(source, "cannot be read (permission denied)"),
        ErrorKind::NotADirectory | ErrorKind::IsADirectory => dead(source, e),
        // I/O errors, a stale NFS handle: worth another try.
        _ => temporary(source, e),
    }
}

fn connect_error(source: &str, e: std::io::Error) -> TokenError {
    match e.kind() {
        // The daemon may be restarting: its socket is gone or not yet listening.
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => temporary(
            source,
            format!("nobody is listening ({e}); is the credential server running?"),
        ),
        ErrorKind::PermissionDenied => dead(
            source,
            "permission denied; smarthost's user needs write access to the socket",
        ),
        _ => temporary(source, e),
    }
}

fn status_error(source: &str, status: reqwest::StatusCode) -> TokenError {
    match status.as_u16() {
        401 | 403 => dead(source, format!("credentials refused ({status})")),
        404 => dead(source, format!("unknown account or wrong URL ({status})")),
        408 | 429 | 500..=599 => temporary(source, format!("server answered {status}")),
        _ => dead(source, format!("unexpected answer {status}")),
    }
}

fn request_error(source: &str, e: reqwest::Error) -> TokenError {
    // The URL carries no credentials any more, but may have been redirected
    // somewhere we never redacted.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    if e.is_builder() || e.is_redirect() {
        dead(source, text)
    } else {
        temporary(source, text)
    }
}

/// Decodes `%XX` escapes in URL userinfo; invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
