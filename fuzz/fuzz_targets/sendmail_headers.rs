//! `sendmail -t`: reading a message from a local program and preparing it for
//! the queue (`sendmail::message::prepare`): line ends, the header section,
//! recipients from To/Cc/Bcc (or Resent-*), Bcc removal, qualification of bare
//! local names, and the From/Date/Message-ID fields added when missing.
//!
//! Input: the message, optionally followed by a NUL and the `-F` full name.
//!
//! Properties: the prepared message has CRLF line ends only and no NUL, a
//! header section with From, Date and Message-ID and without Bcc; recipients
//! are qualified and free of control characters; and a hostile `-F` name
//! changes only the From field we add, never the fields around it.

#![no_main]

use std::time::{Duration, SystemTime};

mod common;

use common::{assert_crlf_only, find};
use libfuzzer_sys::fuzz_target;
use smarthost::sendmail::message::{prepare, PrepareOptions, Prepared};

fn qualify(name: &str) -> String {
    format!("{name}@example.org")
}

fn options<'a>(full_name: Option<&'a str>, cli: &'a [String]) -> PrepareOptions<'a> {
    PrepareOptions {
        extract_recipients: true,
        cli_recipients: cli,
        sender: "www-data",
        full_name,
        hostname: "web1.example.org",
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_770_000_000),
        unique: "fuzz.1",
        qualify: &qualify,
        keep_local_recipients: false,
    }
}

fuzz_target!(|data: &[u8]| {
    // NUL bytes are refused, never stored.
    if data.contains(&0) {
        let _ = prepare(data, &options(None, &[]));
    }
    let (message, name) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(String::from_utf8_lossy(&data[i + 1..]))),
        None => (data, None),
    };
    let cli = ["ops".to_string()];
    let prepared = prepare(message, &options(name.as_deref(), &cli))
        .unwrap_or_else(|e| panic!("with a command-line recipient: {e}"));
    check(&prepared);
    if name.is_none() {
        // Recipients from the header alone (or none at all).
        if let Ok(p) = prepare(message, &options(None, &[])) {
            check(&p);
        }
    }
    // A From: of our own is added only when the message has none.
    let lower = message.to_ascii_lowercase();
    if name.is_some() && !lower.windows(4).any(|w| w == b"from") {
        let benign = prepare(message, &options(Some("Web Server"), &cli)).unwrap();
        assert!(prepared.message.starts_with(b"From: "));
        assert_eq!(
            after_first_field(&prepared.message),
            after_first_field(&benign.message),
            "the -F name changed more than the From field"
        );
        assert_eq!(prepared.recipients, benign.recipients);
    }
});

fn check(p: &Prepared) {
    let m = &p.message;
    assert!(!m.contains(&0));
    assert_crlf_only(m);
    assert_eq!(p.eight_bit, m.iter().any(|&b| b >= 0x80));
    assert!(!p.message_id.contains(['\r', '\n']), "{:?}", p.message_id);
    assert!(!p.recipients.is_empty());
    for r in &p.recipients {
        assert!(r.contains('@'), "unqualified recipient {r:?}");
        assert!(!r.chars().any(char::is_control), "{r:?}");
    }
    let header_end = find(m, b"\r\n\r\n")
        .map(|i| i + 2)
        .expect("no header/body separator");
    let header = &m[..header_end];
    let names: Vec<Vec<u8>> = header
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !matches!(l[0], b' ' | b'\t'))
        .filter_map(|l| l.iter().position(|&b| b == b':').map(|c| l[..c].to_vec()))
        .map(|n| n.trim_ascii().to_ascii_lowercase())
        .collect();
    for needed in [&b"from"[..], b"date", b"message-id"] {
        assert!(names.iter().any(|n| n == needed), "no {needed:?} in {m:?}");
    }
    for gone in [&b"bcc"[..], b"resent-bcc"] {
        assert!(!names.iter().any(|n| n == gone), "{gone:?} kept in {m:?}");
    }
}

/// The message without its first header field (the line and its continuations).
fn after_first_field(m: &[u8]) -> &[u8] {
    let mut pos = 0;
    loop {
        let Some(nl) = m[pos..].iter().position(|&b| b == b'\n') else {
            return &m[m.len()..];
        };
        pos += nl + 1;
        if !matches!(m.get(pos), Some(b' ' | b'\t')) {
            return &m[pos..];
        }
    }
}
