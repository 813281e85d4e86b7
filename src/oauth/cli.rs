//! `smarthost oauth status|token`: what an operator sees of the token sources.
//! Both ask the running daemon first, whose cache and refresh lock are the ones
//! that matter; without a daemon they do the same work locally (which needs
//! the daemon's permissions on the state and secret files).

use std::io::Write;
use std::path::Path;

use super::{Status, Tokens};
use crate::clock::{from_unix, rfc5322};
use crate::config::{AuthSecret, Config, Grant, Provider, TokenKind, Transport};
use crate::control::client::{call, ClientError};
use crate::control::render::age;
use crate::control::{Reply, Request};
use crate::delivery::hold::Hold;

/// Warn this long before Microsoft's 90-day inactivity limit is reached.
const IDLE_WARN_DAYS: u64 = 30;

/// The user a source's token is asked for when no route says: the first route
/// using it, else its first shared account.
pub fn user_of(config: &Config, source: &str) -> String {
    let mut names: Vec<&String> = config.routes.keys().collect();
    names.sort();
    for name in names {
        if let Some(Transport::Smtp(s)) = config.routes.get(name).map(|r| &r.transport) {
            if let Some(c) = &s.credentials {
                if matches!(&c.secret, AuthSecret::Token { source: s } if s == source) {
                    return c.username.clone();
                }
            }
        }
    }
    config
        .token_sources
        .get(source)
        .and_then(|s| s.share_as.first().cloned())
        .unwrap_or_default()
}

/// The routes that authenticate with `source`'s tokens, and as whom.
fn route_users<'a>(config: &'a Config, source: &str) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = config
        .routes
        .values()
        .filter_map(|r| match &r.transport {
            Transport::Smtp(s) => s.credentials.as_ref().and_then(|c| match &c.secret {
                AuthSecret::Token { source: t } if t == source => {
                    Some((r.name.as_str(), c.username.as_str()))
                }
                _ => None,
            }),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Who signed in, and a warning for each route that authenticates as
/// someone else: Office 365 and Gmail refuse a token for another mailbox.
fn write_identity(o: &mut String, config: &Config, source: &str, account: Option<&str>) {
    use std::fmt::Write as _;
    let Some(account) = account else {
        return;
    };
    let _ = writeln!(o, "  signed in as: {account}");
    for (route, user) in route_users(config, source) {
        if !user.eq_ignore_ascii_case(account) {
            let _ = writeln!(
                o,
                "  WARNING: route {route} authenticates as {user}, not {account}: the provider refuses a token for another mailbox (535 5.7.3, 535 5.7.139); sign in as {user}, or set the route's username to {account}"
            );
        }
    }
}

/// Asks every source for a token now (the cache answers when it can), so the
/// status says whether each works, not whether it worked.
pub async fn check_all(config: &Config, tokens: &Tokens) -> Vec<Status> {
    let names: Vec<String> = tokens.names();
    for name in &names {
        let _ = tokens.bearer(name, &user_of(config, name), false).await;
    }
    tokens.statuses()
}

/// Why `oauth status` or `oauth token` failed, and the exit code that says so:
/// a control socket the caller may not open is EX_NOPERM, as for the queue
/// commands; anything else may pass (the daemon or the provider comes back),
/// EX_TEMPFAIL.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    message: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError {
            code: crate::sysexits::EX_TEMPFAIL,
            message,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::Denied { .. } => crate::sysexits::EX_NOPERM,
            _ => crate::sysexits::EX_TEMPFAIL,
        };
        CliError {
            code,
            message: e.to_string(),
        }
    }
}

/// Prints the status of every token source; returns whether all work.
pub fn status(
    config: &Config,
    json: bool,
    out: &mut dyn Write,
    local: impl FnOnce() -> Result<(Vec<Status>, Vec<Hold>), String>,
) -> Result<bool, CliError> {
    let (statuses, holds, from) = match ask_daemon(&config.local) {
        Ok((s, h)) => (s, h, "the running daemon"),
        Err(ClientError::Unreachable { .. }) => {
            let (s, h) = local()?;
            (s, h, "this command (the daemon is not running)")
        }
        Err(e) => return Err(e.into()),
    };
    let now = crate::clock::unix_now();
    let io = |e: std::io::Error| e.to_string();
    if json {
        for s in &statuses {
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(io)?;
        }
        for h in &holds {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "held": h }))
                .map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(io)?;
        }
    } else {
        if statuses.is_empty() {
            writeln!(out, "no token sources configured").map_err(io)?;
        }
        for s in &statuses {
            out.write_all(render(config, s, &holds, now).as_bytes())
                .map_err(io)?;
        }
        writeln!(out, "(checked by {from})").map_err(io)?;
    }
    Ok(statuses.iter().all(|s| s.error.is_none()) && holds.is_empty())
}

