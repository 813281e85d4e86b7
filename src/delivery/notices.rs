//! The notices an attempt calls for (RFC 3461, 3464): a failure notice for
//! the recipients that failed for good, a success notice ("relayed", or
//! "delivered" for the capture directory) for those sent with NOTIFY=SUCCESS
//! where no later server will send one, and one delay warning per message
//! once it has waited `delay_warning`. Each goes into the same change as the
//! states that called for it, and never to the null sender.

use std::time::{Duration, SystemTime};

use super::{record, Delivery};
use crate::clock::from_unix;
use crate::dsn::notice::{self, Action, BounceInput, FailedRecipient};
use crate::dsn::Ret;
use crate::spool::{Envelope, Notice, Recipient, State, StoreError};

/// RET=FULL returns a message of up to this many bytes whole; a larger one
/// comes back as its header section, as Postfix's `bounce_size_limit` does
/// (50,000 bytes there). The notice is read into memory and stored in one
/// change with the states that caused it, which is what bounds it.
pub const RETURN_FULL_LIMIT: u64 = 256 * 1024;

/// What an attempt did, as far as notices care.
pub(crate) struct Sent<'a> {
    /// The recipients tried.
    pub due: &'a [usize],
    /// Those that failed for good.
    pub failed: &'a [record::Failed],
    /// The notice owed for a recipient sent with NOTIFY=SUCCESS, if any.
    pub success: Option<Action>,
    /// For Remote-MTA.
    pub remote_host: Option<&'a str>,
}

impl Delivery {
    /// Every notice the attempt calls for. Marks the message warned when a
    /// delay warning is among them, so the caller's write records that too.
    pub(crate) async fn notices_for(
        &self,
        env: &mut Envelope,
        sent: &Sent<'_>,
        now: u64,
    ) -> Result<Vec<Notice>, StoreError> {
        if env.sender.is_empty() {
            return Ok(Vec::new());
        }
        let mut reports = Vec::new();
        let failed = failure_list(env, sent);
        if !failed.is_empty() {
            reports.push((Action::Failed, failed));
        }
        if let Some(action) = sent.success {
            let relayed = success_list(env, sent, action);
            if !relayed.is_empty() {
                reports.push((action, relayed));
            }
        }
        let delayed = self.delay_list(env, now);
        if !delayed.is_empty() {
            env.delay_warned = true;
            reports.push((Action::Delayed, delayed));
        }
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let head = self.notice_head(env).await;
        let full = match env.dsn.ret {
            Some(Ret::Full) if reports.iter().any(|r| r.0 == Action::Failed) => {
                self.notice_full(env).await
            }
            _ => None,
        };
        let mut notices = Vec::new();
        for (action, list) in reports {
            let original = match (&full, action) {
                (Some(f), Action::Failed) => Original::Full(f),
                _ => Original::Head(&head),
            };
            if let Some(n) = self.notice(env, action, &list, original, now)? {
                notices.push(n);
            }
        }
        Ok(notices)
    }

    /// The original's header section for a notice. One that cannot be read
    /// leaves the notice without it, never the sender untold.
    async fn notice_head(&self, env: &Envelope) -> Vec<u8> {
        match self.shared.spool.body(env).header_section().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(id = %env.id, "the notice goes without the original's header: {e}");
                Vec::new()
            }
        }
    }

    /// The whole original, if it is small enough to return (RET=FULL).
    async fn notice_full(&self, env: &Envelope) -> Option<Vec<u8>> {
        if env.size > RETURN_FULL_LIMIT {
            return None;
        }
        match self.shared.spool.body(env).read_all().await {
            Ok(body) => Some(body),
            Err(e) => {
                tracing::warn!(id = %env.id, "the notice returns the header section only: {e}");
                None
            }
        }
    }

    /// One notice about `list`, ready to be stored: None (logged) if it
    /// cannot be built, e.g. for a sender address lettre will not take.
    fn notice(
        &self,
        env: &Envelope,
        action: Action,
        list: &[FailedRecipient],
        original: Original<'_>,
        now: u64,
    ) -> Result<Option<Notice>, StoreError> {
        let config = self.config();
        let (original_message, return_full) = match original {
            Original::Full(f) => (f, true),
            Original::Head(h) => (h, false),
        };
        let input = BounceInput {
            action,
            reporting_host: &config.hostname,
            queue_id: &env.id,
            original_sender: &env.sender,
            arrival: from_unix(env.arrived),
            now: SystemTime::now(),
            failed: list,
            original_message,
            return_full,
            envid: env.dsn.envid.as_deref(),
            retry_until: retry_until(env, config.retry.final_cutoff()),
        };
        let bytes = match notice::build(&input) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("{}: cannot build {action:?} notice: {e}", env.id);
                return Ok(None);
            }
        };
        let mut b = Envelope {
            id: self.shared.spool.new_id()?,
            sender: String::new(),
            route_sender: env.sender.clone(),
            recipients: vec![Recipient::new(env.sender.clone(), now)],
            arrived: now,
            smtputf8: crate::smtp::grammar::needs_smtputf8(&env.sender),
            eight_bit: true,
            client: format!("{} notice of {}", action.word(), env.id),
            ..Default::default()
        };
        b.event(now, format!("{} notice for {}", action.word(), env.id));
        Ok(Some(Notice {
            envelope: b,
            body: bytes,
            what: action.word(),
        }))
    }

    /// The still-deferred recipients a delay warning lists, once the message
    /// has waited long enough and has not been warned about yet.
    fn delay_list(&self, env: &Envelope, now: u64) -> Vec<FailedRecipient> {
        let Some(after) = self.config().delay_warning else {
            return Vec::new();
        };
        if env.delay_warned || now.saturating_sub(env.arrived) < after.as_secs() {
            return Vec::new();
        }
        let late = |r: &&Recipient| r.state == State::Deferred && r.dsn().wants_delay();
        let listed = env.recipients.iter().filter(late);
        listed
            .map(|r| FailedRecipient {
                address: r.address.clone(),
                status: reply_status(r.last_error.as_deref()).unwrap_or("4.0.0".into()),
                diagnostic: r.last_error.clone().filter(|e| starts_with_code(e)),
                reason: r.last_error.clone().unwrap_or_default(),
                remote_mta: None,
                orcpt: r.orcpt.clone(),
            })
            .collect()
    }

    /// A notice about message `of` is durable: logged, counted and put on
    /// the schedule.
    pub(crate) fn notices_stored(&self, of: &str, notices: Vec<Notice>) {
        for Notice {
            envelope: b, what, ..
        } in notices
        {
            tracing::info!(id = of, "sender {what} notification: {}", b.id);
            self.shared.metrics.notification(&b);
            self.shared.schedule(&b);
        }
    }
}

