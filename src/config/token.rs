//! `[[token_source]]`: where a route's OAuth2 access tokens come from. A source is
//! named so several routes (or the token-sharing servers) can use one refresh
//! token: two refreshers of one rotating refresh token would invalidate each other.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::secret::{read_secret_file, Secret};
use super::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenSource {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    // oauth2
    provider: Option<String>,
    tenant: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    grant: Option<String>,
    scopes: Option<Vec<String>>,
    token_url: Option<String>,
    device_url: Option<String>,
    authorize_url: Option<String>,
    state_file: Option<PathBuf>,
    refresh_before: Option<Spanned<String>>,
    keepalive: Option<Spanned<String>>,
    // command
    command: Option<Vec<String>>,
    // file, socket
    path: Option<PathBuf>,
    // http
    url: Option<String>,
    account: Option<String>,
    // all
    timeout: Option<Spanned<String>>,
    share_as: Option<Vec<String>>,
}

/// The keys of `type = "oauth2"`, besides the ones every type takes.
const OAUTH2_KEYS: &[&str] = &[
    "provider",
    "tenant",
    "client_id",
    "client_secret_file",
    "grant",
    "scopes",
    "token_url",
    "device_url",
    "authorize_url",
    "state_file",
];

impl RawTokenSource {
    /// Each key that belongs to one type of source, and whether it is set.
    fn typed_keys(&self) -> [(&'static str, bool); 14] {
        [
            ("provider", self.provider.is_some()),
            ("tenant", self.tenant.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
            ("grant", self.grant.is_some()),
            ("scopes", self.scopes.is_some()),
            ("token_url", self.token_url.is_some()),
            ("device_url", self.device_url.is_some()),
            ("authorize_url", self.authorize_url.is_some()),
            ("state_file", self.state_file.is_some()),
            ("command", self.command.is_some()),
            ("path", self.path.is_some()),
            ("url", self.url.is_some()),
            ("account", self.account.is_some()),
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    state_dir: Option<PathBuf>,
    share_socket: Option<PathBuf>,
    share_group: Option<String>,
    share_http: Option<Spanned<String>>,
    share_http_password_file: Option<PathBuf>,
    proxy: Option<Spanned<String>>,
    proxy_credentials_file: Option<PathBuf>,
}

/// `[oauth] proxy`: where token endpoints and HTTP token sources are
/// reached through (an HTTP proxy, CONNECT for https).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub url: String,
    /// `user:password` from `proxy_credentials_file`, for basic auth.
    pub credentials: Option<Secret>,
}

/// `[oauth]`: where refresh tokens live, and the optional servers that share
/// tokens with other local programs (msmtp, git send-email, exim).
#[derive(Debug, Clone, Default)]
pub struct OAuthSettings {
    pub state_dir: PathBuf,
    /// Credential-server protocol on a UNIX socket (mode 0660, group `share_group`).
    pub share_socket: Option<PathBuf>,
    pub share_group: Option<String>,
    /// Authentication-server protocol over HTTP on loopback, behind basic auth:
    /// every local user can reach a TCP port, so the password is the access control.
    pub share_http: Option<std::net::SocketAddr>,
    pub share_http_password: Option<Secret>,
    pub share_http_password_file: Option<PathBuf>,
    /// None: the HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment, if any.
    pub proxy: Option<ProxySettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Google,
    Microsoft,
    Generic,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
            Provider::Generic => "generic",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Delegated: a user logged in once (`smarthost oauth login`); the refresh
    /// token stands for them from then on.
    RefreshToken,
    /// App-only: the client's own secret gets tokens, no user involved.
    ClientCredentials,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Source {
    pub provider: Provider,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    pub grant: Grant,
    pub scopes: Vec<String>,
    pub token_url: String,
    pub device_url: Option<String>,
    pub authorize_url: Option<String>,
    /// The refresh token and the cached access token (JSON, mode 0600).
    pub state_file: PathBuf,
    /// An access token is never used in its last `refresh_before`.
    pub refresh_before: Duration,
    /// Refresh at least this often even when no mail flows, so an unused refresh
    /// token does not expire (Microsoft: 90 days of inactivity).
    pub keepalive: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    OAuth2(OAuth2Source),
    /// argv, run without a shell; the token is its stdout.
    Command(Vec<String>),
    /// The token is the file's content, re-read when the file changes.
    File(PathBuf),
    /// The credential-server protocol over a UNIX socket.
    Socket(PathBuf),
    /// The authentication-server protocol: GET `url?account=..&proto=smtp`. The
    /// URL may carry basic-auth credentials, so it is a secret; `shown` is the URL
    /// without them.
    Http {
        url: Secret,
        shown: String,
        account: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenSource {
    pub name: String,
    pub kind: TokenKind,
    /// Bound on one fetch (token endpoint request, command run, socket exchange).
    pub timeout: Duration,
    /// Account names under which the sharing servers hand this source's token to
    /// other local programs; empty: not shared.
    pub share_as: Vec<String>,
}

impl TokenSource {
    /// One line for `check` and `oauth status`: never a secret.
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::OAuth2(o) => format!(
                "oauth2 provider={} grant={} client_id={} token_url={} state_file={}",
                o.provider,
                match o.grant {
                    Grant::RefreshToken => "refresh_token",
                    Grant::ClientCredentials => "client_credentials",
                },
                o.client_id,
                o.token_url,
                o.state_file.display()
            ),
            TokenKind::Command(argv) => format!("command {}", argv.join(" ")),
            TokenKind::File(p) => format!("file {}", p.display()),
            TokenKind::Socket(p) => format!("socket {}", p.display()),
            TokenKind::Http { shown, .. } => format!("http {shown}"),
        }
    }
}

impl OAuth2Source {
    /// The scopes `oauth login` asks for: the configured ones and the
    /// provider's identity scopes, so the id_token says who signed in (the
    /// account must be the route's `username`). Only at login: a refresh
    /// asks for the configured scopes alone, so grants made before these
    /// were added keep refreshing.
    pub fn login_scopes(&self) -> String {
        let identity: &[&str] = match self.provider {
            Provider::Microsoft => &["openid", "profile", "email"],
            Provider::Google => &["openid", "email"],
            Provider::Generic => &[],
        };
        let mut scopes = self.scopes.clone();
        for s in identity {
            if !scopes.iter().any(|c| c == s) {
                scopes.push(s.to_string());
            }
        }
        scopes.join(" ")
    }
}

/// Endpoints and scopes of the presets. Microsoft's SMTP scope is on
/// outlook.office.com; `offline_access` is what returns a refresh token. Google's
/// only SMTP scope is full mail access.
pub fn preset(
    provider: Provider,
    tenant: &str,
    grant: Grant,
) -> (Option<String>, Option<String>, Option<String>, Vec<String>) {
    match provider {
        Provider::Microsoft => {
            let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
            let scopes = match grant {
                Grant::RefreshToken => vec![
                    "https://outlook.office.com/SMTP.Send".to_string(),
                    "offline_access".to_string(),
                ],
                Grant::ClientCredentials => {
                    vec!["https://outlook.office365.com/.default".to_string()]
                }
            };
            (
                Some(format!("{base}/token")),
                Some(format!("{base}/devicecode")),
                Some(format!("{base}/authorize")),
                scopes,
            )
        }
        // Google's device flow does not allow the mail scope, so no device URL:
        // `oauth login` uses the browser flow with PKCE.
        Provider::Google => (
            Some("https://oauth2.googleapis.com/token".to_string()),
            None,
            Some("https://accounts.google.com/o/oauth2/v2/auth".to_string()),
            vec!["https://mail.google.com/".to_string()],
        ),
        Provider::Generic => (None, None, None, Vec::new()),
    }
}

impl Validator<'_> {
    pub(super) fn oauth_settings(
        &mut self,
        r: RawOAuth,
        base: &Path,
        queue: &Path,
    ) -> OAuthSettings {
        let state_dir = r.state_dir.map(|p| base.join(p)).unwrap_or_else(|| {
            queue
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("oauth")
        });
        let share_http = match &r.share_http {
            None => None,
            Some(s) => match s.get_ref().parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => Some(a),
                _ => {
                    self.problem(
                        Some(s.span()),
                        "oauth.share_http must be a loopback IP:port, e.g. \"127.0.0.1:8089\"",
                    );
                    None
                }
            },
        };
        let password_file = r
            .share_http_password_file
            .map(|p| super::secret::secret_path(base, &p));
        let mut share_http_password = None;
        match (&share_http, &password_file) {
            (Some(_), None) => self.problem(
                r.share_http.as_ref().map(|s| s.span()),
                "oauth.share_http needs share_http_password_file: any local user can reach a loopback port",
            ),
            (Some(_), Some(p)) if self.read_secrets => match read_secret_file(p) {
                Ok(s) => share_http_password = Some(s),
                Err(m) => self.problem(None, format!("oauth.share_http_password_file: {m}")),
            },
            _ => {}
        }
        OAuthSettings {
            state_dir,
            share_socket: r.share_socket.map(|p| base.join(p)),
            share_group: r.share_group,
            share_http,
            share_http_password,
            share_http_password_file: password_file,
            proxy: self.proxy(r.proxy, r.proxy_credentials_file, base),
        }
    }

    /// `proxy` is an `http://host:port` URL without credentials (a password
    /// in the configuration would be shown wherever it is); they come from
    /// `proxy_credentials_file` instead.
    fn proxy(
        &mut self,
        url: Option<Spanned<String>>,
        credentials_file: Option<PathBuf>,
        base: &Path,
    ) -> Option<ProxySettings> {
        let url = url?;
        let text = url.get_ref().trim();
        match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none() => {}
            _ => {
                self.problem(
                    Some(url.span()),
                    format!("oauth.proxy {text:?}: expected http://host:port, without credentials (put user:password in proxy_credentials_file)"),
                );
                return None;
            }
        }
        let mut credentials = None;
        if let Some(p) = credentials_file.map(|p| super::secret::secret_path(base, &p)) {
            if self.read_secrets {
                match read_secret_file(&p) {
                    Ok(s) if s.expose().contains(':') => credentials = Some(s),
                    Ok(_) => {
                        self.problem(None, "oauth.proxy_credentials_file: expected user:password")
                    }
                    Err(m) => self.problem(None, format!("oauth.proxy_credentials_file: {m}")),
                }
            }
        }
        Some(ProxySettings {
            url: text.to_string(),
            credentials,
        })
    }

    pub(super) fn token_source(
        &mut self,
        r: RawTokenSource,
        span: std::ops::Range<usize>,
        base: &Path,
        state_dir: &Path,
    ) -> Option<TokenSource> {
        let here = Some(span.clone());
        let name = r.name.trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.problem(
                here,
                format!("token_source name {name:?}: use letters, digits, '-', '_' and '.'"),
            );
            return None;
        }
        let timeout = self.duration(&r.timeout, Duration::from_secs(30));
        let share_as = r.share_as.clone().unwrap_or_default();
        let kind = match r.kind.as_str() {
            "oauth2" => {
                self.only_keys(&name, &r, &span, OAUTH2_KEYS);
                TokenKind::OAuth2(self.oauth2(&name, &r, here, base, state_dir)?)
            }
            "command" => {
                self.only_keys(&name, &r, &span, &["command"]);
                self.command_source(&name, &r, here)?
            }
            "file" | "socket" => {
                self.only_keys(&name, &r, &span, &["path"]);
                self.path_source(&name, &r, here, base)?
            }
            "http" => {
                self.only_keys(&name, &r, &span, &["url", "account"]);
                self.http_source(&name, &r, here)?
            }
            other => {
                self.problem(
                    here,
                    format!(
                        "token_source {name:?}: type = {other:?}; use \"oauth2\", \"command\", \"file\", \"socket\" or \"http\""
                    ),
                );
                return None;
            }
        };
        Some(TokenSource {
            name,
            kind,
            timeout,
            share_as,
        })
    }

