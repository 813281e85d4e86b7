//! An optional record of one SMTP conversation, for `smarthost test-send`.
//!
//! A [`Tap`] around the stream reports each complete line to a [`Transcript`].
//! It sits on the clear-text side: around the TCP stream until STARTTLS, then
//! around the TLS stream (below TLS it would see ciphertext). Delivery runs
//! without a transcript, and then only the few lines before STARTTLS pass
//! through a tap that does nothing; the session's stream is not wrapped.
//!
//! What the transcript must never show, it never receives: the [`Recorder`]
//! replaces AUTH data before a line leaves it. An `AUTH` command keeps its
//! mechanism and loses its initial response (for the bearer mechanisms its
//! length is kept: multi-KB tokens run into line-length limits, and the length
//! tells that story without the token). Every line answering a 334 is
//! `[redacted]`. A 334 challenge is shown, and decoded when it is text: servers
//! send prompts ("Username:") or the XOAUTH2/OAUTHBEARER JSON error there,
//! never our secret. As a second line of defence every text is scrubbed of the
//! secrets the client registered, in case a server echoes one. The message
//! body is counted, not shown: it is the sender's, and can be large.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sasl::Secrets;

/// The longest part of a line shown; the rest is counted.
const MAX_SHOWN: usize = 1000;

/// One thing the transcript reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A line the server sent, without its line ending.
    Server(&'a str),
    /// A line the client sent, redacted.
    Client(&'a str),
    /// The TLS handshake finished.
    Tls(&'a TlsInfo),
    /// What the client does between lines: which address, which token, why
    /// it gave up on an address.
    Note(&'a str),
}

/// What a finished TLS handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server's end-entity certificate, DER.
    pub certificate: Option<Vec<u8>>,
}

/// Where the lines go. Cheap to clone; clones share the sink and the secrets.
#[derive(Clone)]
pub struct Transcript {
    inner: Arc<Inner>,
}

type Sink = dyn Fn(Event<'_>) + Send + Sync;

struct Inner {
    sink: Box<Sink>,
    secrets: Mutex<Secrets>,
}

impl Transcript {
    pub fn new(sink: impl Fn(Event<'_>) + Send + Sync + 'static) -> Transcript {
        Transcript {
            inner: Arc::new(Inner {
                sink: Box::new(sink),
                secrets: Mutex::new(Secrets::default()),
            }),
        }
    }

    /// Registers a secret (a password, a token) that no text may show, raw
    /// or base64-encoded.
    pub fn add_secret(&self, secret: &str) {
        let mut s = self.secrets();
        s.add(secret);
        s.add(&base64::engine::general_purpose::STANDARD.encode(secret));
    }

    /// `text` without any registered secret.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets().scrub(text.to_string())
    }

    pub fn note(&self, text: &str) {
        (self.inner.sink)(Event::Note(&self.scrub(text)));
    }

    pub fn tls(&self, info: &TlsInfo) {
        (self.inner.sink)(Event::Tls(info));
    }

    /// The handshake facts of a TLS client connection.
    pub fn tls_info(conn: &rustls::ClientConnection) -> TlsInfo {
        let version = conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .map_or("TLS (version unknown)".into(), |v| v.replace('_', "."));
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("cipher unknown")
            .to_string();
        let certificate = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        TlsInfo {
            version,
            cipher,
            certificate,
        }
    }

    fn server(&self, line: &str) {
        (self.inner.sink)(Event::Server(&self.scrub(line)));
    }

    fn client(&self, line: &str) {
        (self.inner.sink)(Event::Client(&self.scrub(line)));
    }

    fn secrets(&self) -> std::sync::MutexGuard<'_, Secrets> {
        self.inner.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the conversation stands, as far as showing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Commands,
    /// The server's last reply was a 334: the client's next line is AUTH data.
    AuthAnswer,
    /// After a 354: the message's header section, shown.
    Headers,
    /// The message body so far, in bytes as sent; not shown.
    Body(usize),
}

/// One direction's line being assembled.
#[derive(Default)]
struct Line {
    kept: Vec<u8>,
    /// The whole line so far, CR included.
    len: usize,
    last: Option<u8>,
}

/// A complete line: what was kept of it, its length without the line ending,
/// and the bytes it took on the wire.
struct Complete {
    text: String,
    len: usize,
    wire: usize,
}

impl Line {
    fn feed(&mut self, data: &[u8], out: &mut Vec<Complete>) {
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            let (body, ended) = match chunk.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (chunk, false),
            };
            let room = MAX_SHOWN.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&body[..body.len().min(room)]);
            self.len += body.len();
            if let Some(&b) = body.last() {
                self.last = Some(b);
            }
            if ended {
                let cr = usize::from(self.last == Some(b'\r'));
                if self.len <= MAX_SHOWN {
                    self.kept.truncate(self.kept.len() - cr);
                }
                let len = self.len - cr;
                let mut text = shown(&self.kept);
                if len > self.kept.len() {
                    text.push_str(&format!("... [{len} bytes]"));
                }
                out.push(Complete {
                    text,
                    len,
                    wire: self.len + 1,
                });
                *self = Line::default();
            }
        }
    }
}

