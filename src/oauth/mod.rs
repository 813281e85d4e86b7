//! OAuth2 access tokens for XOAUTH2/OAUTHBEARER routes: where they come from
//! (the built-in refresher or an external source), how they are cached and kept
//! fresh, and what a failure means for the mail waiting on them.

pub mod cli;
pub mod endpoint;
pub mod external;
pub mod import;
pub mod login;
pub mod share;
pub mod state;
pub mod tokens;

pub use tokens::{Status, Tokens};

use crate::config::Secret;

/// A token ready for the AUTH command, with the user it belongs to (a socket or
/// HTTP source may name the user itself).
#[derive(Debug, Clone)]
pub struct Bearer {
    pub user: String,
    pub token: Secret,
    /// Unix seconds; `None` when the source does not say.
    pub expires_at: Option<u64>,
    /// Fetched from the source for this request, rather than a cached token
    /// (in memory, or one another process stored in the state file).
    pub fresh: bool,
}

/// Why no token could be had. The text never contains a token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Try again later: the endpoint is down or slow, the command timed out.
    /// Mail is deferred as usual.
    #[error("{0}")]
    Temporary(String),
    /// Nothing will work until the operator acts (`invalid_grant`, no refresh
    /// token yet, a missing token file): the route is held.
    #[error("{0}")]
    Dead(String),
}
