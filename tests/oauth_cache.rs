//! The token cache on an injected clock: refreshed ahead of expiry and not
//! before, kept alive when idle, failures remembered briefly. Time is moved,
//! never slept; the token endpoint is the in-process one.

#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use oauth_peers::{write_state, Endpoint, Mode};
use smarthost::config::Config;
use smarthost::oauth::{TokenError, Tokens};

fn tokens(ep: &Endpoint, state: &Path, clock: Arc<AtomicU64>) -> Tokens {
    let text = format!(
        r#"
[[token_source]]
name = "g"
type = "oauth2"
provider = "generic"
client_id = "client-1"
token_url = "{}"
scopes = ["https://mail.google.com/"]
state_file = "{}"
refresh_before = "5m"
keepalive = "1d"
[[route]]
name = "d"
type = "directory"
path = "/nonexistent"
[routing]
default = "d"
"#,
        ep.url("/token"),
        state.display()
    );
    let config = Config::parse(&text, "t.toml", Path::new("/")).expect("config");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Tokens::with_clock(
        &config.token_sources,
        http,
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
}

#[tokio::test]
async fn refreshed_ahead_of_expiry_and_not_before() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-clock-1");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("g.json");
    write_state(&state, "rt-clock-1");
    let clock = Arc::new(AtomicU64::new(1_800_000_000));
    let t = tokens(&ep, &state, clock.clone());

    let a = t.bearer("g", "me@example.com", false).await.unwrap();
    assert_eq!(ep.requests().len(), 1);
    assert_eq!(a.expires_at, Some(1_800_000_000 + 3600));
    // Just over 5 minutes left: the cache answers.
    clock.fetch_add(3299, Ordering::SeqCst);
    let b = t.bearer("g", "me@example.com", false).await.unwrap();
    assert_eq!(a.token, b.token);
    assert_eq!(ep.requests().len(), 1);
    // Into the last five minutes: a new token, never the old one.
    clock.fetch_add(1, Ordering::SeqCst);
    let c = t.bearer("g", "me@example.com", false).await.unwrap();
    assert_ne!(a.token, c.token);
    assert_eq!(ep.requests().len(), 2);

    // Short-lived tokens are refreshed at half their life.
    *ep.expires_in.lock().unwrap() = 120;
    let d = t.bearer("g", "me@example.com", true).await.unwrap();
    clock.fetch_add(59, Ordering::SeqCst);
    assert_eq!(t.bearer("g", "x", false).await.unwrap().token, d.token);
    assert_eq!(ep.requests().len(), 3);
    clock.fetch_add(1, Ordering::SeqCst);
    assert_ne!(t.bearer("g", "x", false).await.unwrap().token, d.token);
}

#[tokio::test]
async fn idle_grant_kept_alive_and_failures_remembered_briefly() {
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-idle-1");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("g.json");
    write_state(&state, "rt-idle-1"); // obtained_at 1700000000
    let clock = Arc::new(AtomicU64::new(1_700_000_000 + 3600));
    let t = tokens(&ep, &state, clock.clone());

    // Within a day of the login: nothing to do.
    t.keepalive().await;
    assert_eq!(ep.requests().len(), 0);
    // A day and a bit without use: refreshed although no mail asked.
    clock.fetch_add(86_400, Ordering::SeqCst);
    t.keepalive().await;
    assert_eq!(ep.requests().len(), 1);
    t.keepalive().await;
    assert_eq!(ep.requests().len(), 1, "refreshed_at is recorded");

    // The endpoint goes down: the failure is answered from memory for 30 s,
    // then asked again; a forced fetch always asks.
    ep.set_mode(Mode::Down);
    clock.fetch_add(4000, Ordering::SeqCst);
    let e = t.bearer("g", "x", false).await.unwrap_err();
    assert!(matches!(e, TokenError::Temporary(_)), "{e:?}");
    let n = ep.requests().len();
    clock.fetch_add(10, Ordering::SeqCst);
    assert!(t.bearer("g", "x", false).await.is_err());
    assert_eq!(ep.requests().len(), n);
    clock.fetch_add(30, Ordering::SeqCst);
    assert!(t.bearer("g", "x", false).await.is_err());
    assert_eq!(ep.requests().len(), n + 1);
    assert!(t.bearer("g", "x", true).await.is_err());
    assert_eq!(ep.requests().len(), n + 2);

    // A dead grant is Dead, and status says so.
    ep.set_mode(Mode::InvalidGrant);
    let e = t.bearer("g", "x", true).await.unwrap_err();
    assert!(matches!(e, TokenError::Dead(_)), "{e:?}");
    let st = &t.statuses()[0];
    assert!(st.dead && st.error.as_deref().unwrap_or("").contains("invalid_grant"));
    assert_eq!(st.refreshed_at, Some(1_700_000_000 + 3600 + 86_400));
}
