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
        if s.dead {
            let _ = writeln!(o, "  do: smarthost oauth login {}", s.name);
        }
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
        let tokens = Tokens::with_system_roots(&full.token_sources).map_err(|e| e.to_string())?;
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
    let mut out = std::io::stdout().lock();
    let result = match command {
        Command::Login { .. } => Ok(EX_OK),
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

/// `oauth login`: sign in once and store the refresh token where the daemon
/// finds it. A running daemon notices the new state file by itself (a held
/// route is probed within seconds).
fn login(path: &Path, source: &str, flow: Option<super::login::Flow>, port: u16) -> u8 {
    use crate::sysexits::*;
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EX_CONFIG;
        }
    };
    let Some(src) = config.token_sources.get(source) else {
        eprintln!(
            "smarthost oauth login: no token source named {source:?} in {}",
            config.file
        );
        return EX_USAGE;
    };
    let http = match crate::upstream::tls::client_config(None)
        .map_err(super::tokens::HttpClientError::from)
        .and_then(super::tokens::http_client)
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
    let opts = super::login::Options {
        flow,
        port,
        wait: None,
    };
    let mut out = std::io::stdout();
    match runtime.block_on(super::login::login(&http, src, &opts, &mut out)) {
        Ok(account) => {
            let state = match &src.kind {
                TokenKind::OAuth2(o) => o.state_file.display().to_string(),
                _ => String::new(),
            };
            println!(
                "signed in{}; refresh token stored in {state}",
                account.map(|a| format!(" as {a}")).unwrap_or_default()
            );
            println!("check it with: smarthost oauth status");
            EX_OK
        }
        Err(e) => {
            eprintln!("smarthost oauth login: {e}");
            EX_TEMPFAIL
        }
    }
}
