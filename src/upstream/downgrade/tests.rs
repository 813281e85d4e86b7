use super::*;

/// Both passes, the message fed in awkward chunks.
fn convert(message: &[u8], seven_bit: bool, chunk: usize) -> Result<(Plan, Vec<u8>), Refusal> {
    let mut scan = Scan::default();
    for c in message.chunks(chunk) {
        scan.feed(c);
    }
    let plan = scan.finish(seven_bit)?;
    let mut conv = Convert::new(plan.clone());
    let mut out = Vec::new();
    for c in message.chunks(chunk) {
        conv.feed(c, &mut out);
    }
    conv.finish(&mut out);
    Ok((plan, out))
}

fn run(message: &[u8], seven_bit: bool) -> Result<Vec<u8>, Refusal> {
    let whole = convert(message, seven_bit, usize::MAX)?;
    for chunk in [1, 7, 1000] {
        let other = convert(message, seven_bit, chunk)?;
        assert_eq!(other.1, whole.1, "chunks of {chunk}");
    }
    Ok(whole.1)
}

fn assert_sendable(out: &[u8], seven_bit: bool) {
    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= MAX_LINE + 1, "{} octets", line.len());
        assert!(!seven_bit || line.iter().all(|&b| b < 0x80));
    }
    assert!(out.ends_with(b"\r\n"));
}

/// RFC 2045 6.7 decoding, hard breaks as CRLF.
fn qp_decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).unwrap() as u8;
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'=' if text[i + 1] == b'\r' => i += 3,
            b'=' => {
                out.push(hex(text[i + 1]) << 4 | hex(text[i + 2]));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn split_head(m: &[u8]) -> (String, &[u8]) {
    let at = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&m[..at + 2]).into_owned(),
        &m[at + 4..],
    )
}

#[test]
fn cron_output_with_a_long_line_becomes_quoted_printable() {
    let body = format!("short\r\n{}\r\nend\r\n", "x ".repeat(1500));
    let msg = format!("From: root@h\r\nSubject: cron\r\n\r\n{body}");
    let out = run(msg.as_bytes(), false).unwrap();
    assert_sendable(&out, false);
    let (head, converted) = split_head(&out);
    assert!(head.starts_with("From: root@h\r\nSubject: cron\r\nMIME-Version: 1.0\r\n"));
    assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\n"));
    assert!(head.ends_with("Content-Transfer-Encoding: quoted-printable\r\n"));
    assert_eq!(qp_decode(converted), body.as_bytes());
}

#[test]
fn eight_bit_text_to_a_seven_bit_upstream() {
    let body = "Gr\u{fc}\u{df}e, K\u{e4}se = 1 \r\nFrom here\r\ntrailing space \r\n";
    let msg = format!(
        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}"
    );
    let out = run(msg.as_bytes(), true).unwrap();
    assert_sendable(&out, true);
    let (head, converted) = split_head(&out);
    assert_eq!(head.matches("MIME-Version").count(), 1);
    assert!(!head.contains("8bit"));
    assert!(head.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    assert!(String::from_utf8_lossy(converted).contains("=46rom here"));
    assert_eq!(qp_decode(converted), body.as_bytes());
    // The same message to an 8BITMIME upstream goes as it is.
    let (plan, same) = convert(msg.as_bytes(), false, 64).unwrap();
    assert!(!plan.changes);
    assert_eq!(same, msg.as_bytes());
}

const MIXED: &str = "Subject: parts\r\nMIME-Version: 1.0\r\n\
    Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
    preamble\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
    <p>{LONG}</p>\r\n--b1\r\nContent-Type: application/octet-stream\r\n\
    Content-Transfer-Encoding: 8bit\r\n\r\n\u{ff}\u{fe}\r\nbin\r\n--b1--\r\nepilogue\r\n";

#[test]
fn parts_are_converted_each_to_its_own_encoding() {
    let msg = MIXED.replace("{LONG}", &"\u{e9}".repeat(700));
    let out = run(msg.as_bytes(), true).unwrap();
    assert_sendable(&out, true);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"));
    assert!(text.contains(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    assert!(text.contains("\r\n--b1--\r\nepilogue\r\n"));
    let b64 = text
        .split("base64\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n--b1--")
        .next()
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.replace("\r\n", ""))
        .unwrap();
    assert_eq!(decoded, "\u{ff}\u{fe}\r\nbin".as_bytes());
}

#[test]
fn signed_and_encoded_parts_are_folded_or_refused() {
    let long = "y".repeat(2500);
    let signed = format!(
        "Content-Type: multipart/signed; boundary=s; protocol=\"application/pgp-signature\"\r\n\r\n\
         --s\r\nContent-Type: text/plain\r\n\r\n{long}\r\n--s\r\n\
         Content-Type: application/pgp-signature\r\n\r\nsig\r\n--s--\r\n"
    );
    let (plan, out) = convert(signed.as_bytes(), false, 100).unwrap();
    assert!(plan.folds);
    assert_sendable(&out, false);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text.replace("\r\n ", ""),
        signed,
        "only CRLF SPACE was added"
    );
    let eight = signed.replace(&long, "\u{e9}");
    let refused = convert(eight.as_bytes(), true, 100).unwrap_err();
    assert_eq!(refused.status, "5.6.3");
    let encoded = format!("Content-Transfer-Encoding: base64\r\n\r\n{long}\r\n");
    let (plan, out) = convert(encoded.as_bytes(), false, 100).unwrap();
    assert!(plan.folds);
    assert_sendable(&out, false);
}

#[test]
fn long_header_lines_fold_at_whitespace_or_bounce() {
    let to = (0..200)
        .map(|i| format!("u{i}@example.net"))
        .collect::<Vec<_>>()
        .join(", ");
    let msg = format!("To: {to}\r\nSubject: many\r\n\r\nhi\r\n");
    let out = run(msg.as_bytes(), false).unwrap();
    assert_sendable(&out, false);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text.replace("\r\n ", " "),
        msg,
        "folding is undone by unfolding"
    );
    let msg = format!("X-Blob: {}\r\n\r\nhi\r\n", "z".repeat(1200));
    assert_eq!(
        convert(msg.as_bytes(), false, 100).unwrap_err().status,
        "5.6.0"
    );
}

#[test]
fn nested_messages_are_walked_and_relabelled() {
    let msg =
        "Content-Type: multipart/mixed; boundary=o\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        --o\r\nContent-Type: message/rfc822\r\n\r\n\
        Subject: inner\r\nContent-Type: text/plain\r\n\r\n\u{e9}t\u{e9}\r\n--o--\r\n";
    let out = run(msg.as_bytes(), true).unwrap();
    assert_sendable(&out, true);
    let text = String::from_utf8_lossy(&out);
    let head = "Content-Type: multipart/mixed; boundary=o\r\n\
        MIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
    assert!(text.starts_with(head), "{text}");
    assert!(text.contains("Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9t=C3=A9\r\n--o--\r\n"));
}

#[test]
fn quoted_printable_lines_stay_short() {
    let mut out = Vec::new();
    qp_line(&[0xff; 100], &mut out);
    qp_line(&[b'a'; 200], &mut out);
    qp_line(b"tab\t", &mut out);
    for line in out.split(|&b| b == b'\n') {
        assert!(
            line.len() <= ENCODED_LINE + 1,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(out.ends_with(b"tab=09\r\n"));
}