fn ask_daemon(local: &crate::config::Local) -> Result<(Vec<Status>, Vec<Hold>), ClientError> {
    let mut statuses = Vec::new();
    let mut holds = Vec::new();
    call(local, &Request::OAuthStatus, |reply| {
        match reply {
            Reply::TokenStatus(s) => statuses.push(s),
            Reply::RouteHeld(h) => holds.push(h),
            _ => {}
        }
        Ok(())
    })?;
    Ok((statuses, holds))
}

fn when(t: u64, now: u64) -> String {
    let rel = if t >= now {
        format!("in {}", age(t - now))
    } else {
        format!("{} ago", age(now - t))
    };
    format!("{} ({rel})", rfc5322(from_unix(t)))
}

/// One source's block of `oauth status`, with what to do about it.
pub fn render(config: &Config, s: &Status, holds: &[Hold], now: u64) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{}: {}", s.name, s.describe);
    match &s.error {
        None => {
            let _ = writeln!(o, "  works: yes");
        }
        Some(e) => {
            let _ = writeln!(
                o,
                "  works: NO{}: {e}",
                if s.dead {
                    " (needs you)"
                } else {
                    " (temporary)"
                }
            );
        }
    }
    write_identity(&mut o, config, &s.name, s.account.as_deref());
    if let Some(t) = s.expires_at {
        let _ = writeln!(o, "  access token expires: {}", when(t, now));
    }
    if let Some(t) = s.obtained_at {
        let _ = writeln!(o, "  refresh token stored: {}", when(t, now));
    }
    if let Some(t) = s.refreshed_at {
        let _ = writeln!(o, "  refresh token last used: {}", when(t, now));
    }
    write_holds(&mut o, s, holds, now);
    write_advice(&mut o, config, s, now);
    o
}

/// The routes held because of this source, and for how long.
fn write_holds(o: &mut String, s: &Status, holds: &[Hold], now: u64) {
    use std::fmt::Write as _;
    for h in holds
        .iter()
        .filter(|h| h.source.as_deref() == Some(s.name.as_str()))
    {
        let _ = writeln!(
            o,
            "  route {} HELD for {}: {}",
            h.route,
            age(now.saturating_sub(h.since)),
            h.reason
        );
    }
}

/// What to do about the source: log in again, or use the refresh token
/// before the provider revokes it.
fn write_advice(o: &mut String, config: &Config, s: &Status, now: u64) {
    use std::fmt::Write as _;
    if let Some(TokenKind::OAuth2(src)) = config.token_sources.get(&s.name).map(|t| &t.kind) {
        if src.grant == Grant::RefreshToken {
            let last = s.refreshed_at.or(s.obtained_at);
            match last {
                None if s.error.is_some() => {
                    let _ = writeln!(o, "  do: smarthost oauth login {}", s.name);
                }
                Some(t) if src.provider == Provider::Microsoft => {
                    let idle = now.saturating_sub(t) / 86400;
                    if idle + IDLE_WARN_DAYS >= 90 {
                        let _ = writeln!(
                            o,
                            "  WARNING: refresh token unused for {idle} days; Microsoft revokes it after 90 days without use (is the daemon running?)"
                        );
                    }
                }
                _ => {}
            }
            if src.provider == Provider::Google {
                if let Some(t) = s.obtained_at {
                    let _ = writeln!(
                        o,
                        "  note: if the Google Cloud app is in \"Testing\" status, this refresh token dies {}; publish the app to avoid that",
                        when(t + 7 * 86400, now)
                    );
                }
            }
        }
    }
    if s.dead {
        if let Some(kind) = config.token_sources.get(&s.name).map(|t| &t.kind) {
            let _ = writeln!(o, "  do: {}", fix_for(&s.name, kind));
        }
    }
}

