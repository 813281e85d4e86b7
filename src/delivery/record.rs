//! Applies the outcomes of one attempt to a message's recipients: the pure part of
//! delivery, where the retry schedule and the bounce decision meet.

use crate::outcome::Outcome;
use crate::retry::{Retry, Schedule};
use crate::spool::{Envelope, Recipient, State};

/// Retry interval for a [`Outcome::Waiting`] recipient whose schedule has run
/// out: exim's final interval.
const WAITING_RETRY: u64 = 6 * 3600;

/// A recipient that has just failed for good, for the bounce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub index: usize,
    pub status: String,
    pub reason: String,
    pub diagnostic: Option<String>,
}

/// Updates `env.recipients[due[i]]` with `outcomes[i]`. Deferred recipients get
/// their next attempt from the schedule, or bounce once it is exhausted.
pub fn apply(
    env: &mut Envelope,
    due: &[usize],
    outcomes: &[Outcome],
    relay: Option<&str>,
    schedule: &Schedule,
    now: u64,
) -> Vec<Failed> {
    let mut failed = Vec::new();
    for (&index, outcome) in due.iter().zip(outcomes) {
        let Some(r) = env.recipients.get_mut(index) else {
            continue;
        };
        r.attempts = r.attempts.saturating_add(1);
        r.relay = relay.map(str::to_string);
        let bounce = match outcome {
            Outcome::Sent { reply } => {
                r.state = State::Delivered;
                r.last_error = Some(reply.clone());
                None
            }
            Outcome::Bounced {
                status,
                reason,
                diagnostic,
            } => {
                r.state = State::Bounced;
                r.last_error = Some(reason.clone());
                Some((status.clone(), reason.clone(), diagnostic.clone()))
            }
            Outcome::Waiting { reason } => {
                wait(r, reason, schedule, now);
                None
            }
            Outcome::Deferred { reason } => defer(r, reason, schedule, now),
        };
        if let Some((status, reason, diagnostic)) = bounce {
            failed.push(Failed {
                index,
                status,
                reason,
                diagnostic,
            });
        }
    }
    failed
}

/// A recipient that waits (a held route, a rate limit): the schedule as if
/// the message had failed first now, without recording a first failure, as
/// this wait is not on its clock.
fn wait(r: &mut Recipient, reason: &str, schedule: &Schedule, now: u64) {
    let previous = r.last_interval.map(std::time::Duration::from_secs);
    let first = r.first_failure.unwrap_or(now);
    let interval = match schedule.next(first, now, previous) {
        Retry::At { interval, .. } => interval.as_secs(),
        Retry::GiveUp => r.last_interval.unwrap_or(WAITING_RETRY),
    };
    r.state = State::Deferred;
    r.next_attempt = now.saturating_add(interval.max(1));
    r.last_error = Some(reason.to_string());
}

/// A temporary failure: the next attempt from the schedule, or a bounce
/// (status, reason, no diagnostic) once the schedule is exhausted.
fn defer(
    r: &mut Recipient,
    reason: &str,
    schedule: &Schedule,
    now: u64,
) -> Option<(String, String, Option<String>)> {
    let first = *r.first_failure.get_or_insert(now);
    let previous = r.last_interval.map(std::time::Duration::from_secs);
    match schedule.next(first, now, previous) {
        Retry::At { time, interval } => {
            r.state = State::Deferred;
            r.next_attempt = time;
            r.last_interval = Some(interval.as_secs());
            r.last_error = Some(reason.to_string());
            None
        }
        Retry::GiveUp => {
            let reason = format!("retry timeout exceeded (last error: {reason})");
            r.state = State::Bounced;
            r.last_error = Some(reason.clone());
            Some(("5.4.7".into(), reason, None))
        }
    }
}

