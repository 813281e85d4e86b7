use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A transcript that keeps its lines as `S: `, `C: `, `[note]`.
fn collecting() -> (Transcript, Arc<Mutex<Vec<String>>>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = lines.clone();
    let t = Transcript::new(move |e| {
        let line = match e {
            Event::Server(l) => format!("S: {l}"),
            Event::Client(l) => format!("C: {l}"),
            Event::Note(n) => format!("[{n}]"),
            Event::Tls(i) => format!("[TLS {}]", i.version),
        };
        keep.lock().unwrap().push(line);
    });
    (t, lines)
}

enum Side {
    Server(String),
    Client(String),
}

/// Feeds a conversation (each side's text sent as is, so several lines may go
/// at once), `chunk` bytes at a time, and returns the transcript.
fn record(conversation: &[Side], chunk: usize, secret: Option<&str>) -> Vec<String> {
    let (t, lines) = collecting();
    if let Some(s) = secret {
        t.add_secret(s);
    }
    let mut r = Recorder::new(&t);
    for side in conversation {
        match side {
            Side::Server(text) => text
                .as_bytes()
                .chunks(chunk)
                .for_each(|c| r.server_bytes(c)),
            Side::Client(text) => text
                .as_bytes()
                .chunks(chunk)
                .for_each(|c| r.client_bytes(c)),
        }
    }
    let out = lines.lock().unwrap().clone();
    out
}

fn s(text: impl Into<String>) -> Side {
    Side::Server(text.into())
}

fn c(text: impl Into<String>) -> Side {
    Side::Client(text.into())
}

/// The same transcript whether the bytes come all at once or one by one.
fn check(conversation: &[Side], secret: Option<&str>, expected: &[&str]) {
    for chunk in [1, 3, 4096] {
        assert_eq!(
            record(conversation, chunk, secret),
            expected,
            "chunk size {chunk}"
        );
    }
}

#[test]
fn plain_commands_are_shown() {
    check(
        &[
            s("220 mx.example ESMTP\r\n"),
            c("EHLO relay.test\r\n"),
            s("250-mx.example\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"),
            c("STARTTLS\r\n"),
            s("220 2.0.0 go ahead\r\n"),
        ],
        None,
        &[
            "S: 220 mx.example ESMTP",
            "C: EHLO relay.test",
            "S: 250-mx.example",
            "S: 250-STARTTLS",
            "S: 250 AUTH PLAIN LOGIN",
            "C: STARTTLS",
            "S: 220 2.0.0 go ahead",
        ],
    );
}

#[test]
fn auth_plain_initial_response_is_redacted() {
    let ir = STANDARD.encode("\0user@example.com\0hunter2-secret");
    check(
        &[
            c(format!("AUTH PLAIN {ir}\r\n")),
            s("235 2.7.0 Authentication successful\r\n"),
            c("MAIL FROM:<a@example.com>\r\n"),
        ],
        None,
        &[
            "C: AUTH PLAIN [redacted]",
            "S: 235 2.7.0 Authentication successful",
            "C: MAIL FROM:<a@example.com>",
        ],
    );
}

#[test]
fn auth_login_answers_are_redacted_and_prompts_decoded() {
    check(
        &[
            c("auth login\r\n"),
            s("334 VXNlcm5hbWU6\r\n"),
            c(format!("{}\r\n", STANDARD.encode("user@example.com"))),
            s("334 UGFzc3dvcmQ6\r\n"),
            c(format!("{}\r\n", STANDARD.encode("hunter2-secret"))),
            s("535 5.7.8 Authentication credentials invalid\r\n"),
            c("QUIT\r\n"),
        ],
        None,
        &[
            "C: auth login",
            "S: 334 VXNlcm5hbWU6",
            "[challenge decoded: Username:]",
            "C: [redacted]",
            "S: 334 UGFzc3dvcmQ6",
            "[challenge decoded: Password:]",
            "C: [redacted]",
            "S: 535 5.7.8 Authentication credentials invalid",
            "C: QUIT",
        ],
    );
}

