//! Tests for reading and preparing sendmail input.

use super::*;
use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

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

fn opts<'a>(t: bool, cli: &'a [String], qualify: &'a dyn Fn(&str) -> String) -> PrepareOptions<'a> {
    PrepareOptions {
        extract_recipients: t,
        cli_recipients: cli,
        sender: "me@example.com",
        full_name: None,
        hostname: "mx.example.com",
        now: UNIX_EPOCH + Duration::from_secs(1_795_455_165),
        unique: "1795455165.42.abc",
        qualify,
        keep_local_recipients: false,
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
    let raw = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> run-parts\n\noutput\n";
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
fn qualify_never_folds_a_line_that_starts_with_the_name() {
    // A bare name first on a continuation line, the rest of that line long:
    // folding there again left an empty line, which ended the header section
    // (found by the sendmail_headers fuzz target).
    let long = vec!["user@x"; 170].join(", ");
    let raw = format!("To: a@x,\n\tbob, {long}\nMessage-ID: <m@x>\nSubject: s\n\nbody\n");
    let (out, p) = run(&raw, &opts(true, &[], &ops));
    let header = out.split("\r\n\r\n").next().unwrap_or_default();
    assert!(header.contains("\r\n\tbob@host.example, user@x"), "{out}");
    assert!(
        header.contains("\r\nMessage-ID: <m@x>\r\nSubject: s"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nbody\r\n"), "{out}");
    assert_eq!(p.message_id, "<m@x>");
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
    assert_eq!(
        crate::clock::rfc5322(UNIX_EPOCH),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    let before = UNIX_EPOCH
        .checked_sub(Duration::from_secs(10))
        .unwrap_or(UNIX_EPOCH);
    assert_eq!(
        crate::clock::rfc5322(before),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
    assert_eq!(
        crate::clock::rfc5322(far),
        "Fri, 31 Dec 9999 23:59:59 +0000"
    );
}

#[test]
fn obsolete_space_before_colon() {
    let (out, p) = run("To : r@x\nSubject: s\n\nb\n", &opts(true, &[], &no_qualify));
    assert_eq!(p.recipients, ["r@x"]);
    assert!(out.ends_with("To : r@x\r\nSubject: s\r\n\r\nb\r\n"));
}
