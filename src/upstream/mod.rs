//! The SMTP client side: connect to a route's smarthost, secure and authenticate
//! the session, and run transactions on it, reporting an [`Outcome`] per recipient.
//!
//! Every reply of a connection, greeting to QUIT, is read by one reader
//! (`wire::Wire`), which keeps what arrived after the reply it returns:
//! mail-send's `read()` drops it, which is every other reply of a pipelined
//! group, or whatever a server sent after its STARTTLS 220. mail-send stays
//! for what it does well: smtp-proto's reply and EHLO types, and the PLAIN and
//! LOGIN encodings. The connect sequence and the transaction
//! (`transaction.rs`) are our own: mail-send's `connect()` discards the EHLO
//! capabilities, sets no TCP_NODELAY and has a one-hour default timeout, and
//! it adds a blank line to a message that already ends in CRLF.

pub mod downgrade;
pub mod resolve;
pub mod sasl;
pub mod tls;
mod transaction;
pub mod transcript;
mod wire;

use wire::{ReadError, Wire};

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use mail_send::Credentials as MsCredentials;
use smtp_proto::EXT_START_TLS;
use smtp_proto::{EhloResponse, AUTH_LOGIN, AUTH_OAUTHBEARER, AUTH_PLAIN, AUTH_XOAUTH2};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{AuthMechanism, AuthSecret, Credentials, Secret, SmtpRoute, Timeouts, TlsMode};
use crate::oauth::{Bearer, TokenError, Tokens};
use crate::outcome::{self, Outcome};

pub use resolve::{ResolveError, Resolver};
pub use transaction::Outgoing;
pub use transcript::Transcript;

use transcript::{Recorder, Tap};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why no session could be set up. Never the recipients' fault: their mail
/// is deferred, or waits while the route is held.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub reason: String,
    pub relay: Option<String>,
    pub kind: Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Network, TLS or protocol trouble: the next address may do better.
    Other,
    /// The server refused the credentials. For a token route this is after a
    /// freshly issued token was refused too.
    AuthRejected,
    /// No token for now (endpoint down or slow): defer.
    TokenUnavailable,
    /// The token source needs the operator (`invalid_grant`, never logged in).
    TokenDead,
}

impl Failure {
    fn stops_route(self) -> bool {
        self != Failure::Other
    }
}

/// What AUTH sends: a password, or a token fetched for this connection.
enum Secretish {
    Password(Secret),
    Token(Bearer),
}

impl Secretish {
    fn expose(&self) -> &str {
        match self {
            Secretish::Password(p) => p.expose(),
            Secretish::Token(b) => b.token.expose(),
        }
    }
}

pub struct Connection {
    client: Wire<Box<dyn Io>>,
    caps: EhloResponse<String>,
    /// `host[ip]:port`, for log lines.
    pub relay: String,
    /// The host name, for the DSN's Remote-MTA.
    pub host: String,
    /// Transactions begun on this connection.
    pub messages: u32,
    /// The last transaction was abandoned half-way (a refused MAIL, RCPTs or
    /// DATA): the server may still hold it, so the next one needs RSET first.
    needs_reset: bool,
}

/// What one transaction gave: an outcome per recipient (in the order asked) and
/// whether the connection can carry another message.
pub struct Transaction {
    pub outcomes: Vec<Outcome>,
    pub reusable: bool,
    /// A kept connection turned out dead before the server said anything
    /// about this message (closed while idle, or a 421): nothing was tried, so
    /// the caller may try again on a new connection. The outcomes defer
    /// everyone, for callers that do not.
    pub stale: bool,
    /// The queued body could not be read mid-message (the connection was
    /// given up without the final dot); the outcomes defer everyone.
    pub unreadable: Option<crate::spool::StoreError>,
}

pub struct Context<'a> {
    pub hostname: &'a str,
    pub resolver: &'a Resolver,
    pub tls: &'a TlsConnector,
    pub timeouts: &'a Timeouts,
    pub tokens: &'a Tokens,
    /// Records the conversation (`smarthost test-send`); None for delivery.
    pub transcript: Option<&'a Transcript>,
}

impl Context<'_> {
    /// Adds a note to the transcript, if there is one; `what` is formatted
    /// only then.
    fn note(&self, what: impl FnOnce() -> String) {
        if let Some(t) = self.transcript {
            t.note(&what());
        }
    }
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, ReadError>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.describe(what)),
        Err(_) => Err(timed_out(what, limit)),
    }
}

