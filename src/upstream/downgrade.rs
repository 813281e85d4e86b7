//! What an upstream cannot take, made into what it can (RFC 6152, 2045,
//! 5322 2.1.1): no line over 998 octets ever, and no 8-bit octet when the
//! server does not offer 8BITMIME.
//!
//! Two passes over the queued message, both through the same MIME walk:
//! [`Scan`] finds what each entity holds and decides what to do with it
//! ([`Plan`]); [`Convert`] rewrites the message as it is sent. A text part
//! is re-encoded as quoted-printable, any other part as base64, so that it
//! decodes to exactly what was written. Where that would change what a
//! signature covers (inside `multipart/signed`) or the part is already
//! encoded, a long line is broken as Postfix breaks it (CRLF and a space),
//! which the log says; 8-bit octets there cannot be sent, and the message
//! bounces with `5.6.3`. A header line over 998 octets is folded at
//! whitespace, or the message bounces with `5.6.0`.

mod walker;

use base64::Engine as _;

use crate::spool::{BodyReader, StoreError};
use walker::{Cte, Kind, Line, Walker};

/// RFC 5322 2.1.1: the longest line, without its CRLF.
pub const MAX_LINE: usize = 998;
/// Quoted-printable and base64 lines (RFC 2045 6.7, 6.8).
const ENCODED_LINE: usize = 76;

/// What to do with one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Re-encode the body as quoted-printable.
    Qp,
    /// Re-encode the body as base64.
    Base64,
    /// Break long lines (CRLF SPACE), changing the text.
    Fold,
    /// A container whose `8bit`/`binary` label becomes `7bit`.
    Relabel,
}

/// Why a message cannot be sent to this upstream: the status and reason
/// for its bounce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    eight_bit: bool,
    long_line: bool,
    header_eight_bit: bool,
    long_header: bool,
    /// A header line over the limit with no whitespace to fold at.
    unfoldable_header: bool,
}

/// The first pass: what each entity holds.
pub struct Scan {
    walker: Walker,
    seen: Vec<Seen>,
    lines: Lines,
}

/// The outcome of the scan: an action per entity, or a refusal.
#[derive(Debug, Clone)]
pub struct Plan {
    actions: Vec<Action>,
    /// Whether the message changes at all.
    pub changes: bool,
    /// Whether some line is broken (the text changes): worth a log line.
    pub folds: bool,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            walker: Walker::new(),
            seen: Vec::new(),
            lines: Lines::default(),
        }
    }
}

impl Scan {
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, |line| self.line(line));
        self.lines = lines;
    }

    fn line(&mut self, line: &[u8]) {
        let kind = self.walker.line(line);
        let id = match kind {
            Line::Header(id, _) | Line::HeaderEnd(id) | Line::Body(id) | Line::Filler(id) => id,
            Line::Delimiter => return,
        };
        if self.seen.len() <= id {
            self.seen.resize(id + 1, Seen::default());
        }
        let s = &mut self.seen[id];
        let eight = line.iter().any(|&b| b >= 0x80);
        let long = line.len() > MAX_LINE;
        match kind {
            Line::Header(..) => {
                s.header_eight_bit |= eight;
                s.unfoldable_header |= long && fold_points(line).is_none();
                s.long_header |= long;
            }
            _ => {
                s.eight_bit |= eight;
                s.long_line |= long;
            }
        }
    }

    /// Decides, once the whole message has been fed. `seven_bit`: the
    /// upstream does not offer 8BITMIME.
    pub fn finish(mut self, seven_bit: bool) -> Result<Plan, Refusal> {
        let rest = std::mem::take(&mut self.lines).rest;
        if !rest.is_empty() {
            self.line(&rest);
        }
        let entities = &self.walker.entities;
        self.seen.resize(entities.len(), Seen::default());
        let mut plan = Plan {
            actions: Vec::with_capacity(entities.len()),
            changes: false,
            folds: false,
        };
        for (e, s) in entities.iter().zip(&self.seen) {
            let action = decide(e, s, seven_bit)?;
            plan.changes |= action != Action::Keep || s.long_header;
            plan.folds |= action == Action::Fold;
            plan.actions.push(action);
        }
        Ok(plan)
    }
}

