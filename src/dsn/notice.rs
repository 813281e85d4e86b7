//! Delivery status notifications: RFC 3464 reports wrapped in an RFC 6522
//! `multipart/report`, for a failure (a bounce), a delay (a warning) or a
//! relay to a server that could not take NOTIFY (RFC 3461 5.2.2). A failure
//! notice returns the whole message when the sender asked RET=FULL and it is
//! small enough; every other notice returns the header section only.
//!
//! The caller must submit the result with a null reverse-path (`MAIL FROM:<>`)
//! so a notice can never trigger another notice.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::address::{Address, Envelope};

use crate::clock::{clamp, rfc5322};
use crate::message_text::header_section;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Message, MultiPart, SinglePart};

/// RFC 5322 hard limit on a line, excluding CRLF.
const MAX_LINE: usize = 998;
/// Longest unbreakable run we emit; leaves room for a field name before it.
const MAX_WORD: usize = 900;

/// What happened to the recipients a notice reports (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    /// Passed to a server that does not send notices (RFC 3461 5.2.2).
    Relayed,
    /// Put where it ends (the capture directory).
    Delivered,
}

impl Action {
    fn field(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
            Action::Delivered => "delivered",
        }
    }

    /// For logs and the notice's queue entry.
    pub fn word(self) -> &'static str {
        match self {
            Action::Failed => "non-delivery",
            Action::Delayed => "delay",
            Action::Relayed | Action::Delivered => "delivery status",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Action::Failed => "Undelivered Mail Returned to Sender",
            Action::Delayed => "Delayed Mail (still being retried)",
            Action::Relayed | Action::Delivered => "Successful Mail Delivery Report",
        }
    }
}

/// One recipient the report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    pub address: String,
    /// RFC 3463 status, e.g. "5.1.1".
    pub status: String,
    /// Upstream reply `550 5.1.1 <x>: user unknown` if the failure came from the smarthost, else None.
    pub diagnostic: Option<String>,
    /// Human reason when there is no upstream reply, e.g. "retry timeout exceeded" or "connection refused".
    pub reason: String,
    /// "smtp.mailgun.org" when known.
    pub remote_mta: Option<String>,
    /// The sender's ORCPT, for Original-Recipient.
    pub orcpt: Option<super::Orcpt>,
}

/// Everything [`build`] needs, borrowed from the queue entry.
pub struct BounceInput<'a> {
    pub action: Action,
    /// Our host name.
    pub reporting_host: &'a str,
    /// Queue id of the original message.
    pub queue_id: &'a str,
    /// Must be non-empty: bouncing to `<>` would risk bounce loops.
    pub original_sender: &'a str,
    pub arrival: SystemTime,
    pub now: SystemTime,
    /// Must be non-empty.
    pub failed: &'a [FailedRecipient],
    /// The original, CRLF: its header section, or the whole message when
    /// `return_full`.
    pub original_message: &'a [u8],
    /// Return `original_message` whole, as `message/rfc822` (RET=FULL).
    pub return_full: bool,
    /// The sender's ENVID (xtext), for Original-Envelope-Id.
    pub envid: Option<&'a str>,
    /// When a delayed recipient stops being retried, for Will-Retry-Until.
    pub retry_until: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    #[error("original sender is null; refusing to bounce to <>")]
    NullSender,
    #[error("no failed recipients to report")]
    NoRecipients,
    /// Context for the caller's log line, e.g. an invalid sender address.
    #[error("{0}")]
    Build(String),
}

