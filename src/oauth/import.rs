//! `smarthost oauth import SOURCE FILE`: a refresh token obtained elsewhere
//! (a login done on a workstation for a headless server, or the token file
//! of sasl-xoauth2, Postfix's XOAUTH2 plugin) becomes the source's state
//! file, as `oauth login` would have written it.
//!
//! FILE holds either the bare refresh token (one line) or sasl-xoauth2's
//! JSON: `{"refresh_token": "...", "access_token": "...", "expiry": "<unix
//! seconds>", "user": "..."}` (`expiry` as a string or a number; everything
//! but `refresh_token` optional). A still-valid access token is kept, so the
//! first use needs no refresh.

use std::path::Path;

use serde::Deserialize;

use super::state::{self, State, StateError};
use crate::config::{Grant, Secret, TokenKind, TokenSource};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "token source {0:?} is not an oauth2 source with a refresh token: nothing to import into"
    )]
    NotRefreshable(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// What is wrong, never the file's text: it holds a secret.
    #[error("{path}: {reason}")]
    Content { path: String, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// sasl-xoauth2's token file.
#[derive(Deserialize)]
struct SaslXoauth2 {
    refresh_token: Option<String>,
    access_token: Option<String>,
    expiry: Option<serde_json::Value>,
    user: Option<String>,
}

/// What the file gave (Debug shows no secret: see `Secret`).
#[derive(Debug)]
struct Imported {
    refresh: Secret,
    access: Option<(Secret, u64)>,
    user: Option<String>,
}

/// The largest token file taken: tokens are a few KiB at most.
const MAX_FILE: u64 = 64 * 1024;

/// Reads `file` and writes `source`'s state under its lock. Returns the
/// account the file named, if any.
pub fn import(source: &TokenSource, file: &Path, now: u64) -> Result<Option<String>, ImportError> {
    let TokenKind::OAuth2(src) = &source.kind else {
        return Err(ImportError::NotRefreshable(source.name.clone()));
    };
    if src.grant != Grant::RefreshToken {
        return Err(ImportError::NotRefreshable(source.name.clone()));
    }
    let text = read(file)?;
    let got = parse(&text, now).map_err(|reason| ImportError::Content {
        path: file.display().to_string(),
        reason,
    })?;
    let mut st = State::default();
    st.set_refresh_token(&got.refresh);
    if let Some((token, expires_at)) = &got.access {
        st.set_access_token(token, Some(*expires_at));
    }
    st.obtained_at = Some(now);
    st.account = got.user.clone();
    // The daemon may be refreshing the old token: its save must not land
    // after ours.
    let _lock = state::lock(&src.state_file)?;
    state::save(&src.state_file, &st)?;
    Ok(got.user)
}

fn read(file: &Path) -> Result<String, ImportError> {
    use std::io::Read;
    let err = |source| ImportError::Read {
        path: file.display().to_string(),
        source,
    };
    let mut text = String::new();
    let reader: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(err)?)
    };
    reader
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(ImportError::Content {
            path: file.display().to_string(),
            reason: format!("over {MAX_FILE} bytes: not a token file"),
        });
    }
    Ok(text)
}

/// The tokens in a file's text; the error says what is wrong without
/// quoting it.
fn parse(text: &str, now: u64) -> Result<Imported, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return parse_json(trimmed, now);
    }
    if trimmed.is_empty() {
        return Err("empty: expected a refresh token".into());
    }
    if !is_token(trimmed) {
        return Err(
            "not a refresh token (one line of printable characters without spaces) nor sasl-xoauth2's JSON"
                .into(),
        );
    }
    Ok(Imported {
        refresh: Secret::new(trimmed),
        access: None,
        user: None,
    })
}

fn parse_json(text: &str, now: u64) -> Result<Imported, String> {
    let file: SaslXoauth2 = serde_json::from_str(text)
        .map_err(|e| format!("not valid JSON (line {} column {})", e.line(), e.column()))?;
    let refresh = file
        .refresh_token
        .filter(|t| is_token(t))
        .ok_or("the JSON has no usable \"refresh_token\"")?;
    let expiry = match &file.expiry {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    // An access token without a known future expiry is dropped: the first
    // use refreshes instead of sending one that may be dead.
    let access = match (file.access_token, expiry) {
        (Some(t), Some(at)) if is_token(&t) && at > now => Some((Secret::new(t), at)),
        _ => None,
    };
    let user = file
        .user
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty() && !u.chars().any(char::is_control));
    Ok(Imported {
        refresh: Secret::new(refresh),
        access,
        user,
    })
}

/// OAuth2 tokens are printable ASCII without spaces (RFC 6749 A.17, A.12).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_refresh_token() {
        let got = parse("  0.AAA-rt_1\n", 100).unwrap();
        assert_eq!(got.refresh.expose(), "0.AAA-rt_1");
        assert!(got.access.is_none() && got.user.is_none());
        assert!(parse("\n", 100).is_err());
        let err = parse("two words", 100).unwrap_err();
        assert!(!err.contains("words"), "{err}");
    }

    #[test]
    fn sasl_xoauth2_files() {
        let got = parse(
            r#"{"access_token":"at","refresh_token":"rt","expiry":"200","user":"a@b.c"}"#,
            100,
        )
        .unwrap();
        assert_eq!(got.refresh.expose(), "rt");
        let (at, exp) = got.access.unwrap();
        assert_eq!((at.expose(), exp), ("at", 200));
        assert_eq!(got.user.as_deref(), Some("a@b.c"));
        // Expired access token: dropped; numeric expiry taken.
        let got = parse(
            r#"{"access_token":"at","refresh_token":"rt","expiry":50}"#,
            100,
        )
        .unwrap();
        assert!(got.access.is_none());
        let err = parse(r#"{"access_token":"secret-at"}"#, 100).unwrap_err();
        assert!(
            err.contains("refresh_token") && !err.contains("secret-at"),
            "{err}"
        );
        let err = parse(r#"{"refresh_token": "secret-rt""#, 100).unwrap_err();
        assert!(
            err.contains("not valid JSON") && !err.contains("secret"),
            "{err}"
        );
    }
}