fn decide(e: &walker::Entity, s: &Seen, seven_bit: bool) -> Result<Action, Refusal> {
    if s.unfoldable_header {
        return Err(Refusal {
            status: "5.6.0",
            reason: "a header line is longer than 998 octets and has no space to fold at",
        });
    }
    let eight = seven_bit && (s.eight_bit || s.header_eight_bit);
    let cannot = Refusal {
        status: "5.6.3",
        reason: "the message holds 8-bit text the smarthost cannot take (no 8BITMIME) \
                 where it cannot be converted",
    };
    if seven_bit && s.header_eight_bit {
        return Err(cannot);
    }
    match e.kind {
        Kind::Multipart | Kind::Message => {
            // Their own body lines are preamble and epilogue, never decoded:
            // long ones are broken, 8-bit ones cannot be sent.
            if eight {
                return Err(cannot);
            }
            return Ok(match (seven_bit, s.long_line) {
                (_, true) => Action::Fold,
                (true, false) => Action::Relabel,
                _ => Action::Keep,
            });
        }
        _ => {}
    }
    if !eight && !s.long_line {
        return Ok(Action::Keep);
    }
    if e.signed || e.cte == Cte::Encoded {
        return if eight { Err(cannot) } else { Ok(Action::Fold) };
    }
    Ok(match e.kind {
        Kind::Text => Action::Qp,
        _ => Action::Base64,
    })
}

/// Where a long header line can be broken: whitespace positions that leave
/// every piece within the limit.
fn fold_points(line: &[u8]) -> Option<Vec<usize>> {
    let mut points = Vec::new();
    let mut start = 0;
    while line.len() - start > MAX_LINE {
        let window = &line[start..start + MAX_LINE + 1];
        let at = window
            .iter()
            .rposition(|&b| b == b' ' || b == b'\t')
            .filter(|&i| i > 0)?;
        points.push(start + at);
        start += at;
    }
    Some(points)
}

/// Splits chunks into lines (without CRLF); `rest` holds a partial line.
#[derive(Default)]
struct Lines {
    rest: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, mut chunk: &[u8], mut each: impl FnMut(&[u8])) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.rest.extend_from_slice(&chunk[..i]);
            if self.rest.last() == Some(&b'\r') {
                self.rest.pop();
            }
            each(&self.rest);
            self.rest.clear();
            chunk = &chunk[i + 1..];
        }
        self.rest.extend_from_slice(chunk);
    }
}

/// The second pass: the message as it goes to the upstream.
pub struct Convert {
    walker: Walker,
    plan: Plan,
    lines: Lines,
    /// A base64 part's octets not yet encoded (under 57), and whether a
    /// CRLF is owed before its next line (the last one before a delimiter
    /// belongs to the delimiter, RFC 2046 5.1.1).
    b64: Vec<u8>,
    b64_crlf: bool,
    b64_open: Option<usize>,
    out: Vec<u8>,
}

impl Convert {
    pub fn new(plan: Plan) -> Convert {
        Convert {
            walker: Walker::new(),
            plan,
            lines: Lines::default(),
            b64: Vec::new(),
            b64_crlf: false,
            b64_open: None,
            out: Vec::new(),
        }
    }