/// Builds the complete bounce message as CRLF-terminated bytes.
pub fn build(input: &BounceInput<'_>) -> Result<Vec<u8>, BounceError> {
    let raw = input.original_sender.trim();
    let sender = raw.strip_prefix('<').and_then(|s| s.strip_suffix('>'));
    let sender = sender.unwrap_or(raw);
    if sender.is_empty() {
        return Err(BounceError::NullSender);
    }
    if input.failed.is_empty() {
        return Err(BounceError::NoRecipients);
    }
    let host = input.reporting_host.trim();
    // lettre validates both addresses, which also keeps CR/LF out of From/To.
    let daemon = Address::new("MAILER-DAEMON", host)
        .map_err(|e| fail(format!("reporting host {host:?}: {e}")))?;
    let to = sender
        .parse::<Address>()
        .map_err(|e| fail(format!("original sender {sender:?}: {e}")))?;
    let now = clamp(input.now);

    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(human_text(host, input));
    let dsn = delivery_status(input, host).into_bytes();
    // RFC 3464 demands 7bit; this always holds because every field is cleaned to
    // ASCII and folded, but the check keeps a regression from going out as QP.
    if !is_7bit(&dsn) {
        return Err(fail("delivery-status is not 7bit"));
    }
    let dsn = part("message/delivery-status", dsn)?;
    let headers = returned(input)?;

    let boundary = pick_boundary(&[&text, &dsn, &headers])?;
    // MultiPartKind has no `report` variant and MultiPartBuilder::boundary()
    // unwraps a known kind (it panics here), but MultiPart::format_body only reads
    // the `boundary` parameter of whatever Content-Type is set, so we set it whole.
    let report_type = "multipart/report; report-type=delivery-status";
    let report = MultiPart::builder()
        .header(parse_type(&format!(
            "{report_type}; boundary=\"{boundary}\""
        ))?)
        .build()
        .singlepart(text)
        .singlepart(dsn)
        .singlepart(headers);

    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let id_local = msgid_part(&format!("{}.{unix}", input.queue_id));
    let auto = HeaderName::new_from_ascii_str("Auto-Submitted");
    // Without an explicit envelope lettre re-parses From/To to derive one, which
    // fails for valid forms like `[192.0.2.1]` hosts or quoted local parts. The
    // null reverse-path also documents how this message must be sent.
    let envelope = Envelope::new(None, vec![to.clone()]).map_err(fail)?;
    let message = Message::builder()
        .from(Mailbox::new(Some("Mail Delivery System".into()), daemon))
        .to(Mailbox::new(None, to))
        .subject(input.action.subject())
        .date(now)
        .message_id(Some(format!("<{id_local}@{}>", msgid_part(host))))
        .raw_header(HeaderValue::new(auto, "auto-replied".into()))
        .envelope(envelope)
        .multipart(report)
        .map_err(fail)?;
    Ok(message.formatted())
}

fn fail(e: impl std::fmt::Display) -> BounceError {
    BounceError::Build(e.to_string())
}

fn parse_type(s: &str) -> Result<ContentType, BounceError> {
    ContentType::parse(s).map_err(|e| fail(format!("content type {s:?}: {e}")))
}

/// Verbatim 7bit when the body qualifies. lettre's own choice would not do: it
/// picks quoted-printable for any line of 76+ octets, and forcing 7bit through a
/// header makes it panic on such input. The fallback (8-bit or overlong original
/// headers) is quoted-printable, legal for text/* and safe over any relay,
/// whereas 8bit would need 8BITMIME all the way back to the sender.
fn part(content_type: &str, body: Vec<u8>) -> Result<SinglePart, BounceError> {
    let body = if is_7bit(&body) {
        Body::dangerous_pre_encoded(body, ContentTransferEncoding::SevenBit)
    } else {
        Body::new_with_encoding(body, ContentTransferEncoding::QuotedPrintable)
            .map_err(|_| fail("cannot encode part"))?
    };
    Ok(SinglePart::builder()
        .header(parse_type(content_type)?)
        .body(body))
}

/// The original as the notice returns it: the whole message as
/// `message/rfc822` (RFC 3462 allows only 7bit or 8bit encodings there, and
/// the spool's line limit keeps it within 8bit), or its header section.
fn returned(input: &BounceInput<'_>) -> Result<SinglePart, BounceError> {
    let full = crlf_normalize(input.original_message);
    if input.return_full && is_8bit(&full) {
        let encoding = match is_7bit(&full) {
            true => ContentTransferEncoding::SevenBit,
            false => ContentTransferEncoding::EightBit,
        };
        return Ok(SinglePart::builder()
            .header(parse_type("message/rfc822")?)
            .body(Body::dangerous_pre_encoded(full, encoding)));
    }
    let headers = crlf_normalize(header_section(input.original_message));
    part("text/rfc822-headers", headers)
}

