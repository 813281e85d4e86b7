//! What an upstream reply (or a local failure) means for a recipient.
//!
//! One place decides sent / deferred / bounced, so the SMTP client, the capture
//! route and the bounce logic cannot disagree about it.

use smtp_proto::Response;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop.
    Sent { reply: String },
    /// Try again later: a 4xx, a timeout, a dropped connection, a local problem.
    Deferred { reason: String },
    /// Try again later, and do not count it against the message: the trouble is
    /// ours (no OAuth2 token to be had), so it must never end in a bounce.
    Waiting { reason: String },
    /// Permanent failure: the recipient is bounced back to the sender.
    Bounced {
        /// RFC 3463 status for the DSN, e.g. `5.1.1`.
        status: String,
        reason: String,
        /// The upstream reply, when the failure came from one.
        diagnostic: Option<String>,
    },
}

impl Outcome {
    pub fn deferred(reason: impl Into<String>) -> Self {
        Outcome::Deferred {
            reason: reason.into(),
        }
    }

    pub fn bounced(status: &str, reason: impl Into<String>) -> Self {
        Outcome::Bounced {
            status: status.to_string(),
            reason: reason.into(),
            diagnostic: None,
        }
    }

    /// The word used in log lines and `mailq`.
    pub fn status_word(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Deferred { .. } | Outcome::Waiting { .. } => "deferred",
            Outcome::Bounced { .. } => "bounced",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Sent { reply } => reply,
            Outcome::Deferred { reason } | Outcome::Waiting { reason } => reason,
            Outcome::Bounced { reason, .. } => reason,
        }
    }
}

/// A reply as one log-safe line: `550 5.1.1 user unknown`.
pub fn reply_text(r: &Response<String>) -> String {
    let mut text = format!("{}", r.code);
    if r.esc[0] != 0 {
        text.push_str(&format!(" {}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
    }
    let message: String = r
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if !message.trim().is_empty() {
        text.push(' ');
        text.push_str(message.trim());
    }
    text
}

/// Classifies a reply to RCPT, MAIL, DATA or the final dot.
pub fn from_reply(r: &Response<String>) -> Outcome {
    let text = reply_text(r);
    match r.code {
        200..=299 => Outcome::Sent { reply: text },
        500..=599 => {
            let status = if r.esc[0] == 5 {
                format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
            } else {
                "5.0.0".to_string()
            };
            Outcome::Bounced {
                status,
                reason: text.clone(),
                diagnostic: Some(text),
            }
        }
        // 4xx, and anything a server should not have said here (1xx, 3xx): the
        // conservative reading of an unexpected reply is "not delivered, not final".
        _ => Outcome::Deferred { reason: text },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, esc: [u8; 3], msg: &str) -> Response<String> {
        Response {
            code,
            esc,
            message: msg.to_string(),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            from_reply(&reply(250, [2, 0, 0], "Ok")),
            Outcome::Sent {
                reply: "250 2.0.0 Ok".into()
            }
        );
        assert_eq!(
            from_reply(&reply(451, [4, 7, 1], "try later")).status_word(),
            "deferred"
        );
        let b = from_reply(&reply(550, [5, 1, 1], "no such user"));
        assert_eq!(
            b,
            Outcome::Bounced {
                status: "5.1.1".into(),
                reason: "550 5.1.1 no such user".into(),
                diagnostic: Some("550 5.1.1 no such user".into())
            }
        );
        let Outcome::Bounced { status, .. } = from_reply(&reply(554, [0, 0, 0], "no")) else {
            panic!()
        };
        assert_eq!(status, "5.0.0");
        assert_eq!(
            from_reply(&reply(354, [0, 0, 0], "go")).status_word(),
            "deferred"
        );
    }

    #[test]
    fn reply_text_is_one_line() {
        let t = reply_text(&reply(550, [5, 7, 1], "line one\r\nline two"));
        assert!(!t.contains('\n') && !t.contains('\r'), "{t}");
    }
}
