//! The token cache: one slot per `[[token_source]]`, shared by every route and
//! worker that names it. A slot hands out its cached access token while it has
//! more than `refresh_before` left, and otherwise fetches one; fetches of one
//! source are serialized, so a burst of connections costs one refresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::external::{self, FileStamp};
use super::state::{self, State};
use super::{endpoint, Bearer, TokenError};
use crate::config::{Grant, OAuth2Source, Secret, TokenKind, TokenSource};

/// After a failed fetch, the same error is returned for this long without
/// asking again: a thousand due messages must not become a thousand requests
/// to an endpoint that is down.
const NEGATIVE_TTL: u64 = 30;

/// Assumed lifetime when a token response has no `expires_in` (RFC 6749 leaves
/// it optional); an hour is what Google and Microsoft issue.
const DEFAULT_LIFETIME: u64 = 3600;

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Tokens {
    /// Replaced as a whole by a reload; a fetch in flight keeps its slot.
    slots: std::sync::RwLock<BTreeMap<String, Arc<Slot>>>,
    http: reqwest::Client,
    clock: Clock,
}

struct Slot {
    source: TokenSource,
    cache: tokio::sync::Mutex<Cache>,
    status: Mutex<Status>,
    /// Fetches that failed, for `smarthost_token_refresh_failures_total`.
    failures: AtomicU64,
}

#[derive(Default)]
struct Cache {
    /// The access token and the time after which it is not handed out.
    token: Option<(Secret, u64, Option<u64>)>,
    /// For `file` sources: the file as it was when `token` was read.
    stamp: Option<FileStamp>,
    failed: Option<(u64, TokenError)>,
    /// Tokens the provider gave that could not be written to the state file:
    /// used instead of the file until a save succeeds, so a rotated refresh
    /// token is not forgotten.
    unsaved: Option<State>,
}

/// What `oauth status` shows about a source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub describe: String,
    /// When a token was last obtained.
    pub ok_at: Option<u64>,
    pub expires_at: Option<u64>,
    /// When the refresh token was last exchanged.
    pub refreshed_at: Option<u64>,
    /// When `oauth login` stored the refresh token.
    pub obtained_at: Option<u64>,
    pub error: Option<String>,
    pub error_at: Option<u64>,
    /// The error needs the operator (see [`TokenError::Dead`]).
    pub dead: bool,
    /// Who signed in (`oauth login`'s id_token), when the provider said.
    #[serde(default)]
    pub account: Option<String>,
}

impl Tokens {
    pub fn new(sources: &BTreeMap<String, TokenSource>, http: reqwest::Client) -> Tokens {
        Self::with_clock(sources, http, Arc::new(crate::clock::unix_now))
    }

    /// The cache the daemon and the commands use: token endpoints over HTTPS
    /// with the system roots, like upstream connections without a CA file.
    pub fn with_system_roots(config: &crate::config::Config) -> Result<Tokens, HttpClientError> {
        let tls = crate::upstream::tls::client_config(None)?;
        let http = http_client(tls, config.oauth.proxy.as_ref())?;
        Ok(Tokens::new(&config.token_sources, http))
    }

    /// A cache on another clock: tests move time instead of sleeping.
    pub fn with_clock(
        sources: &BTreeMap<String, TokenSource>,
        http: reqwest::Client,
        clock: Clock,
    ) -> Tokens {
        let slots = sources
            .values()
            .map(|s| (s.name.clone(), Arc::new(Slot::new(s))))
            .collect();
        Tokens {
            slots: std::sync::RwLock::new(slots),
            http,
            clock,
        }
    }

