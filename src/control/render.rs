//! How queue answers are printed: `mailq`'s listing with a summary that keeps a
//! queue of 10,000 readable at a glance, `queue show` and `queue find`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Entry, Overview};
use crate::spool::{Finished, State};

/// Running totals for the summary under a listing.
#[derive(Default)]
pub struct Summary {
    messages: usize,
    bytes: u64,
    oldest: Option<u64>,
    held: usize,
    states: BTreeMap<&'static str, usize>,
    routes: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

impl Summary {
    pub fn add(&mut self, e: &Entry) {
        let env = &e.envelope;
        self.messages += 1;
        self.bytes += env.size;
        self.oldest = Some(self.oldest.map_or(env.arrived, |o| o.min(env.arrived)));
        if env.held {
            self.held += 1;
        }
        *self.routes.entry(e.route.clone()).or_default() += 1;
        for r in env.unfinished() {
            *self.states.entry(state_word(r.state)).or_default() += 1;
            if let Some(err) = &r.last_error {
                *self.errors.entry(shorten(err, 60)).or_default() += 1;
            }
        }
    }

    /// The last lines of `mailq`: enough to read a queue of 10,000 at a
    /// glance. `matched` when nothing listed does not mean the queue is
    /// empty (a filter showed nothing, or the queue has only damaged
    /// messages).
    pub fn render(&self, now: u64, matched: bool) -> String {
        if self.messages == 0 && !matched {
            return "Mail queue is empty\n".into();
        }
        if self.messages == 0 {
            return "-- no queued message shown\n".into();
        }
        let mut out = String::new();
        let oldest = self
            .oldest
            .map(|o| format!(", oldest {} ago", age(now.saturating_sub(o))))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "-- {} message{} ({}){}",
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            size(self.bytes),
            oldest
        );
        let mut states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        if self.held > 0 {
            states.push(format!("{} message(s) held", self.held));
        }
        let _ = writeln!(out, "   recipients: {}", states.join(", "));
        if self.routes.len() > 1 || self.messages > 20 {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(out, "   by route: {}", routes.join(", "));
        }
        if self.messages > 20 && !self.errors.is_empty() {
            let mut errors: Vec<(&String, &usize)> = self.errors.iter().collect();
            errors.sort_by(|a, b| b.1.cmp(a.1));
            let _ = writeln!(out, "   most frequent errors:");
            for (e, n) in errors.into_iter().take(5) {
                let _ = writeln!(out, "   {n:>7} x {e}");
            }
        }
        out
    }
}

/// The first line of `mailq` for a queue that is not empty: the whole
/// queue's counts, from the daemon's counts rather than the listing.
pub fn render_overview(o: &Overview, now: u64) -> String {
    let mut out = render_counts(o, now);
    if o.set_aside > 0 {
        let _ = writeln!(
            out,
            "Drop directory: {} file{} could not be queued and wait in its .bad (the log says why)",
            o.set_aside,
            if o.set_aside == 1 { "" } else { "s" }
        );
    }
    out
}

fn render_counts(o: &Overview, now: u64) -> String {
    let total = o.tally.total;
    if total.messages == 0 && o.counted && o.damaged == 0 {
        return String::new();
    }
    let mut out = format!(
        "Queue: {} message{}, {} recipient{} to deliver",
        total.messages,
        if total.messages == 1 { "" } else { "s" },
        total.recipients,
        if total.recipients == 1 { "" } else { "s" },
    );
    if total.held > 0 {
        let _ = write!(out, ", {} held", total.held);
    }
    if o.damaged > 0 {
        let _ = write!(out, ", {} damaged", o.damaged);
    }
    if let Some(at) = o.oldest {
        let _ = write!(out, "; oldest {} ago", age(now.saturating_sub(at)));
    }
    if o.tally.routes.len() > 1 {
        let routes: Vec<String> = o
            .tally
            .routes
            .iter()
            .map(|(r, c)| format!("{r} {}", c.messages))
            .collect();
        let _ = write!(out, "; by route: {}", routes.join(", "));
    }
    if !o.counted {
        out.push_str(" (still counting the queue after a crash: so far)");
    }
    out.push('\n');
    out
}

/// A writer for what reaches a terminal: every control character but
/// newline and tab is written escaped (`ESC` as `\u{1b}`), so text from a
/// message (a Subject, a reply from upstream) cannot move the cursor, retitle
/// the window or fake lines of its own.
pub struct Printable<'a>(pub &'a mut dyn std::io::Write);