/// Server or client text made safe for a terminal.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| match c.is_control() && c != '\t' {
            true => c.escape_default().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}

/// Turns the bytes of both directions into redacted lines for a transcript.
/// No I/O: the [`Tap`] feeds it.
pub struct Recorder {
    transcript: Transcript,
    client: Line,
    server: Line,
    phase: Phase,
}

impl Recorder {
    pub fn new(transcript: &Transcript) -> Recorder {
        Recorder {
            transcript: transcript.clone(),
            client: Line::default(),
            server: Line::default(),
            phase: Phase::Commands,
        }
    }

    /// Bytes the server sent.
    pub fn server_bytes(&mut self, data: &[u8]) {
        let mut lines = Vec::new();
        self.server.feed(data, &mut lines);
        for line in lines {
            self.server_line(&line.text);
        }
    }

    /// Bytes the client sent.
    pub fn client_bytes(&mut self, data: &[u8]) {
        let mut lines = Vec::new();
        self.client.feed(data, &mut lines);
        for line in lines {
            self.client_line(&line);
        }
    }

    fn server_line(&mut self, text: &str) {
        self.transcript.server(text);
        // Only the last line of a reply (`250 x`, not `250-x`) moves the phase.
        let last = text.as_bytes().get(3).is_none_or(|&b| b == b' ');
        if !last {
            return;
        }
        match text.get(..3) {
            Some("334") => {
                self.phase = Phase::AuthAnswer;
                if let Some(decoded) = decode_challenge(text.get(4..).unwrap_or("")) {
                    self.transcript
                        .note(&format!("challenge decoded: {decoded}"));
                }
            }
            Some("354") => self.phase = Phase::Headers,
            _ => {
                if self.phase == Phase::AuthAnswer {
                    self.phase = Phase::Commands;
                }
            }
        }
    }

    fn client_line(&mut self, line: &Complete) {
        match self.phase {
            Phase::Commands => {
                let text = match redact_auth(&line.text, line.len) {
                    Some(redacted) => redacted,
                    None => line.text.clone(),
                };
                self.transcript.client(&text);
            }
            Phase::AuthAnswer => {
                self.transcript.client("[redacted]");
                self.phase = Phase::Commands;
            }
            Phase::Headers => {
                self.transcript.client(&line.text);
                if line.len == 0 {
                    self.phase = Phase::Body(0);
                } else if line.text == "." {
                    self.phase = Phase::Commands;
                }
            }
            Phase::Body(bytes) => {
                if line.text == "." {
                    self.transcript
                        .client(&format!("[{bytes} bytes of message body]"));
                    self.transcript.client(".");
                    self.phase = Phase::Commands;
                } else {
                    self.phase = Phase::Body(bytes + line.wire);
                }
            }
        }
    }
}

/// `AUTH MECH [redacted]` for an AUTH command with an initial response; None
/// for any other command. `len` is the whole line's length (the kept text may
/// be cut short).
fn redact_auth(text: &str, len: usize) -> Option<String> {
    let verb = text.get(..5)?;
    if !verb.eq_ignore_ascii_case("AUTH ") {
        return None;
    }
    let rest = &text[5..];
    let (mechanism, response) = match rest.split_once(' ') {
        Some((m, r)) => (m, Some(r)),
        None => (rest, None),
    };
    let Some(response) = response else {
        return Some(text.to_string());
    };
    let bearer = ["XOAUTH2", "OAUTHBEARER"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(mechanism));
    let hidden = if bearer {
        let n = len.saturating_sub(5 + mechanism.len() + 1);
        format!("[redacted {n} bytes]")
    } else if response.is_empty() {
        String::new()
    } else {
        "[redacted]".to_string()
    };
    Some(format!("AUTH {mechanism} {hidden}").trim_end().to_string())
}

/// A 334 challenge as text, when it is base64 of printable text.
fn decode_challenge(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let printable = !text.is_empty() && !text.chars().any(char::is_control);
    printable.then_some(text)
}

/// A stream that reports what passes through it to a [`Recorder`], if it has
/// one; without, it only forwards.
pub struct Tap<S> {
    inner: S,
    recorder: Option<Recorder>,
}

impl<S> Tap<S> {
    pub fn new(inner: S, recorder: Option<Recorder>) -> Tap<S> {
        Tap { inner, recorder }
    }

    /// The stream and the recorder, to go on recording above TLS.
    pub fn into_parts(self) -> (S, Option<Recorder>) {
        (self.inner, self.recorder)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(r) = &mut this.recorder {
            r.server_bytes(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        if let Some(r) = &mut this.recorder {
            r.client_bytes(&data[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