/// The operator gives up on a message: every recipient not yet final bounces
/// with `reason`; returns them for the notice.
pub fn give_up(env: &mut Envelope, reason: &str) -> Vec<Failed> {
    let mut failed = Vec::new();
    for (index, r) in env.recipients.iter_mut().enumerate() {
        if r.state.is_final() {
            continue;
        }
        r.state = State::Bounced;
        r.last_error = Some(reason.into());
        failed.push(Failed {
            index,
            status: "5.0.0".into(),
            reason: reason.into(),
            diagnostic: None,
        });
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    fn env(n: usize) -> Envelope {
        Envelope {
            id: "ID".into(),
            sender: "s@example.com".into(),
            route_sender: "s@example.com".into(),
            recipients: (0..n)
                .map(|i| Recipient::new(format!("r{i}@example.net"), 0))
                .collect(),
            arrived: 0,
            size: 1,
            chunks: 1,
            smtputf8: false,
            eight_bit: false,
            client: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn mixed_outcomes() {
        let schedule: Schedule = "F,1m,1s".parse().unwrap();
        let mut e = env(3);
        let failed = apply(
            &mut e,
            &[0, 1, 2],
            &[
                Outcome::Sent {
                    reply: "250 ok".into(),
                },
                Outcome::Bounced {
                    status: "5.1.1".into(),
                    reason: "550 5.1.1 unknown".into(),
                    diagnostic: Some("550 5.1.1 unknown".into()),
                },
                Outcome::deferred("451 4.7.1 later"),
            ],
            Some("h[127.0.0.1]:25"),
            &schedule,
            100,
        );
        assert_eq!(e.recipients[0].state, State::Delivered);
        assert_eq!(e.recipients[1].state, State::Bounced);
        assert_eq!(e.recipients[2].state, State::Deferred);
        assert_eq!(e.recipients[2].next_attempt, 101);
        assert_eq!(e.recipients[2].first_failure, Some(100));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 1);
        assert!(!e.is_finished());
    }

    #[test]
    fn gives_up_after_cutoff() {
        let schedule: Schedule = "F,1m,1s".parse().unwrap();
        let mut e = env(1);
        apply(
            &mut e,
            &[0],
            &[Outcome::deferred("451 a")],
            None,
            &schedule,
            100,
        );
        let failed = apply(
            &mut e,
            &[0],
            &[Outcome::deferred("451 b")],
            None,
            &schedule,
            161,
        );
        assert_eq!(e.recipients[0].state, State::Bounced);
        assert_eq!(failed[0].status, "5.4.7");
        assert!(failed[0].reason.contains("retry timeout exceeded"));
        assert!(failed[0].reason.contains("451 b"));
        assert_eq!(e.recipients[0].attempts, 2);
        assert!(e.is_finished());
    }

    #[test]
    fn waiting_never_bounces_and_keeps_the_clock() {
        let schedule: Schedule = "F,10s,5s".parse().unwrap();
        let mut e = env(1);
        // Long past the cutoff, a wait for a token still does not bounce.
        for now in [0, 100, 10_000] {
            let failed = apply(
                &mut e,
                &[0],
                &[Outcome::Waiting {
                    reason: "no OAuth2 token".into(),
                }],
                None,
                &schedule,
                now,
            );
            assert!(failed.is_empty());
            assert_eq!(e.recipients[0].state, State::Deferred);
            assert!(e.recipients[0].next_attempt > now);
            assert_eq!(e.recipients[0].first_failure, None);
        }
        // A real failure afterwards starts the clock then, not at the first wait.
        apply(
            &mut e,
            &[0],
            &[Outcome::deferred("451 later")],
            None,
            &schedule,
            20_000,
        );
        assert_eq!(e.recipients[0].first_failure, Some(20_000));
        assert_eq!(e.recipients[0].state, State::Deferred);
    }

    #[test]
    fn giving_up_bounces_only_what_is_not_final() {
        let mut e = env(3);
        e.recipients[1].state = State::Delivered;
        e.recipients[2].state = State::Deferred;
        let failed = give_up(&mut e, "bounced by the operator");
        let at: Vec<usize> = failed.iter().map(|f| f.index).collect();
        assert_eq!(at, vec![0, 2]);
        assert_eq!(e.recipients[1].state, State::Delivered);
        assert!(e.is_finished());
        assert_eq!(failed[0].status, "5.0.0");
    }
}
