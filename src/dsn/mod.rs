//! Delivery status notifications (RFC 3461): the parameters a sender gives
//! on MAIL and RCPT, which the queue keeps with each message and recipient.

pub mod notice;
pub mod params;

use serde::{Deserialize, Serialize};

pub use params::{parse_envid, xtext_decode, xtext_encode, Notify, Orcpt, ParamError, Ret};

/// What a sender asked on MAIL: what a failure notice returns, and the id
/// the notices carry. Both absent is the common case and costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailDsn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// As the sender wrote it (xtext), passed upstream unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

impl MailDsn {
    pub fn is_empty(&self) -> bool {
        self.ret.is_none() && self.envid.is_none()
    }

    /// ` RET=… ENVID=…` for MAIL: only what the sender gave (RFC 3461 5.2.1).
    pub fn esmtp_params(&self) -> String {
        let mut out = String::new();
        if let Some(ret) = self.ret {
            out.push_str(&format!(" RET={}", ret.value()));
        }
        if let Some(envid) = &self.envid {
            out.push_str(&format!(" ENVID={envid}"));
        }
        out
    }
}

/// What a sender asked on one RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptDsn {
    /// None: the sender did not say, and the defaults hold (a failure notice,
    /// no success notice, a delay warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
}

impl RcptDsn {
    /// ` NOTIFY=… ORCPT=…` for RCPT, unchanged from the sender's.
    pub fn esmtp_params(&self) -> String {
        let mut out = String::new();
        if let Some(n) = self.notify {
            out.push_str(&format!(" NOTIFY={}", n.value()));
        }
        if let Some(o) = &self.orcpt {
            out.push_str(&format!(" ORCPT={}", o.value()));
        }
        out
    }

    /// Whether a failure notice may be sent (RFC 3461 4.1: the default is
    /// FAILURE,DELAY-like behaviour, so only an explicit list without
    /// FAILURE, or NEVER, stops one).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| n.success)
    }
}