    /// Reports every key set that is not among `allowed`, the keys of the
    /// source's type: a key of another type is a sign of a wrong `type`.
    fn only_keys(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        span: &std::ops::Range<usize>,
        allowed: &[&str],
    ) {
        for (key, present) in r.typed_keys() {
            if present && !allowed.contains(&key) {
                self.problem(
                    Some(span.clone()),
                    format!(
                        "token_source {name:?}: {key} does not apply to type = {:?}",
                        r.kind
                    ),
                );
            }
        }
        if !allowed.contains(&"state_file") && (r.refresh_before.is_some() || r.keepalive.is_some())
        {
            self.problem(
                Some(span.clone()),
                format!(
                    "token_source {name:?}: refresh_before and keepalive are for type = \"oauth2\""
                ),
            );
        }
    }

    fn command_source(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<TokenKind> {
        match &r.command {
            Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                Some(TokenKind::Command(argv.clone()))
            }
            _ => {
                self.problem(
                    here,
                    format!(
                        "token_source {name:?}: type = \"command\" needs command = [\"program\", \"arg\", ...]"
                    ),
                );
                None
            }
        }
    }

    /// `type = "file"` and `type = "socket"`: both name a path only.
    fn path_source(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
    ) -> Option<TokenKind> {
        let Some(p) = &r.path else {
            self.problem(
                here,
                format!("token_source {name:?}: type = {:?} needs path", r.kind),
            );
            return None;
        };
        if r.kind == "file" {
            Some(TokenKind::File(base.join(p)))
        } else {
            Some(TokenKind::Socket(base.join(p)))
        }
    }