    /// Converts a chunk; what is ready goes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, |line| self.line(line));
        self.lines = lines;
        out.append(&mut self.out);
    }

    /// The end of the message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let rest = std::mem::take(&mut self.lines.rest);
        if !rest.is_empty() {
            self.line(&rest);
        }
        // A top-level base64 body owns its final CRLF.
        if self.b64_crlf {
            self.b64.extend_from_slice(b"\r\n");
            self.b64_crlf = false;
        }
        self.close_b64();
        out.append(&mut self.out);
    }

    fn action(&self, id: usize) -> Action {
        self.plan.actions.get(id).copied().unwrap_or(Action::Keep)
    }

    fn line(&mut self, line: &[u8]) {
        let kind = self.walker.line(line);
        if !matches!(kind, Line::Body(id) if self.b64_open == Some(id)) {
            self.close_b64();
        }
        match kind {
            Line::Header(id, is_cte) => {
                let relabel = matches!(
                    self.action(id),
                    Action::Qp | Action::Base64 | Action::Relabel
                );
                if !(is_cte && relabel) {
                    self.header_line(line);
                }
            }
            Line::HeaderEnd(id) => {
                self.new_labels(id);
                self.out.extend_from_slice(b"\r\n");
            }
            Line::Body(id) => match self.action(id) {
                Action::Qp => qp_line(line, &mut self.out),
                Action::Base64 => self.b64_line(id, line),
                Action::Fold => fold_line(line, &mut self.out),
                _ => plain_line(line, &mut self.out),
            },
            Line::Filler(id) if self.action(id) == Action::Fold => fold_line(line, &mut self.out),
            Line::Filler(_) | Line::Delimiter => plain_line(line, &mut self.out),
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        let Some(points) = fold_points(line).filter(|p| !p.is_empty()) else {
            return plain_line(line, &mut self.out);
        };
        let mut start = 0;
        for p in points {
            self.out.extend_from_slice(&line[start..p]);
            self.out.extend_from_slice(b"\r\n");
            start = p;
        }
        plain_line(&line[start..], &mut self.out);
    }

    /// The labels a converted entity needs, at the end of its header.
    fn new_labels(&mut self, id: usize) {
        let action = self.action(id);
        let Some(e) = self.walker.entities.get(id) else {
            return;
        };
        let cte: &[u8] = match action {
            Action::Qp => b"quoted-printable",
            Action::Base64 => b"base64",
            Action::Relabel => b"7bit",
            _ => return,
        };
        if e.top && !e.has_mime_version {
            self.out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        }
        if e.top && !e.has_content_type && action == Action::Qp {
            // RFC 2045 5.2's default is US-ASCII, which an 8-bit body is
            // not: say UTF-8, what local programs write.
            self.out
                .extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        }
        self.out.extend_from_slice(b"Content-Transfer-Encoding: ");
        self.out.extend_from_slice(cte);
        self.out.extend_from_slice(b"\r\n");
    }

    fn b64_line(&mut self, id: usize, line: &[u8]) {
        self.b64_open = Some(id);
        if self.b64_crlf {
            self.b64.extend_from_slice(b"\r\n");
        }
        self.b64.extend_from_slice(line);
        self.b64_crlf = true;
        let whole = self.b64.len() / 57 * 57;
        for group in self.b64[..whole].chunks(57) {
            let text = base64::engine::general_purpose::STANDARD.encode(group);
            self.out.extend_from_slice(text.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.b64.drain(..whole);
    }

    /// Ends a base64 body: its last octets, and the CRLF that belongs to
    /// the delimiter that follows.
    fn close_b64(&mut self) {
        if self.b64_open.take().is_none() {
            return;
        }
        if !self.b64.is_empty() {
            let text = base64::engine::general_purpose::STANDARD.encode(&self.b64);
            self.out.extend_from_slice(text.as_bytes());
            self.out.extend_from_slice(b"\r\n");
            self.b64.clear();
        }
        self.b64_crlf = false;
    }
}

fn plain_line(line: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Postfix's way (`smtp_line_length_limit`): a CRLF and a space every 998
/// octets. The text changes; it is the last resort.
fn fold_line(line: &[u8], out: &mut Vec<u8>) {
    let (first, rest) = line.split_at(MAX_LINE.min(line.len()));
    out.extend_from_slice(first);
    for piece in rest.chunks(MAX_LINE - 1) {
        out.extend_from_slice(b"\r\n ");
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(b"\r\n");
}

/// One line as quoted-printable (RFC 2045 6.7): its CRLF a hard break,
/// soft breaks keeping every line within 76 characters, and trailing
/// whitespace and a leading "From " encoded so that no relay alters them.
fn qp_line(line: &[u8], out: &mut Vec<u8>) {
    let mut width = 0;
    let last = line.len().saturating_sub(1);
    for (i, &b) in line.iter().enumerate() {
        let literal = match b {
            b'=' => false,
            b' ' | b'\t' => i != last,
            b'F' if i == 0 && line.starts_with(b"From ") => false,
            33..=126 => true,
            _ => false,
        };
        let need = if literal { 1 } else { 3 };
        if width + need > ENCODED_LINE - 1 {
            out.extend_from_slice(b"=\r\n");
            width = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(format!("={b:02X}").as_bytes());
        }
        width += need;
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;

impl crate::spool::body::Transform for Convert {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        Convert::feed(self, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        Convert::finish(self, out);
    }
}

/// The queued message as an upstream must get it.
pub enum Prepared {
    /// Nothing to change.
    AsIs(BodyReader),
    /// Read through the conversion; `folds` when a line was broken.
    Converted { body: BodyReader, folds: bool },
    /// It cannot go to this upstream.
    Refused(Refusal),
}

/// Reads the message once to plan, once more to count what the conversion
/// gives (the upstream's SIZE and the reader's own check need it), and
/// returns a reader that converts as the message is sent.
pub async fn prepare(
    open: &(dyn Fn() -> BodyReader + Send + Sync),
    seven_bit: bool,
) -> Result<Prepared, StoreError> {
    let mut scan = Scan::default();
    let mut body = open();
    while let Some(chunk) = body.next().await? {
        scan.feed(&chunk);
    }
    let plan = match scan.finish(seven_bit) {
        Ok(plan) if plan.changes => plan,
        Ok(_) => return Ok(Prepared::AsIs(open())),
        Err(refusal) => return Ok(Prepared::Refused(refusal)),
    };
    let folds = plan.folds;
    let mut count = Convert::new(plan.clone());
    let (mut size, mut out) = (0u64, Vec::new());
    let mut body = open();
    while let Some(chunk) = body.next().await? {
        count.feed(&chunk, &mut out);
        size += out.len() as u64;
        out.clear();
    }
    count.finish(&mut out);
    size += out.len() as u64;
    let body = open().transformed(size, Box::new(Convert::new(plan)));
    Ok(Prepared::Converted { body, folds })
}
