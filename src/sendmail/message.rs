//! Reading a message from `sendmail`'s standard input and preparing it for
//! the queue: line ends, the header section, `-t` recipient extraction, Bcc
//! removal, qualification of bare local names and the From/Date/Message-ID
//! fields that local programs so often leave out.
//!
//! Input comes from arbitrary local programs, so nothing here trusts it: no
//! byte sequence may panic, smuggle a bare CR into SMTP or let a display name
//! inject a header or an address.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::{self, Headers};
use lettre::message::{Mailbox, Mailboxes};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the message: {0}")]
    Io(#[from] std::io::Error),
    #[error("message contains NUL bytes")]
    Nul,
    #[error("message exceeds the maximum size of {limit} bytes")]
    TooLarge { limit: u64 },
}

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

const CHUNK: usize = 64 * 1024;

/// Reads the message from `input`, normalizing every line end (LF, CRLF or a
/// bare CR) to CRLF. Unless `ignore_dots`, a line with a single "." ends the
/// input and is not part of the message. Input is not dot-stuffed: ".." stays.
pub fn read_message<R: Read>(
    mut input: R,
    ignore_dots: bool,
    max_size: u64,
) -> Result<Vec<u8>, InputError> {
    let mut norm = Normalizer::new(ignore_dots, max_size);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let len = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => len,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Io(e)),
        };
        // A misbehaving reader could claim more than the buffer holds.
        let chunk = buf.get(..len).unwrap_or(&buf);
        if norm.feed(chunk)? == Flow::End {
            return Ok(norm.out);
        }
    }
    norm.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    More,
    End,
}

/// Streaming line-end normalizer. State survives chunk boundaries, so a CRLF
/// split across two reads is still one line end.
struct Normalizer {
    out: Vec<u8>,
    line_start: usize,
    pending_cr: bool,
    ignore_dots: bool,
    max_size: u64,
}

impl Normalizer {
    fn new(ignore_dots: bool, max_size: u64) -> Self {
        Self {
            out: Vec::new(),
            line_start: 0,
            pending_cr: false,
            ignore_dots,
            max_size,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<Flow, InputError> {
        while !data.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if data.first() == Some(&b'\n') {
                    data = data.get(1..).unwrap_or_default();
                }
                if self.end_line()? == Flow::End {
                    return Ok(Flow::End);
                }
                continue;
            }
            let special = data.iter().position(|&b| matches!(b, 0 | b'\r' | b'\n'));
            let Some(at) = special else {
                self.out.extend_from_slice(data);
                self.check_size()?;
                break;
            };
            self.out
                .extend_from_slice(data.get(..at).unwrap_or_default());
            self.check_size()?;
            match data.get(at) {
                Some(0) => return Err(InputError::Nul),
                Some(b'\r') => self.pending_cr = true,
                _ => {
                    if self.end_line()? == Flow::End {
                        return Ok(Flow::End);
                    }
                }
            }
            data = data.get(at + 1..).unwrap_or_default();
        }
        Ok(Flow::More)
    }

    fn is_lone_dot(&self) -> bool {
        !self.ignore_dots && self.out.get(self.line_start..) == Some(b".".as_slice())
    }

    fn end_line(&mut self) -> Result<Flow, InputError> {
        if self.is_lone_dot() {
            self.out.truncate(self.line_start);
            return Ok(Flow::End);
        }
        self.out.extend_from_slice(b"\r\n");
        self.line_start = self.out.len();
        self.check_size()?;
        Ok(Flow::More)
    }

    fn check_size(&self) -> Result<(), InputError> {
        // A pending lone "." may yet be the terminator, which is not counted.
        if self.out.len() as u64 > self.max_size && !self.is_lone_dot() {
            return Err(InputError::TooLarge {
                limit: self.max_size,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, InputError> {
        if self.pending_cr || self.line_start < self.out.len() {
            self.pending_cr = false;
            self.end_line()?;
        }
        Ok(self.out)
    }
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
fn field_name_len(line: &[u8]) -> Option<usize> {
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
// Address lists (RFC 5322 3.4 with the obsolete forms of 4.4)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted,
    Literal,
    Special(u8),
    Bad,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// One address found in a list; `start..end` is its addr-spec in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    addr: String,
    start: usize,
    end: usize,
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Index just past the delimited run starting at `open`, honouring quoted
/// pairs, and whether the closing delimiter was found.
fn scan_delimited(b: &[u8], open: usize, close: u8) -> (usize, bool) {
    let mut i = open + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            c if c == close => return (i + 1, true),
            _ => i += 1,
        }
    }
    (b.len(), false)
}

/// Comments nest (RFC 5322 3.2.2), so they need their own scanner.
fn skip_comment(b: &[u8], open: usize) -> (usize, bool) {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (i + 1, true);
                }
            }
            _ => {}
        }
        i += 1;
    }
    (b.len(), false)
}