    fn http_source(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<TokenKind> {
        let Some(u) = &r.url else {
            self.problem(
                here,
                format!("token_source {name:?}: type = \"http\" needs url"),
            );
            return None;
        };
        let parsed = match url::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
            // The URL may hold a password: name the problem, not the URL.
            _ => {
                self.problem(
                    here,
                    format!("token_source {name:?}: url is not an http(s) URL"),
                );
                return None;
            }
        };
        let mut shown = parsed.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if parsed.scheme() == "http" && !is_loopback_url(&parsed) {
            self.problem(
                here,
                format!(
                    "token_source {name:?}: plain http to {shown} would send tokens in clear text; use https or a loopback address"
                ),
            );
        }
        Some(TokenKind::Http {
            url: Secret::new(u.clone()),
            shown: shown.to_string(),
            account: r.account.clone(),
        })
    }

    fn oauth2(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        here: Option<std::ops::Range<usize>>,
        base: &Path,
        state_dir: &Path,
    ) -> Option<OAuth2Source> {
        let provider = self.provider(name, r.provider.as_deref(), here.clone())?;
        let grant = self.grant(name, r.grant.as_deref(), here.clone())?;
        let tenant = self.tenant(name, r.tenant.as_deref(), provider, grant, here.clone());
        let (p_token, p_device, p_authorize, p_scopes) = preset(provider, tenant, grant);
        let Some(token_url) = r.token_url.clone().or(p_token) else {
            self.problem(
                here,
                format!("token_source {name:?}: provider = \"generic\" needs token_url"),
            );
            return None;
        };
        self.endpoints(name, r, &token_url, here.clone());
        let Some(client_id) = r.client_id.clone().filter(|c| !c.trim().is_empty()) else {
            self.problem(
                here,
                format!("token_source {name:?}: client_id is required"),
            );
            return None;
        };
        let secret_path = r
            .client_secret_file
            .as_ref()
            .map(|p| super::secret::secret_path(base, p));
        let client_secret = self.client_secret(name, grant, secret_path.as_deref(), here.clone());
        let scopes = r.scopes.clone().unwrap_or(p_scopes);
        if scopes.is_empty() {
            self.problem(
                here.clone(),
                format!("token_source {name:?}: scopes are required for provider = \"generic\""),
            );
        }
        let refresh_before = self.duration(&r.refresh_before, Duration::from_secs(300));
        let keepalive = self.duration(&r.keepalive, Duration::from_secs(24 * 3600));
        Some(OAuth2Source {
            provider,
            client_id,
            client_secret,
            client_secret_file: secret_path,
            grant,
            scopes,
            token_url,
            device_url: r.device_url.clone().or(p_device),
            authorize_url: r.authorize_url.clone().or(p_authorize),
            state_file: r
                .state_file
                .as_ref()
                .map(|p| base.join(p))
                .unwrap_or_else(|| state_dir.join(format!("{name}.json"))),
            refresh_before,
            keepalive,
        })
    }

