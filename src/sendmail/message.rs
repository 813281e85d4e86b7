//! Reading a message from `sendmail`'s standard input and preparing it for
//! the queue: line ends, the header section, `-t` recipient extraction, Bcc
//! removal, qualification of bare local names and the From/Date/Message-ID
//! fields that local programs so often leave out.
//!
//! Input comes from arbitrary local programs, so nothing here trusts it: no
//! byte sequence may panic, smuggle a bare CR into SMTP or let a display name
//! inject a header or an address.

use std::collections::HashSet;
use std::time::SystemTime;

use lettre::message::header::{self, Headers};
use lettre::message::{Mailbox, Mailboxes};

pub use super::address_list::parse_address_list;
use super::address_list::{is_atext, parse_spans};
use super::input::Normalizer;
pub use super::input::{read_message, InputError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("no recipient addresses found")]
    NoRecipients,
    #[error("message contains NUL bytes")]
    Nul,
    #[error("invalid envelope sender {0:?}")]
    InvalidSender(String),
}

pub struct PrepareOptions<'a> {
    /// `-t`
    pub extract_recipients: bool,
    /// Command-line recipients, already split.
    pub cli_recipients: &'a [String],
    /// The final envelope sender ("" = null sender), used for an added From:.
    pub sender: &'a str,
    /// `-F`, raw.
    pub full_name: Option<&'a str>,
    /// For Message-ID and the null sender's From:.
    pub hostname: &'a str,
    /// For an added Date:.
    pub now: SystemTime,
    /// Left-hand side of an added Message-ID.
    pub unique: &'a str,
    /// Maps a bare local name (no '@') to a real address.
    pub qualify: &'a dyn Fn(&str) -> String,
    /// Leave bare local names in the envelope recipients as they are, for
    /// the caller to resolve through `/etc/aliases` (headers are qualified
    /// all the same).
    pub keep_local_recipients: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The message, CRLF line ends, header and body separated by one empty line.
    pub message: Vec<u8>,
    pub recipients: Vec<String>,
    /// Whether any byte of `message` is >= 0x80.
    pub eight_bit: bool,
    /// The Message-ID field's value, angle brackets included.
    pub message_id: String,
    /// Addresses that were skipped and similar, for `-v`.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------
// Header section

/// One header field: `start..end` covers the field line, its continuation
/// lines and the final CRLF; the value starts after `colon`.
#[derive(Debug, Clone, Copy)]
struct Field {
    start: usize,
    colon: usize,
    end: usize,
}

impl Field {
    fn name<'m>(&self, msg: &'m [u8]) -> &'m [u8] {
        let name = msg.get(self.start..self.colon).unwrap_or_default();
        let trimmed = name
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |i| i + 1);
        name.get(..trimmed).unwrap_or_default()
    }

    fn is(&self, msg: &[u8], names: &[&str]) -> bool {
        let name = self.name(msg);
        names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    fn bytes<'m>(&self, msg: &'m [u8]) -> &'m [u8] {
        msg.get(self.start..self.end).unwrap_or_default()
    }

    /// The raw value, folds included, without the final CRLF.
    fn raw_value<'m>(&self, msg: &'m [u8]) -> &'m [u8] {
        let value = msg.get(self.colon + 1..self.end).unwrap_or_default();
        value.strip_suffix(b"\r\n").unwrap_or(value)
    }

    /// The value unfolded (RFC 5322 2.2.3). Input is normalized, so CR and
    /// LF only occur as the CRLF of a fold.
    fn unfolded(&self, msg: &[u8]) -> String {
        let bytes: Vec<u8> = self
            .raw_value(msg)
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct Layout {
    fields: Vec<Field>,
    /// Where the body starts: the empty separator line if there is one.
    body_start: usize,
    has_separator: bool,
}

/// Splits a normalized message into header fields and body.
fn split_header(msg: &[u8]) -> Layout {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    let (body_start, has_separator) = loop {
        if pos >= msg.len() {
            break (msg.len(), false);
        }
        let end = msg
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map_or(msg.len(), |i| pos + i + 1);
        let full = msg.get(pos..end).unwrap_or_default();
        let line = full.strip_suffix(b"\r\n").unwrap_or(full);
        if line.is_empty() {
            break (pos, true);
        }
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if let (true, Some(last)) = (continues, fields.last_mut()) {
            last.end = end;
        } else if let Some(colon) = field_name_len(line) {
            fields.push(Field {
                start: pos,
                colon: pos + colon,
                end,
            });
        } else {
            break (pos, false);
        }
        pos = end;
    };
    Layout {
        fields,
        body_start,
        has_separator,
    }
}

/// If `line` starts a header field, the offset of its colon. Like Postfix's
/// is_header(), whitespace between name and colon (obsolete syntax) is allowed.
pub(super) fn field_name_len(line: &[u8]) -> Option<usize> {
    let name_len = line
        .iter()
        .position(|&b| !(0x21..=0x7e).contains(&b) || b == b':')?;
    if name_len == 0 {
        return None;
    }
    let rest = line.get(name_len..)?;
    let ws = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    (rest.get(ws) == Some(&b':')).then_some(name_len + ws)
}

// ---------------------------------------------------------------------------
// prepare

const RECIPIENT_FIELDS: &[&str] = &["to", "cc", "bcc"];
const RESENT_RECIPIENT_FIELDS: &[&str] = &["resent-to", "resent-cc", "resent-bcc"];
const BCC_FIELDS: &[&str] = &["bcc", "resent-bcc"];
/// Fields whose bare local names get qualified. The Resent- forms are
/// included so that they agree with the recipients extracted from them.
const QUALIFIED_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
];
const MAX_LINE: usize = 998;