/// Tokens never split a UTF-8 sequence: every boundary is next to an ASCII
/// byte or at the end, so slicing the source with them is safe.
fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                let (end, closed) = skip_comment(b, i);
                i = end;
                if closed {
                    continue;
                }
                Kind::Bad
            }
            b'"' | b'[' => {
                let close = if c == b'"' { b'"' } else { b']' };
                let (end, closed) = scan_delimited(b, i, close);
                i = end.min(b.len());
                match (closed, c) {
                    (false, _) => Kind::Bad,
                    (true, b'"') => Kind::Quoted,
                    (true, _) => Kind::Literal,
                }
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' => {
                i += 1;
                Kind::Special(c)
            }
            c if is_atext(c) || c == b'.' || c >= 0x80 => {
                while b
                    .get(i)
                    .is_some_and(|&c| is_atext(c) || c == b'.' || c >= 0x80)
                {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += 1;
                Kind::Bad
            }
        };
        toks.push(Token {
            kind,
            start,
            end: i,
        });
    }
    toks
}

fn text<'s>(src: &'s str, t: &Token) -> &'s str {
    src.get(t.start..t.end).unwrap_or("")
}

/// Joins dot-atom parts, refusing words separated only by whitespace
/// (`john smith@x`), which no sender means as one address.
fn join_parts(src: &str, toks: &[Token], allowed: &[Kind]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        if !allowed.contains(&t.kind) {
            return None;
        }
        let part = text(src, t);
        if !out.is_empty() && !out.ends_with('.') && !part.starts_with('.') {
            return None;
        }
        out.push_str(part);
    }
    (!out.is_empty()).then_some(out)
}

fn addr_spec(src: &str, toks: &[Token]) -> Option<Parsed> {
    let (first, last) = (toks.first()?, toks.last()?);
    let at = toks.iter().position(|t| t.kind == Kind::Special(b'@'));
    let local_toks = toks.get(..at.unwrap_or(toks.len()))?;
    let mut addr = join_parts(src, local_toks, &[Kind::Word, Kind::Quoted])?;
    if let Some(at) = at {
        let domain_toks = toks.get(at + 1..)?;
        let domain = match domain_toks {
            [t] if t.kind == Kind::Literal => text(src, t).to_string(),
            _ => join_parts(src, domain_toks, &[Kind::Word])?,
        };
        addr.push('@');
        addr.push_str(&domain);
    }
    if addr.chars().any(char::is_control) {
        return None;
    }
    Some(Parsed {
        addr,
        start: first.start,
        end: last.end,
    })
}

/// One mailbox: `addr-spec` or `[phrase] <[@route:]addr-spec>`.
fn mailbox(src: &str, toks: &[Token]) -> Option<Parsed> {
    if toks.iter().any(|t| t.kind == Kind::Bad) {
        return None;
    }
    let Some(lt) = toks.iter().position(|t| t.kind == Kind::Special(b'<')) else {
        return addr_spec(src, toks);
    };
    let after = toks.get(lt + 1..)?;
    let gt = after.iter().position(|t| t.kind == Kind::Special(b'>'))?;
    if gt + 1 != after.len() {
        return None;
    }
    let mut inner = after.get(..gt)?;
    if inner.first().map(|t| t.kind) == Some(Kind::Special(b'@')) {
        let colon = inner.iter().position(|t| t.kind == Kind::Special(b':'))?;
        inner = inner.get(colon + 1..)?;
    }
    if inner.iter().any(|t| t.kind == Kind::Special(b'<')) {
        return None;
    }
    addr_spec(src, inner)
}

fn excerpt(src: &str, toks: &[Token]) -> String {
    let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
        return String::new();
    };
    let raw = src.get(first.start..last.end).unwrap_or("");
    let mut short: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(100)
        .collect();
    if raw.chars().nth(100).is_some() {
        short.push_str("...");
    }
    short
}