    fn provider(
        &mut self,
        name: &str,
        written: Option<&str>,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<Provider> {
        match written.unwrap_or("generic") {
            "google" => Some(Provider::Google),
            "microsoft" => Some(Provider::Microsoft),
            "generic" => Some(Provider::Generic),
            other => {
                self.problem(
                    here,
                    format!(
                        "token_source {name:?}: provider = {other:?}; use \"google\", \"microsoft\" or \"generic\""
                    ),
                );
                None
            }
        }
    }

    fn grant(
        &mut self,
        name: &str,
        written: Option<&str>,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<Grant> {
        match written.unwrap_or("refresh_token") {
            "refresh_token" => Some(Grant::RefreshToken),
            "client_credentials" => Some(Grant::ClientCredentials),
            other => {
                self.problem(
                    here,
                    format!(
                        "token_source {name:?}: grant = {other:?}; use \"refresh_token\" or \"client_credentials\""
                    ),
                );
                None
            }
        }
    }

    /// The Microsoft tenant (default `common`), with the combinations of
    /// provider, tenant and grant that cannot get a token reported.
    fn tenant<'r>(
        &mut self,
        name: &str,
        written: Option<&'r str>,
        provider: Provider,
        grant: Grant,
        here: Option<std::ops::Range<usize>>,
    ) -> &'r str {
        if written.is_some() && provider != Provider::Microsoft {
            self.problem(
                here.clone(),
                format!("token_source {name:?}: tenant is for provider = \"microsoft\""),
            );
        }
        let tenant = written.unwrap_or("common");
        if provider == Provider::Microsoft
            && grant == Grant::ClientCredentials
            && matches!(tenant, "common" | "organizations" | "consumers")
        {
            self.problem(
                here.clone(),
                format!(
                    "token_source {name:?}: client_credentials needs tenant = your directory (tenant id or contoso.onmicrosoft.com)"
                ),
            );
        }
        if provider == Provider::Google && grant == Grant::ClientCredentials {
            self.problem(
                here,
                format!(
                    "token_source {name:?}: Google has no client_credentials grant for SMTP; use a service-account token through type = \"command\""
                ),
            );
        }
        tenant
    }