/// `EHLO: timed out after 30s`.
fn timed_out(what: &str, limit: Duration) -> String {
    format!("{what}: timed out after {}s", limit.as_secs())
}

/// Connects to the route: every address of every host in order, until one gives
/// a ready (secured, authenticated) session. On a token route whose token is
/// refused, a new token is fetched and the connection tried once more: the
/// cached token may have been revoked before its time.
pub async fn connect(route: &SmtpRoute, ctx: &Context<'_>) -> Result<Connection, ConnectError> {
    let token_route = route
        .credentials
        .as_ref()
        .is_some_and(|c| c.mechanism.uses_token());
    match connect_with(route, ctx, false).await {
        Err(e) if token_route && e.kind == Failure::AuthRejected => {
            tracing::warn!(
                "{}: token refused ({}); fetching a new token and trying once more",
                e.relay.as_deref().unwrap_or("smarthost"),
                e.reason
            );
            ctx.note(|| "token refused; fetching a new token and trying once more".into());
            connect_with(route, ctx, true).await
        }
        other => other,
    }
}

async fn secret_for(
    creds: &Credentials,
    ctx: &Context<'_>,
    fresh: bool,
) -> Result<Secretish, ConnectError> {
    match &creds.secret {
        AuthSecret::Password { password, .. } => Ok(Secretish::Password(password.clone())),
        AuthSecret::Token { source } => ctx
            .tokens
            .bearer(source, &creds.username, fresh)
            .await
            .map(Secretish::Token)
            .map_err(|e| {
                let (kind, what) = match e {
                    TokenError::Temporary(m) => (Failure::TokenUnavailable, m),
                    TokenError::Dead(m) => (Failure::TokenDead, m),
                };
                ConnectError {
                    reason: format!("no OAuth2 token: {what}"),
                    relay: None,
                    kind,
                }
            }),
    }
}

async fn connect_with(
    route: &SmtpRoute,
    ctx: &Context<'_>,
    fresh: bool,
) -> Result<Connection, ConnectError> {
    // The token comes first: without one there is no point in connecting.
    let secret = match &route.credentials {
        Some(c) => Some(secret_for(c, ctx, fresh).await?),
        None => None,
    };
    note_secret(route, ctx, secret.as_ref());
    let mut last = ConnectError {
        reason: "no hosts".into(),
        relay: None,
        kind: Failure::Other,
    };
    // A failure that leaves something to try is logged here: the attempt's
    // status line names only the address that gave the last word.
    for (h, host) in route.hosts.iter().enumerate() {
        let more_hosts = h + 1 < route.hosts.len();
        let addrs = match ctx.resolver.addresses(host, route.port).await {
            Ok(a) => a,
            Err(e) => {
                if more_hosts {
                    tracing::warn!("{host}:{}: {e}; trying the next host", route.port);
                }
                last = ConnectError {
                    reason: e.to_string(),
                    relay: Some(format!("{host}:{}", route.port)),
                    kind: Failure::Other,
                };
                continue;
            }
        };
        let tried = try_addresses(
            route,
            ctx,
            host,
            addrs,
            more_hosts,
            secret.as_ref(),
            &mut last,
        );
        if let ControlFlow::Break(done) = tried.await {
            return done;
        }
    }
    Err(last)
}

/// Keeps the secret out of the transcript, and notes which token is used.
fn note_secret(route: &SmtpRoute, ctx: &Context<'_>, secret: Option<&Secretish>) {
    if let (Some(t), Some(s)) = (ctx.transcript, secret) {
        t.add_secret(s.expose());
        if let (Secretish::Token(b), Some(c)) = (s, &route.credentials) {
            if let AuthSecret::Token { source } = &c.secret {
                t.note(&token_note(source, b, ctx.tokens.now()));
            }
        }
    }
}