/// What fixes a source that needs the operator, by its type: only an
/// `oauth2` refresh-token source has anything to log in to.
fn fix_for(name: &str, kind: &TokenKind) -> String {
    match kind {
        TokenKind::OAuth2(o) if o.grant == Grant::RefreshToken => format!(
            "smarthost oauth login {name} (or smarthost oauth import {name} FILE with a refresh token from elsewhere)"
        ),
        TokenKind::OAuth2(_) => "check client_id, client_secret_file and the app's permissions with the provider (client_credentials needs no login)".into(),
        TokenKind::File(p) => format!("put a current token in {} (the daemon re-reads it when it changes)", p.display()),
        TokenKind::Command(argv) => format!(
            "run the token command by hand and fix what it says: {}",
            argv.first().map_or("", String::as_str)
        ),
        TokenKind::Socket(p) => format!("check the credential server listening on {}", p.display()),
        TokenKind::Http { shown, .. } => format!("check the authentication server at {shown}"),
    }
}

/// Prints a current access token of `source` (and nothing else) for scripts.
pub fn token(
    config: &Config,
    source: &str,
    user: Option<&str>,
    out: &mut dyn Write,
    local: impl FnOnce() -> Result<String, String>,
) -> Result<(), CliError> {
    if !config.token_sources.contains_key(source) {
        return Err(format!("no token source named {source:?} in {}", config.file).into());
    }
    let req = Request::OAuthToken {
        source: source.to_string(),
        user: user.map(str::to_string),
    };
    let mut token = None;
    let token = match call(&config.local, &req, |reply| {
        if let Reply::AccessToken { token: t, .. } = reply {
            token = Some(t);
        }
        Ok(())
    }) {
        Ok(_) => token.ok_or_else(|| "the daemon sent no token".to_string())?,
        Err(ClientError::Unreachable { .. }) => local()?,
        Err(e) => return Err(e.into()),
    };
    writeln!(out, "{token}").map_err(|e| e.to_string().into())
}

/// What `smarthost oauth ...` was asked to do.
#[derive(Debug, Clone)]
pub enum Command {
    Login {
        source: String,
        flow: Option<super::login::Flow>,
        port: u16,
    },
    Status {
        json: bool,
    },
    Token {
        source: String,
        user: Option<String>,
    },
    /// A refresh token from elsewhere (FILE, or `-` for stdin).
    Import {
        source: String,
        file: std::path::PathBuf,
    },
}

/// Standard output for `oauth status` and `oauth token`: a reader that
/// stopped reading (`| head`) is not an error of the command, so what it
/// did not read is dropped quietly and the exit code stays the command's.
struct QuietPipe<'a>(&'a mut dyn Write);

impl Write for QuietPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Runs an `oauth` command; returns the exit code (sysexits.h).
pub fn run(path: &Path, command: Command) -> u8 {
    use crate::sysexits::*;
    // Secrets are read only if the work must be done here, without the daemon.
    let config = match Config::load_for_client(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EX_CONFIG;
        }
    };
    let local_tokens = || -> Result<(Config, Tokens), String> {
        let full = Config::load(path).map_err(|e| e.to_string())?;
        let tokens = Tokens::with_system_roots(&full).map_err(|e| e.to_string())?;
        Ok((full, tokens))
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    };
    if let Command::Login { source, flow, port } = command {
        return login(path, &source, flow, port);
    }
    if let Command::Import { source, file } = command {
        return import(path, &source, &file);
    }
    let mut stdout = std::io::stdout().lock();
    let mut out = QuietPipe(&mut stdout);
    let result = match command {
        Command::Login { .. } | Command::Import { .. } => Ok(EX_OK),
        Command::Status { json } => status(&config, json, &mut out, || {
            let (full, tokens) = local_tokens()?;
            let statuses = runtime()?.block_on(check_all(&full, &tokens));
            Ok((statuses, Vec::new()))
        })
        .map(|all_ok| if all_ok { EX_OK } else { EX_TEMPFAIL }),
        Command::Token { source, user } => {
            token(&config, &source, user.as_deref(), &mut out, || {
                let (full, tokens) = local_tokens()?;
                let user = user.clone().unwrap_or_else(|| user_of(&full, &source));
                runtime()?
                    .block_on(tokens.bearer(&source, &user, false))
                    .map(|b| b.token.expose().to_string())
                    .map_err(|e| e.to_string())
            })
            .map(|()| EX_OK)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smarthost oauth: {e}");
            e.code
        }
    }
}