/// Prepares a message read by [`read_message`] for the queue. See the
/// module documentation; `raw` need not be normalized already.
pub fn prepare(raw: &[u8], opts: &PrepareOptions<'_>) -> Result<Prepared, PrepareError> {
    // Without a size limit or I/O, a NUL is the only possible failure.
    let mut norm = Normalizer::new(true, u64::MAX);
    norm.feed(raw).map_err(|_| PrepareError::Nul)?;
    let normalized = norm.finish().map_err(|_| PrepareError::Nul)?;
    let msg = strip_mbox_from(&normalized);
    let layout = split_header(msg);
    let mut warnings = Vec::new();

    let recipients = envelope_recipients(msg, &layout.fields, opts, &mut warnings)?;
    let mut out = Vec::with_capacity(msg.len() + 512);
    let (message_id, id_added) =
        add_missing_fields(msg, &layout.fields, opts, &mut out, &mut warnings)?;
    copy_message(msg, &layout, id_added, opts, &mut out, &mut warnings);

    let mut seen = HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    Ok(Prepared {
        eight_bit: out.iter().any(|&b| b >= 0x80),
        message: out,
        recipients,
        message_id,
        warnings,
    })
}

/// The recipients of the envelope: those of the header when `-t` asks for
/// them (the Resent- set alone if there is one), then the command line's,
/// qualified and without repeats.
fn envelope_recipients(
    msg: &[u8],
    fields: &[Field],
    opts: &PrepareOptions<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, PrepareError> {
    let mut recipients = Vec::new();
    if opts.extract_recipients {
        let resent = fields.iter().any(|f| f.is(msg, RESENT_RECIPIENT_FIELDS));
        let names = if resent {
            RESENT_RECIPIENT_FIELDS
        } else {
            RECIPIENT_FIELDS
        };
        for f in fields.iter().filter(|f| f.is(msg, names)) {
            let (addrs, warns) = parse_address_list(&f.unfolded(msg));
            recipients.extend(addrs);
            field_warnings(warnings, msg, f, warns);
        }
    }
    recipients.extend(opts.cli_recipients.iter().cloned());
    let recipients = dedupe(
        recipients
            .iter()
            .map(|r| match opts.keep_local_recipients {
                true => r.clone(),
                false => qualify(opts, r, warnings),
            })
            .collect(),
    );
    if recipients.is_empty() {
        return Err(PrepareError::NoRecipients);
    }
    Ok(recipients)
}

/// Writes the From, Date and Message-ID fields the message lacks into `out`,
/// and returns the Message-ID with whether it was added here.
fn add_missing_fields(
    msg: &[u8],
    fields: &[Field],
    opts: &PrepareOptions<'_>,
    out: &mut Vec<u8>,
    warnings: &mut Vec<String>,
) -> Result<(String, bool), PrepareError> {
    if !fields.iter().any(|f| f.is(msg, &["from"])) {
        out.extend_from_slice(from_field(opts, warnings)?.as_bytes());
    }
    if !fields.iter().any(|f| f.is(msg, &["date"])) {
        out.extend_from_slice(format!("Date: {}\r\n", crate::clock::rfc5322(opts.now)).as_bytes());
    }
    // A blank Message-ID identifies nothing: it is replaced, not kept beside ours.
    let existing_id = fields
        .iter()
        .filter(|f| f.is(msg, &["message-id"]))
        .map(|f| f.unfolded(msg).trim().to_string())
        .find(|v| !v.is_empty());
    let id_added = existing_id.is_none();
    let message_id = match existing_id {
        Some(id) => id,
        None => {
            let id = format!(
                "<{}@{}>",
                sanitize(opts.unique, |b| is_atext(b) || b == b'.', "unique"),
                safe_hostname(opts.hostname)
            );
            out.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
            id
        }
    };
    Ok((message_id, id_added))
}

/// Copies the message's own fields after the added ones, without Bcc and
/// without the blank Message-ID that was replaced, with address fields
/// qualified; then the separator and the body.
fn copy_message(
    msg: &[u8],
    layout: &Layout,
    id_added: bool,
    opts: &PrepareOptions<'_>,
    out: &mut Vec<u8>,
    warnings: &mut Vec<String>,
) {
    for f in &layout.fields {
        if f.is(msg, BCC_FIELDS) {
            continue;
        }
        if id_added && f.is(msg, &["message-id"]) {
            continue;
        }
        if f.is(msg, QUALIFIED_FIELDS) {
            let (_, warns) = parse_address_list(&f.unfolded(msg));
            field_warnings(warnings, msg, f, warns);
            if let Some(rewritten) = rewrite_field(msg, f, opts, warnings) {
                out.extend_from_slice(&rewritten);
                continue;
            }
        }
        out.extend_from_slice(f.bytes(msg));
    }
    if !layout.has_separator {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(msg.get(layout.body_start..).unwrap_or_default());
}

/// Postfix drops a leading mbox "From " line, which would otherwise turn
/// the whole message into body. Only when a header field follows, so that
/// body-only input starting with "From " loses nothing.
fn strip_mbox_from(msg: &[u8]) -> &[u8] {
    if !msg.starts_with(b"From ") {
        return msg;
    }
    let end = msg
        .iter()
        .position(|&b| b == b'\n')
        .map_or(msg.len(), |i| i + 1);
    let rest = msg.get(end..).unwrap_or_default();
    let next_line = rest.split(|&b| b == b'\r').next().unwrap_or_default();
    if field_name_len(next_line).is_some() {
        rest
    } else {
        msg
    }
}

fn field_warnings(warnings: &mut Vec<String>, msg: &[u8], f: &Field, warns: Vec<String>) {
    let name = String::from_utf8_lossy(f.name(msg)).into_owned();
    warnings.extend(warns.into_iter().map(|w| format!("{name}: {w}")));
}

/// Keeps the first spelling of each address, compared case-insensitively.
fn dedupe(addrs: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    addrs
        .into_iter()
        .filter(|a| seen.insert(a.to_lowercase()))
        .collect()
}

/// Applies the caller's qualify map to a bare local name. Its result goes
/// into headers and the envelope, so one that could break a line is ignored.
fn qualify(opts: &PrepareOptions<'_>, addr: &str, warnings: &mut Vec<String>) -> String {
    if addr.contains('@') {
        return addr.to_string();
    }
    let q = (opts.qualify)(addr);
    if q.is_empty() || q.chars().any(char::is_control) {
        warnings.push(format!("cannot qualify {addr:?}: got {q:?}"));
        return addr.to_string();
    }
    q
}

/// Qualifies the bare local names of one field in place, keeping every
/// other byte (display names, comments, folds). None if nothing changed.
fn rewrite_field(
    msg: &[u8],
    f: &Field,
    opts: &PrepareOptions<'_>,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    // Non-UTF-8 values are left alone rather than risk mangling them.
    let value = std::str::from_utf8(f.raw_value(msg)).ok()?;
    let (found, _) = parse_spans(value);
    let head = msg.get(f.start..f.colon + 1)?;
    let mut out = String::from_utf8_lossy(head).into_owned();
    // Length of out's last line so far, tracked so long fields stay linear.
    let mut line_len = out.len();
    let mut last = 0;
    for p in found.iter().filter(|p| !p.addr.contains('@')) {
        let q = qualify(opts, &p.addr, warnings);
        if q == p.addr {
            continue;
        }
        let before = value.get(last..p.start)?;
        line_len = match before.rfind('\n') {
            Some(i) => before.len() - i - 1,
            None => line_len + before.len(),
        };
        out.push_str(before);
        let rest = value.get(p.end..)?;
        let rest_of_line = rest
            .bytes()
            .take(MAX_LINE + 1)
            .position(|b| b == b'\r')
            .unwrap_or(rest.len());
        // Folding before an address is legal (CFWS), and keeps the line
        // within RFC 5322's limit when a long line grows.
        // Not where a line already starts: an empty line would end the header.
        let kept = out.trim_end_matches([' ', '\t']).len();
        let at_line_start = out.get(..kept).is_some_and(|o| o.ends_with('\n'));
        if line_len + q.len() + rest_of_line > MAX_LINE && !at_line_start {
            out.truncate(kept);
            out.push_str("\r\n ");
            line_len = 1;
        }
        out.push_str(&q);
        line_len += q.len();
        last = p.end;
    }
    if last == 0 {
        return None;
    }
    out.push_str(value.get(last..)?);
    out.push_str("\r\n");
    Some(out.into_bytes())
}

/// `From:` for a message without one, built by lettre so that a hostile
/// `-F` name is quoted or RFC 2047-encoded, never parsed as header syntax.
fn from_field(
    opts: &PrepareOptions<'_>,
    warnings: &mut Vec<String>,
) -> Result<String, PrepareError> {
    let sender = super::args::validate_sender(opts.sender)
        .map_err(|_| PrepareError::InvalidSender(opts.sender.to_string()))?;
    let address = if sender.is_empty() {
        format!("MAILER-DAEMON@{}", safe_hostname(opts.hostname))
    } else {
        qualify(opts, &sender, warnings)
    };
    let name = opts.full_name.map(clean_name).filter(|n| !n.is_empty());
    match address.parse::<lettre::Address>() {
        Ok(parsed) => {
            let mut headers = Headers::new();
            let mailbox = Mailbox::new(name, parsed);
            headers.set(header::From::from(Mailboxes::from(mailbox)));
            Ok(headers.to_string())
        }
        Err(_) => {
            // Never fail delivery over a From: we add ourselves; the address
            // is still free of line breaks and brackets (validated above).
            if name.is_some() {
                warnings.push(format!(
                    "full name dropped: cannot build From: for {address:?}"
                ));
            }
            let address: String = address
                .chars()
                .filter(|c| !c.is_control() && !matches!(c, '<' | '>'))
                .collect();
            Ok(format!("From: <{address}>\r\n"))
        }
    }
}

/// Control characters (CR and LF above all) become spaces, and runs of
/// whitespace collapse, before lettre quotes or encodes the name.
fn clean_name(name: &str) -> String {
    let spaced: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Keeps only the bytes `keep` allows (and no outer dots): the hostname and
/// the unique token go into Message-ID and MAILER-DAEMON@ unchecked.
fn sanitize(value: &str, keep: fn(u8) -> bool, fallback: &str) -> String {
    let clean: String = value.bytes().filter(|&b| keep(b)).map(char::from).collect();
    match clean.trim_matches('.') {
        "" => fallback.to_string(),
        clean => clean.to_string(),
    }
}

fn safe_hostname(host: &str) -> String {
    sanitize(
        host,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'),
        "localhost",
    )
}

#[cfg(test)]
mod tests;