/// Parses an address list, remembering where each addr-spec is so callers
/// can rewrite it in place. CR and LF count as whitespace, so a folded raw
/// field value parses like its unfolded form.
fn parse_spans(src: &str) -> (Vec<Parsed>, Vec<String>) {
    let toks = tokenize(src);
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let mut finish = |element: &[Token]| {
        if element.is_empty() {
            return;
        }
        match mailbox(src, element) {
            Some(p) => found.push(p),
            None => warnings.push(format!(
                "unparseable address {:?} skipped",
                excerpt(src, element)
            )),
        }
    };
    let mut start = 0;
    let mut angle = false;
    let mut in_group = false;
    for (i, t) in toks.iter().enumerate() {
        let element = toks.get(start..i).unwrap_or_default();
        match t.kind {
            Kind::Special(b'<') => angle = true,
            Kind::Special(b'>') => angle = false,
            // Inside angle brackets a colon ends an obsolete route instead.
            Kind::Special(b':') if !angle && !in_group => {
                in_group = true;
                start = i + 1;
            }
            Kind::Special(b',') if !angle => {
                finish(element);
                start = i + 1;
            }
            // Outside a group, a ';' is taken as the separator some mail
            // programs use instead of ','.
            Kind::Special(b';') if !angle => {
                finish(element);
                start = i + 1;
                in_group = false;
            }
            _ => {}
        }
    }
    finish(toks.get(start..).unwrap_or_default());
    (found, warnings)
}

