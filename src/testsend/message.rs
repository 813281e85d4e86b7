//! The test message: a short, complete RFC 5322 message built with lettre, as
//! every message smarthost writes itself is, saying where and when it was sent.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::address::{Address, Envelope};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};

use crate::clock;
use crate::dsn::notice::msgid_part;

/// What the message says and who it goes between.
pub struct TestMessage<'a> {
    pub hostname: &'a str,
    pub route: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub now: SystemTime,
}

/// The message as CRLF bytes, ready for DATA.
pub fn build(m: &TestMessage<'_>) -> Result<Vec<u8>, String> {
    // lettre validates both addresses, which also keeps CR/LF out of From/To.
    let from: Address = m
        .from
        .parse()
        .map_err(|e| format!("sender address {:?}: {e}", m.from))?;
    let to: Address =
        m.to.parse()
            .map_err(|e| format!("recipient address {:?}: {e}", m.to))?;
    let now = clock::clamp(m.now);
    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let unique = RandomState::new().hash_one(unix);
    let host = msgid_part(m.hostname);
    let body = format!(
        "This is a test message from smarthost on {host}.\r\n\
         \r\n\
         It was sent on {date}\r\n\
         through route {route} by `smarthost test-send`,\r\n\
         from <{from}> to <{to}>.\r\n\
         \r\n\
         If you can read this, the route delivers. No action is needed.\r\n",
        host = m.hostname,
        date = clock::rfc5322(now),
        route = m.route,
        from = m.from,
        to = m.to,
    );
    // RFC 3834: generated mail; vacation responders should stay quiet.
    let auto = HeaderName::new_from_ascii_str("Auto-Submitted");
    // An explicit envelope: lettre would otherwise re-derive it from the headers.
    let envelope =
        Envelope::new(Some(from.clone()), vec![to.clone()]).map_err(|e| e.to_string())?;
    let message = Message::builder()
        .from(Mailbox::new(Some("smarthost test-send".into()), from))
        .to(Mailbox::new(None, to))
        .subject(m.subject)
        .date(now)
        .message_id(Some(format!("<test-send.{unix}.{unique:016x}@{host}>")))
        .raw_header(HeaderValue::new(auto, "auto-generated".into()))
        .envelope(envelope)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(from: &'a str, to: &'a str) -> TestMessage<'a> {
        TestMessage {
            hostname: "relay.example.org",
            route: "office365",
            from,
            to,
            subject: "smarthost test-send via route office365",
            now: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn a_complete_message() {
        let bytes = build(&input("app@contoso.com", "you@example.net")).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("header/body split");
        for header in [
            "From: \"smarthost test-send\" <app@contoso.com>\r\n",
            "To: you@example.net\r\n",
            "Subject: smarthost test-send via route office365\r\n",
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "Message-ID: <test-send.1700000000.",
            "@relay.example.org>\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
        ] {
            assert!(
                format!("{head}\r\n").contains(header),
                "{header:?} in\n{head}"
            );
        }
        assert!(
            body.contains("from smarthost on relay.example.org"),
            "{body}"
        );
        assert!(body.contains("through route office365"), "{body}");
        assert!(body.contains("Tue, 14 Nov 2023 22:13:20 +0000"), "{body}");
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        assert!(bytes.ends_with(b"\r\n"));
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(build(&input("not an address", "you@example.net")).is_err());
        assert!(build(&input("app@contoso.com", "you@example.net\r\nBcc: x@y")).is_err());
    }
}