/// The opening of the human-readable part, by action.
fn preamble(input: &BounceInput<'_>) -> &'static str {
    match (input.action, input.return_full) {
        (Action::Failed, false) => {
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. The headers of your\r\n\
             message are attached below.\r\n\r\n\
             For further assistance, please send mail to postmaster.\r\n\r\n\
             If you do so, please include this problem report.\r\n"
        }
        (Action::Failed, true) => {
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. Your message is\r\n\
             attached below.\r\n\r\n\
             For further assistance, please send mail to postmaster.\r\n\r\n\
             If you do so, please include this problem report.\r\n"
        }
        (Action::Delayed, _) => {
            "####################################################################\r\n\
             # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
             ####################################################################\r\n\r\n\
             Your message could not be delivered yet to the recipients below.\r\n\
             It is still queued, and delivery will be retried. The headers\r\n\
             of your message are attached below.\r\n"
        }
        (Action::Delivered, _) => {
            "Your message was delivered to the recipients below. The headers\r\n\
             of your message are attached below.\r\n"
        }
        (Action::Relayed, _) => {
            "Your message was passed on to the recipients' mail system, which\r\n\
             does not send delivery notices itself, so this is the last notice\r\n\
             you will get from this system. The headers of your message are\r\n\
             attached below.\r\n"
        }
    }
}

fn human_text(host: &str, input: &BounceInput<'_>) -> String {
    let mut text = format!(
        "This is the mail system at host {}.\r\n\r\n{}\r\n\
         \x20                  The mail system\r\n",
        clean(host),
        preamble(input),
    );
    if let Some(until) = input
        .retry_until
        .filter(|_| input.action == Action::Delayed)
    {
        let until = rfc5322(clamp(until));
        text.push_str(&format!("\r\nDelivery will be retried until {until}.\r\n"));
    }
    for r in input.failed {
        let why = match (nonempty(&r.diagnostic), nonempty(&r.remote_mta)) {
            (Some(d), Some(m)) => format!("host {} said: {}", clean(m), clean(d)),
            (Some(d), None) => format!("remote server said: {}", clean(d)),
            _ if input.action == Action::Relayed => "relayed".to_owned(),
            _ if input.action == Action::Delivered => "delivered".to_owned(),
            _ if r.reason.trim().is_empty() => "delivery failed".to_owned(),
            _ => clean(&r.reason),
        };
        let first = format!("\r\n<{}>: ", clean(&r.address));
        text.push_str(&wrap(&first, "    ", &why, 74));
        text.push_str("\r\n");
    }
    text
}

fn delivery_status(input: &BounceInput<'_>, host: &str) -> String {
    // DSN fields use RFC 5322 syntax, so long values may fold at whitespace.
    let field = |name: &str, value: &str| wrap(&format!("{name}: "), " ", value, 78) + "\r\n";
    let mut out = String::new();
    if let Some(envid) = input.envid.and_then(|e| super::xtext_decode(e).ok()) {
        out += &field(
            "Original-Envelope-Id",
            &ascii(&String::from_utf8_lossy(&envid)),
        );
    }
    out += &field("Reporting-MTA", &format!("dns; {}", ascii(host)));
    out += &field("X-Smarthost-Queue-ID", &ascii(input.queue_id));
    out += &field("Arrival-Date", &rfc5322(input.arrival));
    for r in input.failed {
        out += "\r\n";
        if let Some(orcpt) = &r.orcpt {
            let original = format!("{}; {}", ascii(&orcpt.addr_type), ascii(&orcpt.address()));
            out += &field("Original-Recipient", &original);
        }
        out += &field("Final-Recipient", &dsn_address(&r.address));
        out += &field("Action", input.action.field());
        out += &field("Status", &dsn_status(&r.status));
        if let Some(mta) = nonempty(&r.remote_mta) {
            out += &field("Remote-MTA", &format!("dns; {}", ascii(mta)));
        }
        if let Some(diag) = nonempty(&r.diagnostic) {
            out += &field("Diagnostic-Code", &format!("smtp; {}", ascii(diag)));
        }
        out += &field("Last-Attempt-Date", &rfc5322(input.now));
        if let Some(until) = input
            .retry_until
            .filter(|_| input.action == Action::Delayed)
        {
            out += &field("Will-Retry-Until", &rfc5322(clamp(until)));
        }
    }
    out
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// Turns every control character (CR and LF included) and whitespace run into
/// one space, so upstream text can never start a line and inject a field.
fn clean(s: &str) -> String {
    let words: Vec<&str> = s
        .split(char::is_control)
        .flat_map(str::split_whitespace)
        .collect();
    words.join(" ")
}

/// message/delivery-status must be 7bit, so non-ASCII becomes '?'.
fn ascii(s: &str) -> String {
    clean(s).replace(|c: char| !c.is_ascii(), "?")
}

/// RFC 6533 `utf-8` type for non-ASCII addresses, in its utf-8-addr-xtext
/// form because that is the only one allowed in a 7bit message/delivery-status.
fn dsn_address(address: &str) -> String {
    let address = clean(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let xtext = address.chars().map(|c| match c {
        '!'..='~' if !"+\\=".contains(c) => c.to_string(),
        _ => format!("\\x{{{:X}}}", u32::from(c)),
    });
    format!("utf-8; {}", xtext.collect::<String>())
}

/// A malformed status would make the report unparsable for the sender's
/// software, so it degrades to the generic permanent failure.
fn dsn_status(status: &str) -> String {
    let p: Vec<&str> = status.trim().split('.').collect();
    let num = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if p.len() == 3 && matches!(p[0], "2" | "4" | "5") && num(p[1]) && num(p[2]) {
        p.join(".")
    } else {
        "5.0.0".to_owned()
    }
}

/// Word-wraps `text` after `first`, continuing with `indent`. Runs longer than
/// MAX_WORD octets are split so no line can exceed MAX_LINE; in a folded field
/// that adds a space, which only absurd input can trigger.
fn wrap(first: &str, indent: &str, text: &str, width: usize) -> String {
    let mut out = String::from(first);
    let (mut line_len, mut started) = (first.len(), false);
    let mut put = |piece: &str| {
        if started && line_len + 1 + piece.len() > width {
            out.push_str("\r\n");
            out.push_str(indent);
            line_len = indent.len();
        } else if started {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(piece);
        line_len += piece.len();
        started = true;
    };
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if i + c.len_utf8() - start > MAX_WORD {
                put(&word[start..i]);
                start = i;
            }
        }
        put(&word[start..]);
    }
    out
}

/// Keeps Message-ID parts within dot-atom-text whatever the input holds.
pub(crate) fn msgid_part(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let atoms: Vec<&str> = kept.split('.').filter(|a| !a.is_empty()).collect();
    atoms.join(".")
}

/// Bare CR or LF is illegal in a 7bit body and the section may have been cut
/// mid-line, so every line ending becomes CRLF, including a final one.
fn crlf_normalize(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 2);
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {}
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 2045 7bit for a CRLF-normalized body: ASCII, no NUL, lines <= 998 octets.
fn is_7bit(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n')
        .all(|l| l.len() <= MAX_LINE + 1 && l.iter().all(|&b| (1..0x80).contains(&b)))
}

/// RFC 2045 8bit: no NUL, lines <= 998 octets.
fn is_8bit(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n')
        .all(|l| l.len() <= MAX_LINE + 1 && !l.contains(&0))
}

/// 128 random bits (RandomState keys come from the OS), still verified absent
/// from the parts because the original headers are copied verbatim.
fn pick_boundary(parts: &[&SinglePart]) -> Result<String, BounceError> {
    let content: Vec<u8> = parts.iter().flat_map(|p| p.formatted()).collect();
    let random = || RandomState::new().hash_one(0u8);
    let b = format!("=_smarthost_dsn_{:016x}{:016x}", random(), random());
    if content.windows(b.len()).any(|w| w == b.as_bytes()) {
        return Err(fail("MIME boundary collides with content"));
    }
    Ok(b)
}

#[cfg(test)]
mod tests;