    /// Takes a reloaded configuration's sources. A source defined exactly as
    /// before keeps its slot, so its cached token and any rotated refresh token
    /// not yet saved survive the reload; a changed one starts afresh.
    pub fn reconfigure(&self, sources: &BTreeMap<String, TokenSource>) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *slots);
        for s in sources.values() {
            let slot = match old.get(&s.name) {
                Some(kept) if kept.source == *s => kept.clone(),
                _ => Arc::new(Slot::new(s)),
            };
            slots.insert(s.name.clone(), slot);
        }
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    pub fn source(&self, name: &str) -> Option<TokenSource> {
        self.slot(name).map(|s| s.source.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|s| s.source.name.clone()).collect()
    }

    /// A token for `user` from the named source. `force` skips every cache: the
    /// server refused the last token, so only a newly issued one will do.
    pub async fn bearer(&self, name: &str, user: &str, force: bool) -> Result<Bearer, TokenError> {
        let Some(slot) = self.slot(name) else {
            return Err(TokenError::Dead(format!("no token source named {name:?}")));
        };
        let slot = &*slot;
        let now = self.now();
        let mut cache = slot.cache.lock().await;
        if !force {
            if let Some((at, e)) = &cache.failed {
                if now < at.saturating_add(NEGATIVE_TTL) {
                    return Err(e.clone());
                }
            }
        }
        let result = self.fetch(slot, &mut cache, user, force, now).await;
        let mut st = lock(&slot.status);
        match &result {
            Ok(b) => {
                cache.failed = None;
                st.ok_at = Some(now);
                st.expires_at = b.expires_at;
                st.error = None;
                st.error_at = None;
                st.dead = false;
            }
            Err(e) => {
                slot.failures.fetch_add(1, Ordering::Relaxed);
                cache.failed = Some((now, e.clone()));
                st.error = Some(e.to_string());
                st.error_at = Some(now);
                st.dead = matches!(e, TokenError::Dead(_));
            }
        }
        result
    }

    async fn fetch(
        &self,
        slot: &Slot,
        cache: &mut Cache,
        user: &str,
        force: bool,
        now: u64,
    ) -> Result<Bearer, TokenError> {
        let src = &slot.source;
        let bearer = |token: Secret, expires_at: Option<u64>, fresh: bool| Bearer {
            user: user.to_string(),
            token,
            expires_at,
            fresh,
        };
        match &src.kind {
            TokenKind::OAuth2(o) => {
                let (token, expires_at, fresh) = self.oauth2(slot, o, cache, force, now).await?;
                Ok(bearer(token, expires_at, fresh))
            }
            TokenKind::Command(argv) => {
                let t = external::command(argv, src.timeout).await?;
                Ok(bearer(t, None, true))
            }
            TokenKind::File(path) => {
                if !force {
                    if let (Some((t, _, _)), Some(old)) = (&cache.token, &cache.stamp) {
                        if external::stamp(path).as_ref() == Some(old) {
                            return Ok(bearer(t.clone(), None, false));
                        }
                    }
                }
                let (t, stamp) = external::file(path).await?;
                cache.token = Some((t.clone(), u64::MAX, None));
                cache.stamp = Some(stamp);
                Ok(bearer(t, None, true))
            }
            TokenKind::Socket(path) => external::socket(path, user, src.timeout).await,
            TokenKind::Http { url, account, .. } => {
                let account = account.as_deref().unwrap_or(user);
                external::http(&self.http, url, account, src.timeout).await
            }
        }
    }

    /// An OAuth2 source's access token, its expiry and whether it was issued
    /// now: the cached one while it may still be handed out, else a new one.
    async fn oauth2(
        &self,
        slot: &Slot,
        o: &OAuth2Source,
        cache: &mut Cache,
        force: bool,
        now: u64,
    ) -> Result<(Secret, Option<u64>, bool), TokenError> {
        let src = &slot.source;
        if !force {
            if let Some((t, use_until, exp)) = &cache.token {
                if now < *use_until {
                    return Ok((t.clone(), *exp, false));
                }
            }
        }
        let (token, use_until, expires_at, fresh) = match o.grant {
            Grant::RefreshToken => self.refresh(slot, o, cache, force, now).await?,
            Grant::ClientCredentials => {
                let resp = endpoint::client_credentials(&self.http, o, src.timeout)
                    .await
                    .map_err(|e| e.into_token_error(&src.name))?;
                let life = resp.expires_in.unwrap_or(DEFAULT_LIFETIME);
                (
                    resp.access_token,
                    use_until(now, life, o.refresh_before),
                    Some(now.saturating_add(life)),
                    true,
                )
            }
        };
        cache.token = Some((token.clone(), use_until, expires_at));
        Ok((token, expires_at, fresh))
    }

    /// The refresh-token grant, under the state file's lock from read to write:
    /// the token, when to stop handing it out, its expiry, and whether it was
    /// issued now (not taken from the state file).
    async fn refresh(
        &self,
        slot: &Slot,
        o: &OAuth2Source,
        cache: &mut Cache,
        force: bool,
        now: u64,
    ) -> Result<(Secret, u64, Option<u64>, bool), TokenError> {
        let src = &slot.source;
        let name = &src.name;
        let _lock = state::lock_async(&o.state_file)
            .await
            .map_err(|e| TokenError::Temporary(format!("token source {name}: {e}")))?;
        let mut st = load_state(o, cache, name)?;
        if !force {
            // Another process (`oauth token`, a restart) may have refreshed.
            if let (Some(t), Some(exp)) = (st.access_token(), st.expires_at) {
                if now < exp.saturating_sub(o.refresh_before.as_secs()) {
                    let until = exp.saturating_sub(o.refresh_before.as_secs());
                    return Ok((t, until, Some(exp), false));
                }
            }
        }
        let Some(rt) = st.refresh_token() else {
            return Err(not_logged_in(name, o));
        };
        let resp = endpoint::refresh(&self.http, o, &rt, src.timeout)
            .await
            .map_err(|e| e.into_token_error(name))?;
        let life = resp.expires_in.unwrap_or(DEFAULT_LIFETIME);
        let expires_at = now.saturating_add(life);
        st.set_access_token(&resp.access_token, Some(expires_at));
        let rotated = resp.refresh_token.is_some();
        if let Some(new_rt) = &resp.refresh_token {
            st.set_refresh_token(new_rt);
        }
        st.refreshed_at = Some(now);
        if resp.scope.is_some() {
            st.scope = resp.scope.clone();
        }
        record_refresh(slot, o, cache, st, rotated, now);
        Ok((
            resp.access_token,
            use_until(now, life, o.refresh_before),
            Some(expires_at),
            true,
        ))
    }

    /// Something an operator may have changed to revive a dead source: the
    /// state file (`oauth login`) or the token file.
    pub fn inputs(&self, name: &str) -> Option<FileStamp> {
        let slot = self.slot(name)?;
        match &slot.source.kind {
            TokenKind::OAuth2(o) if o.grant == Grant::RefreshToken => {
                external::stamp(&o.state_file)
            }
            TokenKind::OAuth2(o) => o.client_secret_file.as_deref().and_then(external::stamp),
            TokenKind::File(p) => external::stamp(p),
            _ => None,
        }
    }

    /// How many fetches of each source have failed since start.
    pub fn failures(&self) -> Vec<(String, u64)> {
        self.all()
            .iter()
            .map(|slot| {
                let n = slot.failures.load(Ordering::Relaxed);
                (slot.source.name.clone(), n)
            })
            .collect()
    }

    /// Forgets the negative cache of a source, so the next `bearer` asks again.
    pub async fn forget_failure(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            slot.cache.lock().await.failed = None;
        }
    }

    /// Current status of every source, with what the state files say.
    pub fn statuses(&self) -> Vec<Status> {
        self.all()
            .iter()
            .map(|slot| {
                let mut st = lock(&slot.status).clone();
                if let TokenKind::OAuth2(o) = &slot.source.kind {
                    if let Ok(Some(file)) = state::load(&o.state_file) {
                        st.refreshed_at = st.refreshed_at.max(file.refreshed_at);
                        st.obtained_at = file.obtained_at;
                        st.account = file.account.clone();
                        if st.expires_at.is_none() {
                            st.expires_at = file.expires_at;
                        }
                    }
                }
                st
            })
            .collect()
    }

    /// Refreshes refresh-token sources not used within their `keepalive`, so a
    /// relay that sends little mail does not let its grant die of disuse.
    pub async fn keepalive(&self) {
        let now = self.now();
        for slot in self.all() {
            let TokenKind::OAuth2(o) = &slot.source.kind else {
                continue;
            };
            if o.grant != Grant::RefreshToken {
                continue;
            }
            let Ok(Some(file)) = state::load(&o.state_file) else {
                continue;
            };
            let last = file.refreshed_at.or(file.obtained_at).unwrap_or(0);
            if now.saturating_sub(last) < o.keepalive.as_secs() {
                continue;
            }
            match self.bearer(&slot.source.name, "", true).await {
                Ok(_) => tracing::info!(
                    "token source {}: refreshed to keep the grant alive",
                    slot.source.name
                ),
                Err(e) => tracing::warn!(
                    "token source {}: keep-alive refresh failed: {e}",
                    slot.source.name
                ),
            }
        }
    }
}

