//! Queue control over a local UNIX socket: the daemon owns the sled queue, and
//! `smarthost queue ...`, `mailq` and `sendmail -q` ask it over this socket.
//!
//! The protocol is one JSON request line, answered by JSON lines: zero or more
//! items, then one [`Reply::Done`]. Line-delimited JSON keeps a 10,000-message
//! listing streaming instead of one huge document, and is easy to script.

pub mod client;
pub mod render;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::spool::{Envelope, Finished};

/// Which messages an operation applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Queue ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every message currently routed through this route.
    #[serde(default)]
    pub route: Option<String>,
    /// Every message in the queue.
    #[serde(default)]
    pub all: bool,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.route.is_none() && !self.all
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Attempt now, ignoring the retry schedule.
    Flush,
    Hold,
    Release,
    /// Remove without a bounce.
    Delete,
    /// Give up now and bounce to the sender.
    Bounce,
}

impl Action {
    pub fn past_tense(self) -> &'static str {
        match self {
            Action::Flush => "flushed",
            Action::Hold => "held",
            Action::Release => "released",
            Action::Delete => "deleted",
            Action::Bounce => "bounced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    List,
    Show {
        id: String,
    },
    Act {
        action: Action,
        selection: Selection,
    },
    Find {
        query: String,
    },
    /// Every token source, checked now, and the held routes.
    #[serde(rename = "oauth-status")]
    OAuthStatus,
    /// A current access token of a source, for scripts (`oauth token`).
    #[serde(rename = "oauth-token")]
    OAuthToken {
        source: String,
        #[serde(default)]
        user: Option<String>,
    },
    /// Re-read the configuration file and put it in force (SIGHUP does the same).
    Reload,
}

/// One queued message as listed: its envelope and the route it leaves through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub route: String,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// A queued message (list, show, find).
    Queued(Entry),
    /// A quarantined message (list, show): its records cannot all be read.
    Damaged { id: String, reason: String },
    /// The header section of the message shown.
    Headers(String),
    /// A message that already left the queue (find).
    Finished(Finished),
    /// The result of an action on one message.
    Acted {
        id: String,
        ok: bool,
        detail: String,
    },
    #[serde(rename = "token-status")]
    TokenStatus(crate::oauth::Status),
    #[serde(rename = "route-held")]
    RouteHeld(crate::delivery::hold::Hold),
    /// What a reload changed.
    Reloaded(crate::delivery::Reloaded),
    /// Only ever sent to `oauth token`, over the group-restricted socket.
    #[serde(rename = "access-token")]
    AccessToken {
        user: String,
        token: String,
        expires_at: Option<u64>,
    },
    /// The end of the answer. `error` set means the request failed as a whole.
    Done {
        count: usize,
        #[serde(default)]
        error: Option<String>,
    },
}
