//! Delivery status notifications (bounces): RFC 3464 reports wrapped in an
//! RFC 6522 `multipart/report`, returning only the original header section.
//!
//! The caller must submit the result with a null reverse-path (`MAIL FROM:<>`)
//! so a bounce can never trigger another bounce.

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
}

/// Everything [`build`] needs, borrowed from the queue entry.
pub struct BounceInput<'a> {
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
    /// Full raw original (CRLF); only its header section is included.
    pub original_message: &'a [u8],
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
        .body(human_text(host, input.failed));
    let dsn = delivery_status(input, host).into_bytes();
    // RFC 3464 demands 7bit; this always holds because every field is cleaned to
    // ASCII and folded, but the check keeps a regression from going out as QP.
    if !is_7bit(&dsn) {
        return Err(fail("delivery-status is not 7bit"));
    }
    let dsn = part("message/delivery-status", dsn)?;
    let headers = crlf_normalize(header_section(input.original_message));
    let headers = part("text/rfc822-headers", headers)?;

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
        .subject("Undelivered Mail Returned to Sender")
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

fn human_text(host: &str, failed: &[FailedRecipient]) -> String {
    let mut text = format!(
        "This is the mail system at host {}.\r\n\r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. The headers of your\r\n\
         message are attached below.\r\n\r\n\
         For further assistance, please send mail to postmaster.\r\n\r\n\
         If you do so, please include this problem report.\r\n\r\n\
         \x20                  The mail system\r\n",
        clean(host)
    );
    for r in failed {
        let why = match (nonempty(&r.diagnostic), nonempty(&r.remote_mta)) {
            (Some(d), Some(m)) => format!("host {} said: {}", clean(m), clean(d)),
            (Some(d), None) => format!("remote server said: {}", clean(d)),
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
    let mut out = field("Reporting-MTA", &format!("dns; {}", ascii(host)));
    out += &field("X-Smarthost-Queue-ID", &ascii(input.queue_id));
    out += &field("Arrival-Date", &rfc5322(input.arrival));
    for r in input.failed {
        out += "\r\n";
        out += &field("Final-Recipient", &dsn_address(&r.address));
        out += &field("Action", "failed");
        out += &field("Status", &dsn_status(&r.status));
        if let Some(mta) = nonempty(&r.remote_mta) {
            out += &field("Remote-MTA", &format!("dns; {}", ascii(mta)));
        }
        if let Some(diag) = nonempty(&r.diagnostic) {
            out += &field("Diagnostic-Code", &format!("smtp; {}", ascii(diag)));
        }
        out += &field("Last-Attempt-Date", &rfc5322(input.now));
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
mod tests {
    use super::*;
    use std::time::Duration;

    const ORIGINAL: &[u8] =
        b"Received: from c\r\n\tby mx\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n";
    const DSN: &str = "Reporting-MTA: dns; mx.example.net\r\n\
        X-Smarthost-Queue-ID: 4F2A9C\r\n\
        Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n\
        Final-Recipient: rfc822; alice@example.com\r\n\
        Action: failed\r\n\
        Status: 5.1.1\r\n\
        Remote-MTA: dns; smtp.mailgun.org\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 <alice@example.com>: user unknown\r\n\
        Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\r\n\
        Final-Recipient: rfc822; bob@example.org\r\n\
        Action: failed\r\n\
        Status: 4.4.7\r\n\
        Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n";

    fn rcpt(address: &str, status: &str, diag: &str, mta: &str) -> FailedRecipient {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let (diagnostic, remote_mta) = (opt(diag), opt(mta));
        let reason = "retry timeout exceeded".to_owned();
        let (address, status) = (address.to_owned(), status.to_owned());
        FailedRecipient {
            address,
            status,
            diagnostic,
            reason,
            remote_mta,
        }
    }

    fn two() -> Vec<FailedRecipient> {
        let diag = "550 5.1.1 <alice@example.com>: user unknown";
        let alice = rcpt("alice@example.com", "5.1.1", diag, "smtp.mailgun.org");
        vec![alice, rcpt("bob@example.org", "4.4.7", "", "")]
    }

    fn input<'a>(failed: &'a [FailedRecipient], original: &'a [u8]) -> BounceInput<'a> {
        BounceInput {
            reporting_host: "mx.example.net",
            queue_id: "4F2A9C",
            original_sender: "sender@example.com",
            arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            now: UNIX_EPOCH + Duration::from_secs(1_700_003_600),
            failed,
            original_message: original,
        }
    }

    fn bounce(input: &BounceInput<'_>) -> String {
        String::from_utf8(build(input).unwrap()).unwrap()
    }

    /// Unfolded value of the first `name` field in a header block.
    fn header(head: &str, name: &str) -> String {
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t");
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut lines = unfolded.split("\r\n");
        let line = lines.find(|l| l.to_ascii_lowercase().starts_with(&prefix));
        line.map_or(String::new(), |l| l[prefix.len()..].trim().to_owned())
    }

    /// Top-level header block, then (header block, content) per part, split on
    /// the boundary the top-level Content-Type advertises.
    fn parse(msg: &str) -> (String, Vec<(String, String)>) {
        let (head, body) = msg.split_once("\r\n\r\n").unwrap();
        let ct = header(head, "Content-Type");
        let delim = "--".to_owned() + ct.split("boundary=").nth(1).unwrap().trim_matches('"');
        let inner = body.strip_prefix(&format!("{delim}\r\n")).unwrap();
        let inner = inner.strip_suffix(&format!("\r\n{delim}--\r\n")).unwrap();
        let sep = format!("\r\n{delim}\r\n");
        let parts = inner.split(&sep).map(|p| p.split_once("\r\n\r\n").unwrap());
        let parts = parts.map(|(h, c)| (h.to_owned(), c.to_owned()));
        (head.to_owned(), parts.collect())
    }

    #[test]
    fn parses_back_as_a_three_part_report() {
        let failed = two();
        let (head, parts) = parse(&bounce(&input(&failed, ORIGINAL)));
        let ct = header(&head, "Content-Type");
        assert!(ct.starts_with("multipart/report;") && ct.contains("report-type=delivery-status"));
        for line in [
            "From: \"Mail Delivery System\" <MAILER-DAEMON@mx.example.net>",
            "To: sender@example.com",
            "Subject: Undelivered Mail Returned to Sender",
            "Date: Tue, 14 Nov 2023 23:13:20 +0000",
            "Message-ID: <4F2A9C.1700003600@mx.example.net>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
        ] {
            assert!(head.split("\r\n").any(|l| l == line), "{line}");
        }
        let types = [
            "text/plain; charset=utf-8",
            "message/delivery-status",
            "text/rfc822-headers",
        ];
        assert_eq!(parts.len(), 3);
        for ((h, _), want) in parts.iter().zip(types) {
            assert_eq!(header(h, "Content-Type"), want);
            assert_eq!(header(h, "Content-Transfer-Encoding"), "7bit");
        }
        let text = &parts[0].1;
        assert!(text.starts_with("This is the mail system at host mx.example.net.\r\n"));
        assert!(text.contains("\r\n<alice@example.com>: host smtp.mailgun.org said: 550 5.1.1\r\n"));
        assert!(text.contains("\r\n<bob@example.org>: retry timeout exceeded\r\n"));
        assert_eq!(parts[1].1, DSN);
        assert_eq!(parts[2].1.as_bytes(), header_section(ORIGINAL));
    }

    #[test]
    fn the_returned_headers_are_crlf_normalized() {
        let failed = two();
        let (_, parts) = parse(&bounce(&input(&failed, b"A: 1\n b\rC: 2\n\nbody\n")));
        assert_eq!(parts[2].1, "A: 1\r\n b\r\nC: 2\r\n");
    }

    #[test]
    fn hostile_input_keeps_lines_crlf_short_and_uninjected() {
        let (x, words, y) = ("x".repeat(3000), "word ".repeat(400), "y".repeat(2000));
        let long = format!("550 {x} {words}\r\nX-Injected: 1");
        let (jose, c) = (
            "Jos\u{e9}+1@b\u{fc}cher.example",
            "c@x.org\r\nX-Injected: 3",
        );
        let failed = [
            rcpt(jose, "5.1.1", &long, "a\nX-Injected: 2"),
            rcpt(c, "5.7\r\nX-Injected: 4", "550 no\rX-Injected: 5", ""),
        ];
        let original = format!("Subject: {y}\r\nX-8bit: gr\u{fc}n\0\r\n\r\nbody");
        let mut hostile = input(&failed, original.as_bytes());
        hostile.arrival = UNIX_EPOCH - Duration::from_secs(9);
        hostile.now = UNIX_EPOCH + Duration::from_secs(253_402_300_799 * 4);
        let msg = bounce(&hostile);
        for line in msg.split("\r\n") {
            let ok = line.len() <= MAX_LINE && !line.contains(['\r', '\n']);
            assert!(ok && !line.starts_with("X-Injected"), "{line:.80}");
        }
        let (_, parts) = parse(&msg);
        let cte = |i: usize| header(&parts[i].0, "Content-Transfer-Encoding");
        assert_eq!(
            (cte(1).as_str(), cte(2).as_str()),
            ("7bit", "quoted-printable")
        );
        for want in [
            "\r\nFinal-Recipient: utf-8; Jos\\x{E9}\\x{2B}1@b\\x{FC}cher.example\r\n",
            "\r\nRemote-MTA: dns; a X-Injected: 2\r\n",
            "\r\nFinal-Recipient: rfc822; c@x.org X-Injected: 3\r\nAction: failed\r\n",
            "\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 550 no X-Injected: 5\r\n",
            "\r\nArrival-Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n",
        ] {
            assert!(parts[1].1.contains(want), "{want}");
        }
    }

    #[test]
    fn validates_sender_recipients_and_host() {
        let failed = two();
        for sender in ["", "<>", "  "] {
            let mut null = input(&failed, ORIGINAL);
            null.original_sender = sender;
            assert!(matches!(build(&null), Err(BounceError::NullSender)));
        }
        let none = input(&[], ORIGINAL);
        assert!(matches!(build(&none), Err(BounceError::NoRecipients)));
        let mut bad_host = input(&failed, ORIGINAL);
        bad_host.reporting_host = "a b\r\nX: 1";
        assert!(matches!(build(&bad_host), Err(BounceError::Build(_))));
        let mut quoted = input(&failed, ORIGINAL);
        quoted.original_sender = "<\"john doe\"@example.com>";
        assert!(bounce(&quoted).contains("\r\nTo: \"john doe\"@example.com\r\n"));
    }

    #[test]
    fn python_email_package_parses_it() {
        let python = std::path::Path::new("/usr/bin/python3");
        if !python.exists() {
            println!("note: /usr/bin/python3 missing; skipping the stdlib email cross-check");
            return;
        }
        let path = std::env::temp_dir().join(format!("smarthost-dsn-{}.eml", std::process::id()));
        std::fs::write(&path, build(&input(&two(), ORIGINAL)).unwrap()).unwrap();
        let script = "import sys, email\n\
            m = email.message_from_binary_file(open(sys.argv[1], 'rb'))\n\
            assert m.get_content_type() == 'multipart/report', m.get_content_type()\n\
            assert m.get_param('report-type') == 'delivery-status'\n\
            p = m.get_payload()\n\
            t = [x.get_content_type() for x in p]\n\
            assert t == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], t\n\
            b = p[1].get_payload()\n\
            assert b[0]['Reporting-MTA'] == 'dns; mx.example.net'\n\
            r = [(x['Final-Recipient'], x['Status']) for x in b[1:]]\n\
            assert r == [('rfc822; alice@example.com', '5.1.1'), ('rfc822; bob@example.org', '4.4.7')], r\n\
            assert 'user unknown' in p[0].get_payload(decode=True).decode()\n";
        let mut cmd = std::process::Command::new(python);
        let out = cmd.args(["-c", script]).arg(&path).output();
        let _ = std::fs::remove_file(&path);
        let out = out.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
    }
}