impl Slot {
    fn new(s: &TokenSource) -> Slot {
        Slot {
            source: s.clone(),
            cache: tokio::sync::Mutex::new(Cache::default()),
            status: Mutex::new(Status {
                name: s.name.clone(),
                describe: s.describe(),
                ..Status::default()
            }),
            failures: AtomicU64::new(0),
        }
    }
}

/// The source's tokens: those that could not be saved, else the state file's.
fn load_state(o: &OAuth2Source, cache: &Cache, name: &str) -> Result<State, TokenError> {
    match cache.unsaved.clone() {
        Some(s) => Ok(s),
        None => match state::load(&o.state_file) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(not_logged_in(name, o)),
            Err(e) => Err(TokenError::Dead(format!("token source {name}: {e}"))),
        },
    }
}

/// Stamps the status with the refresh and saves the refreshed tokens; if they
/// cannot be saved they are kept in memory, so a rotated refresh token is not lost.
fn record_refresh(
    slot: &Slot,
    o: &OAuth2Source,
    cache: &mut Cache,
    st: State,
    rotated: bool,
    now: u64,
) {
    let name = &slot.source.name;
    let mut stamped = lock(&slot.status);
    stamped.refreshed_at = Some(now);
    stamped.obtained_at = st.obtained_at;
    drop(stamped);
    match state::save(&o.state_file, &st) {
        Ok(()) => cache.unsaved = None,
        Err(e) => {
            tracing::error!(
                "token source {name}: cannot save {} tokens: {e}; keeping them in memory",
                if rotated { "the rotated" } else { "new" }
            );
            cache.unsaved = Some(st);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last moment a token issued at `now` for `life` seconds is handed out:
/// `refresh_before` ahead of expiry, or half its life for short-lived tokens.
fn use_until(now: u64, life: u64, refresh_before: Duration) -> u64 {
    let margin = refresh_before.as_secs().min(life / 2);
    now.saturating_add(life - margin)
}

fn not_logged_in(name: &str, o: &OAuth2Source) -> TokenError {
    TokenError::Dead(format!(
        "token source {name} has no refresh token yet ({} missing): run `smarthost oauth login {name}`",
        o.state_file.display()
    ))
}

/// Why no HTTP client for token endpoints could be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error(transparent)]
    Tls(#[from] crate::upstream::tls::TlsSetupError),
    #[error("HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// An HTTP client for token endpoints and HTTP token sources: the same TLS
/// roots as upstream connections, no redirects (a token request that is
/// redirected is misconfigured, and a redirect could carry the secret away).
///
/// Proxies: `[oauth] proxy` when set (NO_PROXY still applies), else
/// reqwest's reading of HTTPS_PROXY, HTTP_PROXY and NO_PROXY.
pub fn http_client(
    tls: rustls::ClientConfig,
    proxy: Option<&crate::config::ProxySettings>,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder();
    if let Some(p) = proxy {
        let mut proxy = reqwest::Proxy::all(&p.url)?.no_proxy(reqwest::NoProxy::from_env());
        if let Some((user, password)) = p
            .credentials
            .as_ref()
            .and_then(|c| c.expose().split_once(':'))
        {
            proxy = proxy.basic_auth(user, password);
        }
        builder = builder.proxy(proxy);
    }
    builder
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("smarthost/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(HttpClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::use_until;
    use std::time::Duration;

    #[test]
    fn margin() {
        assert_eq!(use_until(1000, 3600, Duration::from_secs(300)), 1000 + 3300);
        assert_eq!(use_until(1000, 100, Duration::from_secs(300)), 1050);
        assert_eq!(
            use_until(u64::MAX - 1, 3600, Duration::from_secs(300)),
            u64::MAX
        );
    }
}