impl std::io::Write for Printable<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if !text.chars().any(unsafe_char) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut clean = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if unsafe_char(c) {
                clean.extend(c.escape_unicode());
            } else {
                clean.push(c);
            }
        }
        self.0.write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn unsafe_char(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

pub const LIST_HEADER: &str =
    "Queue ID           Size  Arrived (UTC)    Route         Sender / Recipients\n";

/// One message in `mailq` form: a line for the message, a line per recipient
/// that is still queued.
pub fn render_entry(e: &Entry, now: u64) -> String {
    let env = &e.envelope;
    let mut out = String::new();
    let sender = if env.sender.is_empty() {
        "<>"
    } else {
        env.sender.as_str()
    };
    let _ = writeln!(
        out,
        "{:<16}{} {:>5}  {}  {:<12}  {}",
        env.id,
        if env.held { "!" } else { " " },
        size(env.size),
        date(env.arrived),
        shorten(&e.route, 12),
        sender
    );
    for r in env.unfinished() {
        let when = if env.held {
            "held".to_string()
        } else if r.next_attempt <= now {
            "due now".to_string()
        } else {
            format!("next in {}", age(r.next_attempt - now))
        };
        let _ = write!(
            out,
            "{:>26}  {:<8}  {}  {}",
            "",
            state_word(r.state),
            r.address,
            when
        );
        if let Some(err) = &r.last_error {
            let _ = write!(out, "  ({})", shorten(err, 100));
        }
        out.push('\n');
    }
    out
}

/// `queue show`: everything about one message.
pub fn render_show(e: &Entry, headers: &str, now: u64) -> String {
    let env = &e.envelope;
    let mut out = String::new();
    let _ = writeln!(out, "Queue ID:    {}", env.id);
    if let Some(m) = &env.message_id {
        let _ = writeln!(out, "Message-ID:  {m}");
    }
    let _ = writeln!(out, "Sender:      <{}>", env.sender);
    let _ = writeln!(out, "Route:       {}", e.route);
    let _ = writeln!(
        out,
        "Arrived:     {} UTC ({} ago) from {}",
        date(env.arrived),
        age(now.saturating_sub(env.arrived)),
        env.client
    );
    if let Some(a) = &env.auth {
        let _ = writeln!(out, "Logged in:   {a}");
    }
    let _ = writeln!(out, "Size:        {} bytes", env.size);
    if env.held {
        let _ = writeln!(
            out,
            "Held:        yes (`smarthost queue release {}`)",
            env.id
        );
    }
    let _ = writeln!(out, "Recipients:");
    for r in &env.recipients {
        let mut line = format!("  {:<9} {}", state_word(r.state), r.address);
        let _ = write!(line, "  attempts={}", r.attempts);
        if !r.state.is_final() {
            if r.next_attempt <= now {
                line.push_str("  due now");
            } else {
                let _ = write!(line, "  next in {}", age(r.next_attempt - now));
            }
        }
        if let Some(relay) = &r.relay {
            let _ = write!(line, "  relay={relay}");
        }
        let _ = writeln!(out, "{line}");
        if let Some(err) = &r.last_error {
            let _ = writeln!(out, "            {err}");
        }
    }
    if !env.events.is_empty() {
        let _ = writeln!(out, "History:");
        for ev in &env.events {
            let _ = writeln!(out, "  {}  {}", date(ev.at), ev.text);
        }
    }
    let _ = writeln!(out, "Headers:");
    for l in headers.lines() {
        let _ = writeln!(out, "  {l}");
    }
    out
}

/// `queue find` for a message that already left the queue.
pub fn render_finished(f: &Finished) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} at {} UTC: from=<{}>{}",
        f.id,
        f.outcome,
        date(f.finished),
        f.sender,
        f.message_id
            .as_deref()
            .map(|m| format!(" message-id={m}"))
            .unwrap_or_default()
    );
    for r in &f.recipients {
        let _ = writeln!(
            out,
            "  {:<9} {}  relay={}  ({})",
            state_word(r.state),
            r.address,
            r.relay.as_deref().unwrap_or("none"),
            r.reply.as_deref().unwrap_or("")
        );
    }
    out
}

fn state_word(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Deferred => "deferred",
        State::Delivered => "sent",
        State::Bounced => "bounced",
    }
}

/// `Nov 23 10:04:05` in UTC, from httpdate's fixed-width RFC 7231 form
/// (`Mon, 23 Nov 2026 10:04:05 GMT`).
pub(crate) fn date(secs: u64) -> String {
    let s = httpdate::fmt_http_date(crate::clock::from_unix(secs));
    match (s.get(8..11), s.get(5..7), s.get(17..25)) {
        (Some(mon), Some(day), Some(time)) => format!("{mon} {day} {time}"),
        _ => s,
    }
}

/// A short human duration: `45s`, `14m`, `3h12m`, `2d3h`.
/// A held route under the `mailq` listing: the operator's call to act.
pub fn render_route_hold(h: &crate::delivery::hold::Hold, now: u64) -> String {
    format!(
        "Route {} is HELD for {} (its mail waits; retry time is not counted): {}\n",
        h.route,
        age(now.saturating_sub(h.since)),
        h.reason
    )
}

pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b}"),
        b if b < 1024 * 1024 => format!("{:.1}K", b as f64 / 1024.0),
        b => format!("{:.1}M", b as f64 / (1024.0 * 1024.0)),
    }
}

fn shorten(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

/// A quarantined message in `queue list` and `queue show`.
pub fn render_damaged(id: &str, reason: &str) -> String {
    format!(
        "{id}  DAMAGED, never tried: {}\n    remove it with `smarthost queue delete {id}` (or `queue bounce {id}` to tell its sender)\n",
        shorten(reason, 300)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Envelope, Recipient};

    fn entry() -> Entry {
        let mut env = Envelope {
            id: "6574E6A0000001".into(),
            sender: "app@example.com".into(),
            route_sender: "app@example.com".into(),
            recipients: vec![
                Recipient::new("bob@example.net", 1_000),
                Recipient::new("carol@example.net", 1_000),
            ],
            arrived: 1_000,
            size: 2048,
            ..Default::default()
        };
        env.recipients[0].state = State::Deferred;
        env.recipients[0].next_attempt = 1_900;
        env.recipients[0].last_error = Some("451 4.7.1 Try again\r\nlater".into());
        env.recipients[1].state = State::Delivered;
        Entry {
            route: "mailgun".into(),
            envelope: env,
        }
    }

    #[test]
    fn listing_shows_only_queued_recipients() {
        let text = render_entry(&entry(), 1_000);
        assert!(
            text.starts_with("6574E6A0000001     2.0K  Jan 01 00:16:40  mailgun       app@"),
            "{text}"
        );
        // The columns line up with the header.
        assert_eq!(LIST_HEADER.find("Route"), text.find("mailgun"));
        assert_eq!(LIST_HEADER.find("Sender"), text.find("app@"));
        assert!(
            text.contains("deferred  bob@example.net  next in 15m  (451 4.7.1 Try again  later)"),
            "{text}"
        );
        assert!(!text.contains("carol"), "{text}");
    }

    #[test]
    fn summary_counts() {
        let mut s = Summary::default();
        s.add(&entry());
        let text = s.render(4_600, true);
        assert!(
            text.contains("-- 1 message (2.0K), oldest 1h00m ago"),
            "{text}"
        );
        assert!(text.contains("1 deferred"), "{text}");
        assert_eq!(Summary::default().render(0, false), "Mail queue is empty\n");
        assert_eq!(
            Summary::default().render(0, true),
            "-- no queued message shown\n",
            "a filter that shows nothing does not say the queue is empty"
        );
    }

    #[test]
    fn the_overview_counts_the_whole_queue_in_one_line() {
        use crate::spool::tally::{Counts, Tally};
        let counts = |messages, recipients, held| Counts {
            messages,
            recipients,
            held,
        };
        let mut o = Overview {
            tally: Tally {
                total: counts(1_000_000, 1_000_002, 2),
                routes: [
                    ("mailgun".to_string(), counts(999_999, 1_000_001, 2)),
                    ("o365".to_string(), counts(1, 1, 0)),
                ]
                .into(),
                complete: true,
            },
            counted: true,
            oldest: Some(1_000),
            damaged: 1,
            set_aside: 0,
        };
        assert_eq!(
            render_overview(&o, 4_600),
            "Queue: 1000000 messages, 1000002 recipients to deliver, 2 held, 1 damaged; \
             oldest 1h00m ago; by route: mailgun 999999, o365 1\n"
        );
        o.counted = false;
        assert!(render_overview(&o, 4_600).contains("still counting"));
        let empty = Overview {
            tally: Tally::default(),
            counted: true,
            oldest: None,
            damaged: 0,
            set_aside: 0,
        };
        assert_eq!(
            render_overview(&empty, 0),
            "",
            "mailq says the queue is empty"
        );
        let refused = Overview {
            set_aside: 2,
            ..empty
        };
        assert!(render_overview(&refused, 0).starts_with("Drop directory: 2 files could not"));
    }

    #[test]
    fn nothing_reaches_a_terminal_that_could_drive_it() {
        use std::io::Write as _;
        let mut buf = Vec::new();
        let text = "Subject: \u{1b}]0;owned\u{7}\u{9b}2J\r\nok\tfine\n";
        Printable(&mut buf).write_all(text.as_bytes()).unwrap();
        let out = String::from_utf8(buf).unwrap();
        assert_eq!(
            out,
            "Subject: \\u{1b}]0;owned\\u{7}\\u{9b}2J\\u{d}\nok\tfine\n"
        );
        assert!(!out.chars().any(unsafe_char));
    }

    #[test]
    fn durations() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(61), "1m");
        assert_eq!(age(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(age(2 * 86400 + 3 * 3600), "2d3h");
    }
}