enum Original<'a> {
    /// The header section.
    Head(&'a [u8]),
    /// The whole message.
    Full(&'a [u8]),
}

/// The recipients that failed for good and did not say NOTIFY without
/// FAILURE (or NEVER).
fn failure_list(env: &Envelope, sent: &Sent<'_>) -> Vec<FailedRecipient> {
    let wanted = |f: &&record::Failed| {
        env.recipients
            .get(f.index)
            .is_some_and(|r| r.dsn().wants_failure())
    };
    sent.failed
        .iter()
        .filter(wanted)
        .filter_map(|f| {
            let r = env.recipients.get(f.index)?;
            Some(FailedRecipient {
                address: r.address.clone(),
                status: f.status.clone(),
                diagnostic: f.diagnostic.clone(),
                reason: f.reason.clone(),
                remote_mta: f
                    .diagnostic
                    .as_ref()
                    .and(sent.remote_host.map(str::to_string)),
                orcpt: r.orcpt.clone(),
            })
        })
        .collect()
}

/// The recipients just sent that asked NOTIFY=SUCCESS.
fn success_list(env: &Envelope, sent: &Sent<'_>, action: Action) -> Vec<FailedRecipient> {
    let sent_now = sent.due.iter().filter_map(|&i| env.recipients.get(i));
    sent_now
        .filter(|r| r.state == State::Delivered && r.dsn().wants_success())
        .map(|r| FailedRecipient {
            address: r.address.clone(),
            status: reply_status(r.last_error.as_deref()).unwrap_or("2.0.0".into()),
            diagnostic: r.last_error.clone().filter(|_| action == Action::Relayed),
            reason: String::new(),
            remote_mta: sent.remote_host.map(str::to_string),
            orcpt: r.orcpt.clone(),
        })
        .collect()
}

/// The enhanced status code of a stored reply (`250 2.0.0 Ok`), if it has one.
fn reply_status(reply: Option<&str>) -> Option<String> {
    let word = reply?.split_whitespace().nth(1)?;
    let parts: Vec<&str> = word.split('.').collect();
    let digits = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == 3 && parts.iter().all(|p| digits(p))).then(|| word.to_string())
}

/// Whether a stored reason is an upstream reply (`451 …`), not a local one.
fn starts_with_code(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' '
}

/// When the earliest-failing deferred recipient is given up on.
fn retry_until(env: &Envelope, cutoff: Duration) -> Option<SystemTime> {
    let first = env
        .recipients
        .iter()
        .filter(|r| r.state == State::Deferred)
        .filter_map(|r| r.first_failure)
        .min()?;
    Some(from_unix(first.saturating_add(cutoff.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_replies_give_their_status() {
        assert_eq!(reply_status(Some("250 2.0.0 Ok")), Some("2.0.0".into()));
        assert_eq!(reply_status(Some("451 4.7.1 later")), Some("4.7.1".into()));
        assert_eq!(reply_status(Some("250 Ok")), None);
        assert_eq!(reply_status(Some("connection refused")), None);
        assert_eq!(reply_status(None), None);
        assert!(starts_with_code("451 try later"));
        assert!(!starts_with_code("connection refused"));
    }
}