/// Tries one host's addresses in turn, leaving the latest failure in `last`.
/// Breaks with the session, or with a failure that stops the route.
async fn try_addresses(
    route: &SmtpRoute,
    ctx: &Context<'_>,
    host: &str,
    addrs: Vec<SocketAddr>,
    more_hosts: bool,
    secret: Option<&Secretish>,
    last: &mut ConnectError,
) -> ControlFlow<Result<Connection, ConnectError>> {
    let count = addrs.len();
    for (i, addr) in addrs.into_iter().enumerate() {
        let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
        ctx.note(|| format!("connecting to {relay}"));
        match connect_one(route, host, addr, ctx, secret).await {
            Ok((client, caps)) => {
                return ControlFlow::Break(Ok(Connection {
                    client,
                    caps,
                    relay,
                    host: host.to_string(),
                    messages: 0,
                    needs_reset: false,
                }))
            }
            Err((reason, kind)) => {
                ctx.note(|| format!("{relay}: {reason}"));
                // The same credentials will be refused by every address.
                let give_up = kind.stops_route();
                if !give_up && (i + 1 < count || more_hosts) {
                    tracing::warn!("{relay}: {reason}; trying the next address");
                }
                *last = ConnectError {
                    reason,
                    relay: Some(relay),
                    kind,
                };
                if give_up {
                    return ControlFlow::Break(Err(last.clone()));
                }
            }
        }
    }
    ControlFlow::Continue(())
}

type Ready = (Wire<Box<dyn Io>>, EhloResponse<String>);

async fn connect_one(
    route: &SmtpRoute,
    host: &str,
    addr: SocketAddr,
    ctx: &Context<'_>,
    secret: Option<&Secretish>,
) -> Result<Ready, (String, Failure)> {
    let t = ctx.timeouts;
    let helo = route.helo.as_deref().unwrap_or(ctx.hostname);
    let tcp = match tokio::time::timeout(t.connect, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err((format!("connect: {e}"), Failure::Other)),
        Err(_) => return Err(("connect: timed out".into(), Failure::Other)),
    };
    // Without it every command waits for the delayed ACK: 40 ms a round trip.
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| (format!("invalid TLS server name {host:?}"), Failure::Other))?;

    let recorder = || ctx.transcript.map(Recorder::new);
    let mut client: Wire<Box<dyn Io>> = match route.tls {
        TlsMode::Implicit => {
            let tls = tls_handshake(ctx, server_name, tcp).await?;
            Wire::new(tapped(tls, recorder()))
        }
        TlsMode::StartTls => start_tls(ctx, server_name, tcp, helo).await?,
        TlsMode::None => Wire::new(tapped(tcp, recorder())),
    };
    if route.tls != TlsMode::StartTls {
        greeting(&mut client, t).await?;
    }
    let mut caps = ehlo(&mut client, helo, t).await?;

    if let (Some(creds), Some(secret)) = (&route.credentials, secret) {
        authenticate(&mut client, &caps, creds, secret, host, route.port, t).await?;
        caps.auth_mechanisms = 0;
    }
    Ok((client, caps))
}

/// Greeting, EHLO and STARTTLS in clear text, then the TLS handshake; the
/// caller says EHLO again over TLS, as RFC 3207 4.2 requires.
async fn start_tls(
    ctx: &Context<'_>,
    server_name: rustls::pki_types::ServerName<'static>,
    tcp: TcpStream,
    helo: &str,
) -> Result<Wire<Box<dyn Io>>, (String, Failure)> {
    let t = ctx.timeouts;
    let mut plain = Wire::new(Tap::new(tcp, ctx.transcript.map(Recorder::new)));
    greeting(&mut plain, t).await?;
    let caps = ehlo(&mut plain, helo, t).await?;
    if !caps.has_capability(EXT_START_TLS) {
        // Never fall back to clear text: the route asked for TLS.
        quit(&mut plain, t).await;
        return Err((
            "STARTTLS required but not offered by the server".into(),
            Failure::Other,
        ));
    }
    let reply = within(t.upstream_command, "STARTTLS", plain.cmd(b"STARTTLS\r\n"))
        .await
        .map_err(|e| (e, Failure::Other))?;
    if reply.code != 220 {
        quit(&mut plain, t).await;
        return Err((
            format!("STARTTLS refused: {}", outcome::reply_text(&reply)),
            Failure::Other,
        ));
    }
    if !plain.unread.is_empty() {
        // RFC 3207 5: anything sent before the handshake must not be taken
        // as said under TLS; a server (or a man in the middle) that does so
        // is not to be trusted with credentials.
        return Err((
            "STARTTLS: the server sent more after its 220; not trusting the session".into(),
            Failure::Other,
        ));
    }
    let (tcp, recorder) = plain.stream.into_parts();
    let tls = tls_handshake(ctx, server_name, tcp).await?;
    Ok(Wire::new(tapped(tls, recorder)))
}