/// Parses an RFC 5322 address list (To, Cc, From, ...) into addr-specs.
/// Display names, comments and group names are dropped, obsolete routes
/// removed, quoted local parts kept as written, and a bare local name (no
/// '@') returned as is. Unparseable elements are skipped and described in
/// the second vector.
pub fn parse_address_list(value: &str) -> (Vec<String>, Vec<String>) {
    let (found, warnings) = parse_spans(value);
    (found.into_iter().map(|p| p.addr).collect(), warnings)
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
    let fields = &layout.fields;
    let mut warnings = Vec::new();

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
            field_warnings(&mut warnings, msg, f, warns);
        }
    }
    recipients.extend(opts.cli_recipients.iter().cloned());
    let recipients = dedupe(
        recipients
            .iter()
            .map(|r| qualify(opts, r, &mut warnings))
            .collect(),
    );
    if recipients.is_empty() {
        return Err(PrepareError::NoRecipients);
    }

    let mut out = Vec::with_capacity(msg.len() + 512);
    if !fields.iter().any(|f| f.is(msg, &["from"])) {
        out.extend_from_slice(from_field(opts, &mut warnings)?.as_bytes());
    }
    if !fields.iter().any(|f| f.is(msg, &["date"])) {
        out.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(opts.now)).as_bytes());
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

    for f in fields {
        if f.is(msg, BCC_FIELDS) {
            continue;
        }
        if id_added && f.is(msg, &["message-id"]) {
            continue;
        }
        if f.is(msg, QUALIFIED_FIELDS) {
            let (_, warns) = parse_address_list(&f.unfolded(msg));
            field_warnings(&mut warnings, msg, f, warns);
            if let Some(rewritten) = rewrite_field(msg, f, opts, &mut warnings) {
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
        if line_len + q.len() + rest_of_line > MAX_LINE {
            let kept = out.trim_end_matches([' ', '\t']).len();
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

/// RFC 5322 date in UTC. httpdate panics outside 1970..=9999, so the clock
/// is clamped to that range first.
fn rfc5322_date(now: SystemTime) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(LAST_SECOND_OF_9999);
    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    match date.strip_suffix(" GMT") {
        Some(base) => format!("{base} +0000"),
        None => date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], ignore_dots: bool) -> Vec<u8> {
        match read_message(input, ignore_dots, u64::MAX) {
            Ok(v) => v,
            Err(e) => panic!("{input:?}: {e}"),
        }
    }

    /// Every CR is followed by LF and every LF preceded by CR.
    fn assert_crlf(msg: &[u8]) {
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            if b == b'\n' {
                assert!(i > 0 && msg.get(i - 1) == Some(&b'\r'), "bare LF at {i}");
            }
        }
        assert!(msg.is_empty() || msg.ends_with(b"\r\n"));
    }

    fn no_qualify(s: &str) -> String {
        s.to_string()
    }

    fn ops(s: &str) -> String {
        if s == "root" {
            "ops@example.com".to_string()
        } else {
            format!("{s}@host.example")
        }
    }

    fn opts<'a>(
        t: bool,
        cli: &'a [String],
        qualify: &'a dyn Fn(&str) -> String,
    ) -> PrepareOptions<'a> {
        PrepareOptions {
            extract_recipients: t,
            cli_recipients: cli,
            sender: "me@example.com",
            full_name: None,
            hostname: "mx.example.com",
            now: UNIX_EPOCH + Duration::from_secs(1_795_455_165),
            unique: "1795455165.42.abc",
            qualify,
        }
    }

    fn run(raw: &str, o: &PrepareOptions<'_>) -> (String, Prepared) {
        match prepare(raw.as_bytes(), o) {
            Ok(p) => {
                assert_crlf(&p.message);
                (String::from_utf8_lossy(&p.message).into_owned(), p)
            }
            Err(e) => panic!("{raw:?}: {e}"),
        }
    }

    fn full(raw: &str) -> String {
        raw.replace('\n', "\r\n")
    }

    // --- read_message ---

    #[test]
    fn read_line_ends() {
        assert_eq!(read(b"a\nb\n", false), b"a\r\nb\r\n");
        assert_eq!(read(b"a\r\nb\r\n", false), b"a\r\nb\r\n");
        assert_eq!(read(b"a\r\nb\nc\r\n", false), b"a\r\nb\r\nc\r\n");
        assert_eq!(read(b"a\rb\r\r\nc", false), b"a\r\nb\r\n\r\nc\r\n");
        assert_eq!(read(b"a\r", false), b"a\r\n");
        assert_eq!(read(b"no newline", false), b"no newline\r\n");
        assert_eq!(read(b"", false), b"");
        assert_eq!(read(b"\n\n", false), b"\r\n\r\n");
    }

    #[test]
    fn read_lone_dot() {
        assert_eq!(read(b"a\n.\nb\n", false), b"a\r\n");
        assert_eq!(read(b"a\r\n.\r\nb\r\n", false), b"a\r\n");
        assert_eq!(read(b"a\n.\nb\n", true), b"a\r\n.\r\nb\r\n");
        // Not dot-stuffed: ".." and ". " are ordinary lines.
        assert_eq!(read(b"..\n.x\n. \n", false), b"..\r\n.x\r\n. \r\n");
        assert_eq!(read(b"a\n.", false), b"a\r\n");
        assert_eq!(read(b"a\n.", true), b"a\r\n.\r\n");
        assert_eq!(read(b".\n", false), b"");
        // A bare CR is a line end too, so ".\r" terminates.
        assert_eq!(read(b"a\n.\rb\n", false), b"a\r\n");
    }

    #[test]
    fn read_rejects_nul() {
        let r = read_message(&b"a\nb\0c\n"[..], true, u64::MAX);
        assert!(matches!(r, Err(InputError::Nul)));
    }

    #[test]
    fn read_size_limit() {
        // "abc\r\n" is 5 output bytes although the input is 4.
        assert_eq!(
            read_message(&b"abc\n"[..], false, 5).ok(),
            Some(b"abc\r\n".to_vec())
        );
        let r = read_message(&b"abc\n"[..], false, 4);
        assert!(matches!(r, Err(InputError::TooLarge { limit: 4 })));
        let r = read_message(&b"abc"[..], false, 4);
        assert!(matches!(r, Err(InputError::TooLarge { limit: 4 })));
        // The terminating dot is not part of the message, so it does not count.
        assert_eq!(
            read_message(&b"abc\n.\n"[..], false, 5).ok(),
            Some(b"abc\r\n".to_vec())
        );
        assert_eq!(read_message(&b"."[..], false, 0).ok(), Some(Vec::new()));
        let r = read_message(&b".\n"[..], true, 2);
        assert!(matches!(r, Err(InputError::TooLarge { limit: 2 })));
    }

    #[test]
    fn read_stops_at_limit_without_draining() {
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0 += 1;
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        let mut src = Endless(0);
        let r = read_message(&mut src, false, 100_000);
        assert!(matches!(r, Err(InputError::TooLarge { limit: 100_000 })));
        assert!(src.0 <= 2, "{} reads", src.0);
    }

    /// One byte per read: CRLF and the dot line split across reads.
    #[test]
    fn read_across_chunk_boundaries() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((&b, rest)), Some(slot)) => {
                        *slot = b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let r = read_message(Trickle(b"a\r\nb\rc\n.\r\nrest"), false, 1000);
        assert_eq!(r.ok(), Some(b"a\r\nb\r\nc\r\n".to_vec()));
    }

    #[test]
    fn read_io_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("boom"))
            }
        }
        assert!(matches!(
            read_message(Broken, false, 10),
            Err(InputError::Io(_))
        ));
    }

    #[test]
    fn read_large_input_is_linear() {
        let input = "line of text\n".repeat(200_000);
        let out = read(input.as_bytes(), false);
        assert_eq!(out.len(), input.len() + 200_000);
    }

    // --- parse_address_list ---

    fn addrs(v: &str) -> Vec<String> {
        let (a, w) = parse_address_list(v);
        assert!(w.is_empty(), "{v:?}: {w:?}");
        a
    }

    #[test]
    fn address_forms() {
        assert_eq!(addrs("a@x"), ["a@x"]);
        assert_eq!(addrs("Name <a@x>, b@y"), ["a@x", "b@y"]);
        assert_eq!(
            addrs("\"Quoted, Name\" <a@x>, \"x\\\"y\" <b@y>"),
            ["a@x", "b@y"]
        );
        assert_eq!(
            addrs("a@x (Comment, with comma), b@y (nested (c, d) e)"),
            ["a@x", "b@y"]
        );
        assert_eq!(addrs("=?utf-8?q?J=C3=B6rg?= <j@x>"), ["j@x"]);
        assert_eq!(addrs("<@route1,@route2:a@x>"), ["a@x"]);
        assert_eq!(addrs("root"), ["root"]);
        assert_eq!(addrs("a@x,,b@y,"), ["a@x", "b@y"]);
        assert_eq!(addrs("\"john smith\"@x"), ["\"john smith\"@x"]);
        assert_eq!(addrs("a@[192.0.2.1]"), ["a@[192.0.2.1]"]);
        assert_eq!(
            addrs("john . smith @ example . com"),
            ["john.smith@example.com"]
        );
        assert_eq!(addrs("a@x; b@y"), ["a@x", "b@y"]);
        assert_eq!(addrs("Jörg <jörg@exämple.de>"), ["jörg@exämple.de"]);
        assert!(addrs("").is_empty());
        assert!(addrs(" , (just a comment) ,").is_empty());
    }

    #[test]
    fn address_groups() {
        assert!(addrs("undisclosed-recipients:;").is_empty());
        assert_eq!(addrs("Team: a@x, B <b@y>;, c@z"), ["a@x", "b@y", "c@z"]);
        assert_eq!(addrs("\"The Team\": a@x"), ["a@x"]);
        assert_eq!(addrs("A: a@x;, B: b@y;"), ["a@x", "b@y"]);
    }

    #[test]
    fn address_garbage_is_skipped_with_warning() {
        let cases = [
            ("john smith@x, b@y", vec!["b@y"]),
            ("<a@x, b@y", vec![]),
            ("a@x>, b@y", vec!["b@y"]),
            ("<a@x> <c@d>, b@y", vec!["b@y"]),
            ("a@@x, b@y", vec!["b@y"]),
            ("a@, @x, b@y", vec!["b@y"]),
            ("\"unterminated, b@y", vec![]),
            ("a@x (unterminated, b@y", vec![]),
            ("<>, b@y", vec!["b@y"]),
            ("a\\b@x, b@y", vec!["b@y"]),
            ("a\x01@x, b@y", vec!["b@y"]),
        ];
        for (input, want) in cases {
            let (got, warnings) = parse_address_list(input);
            assert_eq!(got, want, "{input:?}");
            assert!(!warnings.is_empty(), "{input:?}");
        }
    }

    /// Deterministic fuzzing over the characters that matter to the parsers.
    #[test]
    fn never_panics() {
        let alphabet: Vec<char> = "<>@,;:\"()[]\\ \r\n\t.aé\u{0}=?:".chars().collect();
        let mut seed: u64 = 0x5eed;
        let cli = ["x@y".to_string()];
        for _ in 0..4000 {
            let mut s = String::new();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 60) as usize + 1;
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let idx = (seed >> 33) as usize % alphabet.len();
                s.push(alphabet.get(idx).copied().unwrap_or('a'));
            }
            let _ = parse_address_list(&s);
            let raw = format!("To: {s}\nFrom: {s}\nCc:{s}\n\nbody {s}");
            let o = opts(true, &cli, &ops);
            if let Ok(p) = prepare(raw.as_bytes(), &o) {
                assert_crlf(&p.message);
            }
            let _ = prepare(s.as_bytes(), &o);
            let _ = read_message(s.as_bytes(), false, 20);
        }
    }

    // --- prepare ---

    #[test]
    fn extract_to_cc_bcc_and_drop_bcc() {
        let raw = "To: a@x\nCc: B <b@y>\nBcc: secret@z,\n  other@z\nSubject: hi\n\nbody\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(p.recipients, ["a@x", "b@y", "secret@z", "other@z"]);
        assert!(!out.to_lowercase().contains("bcc"), "{out}");
        assert!(!out.contains("secret") && !out.contains("other@z"));
        assert!(out.contains("\r\nTo: a@x\r\nCc: B <b@y>\r\nSubject: hi\r\n\r\nbody\r\n"));
    }

    #[test]
    fn bcc_removed_without_t() {
        let raw = "To: a@x\nBCC: hidden@z\nSubject: s\n\nb\n";
        let cli = ["r@x".to_string()];
        let (out, p) = run(raw, &opts(false, &cli, &no_qualify));
        assert_eq!(p.recipients, ["r@x"]);
        assert!(!out.contains("hidden"));
    }

    #[test]
    fn folded_groups_comments_quotes() {
        let raw = "To: \"Doe, John\" <john@x>,\n\tjane@y (Jane, Doe),\n  Team: t1@z, t2@z;\nCc: undisclosed-recipients:;\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(p.recipients, ["john@x", "jane@y", "t1@z", "t2@z"]);
        // Kept byte for byte, folds included.
        assert!(out.contains(
            "To: \"Doe, John\" <john@x>,\r\n\tjane@y (Jane, Doe),\r\n  Team: t1@z, t2@z;\r\n"
        ));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn resent_fields_take_precedence() {
        let raw = "To: orig@x\nResent-To: new@y\nResent-Bcc: hidden@z\nResent-From: r@y\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(p.recipients, ["new@y", "hidden@z"]);
        assert!(!out.contains("hidden"));
        assert!(out.contains("To: orig@x\r\n"));
    }

    #[test]
    fn cli_recipients_added_and_deduped() {
        let raw = "To: A@X, b@y, a@x\nCc: B@Y\n\nb\n";
        let cli = ["c@z".to_string(), "a@X".to_string(), "root".to_string()];
        let (_, p) = run(raw, &opts(true, &cli, &ops));
        assert_eq!(p.recipients, ["A@X", "b@y", "c@z", "ops@example.com"]);
    }

    #[test]
    fn no_recipients() {
        let r = prepare(b"Subject: x\n\nb\n", &opts(true, &[], &no_qualify));
        assert_eq!(r, Err(PrepareError::NoRecipients));
        let r = prepare(b"To: a@x\n\nb\n", &opts(false, &[], &no_qualify));
        assert_eq!(r, Err(PrepareError::NoRecipients));
        let r = prepare(
            b"To: undisclosed-recipients:;\n\nb\n",
            &opts(true, &[], &no_qualify),
        );
        assert_eq!(r, Err(PrepareError::NoRecipients));
    }

    #[test]
    fn missing_fields_added_in_order() {
        let cli = ["r@x".to_string()];
        let (out, p) = run("Subject: hi\n\nbody\n", &opts(false, &cli, &no_qualify));
        assert_eq!(
            out,
            "From: me@example.com\r\nDate: Mon, 23 Nov 2026 17:32:45 +0000\r\n\
             Message-ID: <1795455165.42.abc@mx.example.com>\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(p.message_id, "<1795455165.42.abc@mx.example.com>");
    }

    #[test]
    fn existing_fields_kept() {
        let raw = "from: Me <me@x>\nDATE: Mon, 1 Jan 2001 00:00:00 +0000\nMessage-Id:\n  <abc@x> \nTo: r@x\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(out, full(raw));
        assert_eq!(p.message_id, "<abc@x>");
    }

    #[test]
    fn blank_message_id_replaced() {
        let raw = "Message-ID: \nTo: r@x\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(p.message_id, "<1795455165.42.abc@mx.example.com>");
        assert_eq!(out.matches("Message-ID").count(), 1);
    }

    #[test]
    fn body_only_input() {
        let cli = ["r@x".to_string()];
        for raw in [
            "Hello there\nTo: not-a-header@x\n",
            " indented: x\n",
            "From me: hi\n",
            "From the desk of X\n\nTo: a@x\n",
        ] {
            let (out, p) = run(raw, &opts(true, &cli, &no_qualify));
            assert_eq!(p.recipients, ["r@x"]);
            let sep = out.find("\r\n\r\n").unwrap_or(0);
            assert_eq!(out.get(sep + 4..), Some(full(raw).as_str()), "{raw:?}");
        }
    }

    #[test]
    fn mbox_from_line_dropped() {
        let raw = "From me@x Mon Jan  1 00:00:00 2001\nTo: r@x\nFrom: me@x\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &no_qualify));
        assert_eq!(p.recipients, ["r@x"]);
        assert!(out.ends_with("To: r@x\r\nFrom: me@x\r\n\r\nb\r\n"));
        assert!(!out.contains("2001"));
    }

    #[test]
    fn header_section_ended_by_non_field_line() {
        let raw = "To: r@x\nSubject: s\nthis is body\nmore\n";
        let (out, _) = run(raw, &opts(true, &[], &no_qualify));
        assert!(
            out.ends_with("To: r@x\r\nSubject: s\r\n\r\nthis is body\r\nmore\r\n"),
            "{out}"
        );
    }

    #[test]
    fn headers_only_get_separator() {
        let (out, _) = run("To: r@x\nSubject: s", &opts(true, &[], &no_qualify));
        assert!(out.ends_with("To: r@x\r\nSubject: s\r\n\r\n"), "{out}");
        let (out, _) = run("To: r@x\n\n", &opts(true, &[], &no_qualify));
        assert!(out.ends_with("To: r@x\r\n\r\n"), "{out}");
    }

    #[test]
    fn empty_input() {
        let cli = ["r@x".to_string()];
        let (out, p) = run("", &opts(false, &cli, &no_qualify));
        assert_eq!(
            out,
            "From: me@example.com\r\nDate: Mon, 23 Nov 2026 17:32:45 +0000\r\n\
             Message-ID: <1795455165.42.abc@mx.example.com>\r\n\r\n"
        );
        assert!(!p.eight_bit);
        let (out, _) = run("\nbody", &opts(false, &cli, &no_qualify));
        assert!(out.ends_with(">\r\n\r\nbody\r\n"), "{out}");
    }

    #[test]
    fn cron_from_qualified() {
        let raw =
            "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> run-parts\n\noutput\n";
        let mut o = opts(true, &[], &ops);
        o.sender = "root";
        o.full_name = Some("CronDaemon");
        let (out, p) = run(raw, &o);
        assert_eq!(p.recipients, ["ops@example.com"]);
        assert!(
            out.contains("\r\nFrom: ops@example.com (Cron Daemon)\r\nTo: ops@example.com\r\n"),
            "{out}"
        );
        // Subject is not an address field.
        assert!(out.contains("Subject: Cron <root@h> run-parts\r\n"));
    }

    #[test]
    fn qualify_keeps_names_comments_and_other_addresses() {
        let raw = "To: \"root\" <root>, admin (the admin), x@y,\n  Name <bob>\nReply-To: a@b\nCc:   odd   spacing@x\n\nb\n";
        let (out, p) = run(raw, &opts(true, &[], &ops));
        assert_eq!(
            p.recipients,
            [
                "ops@example.com",
                "admin@host.example",
                "x@y",
                "bob@host.example"
            ]
        );
        assert!(out.contains("To: \"root\" <ops@example.com>, admin@host.example (the admin), x@y,\r\n  Name <bob@host.example>\r\n"), "{out}");
        assert!(out.contains("Reply-To: a@b\r\nCc:   odd   spacing@x\r\n"));
    }

    #[test]
    fn qualify_folds_overlong_lines() {
        let long = "a".repeat(990);
        let raw = format!("To: {long}@x, root\n\nb\n");
        let (out, _) = run(&raw, &opts(true, &[], &ops));
        assert!(out.lines().all(|l| l.len() <= 998), "{out}");
        assert!(out.contains("@x,\r\n ops@example.com\r\n"), "{out}");
    }

    #[test]
    fn many_bare_names_stay_linear() {
        let names: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let raw = format!("To: {}\n\nb\n", names.join(", "));
        let (out, p) = run(&raw, &opts(true, &[], &ops));
        assert_eq!(p.recipients.len(), 20_000);
        assert!(out.contains("u19999@host.example"));
        assert!(out.lines().all(|l| l.len() <= 998));
    }

    #[test]
    fn qualify_result_with_line_break_ignored() {
        let evil = |_: &str| "x@y\r\nBcc: v@z".to_string();
        let cli = ["root".to_string()];
        let (out, p) = run("To: root\n\nb\n", &opts(true, &cli, &evil));
        assert_eq!(p.recipients, ["root"]);
        assert!(out.contains("To: root\r\n") && !out.contains("Bcc"));
        assert!(!p.warnings.is_empty());
    }

    #[test]
    fn added_from_resists_injection() {
        let cli = ["r@x".to_string()];
        let names = [
            "Evil\r\nBcc: victim@x",
            "\"><script>",
            "a, b <c@d>",
            "x\nTo: y@z",
            "Ünïcödé Name",
        ];
        for name in names {
            let mut o = opts(false, &cli, &no_qualify);
            o.full_name = Some(name);
            let (out, _) = run("Subject: s\n\nb\n", &o);
            let from = out.lines().next().unwrap_or("");
            let header_lines: Vec<&str> = out
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .split("\r\n")
                .collect();
            // Only our three added fields, Subject, and From's own folds.
            let starts: Vec<&str> = header_lines
                .iter()
                .filter(|l| !l.starts_with([' ', '\t']))
                .filter_map(|l| l.split(':').next())
                .collect();
            assert_eq!(
                starts,
                ["From", "Date", "Message-ID", "Subject"],
                "{name:?}: {out}"
            );
            assert!(from.ends_with("<me@example.com>"), "{name:?}: {from}");
            let value = from.strip_prefix("From: ").unwrap_or("");
            let (addrs, warnings) = parse_address_list(value);
            assert_eq!(addrs, ["me@example.com"], "{name:?}: {value} {warnings:?}");
        }
        let mut o = opts(false, &cli, &no_qualify);
        o.full_name = Some("Ünïcödé Name");
        let (out, p) = run("\n", &o);
        assert!(out.starts_with("From: =?utf-8?b?"), "{out}");
        assert!(!p.eight_bit);
        o.full_name = Some("Cron Daemon");
        let (out, _) = run("\n", &o);
        assert!(
            out.starts_with("From: \"Cron Daemon\" <me@example.com>\r\n"),
            "{out}"
        );
    }

    #[test]
    fn added_from_sender_variants() {
        let cli = ["r@x".to_string()];
        let mut o = opts(false, &cli, &ops);
        o.sender = "";
        let (out, _) = run("\n", &o);
        assert!(
            out.starts_with("From: MAILER-DAEMON@mx.example.com\r\n"),
            "{out}"
        );
        o.sender = "<me@example.com>";
        let (out, _) = run("\n", &o);
        assert!(out.starts_with("From: me@example.com\r\n"), "{out}");
        o.sender = "root";
        let (out, _) = run("\n", &o);
        assert!(out.starts_with("From: ops@example.com\r\n"), "{out}");
        // Not parseable by lettre: no name, but no failure either.
        let plain = |s: &str| s.to_string();
        let mut o = opts(false, &cli, &plain);
        o.sender = "bare";
        o.full_name = Some("Name");
        let (out, p) = run("\n", &o);
        assert!(out.starts_with("From: <bare>\r\n"), "{out}");
        assert!(!p.warnings.is_empty());
        o.sender = "a@b\r\nBcc: x@y";
        assert!(matches!(
            prepare(b"\n", &o),
            Err(PrepareError::InvalidSender(_))
        ));
    }

    #[test]
    fn message_id_and_hostname_sanitized() {
        let cli = ["r@x".to_string()];
        let mut o = opts(false, &cli, &no_qualify);
        o.hostname = "evil>\r\nBcc: x@y";
        o.unique = "a b<c>";
        let (out, p) = run("\n", &o);
        assert_eq!(p.message_id, "<abc@evilBccxy>");
        assert!(out.starts_with("From: me@example.com\r\nDate: "));
    }

    #[test]
    fn eight_bit_detection() {
        let cli = ["r@x".to_string()];
        let (_, p) = run("Subject: plain\n\nascii\n", &opts(false, &cli, &no_qualify));
        assert!(!p.eight_bit);
        let (_, p) = run("Subject: plain\n\nnaïve\n", &opts(false, &cli, &no_qualify));
        assert!(p.eight_bit);
    }

    #[test]
    fn prepare_normalizes_and_rejects_nul() {
        let cli = ["r@x".to_string()];
        let (out, _) = run(
            "To: r@x\rSubject: s\n\nb\rc",
            &opts(false, &cli, &no_qualify),
        );
        assert!(
            out.ends_with("To: r@x\r\nSubject: s\r\n\r\nb\r\nc\r\n"),
            "{out}"
        );
        let r = prepare(b"To: r@x\n\n\0", &opts(false, &cli, &no_qualify));
        assert_eq!(r, Err(PrepareError::Nul));
    }

    #[test]
    fn non_utf8_header_kept_verbatim() {
        let cli = ["r@x".to_string()];
        let raw = b"To: root \xff\nSubject: \xe9t\xe9\n\nb\n";
        let p = prepare(raw, &opts(true, &cli, &ops));
        assert!(p.as_ref().is_ok_and(|p| p
            .message
            .ends_with(b"To: root \xff\r\nSubject: \xe9t\xe9\r\n\r\nb\r\n")));
    }

    #[test]
    fn date_clamped() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let before = UNIX_EPOCH
            .checked_sub(Duration::from_secs(10))
            .unwrap_or(UNIX_EPOCH);
        assert_eq!(rfc5322_date(before), "Thu, 01 Jan 1970 00:00:00 +0000");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc5322_date(far), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn obsolete_space_before_colon() {
        let (out, p) = run("To : r@x\nSubject: s\n\nb\n", &opts(true, &[], &no_qualify));
        assert_eq!(p.recipients, ["r@x"]);
        assert!(out.ends_with("To : r@x\r\nSubject: s\r\n\r\nb\r\n"));
    }
}
