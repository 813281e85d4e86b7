use super::*;
use std::time::Duration;

const ORIGINAL: &[u8] = b"Received: from c\r\n\tby mx\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n";
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
        orcpt: None,
    }
}

fn two() -> Vec<FailedRecipient> {
    let diag = "550 5.1.1 <alice@example.com>: user unknown";
    let alice = rcpt("alice@example.com", "5.1.1", diag, "smtp.mailgun.org");
    vec![alice, rcpt("bob@example.org", "4.4.7", "", "")]
}

fn input<'a>(failed: &'a [FailedRecipient], original: &'a [u8]) -> BounceInput<'a> {
    BounceInput {
        action: Action::Failed,
        reporting_host: "mx.example.net",
        queue_id: "4F2A9C",
        original_sender: "sender@example.com",
        arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        now: UNIX_EPOCH + Duration::from_secs(1_700_003_600),
        failed,
        original_message: original,
        return_full: false,
        envid: None,
        retry_until: None,
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
        assert!(std::env::var("CI").is_err(), "/usr/bin/python3 is missing");
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

/// A notice of each kind, with ENVID, ORCPT and the original returned whole.
fn every_kind() -> Vec<(Action, String)> {
    let mut alice = two().remove(0);
    alice.orcpt = Some(crate::dsn::Orcpt::parse("rfc822;a+2Blias@example.com").unwrap());
    let list = [alice];
    let mut kinds = Vec::new();
    for action in [Action::Failed, Action::Delayed, Action::Relayed] {
        let mut i = input(&list, ORIGINAL);
        i.action = action;
        i.envid = Some("QQ+2B1");
        i.return_full = action == Action::Failed;
        i.retry_until = Some(UNIX_EPOCH + Duration::from_secs(1_700_345_600));
        kinds.push((action, bounce(&i)));
    }
    kinds
}

#[test]
fn each_kind_says_what_happened() {
    for (action, msg) in every_kind() {
        let (head, parts) = parse(&msg);
        assert_eq!(header(&head, "Subject"), action.subject());
        let status = &parts[1].1;
        assert!(
            status.starts_with("Original-Envelope-Id: QQ+1\r\n"),
            "{status}"
        );
        let want = format!(
            "\r\nOriginal-Recipient: rfc822; a+lias@example.com\r\n\
             Final-Recipient: rfc822; alice@example.com\r\nAction: {}\r\n",
            action.field()
        );
        assert!(status.contains(&want), "{status}");
        let until = "\r\nWill-Retry-Until: Sat, 18 Nov 2023 22:13:20 +0000\r\n";
        assert_eq!(
            status.contains(until),
            action == Action::Delayed,
            "{status}"
        );
        let (returned_type, returned) = (header(&parts[2].0, "Content-Type"), &parts[2].1);
        if action == Action::Failed {
            assert_eq!(returned_type, "message/rfc822");
            assert_eq!(returned.as_bytes(), ORIGINAL);
        } else {
            assert_eq!(returned_type, "text/rfc822-headers");
            assert_eq!(returned.as_bytes(), header_section(ORIGINAL));
        }
    }
}

#[test]
fn an_eight_bit_original_returns_as_8bit_and_an_overlong_one_as_headers() {
    let failed = two();
    let eight = "Subject: gr\u{fc}n\r\n\r\nK\u{e4}se\r\n";
    let mut i = input(&failed, eight.as_bytes());
    i.return_full = true;
    let (_, parts) = parse(&bounce(&i));
    assert_eq!(header(&parts[2].0, "Content-Type"), "message/rfc822");
    assert_eq!(header(&parts[2].0, "Content-Transfer-Encoding"), "8bit");
    assert_eq!(parts[2].1, eight);
    let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(1200));
    i.original_message = long.as_bytes();
    let (_, parts) = parse(&bounce(&i));
    assert_eq!(header(&parts[2].0, "Content-Type"), "text/rfc822-headers");
}

#[test]
fn python_email_package_parses_every_kind() {
    let python = std::path::Path::new("/usr/bin/python3");
    if !python.exists() {
        assert!(std::env::var("CI").is_err(), "/usr/bin/python3 is missing");
        return;
    }
    let script = "import sys, email\n\
        m = email.message_from_binary_file(open(sys.argv[1], 'rb'))\n\
        assert m.get_content_type() == 'multipart/report', m.get_content_type()\n\
        assert m.get_param('report-type') == 'delivery-status'\n\
        p = m.get_payload()\n\
        b = p[1].get_payload()\n\
        assert b[0]['Original-Envelope-Id'] == 'QQ+1', b[0]['Original-Envelope-Id']\n\
        assert b[1]['Action'] == sys.argv[2], (b[1]['Action'], sys.argv[2])\n\
        assert b[1]['Original-Recipient'] == 'rfc822; a+lias@example.com'\n\
        want = 'message/rfc822' if sys.argv[2] == 'failed' else 'text/rfc822-headers'\n\
        assert p[2].get_content_type() == want, p[2].get_content_type()\n\
        if want == 'message/rfc822':\n\
        \x20   assert p[2].get_payload()[0]['Subject'] == 'hi'\n";
    for (action, msg) in every_kind() {
        let path = std::env::temp_dir().join(format!(
            "smarthost-dsn-{}-{}.eml",
            std::process::id(),
            action.field()
        ));
        std::fs::write(&path, msg).unwrap();
        let mut cmd = std::process::Command::new(python);
        let out = cmd
            .args(["-c", script])
            .arg(&path)
            .arg(action.field())
            .output();
        let _ = std::fs::remove_file(&path);
        let out = out.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{action:?}: {stderr}");
    }
}
