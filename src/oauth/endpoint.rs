//! Requests to an OAuth2 authorization server's token endpoint (RFC 6749 section
//! 3.2): the refresh-token and client-credentials grants here, the device-code
//! and authorization-code grants for `oauth login`. A short form POST with
//! reqwest, which is all these grants need.
//!
//! What a failure means for mail is decided here: an error the provider states
//! about the grant or the client (`invalid_grant`, `invalid_client`, ...) will
//! not go away by waiting, so it is [`TokenError::Dead`]; anything about the
//! network or the server's health is [`TokenError::Temporary`].

use std::time::Duration;

use serde::Deserialize;

use super::TokenError;
use crate::config::{OAuth2Source, Provider, Secret};

/// A successful token response (RFC 6749 5.1).
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub expires_in: Option<u64>,
    /// Present when the provider rotates (or first issues) the refresh token.
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
    /// OpenID `id_token`, when the provider sent one (who logged in).
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    scope: Option<String>,
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the endpoint answered when it was not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// No answer or no usable answer: network, timeout, 5xx, unparseable body.
    Transport(String),
    /// An RFC 6749 5.2 error (also the RFC 8628 3.5 polling errors).
    OAuth {
        error: String,
        description: Option<String>,
    },
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointError::Transport(s) => f.write_str(s),
            EndpointError::OAuth { error, description } => match description {
                // Providers put multi-line traces in descriptions: keep one line.
                Some(d) => write!(f, "{error}: {}", one_line(d, 300)),
                None => f.write_str(error),
            },
        }
    }
}

/// One line without control characters, at most `max` characters: for text
/// from the network that ends up on a terminal, in a log or in an error.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

impl EndpointError {
    /// What the error means for mail waiting on this token.
    pub fn into_token_error(self, source: &str) -> TokenError {
        match &self {
            EndpointError::Transport(_) => {
                TokenError::Temporary(format!("token endpoint of {source}: {self}"))
            }
            EndpointError::OAuth { error, .. } => match error.as_str() {
                "invalid_grant" => TokenError::Dead(format!(
                    "the provider refused the refresh token of {source} ({self}); run `smarthost oauth login {source}`"
                )),
                "invalid_client" | "unauthorized_client" | "invalid_scope"
                | "unsupported_grant_type" | "invalid_request" | "access_denied" => {
                    TokenError::Dead(format!(
                        "the provider refused the client settings of {source} ({self}); check client_id, client_secret_file and scopes"
                    ))
                }
                _ => TokenError::Temporary(format!("token endpoint of {source}: {self}")),
            },
        }
    }
}

/// The most any token endpoint answer may be; real ones are a few KB.
const MAX_BODY: usize = 256 * 1024;

/// POSTs a form to `url` and reads the token response.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    src: &OAuth2Source,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<TokenResponse, EndpointError> {
    let (status, bytes) = post_raw(http, url, src, form, timeout).await?;
    parse(status, &bytes)
}

/// POSTs a form with the client's credentials added the way the provider
/// expects them, and returns the status and the (size-capped) answer. The
/// device authorization request (RFC 8628 3.1) uses this too: it takes the
/// token endpoint's client authentication but answers something else.
pub async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    src: &OAuth2Source,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), EndpointError> {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut req = http
        .post(url)
        .timeout(timeout)
        .header("Accept", "application/json");
    match (&src.client_secret, src.provider) {
        // RFC 6749 2.3.1: servers MUST support HTTP Basic for clients with a
        // secret, with both parts form-encoded first. Google and Microsoft
        // document the secret as a form field, so they get that.
        (Some(secret), Provider::Generic) => {
            let user: String =
                url::form_urlencoded::byte_serialize(src.client_id.as_bytes()).collect();
            let pass: String =
                url::form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
            req = req.basic_auth(user, Some(pass));
        }
        (Some(secret), _) => {
            fields.push(("client_id", &src.client_id));
            fields.push(("client_secret", secret.expose()));
        }
        (None, _) => fields.push(("client_id", &src.client_id)),
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish();
    let resp = req
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| EndpointError::Transport(transport_text(&e)))?;
    let status = resp.status();
    let bytes = read_capped(resp).await?;
    Ok((status.as_u16(), bytes))
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, EndpointError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY {
                    return Err(EndpointError::Transport(
                        "answer larger than 256 KiB".into(),
                    ));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(EndpointError::Transport(transport_text(&e))),
        }
    }
}