/// AUTH with the route's mechanism and nothing else: offering a weaker one
/// than configured would be a silent downgrade.
async fn authenticate(
    client: &mut Wire<Box<dyn Io>>,
    caps: &EhloResponse<String>,
    creds: &Credentials,
    secret: &Secretish,
    host: &str,
    port: u16,
    t: &Timeouts,
) -> Result<(), (String, Failure)> {
    let (bit, name) = match creds.mechanism {
        AuthMechanism::Plain => (AUTH_PLAIN, "PLAIN"),
        AuthMechanism::Login => (AUTH_LOGIN, "LOGIN"),
        AuthMechanism::XOAuth2 => (AUTH_XOAUTH2, "XOAUTH2"),
        AuthMechanism::OAuthBearer => (AUTH_OAUTHBEARER, "OAUTHBEARER"),
    };
    if caps.auth_mechanisms & bit == 0 {
        quit(client, t).await;
        return Err((
            format!("server does not offer AUTH {name}"),
            Failure::AuthRejected,
        ));
    }
    match secret {
        Secretish::Token(bearer) => auth_token(client, creds, bearer, host, port, t).await,
        Secretish::Password(password) => auth_password(client, bit, name, creds, password, t).await,
    }
}

/// XOAUTH2 or OAUTHBEARER with the bearer token (see [`sasl`]).
async fn auth_token(
    client: &mut Wire<Box<dyn Io>>,
    creds: &Credentials,
    bearer: &Bearer,
    host: &str,
    port: u16,
    t: &Timeouts,
) -> Result<(), (String, Failure)> {
    let mech = match creds.mechanism {
        AuthMechanism::OAuthBearer => sasl::Mechanism::OAuthBearer,
        _ => sasl::Mechanism::XOAuth2,
    };
    let token = bearer.token.expose();
    let limit = t.upstream_command;
    match sasl::authenticate(client, mech, &bearer.user, token, host, port, limit).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if e.in_step {
                quit(client, t).await;
            }
            // A 4xx (454 "temporary authentication failure") is the
            // server's trouble, not a refusal of the token.
            let kind = if e.rejected {
                Failure::AuthRejected
            } else {
                Failure::Other
            };
            Err((e.reason, kind))
        }
    }
}

/// PLAIN (initial response) or LOGIN (two challenges) with the password,
/// encoded by mail-send; `bit` is the configured mechanism, and the only one
/// tried.
async fn auth_password(
    client: &mut Wire<Box<dyn Io>>,
    bit: u64,
    name: &str,
    creds: &Credentials,
    password: &Secret,
    t: &Timeouts,
) -> Result<(), (String, Failure)> {
    let credentials = MsCredentials::new(creds.username.as_str(), password.expose());
    let what = format!("AUTH {name}");
    let limit = t.upstream_command;
    let lost = |reason| (reason, Failure::Other);
    let first = match bit {
        AUTH_PLAIN => match credentials.encode(AUTH_PLAIN, "") {
            Ok(initial) => format!("AUTH PLAIN {initial}\r\n"),
            Err(_) => return Err(lost(format!("{what}: cannot encode the credentials"))),
        },
        _ => format!("AUTH {name}\r\n"),
    };
    let mut reply = within(limit, &what, client.cmd(first.as_bytes()))
        .await
        .map_err(lost)?;
    // LOGIN asks twice (user name, password); a third challenge is cancelled.
    for _ in 0..2 {
        if reply.code != 334 {
            break;
        }
        let answer = match credentials.encode(bit, &reply.message) {
            Ok(a) => format!("{a}\r\n"),
            // A challenge LOGIN does not know: cancel (RFC 4954 4).
            Err(_) => "*\r\n".to_string(),
        };
        reply = within(limit, &what, client.cmd(answer.as_bytes()))
            .await
            .map_err(lost)?;
    }
    if reply.code == 235 {
        return Ok(());
    }
    if reply.code != 334 {
        // A refusal leaves the session in step: end it properly.
        quit(client, t).await;
    }
    // RFC 4954 6: a 454 "temporary authentication failure" is the
    // server's trouble; only a 5xx refuses the password.
    let kind = if reply.code >= 500 {
        Failure::AuthRejected
    } else {
        Failure::Other
    };
    Err((format!("{what}: {}", outcome::reply_text(&reply)), kind))
}

