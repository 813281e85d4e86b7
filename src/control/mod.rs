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

use crate::spool::{Envelope, Finished, State, Tally};

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

/// Which messages `queue list` shows, at most how many: so an operator
/// with a million queued can look at the first hundred of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    #[serde(default)]
    pub limit: Option<usize>,
    /// Messages currently routed through this route.
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub state: Option<ListState>,
    /// Messages queued at least this many seconds.
    #[serde(default)]
    pub older_than: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ListState {
    /// Held by the operator.
    Held,
    /// Not held, never tried yet.
    Queued,
    /// Not held, tried and waiting for its next attempt.
    Deferred,
    /// Quarantined: its records cannot all be read.
    Damaged,
}

impl ListFilter {
    pub fn is_empty(&self) -> bool {
        *self == ListFilter::default()
    }

    /// Whether queued message `env`, routed through `route`, is shown.
    pub fn matches(&self, env: &Envelope, route: &str, now: u64) -> bool {
        if self.route.as_deref().is_some_and(|r| r != route) {
            return false;
        }
        if self
            .older_than
            .is_some_and(|age| now.saturating_sub(env.arrived) < age)
        {
            return false;
        }
        let tried = env.unfinished().any(|r| r.state != State::Pending);
        match self.state {
            None => true,
            Some(ListState::Held) => env.held,
            Some(ListState::Queued) => !env.held && !tried,
            Some(ListState::Deferred) => !env.held && tried,
            Some(ListState::Damaged) => false,
        }
    }

    /// Whether quarantined messages are shown (their route and age are
    /// not known).
    pub fn shows_damaged(&self) -> bool {
        match self.state {
            Some(ListState::Damaged) => true,
            Some(_) => false,
            None => self.route.is_none() && self.older_than.is_none(),
        }
    }
}

/// The whole queue at a glance, from the spool's counts: sent before any
/// message of a listing, so it appears at once whatever the queue's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub tally: Tally,
    /// False while the daemon counts the queue again after a crash.
    pub counted: bool,
    pub oldest: Option<u64>,
    pub damaged: u64,
    /// Drop files refused and kept in the drop directory's `.bad`.
    #[serde(default)]
    pub set_aside: u64,
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
    List(ListFilter),
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

/// The two queue sockets, by what they let a caller do. File permissions
/// decide who reaches each; the daemon also refuses an acting request on
/// the reading socket, so a looser mode on it cannot grant more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `control.sock`: list, find, token status.
    Read,
    /// `admin.sock`: act on mail, read headers, reload, hand out tokens.
    Admin,
}

impl Request {
    pub fn access(&self) -> Access {
        match self {
            Request::List(_) | Request::Find { .. } | Request::OAuthStatus => Access::Read,
            // Headers carry subjects and addresses the envelope does not.
            Request::Show { .. }
            | Request::Act { .. }
            | Request::OAuthToken { .. }
            | Request::Reload => Access::Admin,
        }
    }

    /// What the request does, for a refusal.
    pub fn what(&self) -> &'static str {
        match self {
            Request::List(_) => "listing the queue",
            Request::Find { .. } => "finding messages",
            Request::OAuthStatus => "token status",
            Request::Show { .. } => "showing a message",
            Request::Act { .. } => "acting on messages",
            Request::OAuthToken { .. } => "handing out tokens",
            Request::Reload => "reloading the configuration",
        }
    }
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
    /// The first item of a listing.
    Overview(Overview),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    fn env(held: bool, states: &[State], arrived: u64) -> Envelope {
        Envelope {
            id: "0000000A000001".into(),
            held,
            arrived,
            recipients: states
                .iter()
                .map(|s| Recipient {
                    state: *s,
                    ..Recipient::new("r@example.net", arrived)
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_filter_shows_by_route_state_and_age() {
        let fresh = env(false, &[State::Pending], 1_000);
        let tried = env(false, &[State::Delivered, State::Deferred], 1_000);
        let held = env(true, &[State::Deferred], 100);
        let all = ListFilter::default();
        assert!(all.is_empty() && all.shows_damaged());
        for e in [&fresh, &tried, &held] {
            assert!(all.matches(e, "r", 1_000));
        }
        let state = |s| ListFilter {
            state: Some(s),
            ..Default::default()
        };
        let shown = |f: &ListFilter| {
            [&fresh, &tried, &held]
                .iter()
                .map(|e| f.matches(e, "r", 1_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(&state(ListState::Queued)), [true, false, false]);
        assert_eq!(shown(&state(ListState::Deferred)), [false, true, false]);
        assert_eq!(shown(&state(ListState::Held)), [false, false, true]);
        assert_eq!(shown(&state(ListState::Damaged)), [false, false, false]);
        assert!(state(ListState::Damaged).shows_damaged());
        assert!(!state(ListState::Held).shows_damaged());
        let route = ListFilter {
            route: Some("other".into()),
            ..Default::default()
        };
        assert!(!route.matches(&fresh, "r", 1_000) && route.matches(&fresh, "other", 1_000));
        assert!(
            !route.shows_damaged(),
            "a damaged message's route is not known"
        );
        let old = ListFilter {
            older_than: Some(600),
            ..Default::default()
        };
        assert_eq!(shown(&old), [false, false, true]);
    }

    #[test]
    fn a_plain_list_request_is_every_message() {
        let r: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(r, Request::List(ListFilter::default()));
        let r: Request =
            serde_json::from_str(r#"{"op":"list","limit":100,"state":"held"}"#).unwrap();
        let Request::List(f) = r else {
            panic!("a list request")
        };
        assert_eq!((f.limit, f.state), (Some(100), Some(ListState::Held)));
    }
}