    /// Tokens and codes travel to these URLs: https, or http to loopback only.
    fn endpoints(
        &mut self,
        name: &str,
        r: &RawTokenSource,
        token_url: &str,
        here: Option<std::ops::Range<usize>>,
    ) {
        for (key, value) in [
            ("token_url", Some(token_url)),
            ("device_url", r.device_url.as_deref()),
            ("authorize_url", r.authorize_url.as_deref()),
        ] {
            let Some(value) = value else { continue };
            match url::Url::parse(value) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_url(&u)) => {
                }
                _ => self.problem(
                    here.clone(),
                    format!(
                        "token_source {name:?}: {key} must be an https URL (http only to loopback)"
                    ),
                ),
            }
        }
    }

    /// The client secret, read unless this is a client command; required for
    /// the client_credentials grant.
    fn client_secret(
        &mut self,
        name: &str,
        grant: Grant,
        path: Option<&Path>,
        here: Option<std::ops::Range<usize>>,
    ) -> Option<Secret> {
        if grant == Grant::ClientCredentials && path.is_none() {
            self.problem(
                here.clone(),
                format!("token_source {name:?}: client_credentials needs client_secret_file"),
            );
        }
        let path = path.filter(|_| self.read_secrets)?;
        match read_secret_file(path) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(here, format!("token_source {name:?}: {e}"));
                None
            }
        }
    }
}

/// `host_str` writes an IPv6 host in brackets, which the host test takes.
fn is_loopback_url(u: &url::Url) -> bool {
    u.host_str().is_some_and(super::is_loopback_host)
}
