//! The daemon's log: one line per event on stderr, for journald.
//!
//! Two formats. `text` keeps the shape mail operators grep for, Postfix's:
//! `<queue id>: to=<addr> relay=... status=sent (detail)`, built from the
//! event's fields so that `json` carries the same facts as named fields:
//! `{"level":"INFO","id":"...","to":"addr","status":"sent","detail":"..."}`.
//!
//! In the text format an `id` field leads the line as `id:`, `from` and `to`
//! are shown in angle brackets, `detail` comes last in parentheses, and any
//! other field is `key=value`. When stderr is the journal, each text line
//! starts with its syslog priority (`<3>` for errors) instead of a timestamp,
//! so that `journalctl -p err` works and the time is not shown twice.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `smarthost serve --log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of `key=value` fields per event, Postfix style.
    #[default]
    Text,
    /// One JSON object per event, its fields at the top level.
    Json,
}

/// Installs the process's log subscriber: stderr in `format`, and syslog
/// too when `[log] syslog` asks. `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat, syslog: Option<&crate::config::SyslogSettings>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let syslog = syslog.and_then(super::syslog::Syslog::open);
    let registry = tracing_subscriber::registry().with(filter).with(syslog);
    // A second init (tests calling run twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .fmt_fields(PostfixFields)
                    .event_format(TextLine {
                        journald: stderr_is_journal(),
                    }),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false),
            )
            .try_init(),
    };
}

/// systemd sets `JOURNAL_STREAM` to the journal socket's `device:inode`; it
/// is inherited, so it only counts if it names our own stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// The text line: timestamp (or syslog priority under journald), level, fields.
struct TextLine {
    journald: bool,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journald {
            write!(writer, "<{}>", syslog_priority(level))?;
        } else {
            SystemTime.format_time(&mut writer)?;
            writer.write_char(' ')?;
        }
        write!(writer, "{level:>5} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// sd-daemon(3) priorities: err, warning, info, debug.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The Postfix-shaped field layout of the text format (see the module doc).
pub struct PostfixFields;

impl<'w> FormatFields<'w> for PostfixFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut line = Line::default();
        fields.record(&mut line);
        line.write(&mut writer)
    }
}

/// One event's fields, laid out for a line (also `daemon::syslog`'s).
#[derive(Default)]
pub(super) struct Line {
    pub(super) id: Option<String>,
    pub(super) message: Option<String>,
    pub(super) fields: Vec<(&'static str, String)>,
    pub(super) detail: Option<String>,
}

impl Line {
    /// A field's value as the line shows it (`from`/`to` in brackets).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn put(&mut self, name: &'static str, value: String) {
        // Values come from outside (file names, addresses, HELO, replies): a
        // newline in one must not start a line of its own in the log.
        let value = escape(value);
        match name {
            "id" => self.id = Some(value),
            "message" => self.message = Some(value),
            "detail" => self.detail = Some(value),
            "from" | "to" => self.fields.push((name, format!("<{value}>"))),
            _ => self.fields.push((name, value)),
        }
    }

    pub(super) fn write(&self, w: &mut impl fmt::Write) -> fmt::Result {
        let mut sep = "";
        if let Some(id) = &self.id {
            write!(w, "{id}:")?;
            sep = " ";
        }
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(w, "{sep}{m}")?;
            sep = " ";
        }
        for (k, v) in &self.fields {
            write!(w, "{sep}{k}={v}")?;
            sep = " ";
        }
        if let Some(d) = &self.detail {
            write!(w, "{sep}({d})")?;
        }
        Ok(())
    }
}

/// Control characters (newlines first) written as escapes, so one event
/// stays one line whatever its fields hold.
fn escape(value: String) -> String {
    if !value.chars().any(char::is_control) {
        return value;
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn text(journald: bool, f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .fmt_fields(PostfixFields)
            .event_format(TextLine { journald })
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn delivery_line_keeps_the_postfix_shape() {
        let out = text(true, || {
            tracing::info!(
                id = "0A1B",
                to = "a@example.net",
                relay = "mx[192.0.2.1]:587",
                delay = 3u64,
                route = "up",
                attempts = 1u32,
                status = "sent",
                detail = "250 2.0.0 Ok"
            );
        });
        assert_eq!(
            out,
            "<6> INFO 0A1B: to=<a@example.net> relay=mx[192.0.2.1]:587 delay=3 route=up attempts=1 status=sent (250 2.0.0 Ok)\n"
        );
    }

    #[test]
    fn id_message_and_other_fields() {
        let out = text(true, || {
            tracing::warn!(id = "X", "removed");
            tracing::error!(error = %"disk full", "skipping unreadable queue entry");
            tracing::info!("plain {}", 1);
            tracing::info!(id = "Y", from = "", size = 5u64);
        });
        assert_eq!(
            out,
            "<4> WARN X: removed\n\
             <3>ERROR skipping unreadable queue entry error=disk full\n\
             <6> INFO plain 1\n\
             <6> INFO Y: from=<> size=5\n"
        );
    }

    #[test]
    fn a_field_cannot_start_a_line_of_its_own() {
        let out = text(true, || {
            let name = "x\n<6> INFO 0A1B: to=<a@b> status=sent (250 ok)\r\u{1b}[2J";
            tracing::error!(id = "0A1C", from = name, "drop file {name} refused");
        });
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(out.contains("x\\n<6> INFO"), "{out:?}");
        assert!(out.contains("\\r\\u{1b}[2J"), "{out:?}");
    }

    #[test]
    fn without_journald_a_line_starts_with_its_time() {
        let out = text(false, || tracing::info!(id = "Z", "removed"));
        assert!(out.ends_with(" INFO Z: removed\n"), "{out:?}");
        assert!(out.starts_with("20"), "{out:?}");
    }
}