/// reqwest's error text names the URL; ours carry no secrets, but keep only
/// the cause, which is what an operator needs.
fn transport_text(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what
    } else {
        format!("{what}: {}", one_line(&cause, 200))
    }
}

/// Reads an answer: a token on 200, an RFC 6749 error on 400/401 (and on any
/// status, if the body says so), a transport error otherwise. The body is
/// never quoted: it may hold a token.
pub fn parse(status: u16, body: &[u8]) -> Result<TokenResponse, EndpointError> {
    let raw: Option<RawResponse> = serde_json::from_slice(body).ok();
    if let Some(RawResponse {
        error: Some(error), ..
    }) = &raw
    {
        // A 5xx with an error body is still the server being unwell.
        if status >= 500 {
            return Err(EndpointError::Transport(format!("HTTP {status} ({error})")));
        }
        let description = raw.as_ref().and_then(|r| r.error_description.clone());
        return Err(EndpointError::OAuth {
            error: one_line(error, 64),
            description,
        });
    }
    if status != 200 {
        return Err(EndpointError::Transport(format!("HTTP {status}")));
    }
    let Some(raw) = raw else {
        return Err(EndpointError::Transport(
            "answer is not a JSON token response".into(),
        ));
    };
    let Some(access_token) = raw.access_token.filter(|t| !t.is_empty()) else {
        return Err(EndpointError::Transport(
            "answer has no access_token".into(),
        ));
    };
    if let Some(t) = &raw.token_type {
        if !t.eq_ignore_ascii_case("bearer") {
            return Err(EndpointError::OAuth {
                error: "unsupported_token_type".into(),
                description: Some(format!("token_type {:?} is not Bearer", one_line(t, 32))),
            });
        }
    }
    // Some servers send expires_in as a string.
    let expires_in = match raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        expires_in,
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
        scope: raw.scope,
        id_token: raw.id_token,
    })
}

/// The refresh-token grant (RFC 6749 6).
pub async fn refresh(
    http: &reqwest::Client,
    src: &OAuth2Source,
    refresh_token: &Secret,
    timeout: Duration,
) -> Result<TokenResponse, EndpointError> {
    let scope = src.scopes.join(" ");
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
    ];
    // Microsoft wants the scope again; Google rejects nothing for it.
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    post(http, &src.token_url, src, &form, timeout).await
}

/// The client-credentials grant (RFC 6749 4.4): app-only tokens.
pub async fn client_credentials(
    http: &reqwest::Client,
    src: &OAuth2Source,
    timeout: Duration,
) -> Result<TokenResponse, EndpointError> {
    let scope = src.scopes.join(" ");
    let form = vec![("grant_type", "client_credentials"), ("scope", &scope)];
    post(http, &src.token_url, src, &form, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_errors() {
        let ok = parse(
            200,
            br#"{"access_token":"at","token_type":"Bearer","expires_in":"3599","refresh_token":"rt2"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "at");
        assert_eq!(ok.expires_in, Some(3599));
        assert_eq!(ok.refresh_token.unwrap().expose(), "rt2");

        let dead = parse(
            400,
            br#"{"error":"invalid_grant","error_description":"AADSTS70000: token expired\r\nTrace ID: x"}"#,
        )
        .unwrap_err();
        assert_eq!(
            dead.to_string(),
            "invalid_grant: AADSTS70000: token expired Trace ID: x"
        );
        assert!(matches!(
            dead.into_token_error("o365"),
            TokenError::Dead(m) if m.contains("oauth login o365")
        ));
        let busy = parse(503, br#"{"error":"temporarily_unavailable"}"#).unwrap_err();
        assert!(matches!(
            busy.into_token_error("x"),
            TokenError::Temporary(_)
        ));
        let html = parse(502, b"<html>bad gateway access_token=zzz</html>").unwrap_err();
        assert_eq!(html, EndpointError::Transport("HTTP 502".into()));
        let mac = parse(200, br#"{"access_token":"at","token_type":"mac"}"#).unwrap_err();
        assert!(mac.to_string().contains("not Bearer"));
        let secretive = parse(200, br#"{"token_type":"Bearer","refresh":"zzz"}"#).unwrap_err();
        assert!(!secretive.to_string().contains("zzz"));
    }
}