/// Ends a session being given up while it is still in step with the server:
/// RFC 5321 4.1.1.10 says a client MUST NOT close the channel before sending
/// QUIT. Best effort, and bounded so a silent server cannot hold the worker.
async fn quit<T: AsyncRead + AsyncWrite + Unpin>(client: &mut Wire<T>, t: &Timeouts) {
    let limit = t.upstream_command.min(Duration::from_secs(5));
    let _ = within(limit, "QUIT", client.cmd(b"QUIT\r\n")).await;
}

/// EHLO. A refusal is not followed by HELO: RFC 5321 2.2.1 says servers MUST
/// support EHLO, so a refused EHLO (4.1.4: 500, 501, 502 or 550) is a broken or
/// refusing smarthost, not a legacy one, and a HELO session could not carry
/// STARTTLS, AUTH or the SIZE and SMTPUTF8 checks. The server stays in its
/// state after refusing (4.1.4), so the session ends with QUIT (4.1.1.10).
async fn ehlo<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Wire<T>,
    helo: &str,
    t: &Timeouts,
) -> Result<EhloResponse<String>, (String, Failure)> {
    let limit = t.upstream_command;
    let failed = match tokio::time::timeout(limit, client.ehlo(helo)).await {
        Ok(Ok(Ok(caps))) => return Ok(caps),
        Ok(Ok(Err(reply))) => {
            quit(client, t).await;
            format!("EHLO: {}", outcome::reply_text(&reply))
        }
        Ok(Err(e)) => e.describe("EHLO"),
        Err(_) => timed_out("EHLO", limit),
    };
    Err((failed, Failure::Other))
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Wire<T>,
    t: &Timeouts,
) -> Result<(), (String, Failure)> {
    let reply = within(t.greeting, "greeting", client.read())
        .await
        .map_err(|e| (e, Failure::Other))?;
    if reply.code != 220 {
        // RFC 5321 3.1: after a 554 greeting the client sends QUIT.
        quit(client, t).await;
        return Err((
            format!("greeting: {}", outcome::reply_text(&reply)),
            Failure::Other,
        ));
    }
    Ok(())
}

async fn tls_handshake(
    ctx: &Context<'_>,
    name: rustls::pki_types::ServerName<'static>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (String, Failure)> {
    let peer = tcp.peer_addr().ok();
    let host = name.to_str().into_owned();
    match tokio::time::timeout(ctx.timeouts.connect, ctx.tls.connect(name, tcp)).await {
        Ok(Ok(s)) => {
            let info = Transcript::tls_info(s.get_ref().1);
            // One line per connection, apart from the delivery lines so that
            // their `delay=` … `status=` order stays as pflogsumm parses it.
            // The handshake only succeeds with the name and chain verified.
            let relay = match peer {
                Some(a) => format!("{host}[{}]:{}", a.ip(), a.port()),
                None => host,
            };
            tracing::info!(
                "Verified TLS connection established to {relay}: {} with cipher {}",
                info.version,
                info.cipher
            );
            if let Some(t) = ctx.transcript {
                t.tls(&info);
            }
            Ok(s)
        }
        Ok(Err(e)) => Err((format!("TLS handshake failed: {e}"), Failure::Other)),
        Err(_) => Err(("TLS handshake timed out".into(), Failure::Other)),
    }
}

/// The session's stream, wrapped only when there is something to record.
fn tapped<S: Io + 'static>(stream: S, recorder: Option<Recorder>) -> Box<dyn Io> {
    match recorder {
        Some(r) => Box::new(Tap::new(stream, Some(r))),
        None => Box::new(stream),
    }
}

/// Which token AUTH will use and whether it was fetched for this connection,
/// for the transcript. Never the token itself.
fn token_note(source: &str, bearer: &Bearer, now: u64) -> String {
    let how = if bearer.fresh {
        "fetched from the source now"
    } else {
        "cached, still valid"
    };
    let expiry = match bearer.expires_at {
        Some(at) if at > now => format!(", expires in {} min", (at - now).div_ceil(60)),
        Some(_) => ", expired".into(),
        None => String::new(),
    };
    format!(
        "token for {} from token source {source}: {how}{expiry}",
        bearer.user
    )
}

impl Connection {
    pub async fn quit(mut self, t: &Timeouts) {
        let _ = within(t.upstream_command, "QUIT", self.client.cmd(b"QUIT\r\n")).await;
    }
}