#[test]
fn xoauth2_keeps_the_length_and_shows_the_json_error() {
    let token = "ya29.".to_string() + &"x".repeat(1200);
    let ir = STANDARD.encode(format!("user=a@example.com\x01auth=Bearer {token}\x01\x01"));
    let json = r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
    let challenge = format!("334 {}", STANDARD.encode(json));
    let lines = record(
        &[
            c(format!("AUTH XOAUTH2 {ir}\r\n")),
            s(format!("{challenge}\r\n")),
            c("\r\n"),
            s("535 5.7.8 Username and Password not accepted\r\n"),
        ],
        7,
        None,
    );
    assert_eq!(
        lines,
        [
            format!("C: AUTH XOAUTH2 [redacted {} bytes]", ir.len()),
            format!("S: {challenge}"),
            format!("[challenge decoded: {json}]"),
            "C: [redacted]".into(),
            "S: 535 5.7.8 Username and Password not accepted".into(),
        ]
    );
    assert!(!lines.iter().any(|l| l.contains("ya29")));
}

#[test]
fn message_headers_shown_body_counted() {
    check(
        &[
            c("DATA\r\n"),
            s("354 End data with <CR><LF>.<CR><LF>\r\n"),
            c("From: a@example.com\r\nSubject: hi\r\n\r\nline one\r\n..dot\r\n.\r\n"),
            s("250 2.0.0 Ok: queued as 1234\r\n"),
            c("QUIT\r\n"),
        ],
        None,
        &[
            "C: DATA",
            "S: 354 End data with <CR><LF>.<CR><LF>",
            "C: From: a@example.com",
            "C: Subject: hi",
            "C: ",
            "C: [17 bytes of message body]",
            "C: .",
            "S: 250 2.0.0 Ok: queued as 1234",
            "C: QUIT",
        ],
    );
}

#[test]
fn registered_secrets_are_scrubbed_from_server_text() {
    check(
        &[s("535 5.7.8 password hunter2-secret is wrong\r\n")],
        Some("hunter2-secret"),
        &["S: 535 5.7.8 password [redacted] is wrong"],
    );
    let b64 = STANDARD.encode("hunter2-secret");
    check(
        &[s(format!("501 bad: {b64}\r\n"))],
        Some("hunter2-secret"),
        &["S: 501 bad: [redacted]"],
    );
}

#[test]
fn long_and_odd_lines_are_cut_and_escaped() {
    let long = format!("250 {}\r\n", "y".repeat(3000));
    let lines = record(&[s(long), s("250 a\x1bb\r\n")], 4096, None);
    assert!(lines[0].ends_with("... [3004 bytes]"), "{}", lines[0]);
    assert_eq!(
        lines[0].len(),
        "S: ".len() + MAX_SHOWN + "... [3004 bytes]".len()
    );
    assert_eq!(lines[1], "S: 250 a\\u{1b}b");
}

#[tokio::test]
async fn tap_records_both_directions_and_forwards_bytes() {
    let (t, lines) = collecting();
    let (client_end, mut server_end) = tokio::io::duplex(1024);
    let mut tap = Tap::new(client_end, Some(Recorder::new(&t)));
    server_end.write_all(b"220 hi\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tap.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"220 hi\r\n");
    tap.write_all(b"EHLO x\r\n").await.unwrap();
    let n = server_end.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"EHLO x\r\n");

    // Without a recorder it only forwards.
    let (inner, _) = tap.into_parts();
    let mut plain = Tap::new(inner, None);
    plain.write_all(b"QUIT\r\n").await.unwrap();
    let n = server_end.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"QUIT\r\n");
    assert_eq!(*lines.lock().unwrap(), ["S: 220 hi", "C: EHLO x"]);
}
