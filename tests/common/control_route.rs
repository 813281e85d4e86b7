//! The positive sentinel of a test that shows a held route tried nothing for a
//! while: a second route, `control`, for senders at `sentinel.test`, to an
//! upstream that refuses every session with a 421 greeting. It fails as the
//! held route would if it were tried, but is never held, and it shares the
//! relay's retry schedule. A control message sent once the hold is logged
//! first fails after the held message's last attempt, so each of its retries,
//! and its bounce when the retry time runs out, comes after the held message's
//! would have been due: seeing it logged proves that much time went by in the
//! relay's own delivery, without a sleep.
//!
//! Include it with `#[path = "common/control_route.rs"] mod control_route;`
//! beside `mod common;` and `#[path = "common/scripted.rs"] mod scripted;`.

#![allow(dead_code)]

use std::time::Duration;

use crate::common::{wait_for, Relay};
use crate::scripted::{standard, Action, Cmd, ScriptedServer};

pub const CONTROL_SENDER: &str = "control@sentinel.test";
pub const CONTROL_RCPT: &str = "control@dst.test";

pub struct ControlRoute {
    pub server: ScriptedServer,
}

impl ControlRoute {
    pub fn start() -> ControlRoute {
        let server = ScriptedServer::start(|_, cmd| match cmd {
            Cmd::Greeting => {
                Action::ReplyThenClose("421 4.3.2 control.test: try again later".into())
            }
            other => standard(other),
        });
        ControlRoute { server }
    }

    /// Config to append to the relay's, after its `[routing]` table (which
    /// must have no `[routing.senders]` of its own).
    pub fn config(&self) -> String {
        format!(
            "[[route]]\nname = \"control\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[routing.senders]\n\"sentinel.test\" = \"control\"\n",
            self.server.port()
        )
    }

    /// Queues one control message; its queue id.
    pub fn send(&self, relay: &Relay) -> String {
        relay
            .send(
                CONTROL_SENDER,
                &[CONTROL_RCPT],
                b"From: <control@sentinel.test>\r\nSubject: control\r\n\r\ncontrol\r\n",
            )
            .expect("control message queued")
    }

    /// Waits until the relay logs a delivery line of control message `id`
    /// holding `status` (`attempts=4 status=deferred`, `status=bounced`);
    /// returns that line.
    pub fn wait(&self, relay: &Relay, id: &str, status: &str) -> String {
        let prefix = format!("{id}: to=<{CONTROL_RCPT}> ");
        let line = || {
            relay
                .log()
                .lines()
                .find(|l| l.contains(&prefix) && l.contains(status))
                .map(str::to_string)
        };
        assert!(
            wait_for(Duration::from_secs(60), || line().is_some()),
            "control message {id} never logged {status:?}; log:\n{}",
            relay.log()
        );
        line().unwrap_or_default()
    }
}