/// The full configuration, once `source` is known to be in it; else the
/// exit code, said.
fn load_with_source(path: &Path, source: &str, command: &str) -> Result<Config, u8> {
    use crate::sysexits::*;
    let config = Config::load(path).map_err(|e| {
        eprintln!("{e}");
        EX_CONFIG
    })?;
    if !config.token_sources.contains_key(source) {
        eprintln!(
            "smarthost oauth {command}: no token source named {source:?} in {}",
            config.file
        );
        return Err(EX_USAGE);
    }
    Ok(config)
}

/// `oauth import`: a refresh token from elsewhere becomes the source's
/// state, as `oauth login` would leave it.
fn import(path: &Path, source: &str, file: &Path) -> u8 {
    use super::import::ImportError;
    use crate::sysexits::*;
    let config = match load_with_source(path, source, "import") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(src) = config.token_sources.get(source) else {
        return EX_SOFTWARE;
    };
    match super::import::import(src, file, crate::clock::unix_now()) {
        Ok(account) => {
            if let TokenKind::OAuth2(o) = &src.kind {
                println!("refresh token imported into {}", o.state_file.display());
            }
            let mut identity = String::new();
            write_identity(&mut identity, &config, source, account.as_deref());
            print!("{identity}");
            println!("check it with: smarthost oauth status");
            EX_OK
        }
        Err(e) => {
            eprintln!("smarthost oauth import: {e}");
            match e {
                ImportError::NotRefreshable(_) => EX_USAGE,
                ImportError::Read { .. } => EX_NOINPUT,
                ImportError::Content { .. } => EX_DATAERR,
                ImportError::State(_) => EX_CANTCREAT,
            }
        }
    }
}

/// `oauth login`: sign in once and store the refresh token where the daemon
/// finds it. A running daemon notices the new state file by itself (a held
/// route is probed within seconds).
fn login(path: &Path, source: &str, flow: Option<super::login::Flow>, port: u16) -> u8 {
    use crate::sysexits::*;
    let config = match load_with_source(path, source, "login") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(src) = config.token_sources.get(source) else {
        return EX_SOFTWARE;
    };
    let http = match crate::upstream::tls::client_config(None)
        .map_err(super::tokens::HttpClientError::from)
        .and_then(|tls| super::tokens::http_client(tls, config.oauth.proxy.as_ref()))
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("smarthost oauth login: {e}");
            return EX_SOFTWARE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smarthost oauth login: {e}");
            return EX_OSERR;
        }
    };
    let mut out = std::io::stdout();
    let opts = super::login::Options {
        flow,
        port,
        wait: None,
        live_countdown: std::io::IsTerminal::is_terminal(&out),
    };
    match runtime.block_on(super::login::login(&http, src, &opts, &mut out)) {
        Ok(account) => {
            signed_in(&config, src, account.as_deref());
            EX_OK
        }
        Err(e) => {
            eprintln!("smarthost oauth login: {e}");
            if !matches!(src.kind, TokenKind::OAuth2(_)) {
                eprintln!("do: {}", fix_for(source, &src.kind));
            }
            login_exit(&e)
        }
    }
}

/// What `oauth login` says once the refresh token is stored: where, as
/// whom, and a warning for each route that authenticates as someone else.
fn signed_in(config: &Config, src: &crate::config::TokenSource, account: Option<&str>) {
    let state = match &src.kind {
        TokenKind::OAuth2(o) => o.state_file.display().to_string(),
        _ => String::new(),
    };
    println!(
        "signed in{}; refresh token stored in {state}",
        account.map(|a| format!(" as {a}")).unwrap_or_default()
    );
    let mut identity = String::new();
    write_identity(&mut identity, config, &src.name, account);
    // The first line repeats "signed in as"; the warnings matter.
    for line in identity.lines().skip(1) {
        eprintln!("{}", line.trim_start());
    }
    println!("check it with: smarthost oauth status");
}

/// A login asked of a source that has none, or that lacks the settings a
/// flow needs, is a usage mistake (64); the rest may work on another try.
fn login_exit(e: &super::login::LoginError) -> u8 {
    use super::login::LoginError;
    use crate::sysexits::*;
    match e {
        LoginError::NotOAuth2(_) | LoginError::ClientCredentials(_) => EX_USAGE,
        LoginError::Setup { .. } => EX_CONFIG,
        LoginError::State(_) => EX_CANTCREAT,
        _ => EX_TEMPFAIL,
    }
}
