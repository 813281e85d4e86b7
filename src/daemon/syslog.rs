//! Syslog output (`[log] syslog = true`): every event also goes to the
//! local syslog socket, facility mail, so it lands in `/var/log/mail.log`
//! where pflogsumm and logwatch look for it.
//!
//! Lines take Postfix's shapes, because those tools parse Postfix and
//! nothing else: the program is `smarthost/<component>` (`smtpd`, `pickup`,
//! `cleanup`, `qmgr`, `smtp`, `bounce`, `master`), a message taken in is
//! logged as Postfix's smtpd (or pickup), cleanup and qmgr would log it, and a
//! delivery line is exactly `to=<…>, relay=…, delay=…, dsn=…, status=… (…)`.
//! The route and attempt count stay in the stderr/journal line only: both
//! tools' patterns allow nothing else between `relay=` and `status=`.
//!
//! Datagrams carry no timestamp (RFC 3164 allows none): the syslog daemon
//! stamps them as it receives them, in its own time zone. Sending never
//! blocks; a line the socket cannot take at once is dropped rather than
//! holding up mail.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use super::logging::Line;
use crate::config::SyslogSettings;

/// rsyslog's default message size limit, with room for the tag.
const MAX_DATAGRAM: usize = 8000;

/// Syslog's mail facility (RFC 5424 6.2.1), shifted into a priority.
const FACILITY_MAIL: u8 = 2 << 3;

pub struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    name: String,
    pid: u32,
}

impl Syslog {
    /// An unbound socket that sends to `settings.socket`; None (said on
    /// stderr) if the process cannot make one.
    pub fn open(settings: &SyslogSettings) -> Option<Syslog> {
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("syslog output off: cannot make a socket: {e}");
                return None;
            }
        };
        Some(Syslog {
            socket,
            path: settings.socket.clone(),
            name: settings.name.clone(),
            pid: std::process::id(),
        })
    }

    fn send(&self, level: Level, program: &str, text: &str) {
        let priority = FACILITY_MAIL | severity(level);
        let mut datagram = format!("<{priority}>{}/{program}[{}]: ", self.name, self.pid);
        let room = MAX_DATAGRAM.saturating_sub(datagram.len());
        datagram.push_str(truncated(text, room));
        // Unconnected: a syslog daemon that restarts makes a new socket at
        // the same path, and the next line finds it.
        let _ = self.socket.send_to(datagram.as_bytes(), &self.path);
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Syslog {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let level = *event.metadata().level();
        for (program, text) in postfix_lines(event.metadata().target(), level, &line) {
            self.send(level, program, &text);
        }
    }
}

/// sd-daemon(3) and syslog severities: err, warning, info, debug.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

fn truncated(text: &str, room: usize) -> &str {
    if text.len() <= room {
        return text;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The Postfix-shaped lines for one event, each with its program.
pub(super) fn postfix_lines(
    target: &str,
    level: Level,
    line: &Line,
) -> Vec<(&'static str, String)> {
    let id = line.id.as_deref().unwrap_or("");
    if let (Some(to), Some(status)) = (line.get("to"), line.get("status")) {
        return vec![("smtp", delivery(id, to, status, line))];
    }
    if let (Some(from), Some(size)) = (line.get("from"), line.get("size")) {
        return received(id, from, size, line);
    }
    if line.id.is_some() && line.message.as_deref() == Some("removed") {
        return vec![("qmgr", format!("{id}: removed"))];
    }
    let mut text = match level {
        Level::ERROR => "error: ".to_string(),
        Level::WARN => "warning: ".to_string(),
        _ => String::new(),
    };
    let _ = line.write(&mut text);
    vec![(program(target), text)]
}

/// `to=<a>, relay=r, delay=d, dsn=x.y.z, status=s (detail)`.
fn delivery(id: &str, to: &str, status: &str, line: &Line) -> String {
    let detail = line.detail.as_deref().unwrap_or("");
    format!(
        "{id}: to={to}, relay={}, delay={}, dsn={}, status={status} ({detail})",
        line.get("relay").unwrap_or("none"),
        line.get("delay").unwrap_or("0"),
        dsn(status, detail),
    )
}

/// The enhanced status code of the reply in `detail`, else the class the
/// status implies (as Postfix gives `4.4.1` for a refused connection, we
/// give the class's generic code when no server gave one).
fn dsn(status: &str, detail: &str) -> String {
    let code = detail.split_whitespace().nth(1).filter(|c| {
        let parts: Vec<&str> = c.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match (code, status) {
        (Some(c), _) => c.to_string(),
        (None, "sent") => "2.0.0".into(),
        (None, "deferred") => "4.0.0".into(),
        (None, _) => "5.0.0".into(),
    }
}

/// A message taken in, as Postfix logs it: smtpd's `client=` (or pickup's
/// `uid= from=` for a local program), cleanup's `message-id=`, qmgr's
/// `from=<>, size=, nrcpt=`. In this order: pflogsumm counts a message as
/// received at the first and takes its size from the last.
fn received(id: &str, from: &str, size: &str, line: &Line) -> Vec<(&'static str, String)> {
    let client = line.get("client").unwrap_or("unknown");
    let first = match client.strip_prefix("local ") {
        Some(uid) => ("pickup", format!("{id}: {uid} from={from}")),
        None => (
            "smtpd",
            format!("{id}: client={}", client.replace(" [", "[")),
        ),
    };
    let mut out = vec![first];
    if let Some(mid) = line.get("message-id") {
        out.push(("cleanup", format!("{id}: message-id={mid}")));
    }
    let nrcpt = line.get("nrcpt").unwrap_or("0");
    out.push((
        "qmgr",
        format!("{id}: from={from}, size={size}, nrcpt={nrcpt} (queue active)"),
    ));
    out
}

/// The Postfix daemon that does what the module logging the event does.
fn program(target: &str) -> &'static str {
    const BY_MODULE: &[(&str, &str)] = &[
        ("smarthost::smtp", "smtpd"),
        ("smarthost::intake", "cleanup"),
        ("smarthost::dropdir", "pickup"),
        ("smarthost::delivery::notices", "bounce"),
        ("smarthost::dsn", "bounce"),
        ("smarthost::delivery", "qmgr"),
        ("smarthost::spool", "qmgr"),
        ("smarthost::upstream", "smtp"),
        ("smarthost::oauth", "oauth"),
        ("smarthost::control", "postqueue"),
    ];
    BY_MODULE
        .iter()
        .find(|(module, _)| target.starts_with(module))
        .map_or("master", |(_, program)| program)
}

#[cfg(test)]
mod tests;
