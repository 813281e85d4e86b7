//! Tests for the sendmail command line.

use super::*;

fn p(args: &[&str]) -> Invocation {
    match parse(args.iter().copied()) {
        Ok(inv) => inv,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn err(args: &[&str]) -> UsageError {
    match parse(args.iter().copied()) {
        Ok(inv) => panic!("{args:?} parsed: {inv:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults() {
    let inv = p(&["a@x"]);
    assert_eq!(inv.mode, Mode::Deliver);
    assert_eq!(inv.delivery, DeliveryMode::Background);
    assert_eq!(inv.errors, ErrorMode::Print);
    assert!(!inv.extract_recipients && !inv.ignore_dots && !inv.verbose);
    assert_eq!(inv.sender, None);
    assert_eq!(inv.recipients, ["a@x"]);
}

#[test]
fn php_t_i() {
    let inv = p(&["-t", "-i"]);
    assert!(inv.extract_recipients && inv.ignore_dots);
    assert!(inv.recipients.is_empty());
}

#[test]
fn clustered_flags() {
    for args in [&["-ti"][..], &["-it"], &["-t", "-i"]] {
        let inv = p(args);
        assert!(inv.extract_recipients && inv.ignore_dots, "{args:?}");
    }
    let inv = p(&["-tif", "s@x", "r@y"]);
    assert!(inv.extract_recipients && inv.ignore_dots);
    assert_eq!(inv.sender.as_deref(), Some("s@x"));
    assert_eq!(inv.recipients, ["r@y"]);
    let inv = p(&["-vtfs@x"]);
    assert!(inv.verbose && inv.extract_recipients);
    assert_eq!(inv.sender.as_deref(), Some("s@x"));
}

#[test]
fn cron_invocation() {
    let inv = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
    assert_eq!(inv.full_name.as_deref(), Some("CronDaemon"));
    assert!(inv.ignore_dots);
    assert_eq!(inv.body, Some(BodyType::EightBitMime));
    assert_eq!(inv.errors, ErrorMode::Mail);
    assert_eq!(inv.recipients, ["root"]);
}

#[test]
fn git_send_email() {
    let inv = p(&["-i", "-f", "a@b", "--", "x@y", "z@w"]);
    assert!(inv.ignore_dots);
    assert_eq!(inv.sender.as_deref(), Some("a@b"));
    assert_eq!(inv.recipients, ["x@y", "z@w"]);
}

#[test]
fn mutt() {
    let inv = p(&["-oem", "-oi", "--", "a@b"]);
    assert_eq!(inv.errors, ErrorMode::Mail);
    assert!(inv.ignore_dots);
    assert_eq!(inv.recipients, ["a@b"]);
}

#[test]
fn sender_forms() {
    assert_eq!(p(&["-fuser@x"]).sender.as_deref(), Some("user@x"));
    assert_eq!(p(&["-f", "user@x"]).sender.as_deref(), Some("user@x"));
    assert_eq!(p(&["-r", "<user@x>"]).sender.as_deref(), Some("user@x"));
    assert_eq!(p(&["-f", "<>"]).sender.as_deref(), Some(""));
    assert_eq!(p(&["-f", ""]).sender.as_deref(), Some(""));
    assert_eq!(p(&["-f<>"]).sender.as_deref(), Some(""));
    assert_eq!(p(&["-f", "root"]).sender.as_deref(), Some("root"));
    // Last one wins, as with getopt loops.
    assert_eq!(
        p(&["-f", "a@x", "-r", "b@x"]).sender.as_deref(),
        Some("b@x")
    );
}

#[test]
fn sender_injection_refused() {
    for bad in [
        "a@b\r\nBcc: x@y",
        "a@b\n",
        "a@b\0",
        "a@b>",
        "<a@b",
        "<a@b> <c@d>",
        "<<a@b>>",
        "a b@c",
        "a@b\tx",
        "a@b\x1b",
    ] {
        let e = err(&["-f", bad, "r@x"]);
        assert!(
            matches!(e, UsageError::InvalidSender { .. }),
            "{bad:?}: {e}"
        );
        assert!(e.to_string().starts_with("invalid sender address"));
        // The message must not carry a raw line break to the terminal.
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn full_name_is_raw() {
    let inv = p(&["-F", "Cron Daemon", "r@x"]);
    assert_eq!(inv.full_name.as_deref(), Some("Cron Daemon"));
    let inv = p(&["-F", "Evil\r\nBcc: v@x", "r@x"]);
    assert_eq!(inv.full_name.as_deref(), Some("Evil\r\nBcc: v@x"));
}

#[test]
fn double_dash_and_dash_recipients() {
    let inv = p(&["--", "-weird@x", "b@y"]);
    assert_eq!(inv.recipients, ["-weird@x", "b@y"]);
    // The first operand ends options: no permutation.
    let inv = p(&["a@x", "-t"]);
    assert!(!inv.extract_recipients);
    assert_eq!(inv.recipients, ["a@x", "-t"]);
    assert_eq!(err(&["-"]), UsageError::LoneDash);
    assert_eq!(err(&["-t", "-", "a@x"]), UsageError::LoneDash);
}

#[test]
fn comma_separated_recipients() {
    let inv = p(&["a@x,b@y", " c@z , ,", "Name <d@w>", "e@v (comment, x)"]);
    assert_eq!(inv.recipients, ["a@x", "b@y", "c@z", "d@w", "e@v"]);
}

#[test]
fn bad_recipients() {
    assert!(matches!(
        err(&["a@x\r\nRCPT TO:<b@y>"]),
        UsageError::InvalidRecipient { .. }
    ));
    assert!(matches!(
        err(&["a@x\0"]),
        UsageError::InvalidRecipient { .. }
    ));
    assert!(matches!(
        err(&["<a@x"]),
        UsageError::InvalidRecipient { .. }
    ));
}

#[test]
fn modes() {
    assert_eq!(p(&["-bm", "a@x"]).mode, Mode::Deliver);
    assert_eq!(p(&["-bs"]).mode, Mode::Smtp);
    assert_eq!(p(&["-bp"]).mode, Mode::ListQueue);
    assert_eq!(p(&["-b", "p"]).mode, Mode::ListQueue);
    assert_eq!(p(&["-bi"]).mode, Mode::NewAliases);
    assert_eq!(p(&["-I"]).mode, Mode::NewAliases);
    for bad in ["-bd", "-bD", "-bv", "-bt", "-bh", "-bH", "-bz", "-bpp"] {
        assert!(matches!(err(&[bad]), UsageError::Unsupported(_)), "{bad}");
    }
    assert!(err(&["-bd"]).to_string().contains("smarthost serve"));
    assert!(err(&["-bv"]).to_string().contains("not supported"));
    assert_eq!(err(&["-b"]), UsageError::MissingArgument('b'));
}

#[test]
fn recipients_refused_outside_deliver() {
    for args in [
        &["-bp", "a@x"][..],
        &["-bi", "a@x"],
        &["-q", "a@x"],
        &["-bs", "a@x"],
    ] {
        assert!(
            matches!(err(args), UsageError::RecipientsNotAllowed(_)),
            "{args:?}"
        );
    }
}

#[test]
fn flush() {
    assert_eq!(p(&["-q"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(p(&["-q15m"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(p(&["-q1h30m"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(
        p(&["-qRexample.com"]).mode,
        Mode::Flush(FlushTarget::Site("example.com".into()))
    );
    assert_eq!(
        p(&["-qIABC123"]).mode,
        Mode::Flush(FlushTarget::Id("ABC123".into()))
    );
    assert_eq!(
        p(&["-qSa@x"]).mode,
        Mode::Flush(FlushTarget::Sender("a@x".into()))
    );
    assert!(matches!(err(&["-qR"]), UsageError::InvalidValue { .. }));
    assert!(matches!(err(&["-qI"]), UsageError::InvalidValue { .. }));
    assert!(matches!(err(&["-qZZ"]), UsageError::InvalidValue { .. }));
    assert!(matches!(err(&["-qm15"]), UsageError::InvalidValue { .. }));
    // -q never takes the next argument: it becomes a (refused) recipient.
    assert_eq!(err(&["-q", "15m"]), UsageError::RecipientsNotAllowed("-q"));
    // -v after -q in the same cluster is part of -q's argument.
    assert!(matches!(err(&["-qv"]), UsageError::InvalidValue { .. }));
}

#[test]
fn notify() {
    let n = p(&["-N", "success,failure", "a@x"]).notify;
    assert_eq!(n.map(|n| n.value()).as_deref(), Some("SUCCESS,FAILURE"));
    let n = p(&["-NNever", "a@x"]).notify;
    assert_eq!(n, Some(Notify::never()));
    let n = p(&["-N", "DELAY, failure,,delay", "a@x"]).notify;
    assert!(n.is_some_and(|n| n.delay && n.failure && !n.success));
    for bad in ["never,success", "sometimes", "", " , "] {
        assert!(
            matches!(
                err(&["-N", bad, "a@x"]),
                UsageError::InvalidValue { option: 'N', .. }
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn envid_ret_body() {
    let inv = p(&["-V", "abc-123_x", "-R", "hdrs", "-B", "7bit", "a@x"]);
    assert_eq!(inv.envid.as_deref(), Some("abc-123_x"));
    assert_eq!(inv.ret, Some(Ret::Hdrs));
    assert_eq!(inv.body, Some(BodyType::SevenBit));
    assert_eq!(p(&["-RFULL", "a@x"]).ret, Some(Ret::Full));
    let long = "x".repeat(100);
    assert_eq!(p(&["-V", &long, "a@x"]).envid, Some(long.clone()));
    // Sent as xtext (RFC 3461 4.4), as Postfix does.
    assert_eq!(
        p(&["-V", "a b+c", "a@x"]).envid.as_deref(),
        Some("a+20b+2Bc")
    );
    for bad in [
        String::new(),
        "x".repeat(101),
        "+".repeat(34),
        "é".into(),
        "a\r\n".into(),
    ] {
        assert!(
            matches!(
                err(&["-V", &bad, "a@x"]),
                UsageError::InvalidValue { option: 'V', .. }
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        err(&["-R", "body"]),
        UsageError::InvalidValue { .. }
    ));
    assert!(matches!(
        err(&["-B", "binarymime"]),
        UsageError::InvalidValue { .. }
    ));
}

#[test]
fn o_options() {
    let cases = [
        ("-odi", DeliveryMode::Interactive),
        ("-odb", DeliveryMode::Background),
        ("-odq", DeliveryMode::Queue),
        ("-odd", DeliveryMode::Deferred),
        ("-od", DeliveryMode::Background),
    ];
    for (flag, mode) in cases {
        assert_eq!(p(&["-odq", flag, "a@x"]).delivery, mode, "{flag}");
    }
    let cases = [
        ("-oep", ErrorMode::Print),
        ("-oem", ErrorMode::Mail),
        ("-oeq", ErrorMode::Quiet),
        ("-oew", ErrorMode::Write),
        ("-oee", ErrorMode::Exit),
    ];
    for (flag, mode) in cases {
        assert_eq!(p(&[flag, "a@x"]).errors, mode, "{flag}");
    }
    let inv = p(&["-o", "i", "-oQ/var/spool", "-om", "-oL9", "-oMrX", "a@x"]);
    assert!(inv.ignore_dots);
    assert_eq!(inv.ignored, ["-oQ/var/spool", "-om", "-oL9", "-oMrX"]);
}

#[test]
fn ignored_options() {
    let inv = p(&[
        "-c",
        "-nm",
        "-x",
        "-G",
        "-U",
        "-h",
        "17",
        "-L",
        "lbl",
        "-Xlog",
        "-p",
        "smtp",
        "-em",
        "-Am",
        "-O",
        "DeliveryMode=b",
        "a@x",
    ]);
    assert_eq!(
        inv.ignored,
        [
            "-c",
            "-n",
            "-m",
            "-x",
            "-G",
            "-U",
            "-h 17",
            "-L lbl",
            "-Xlog",
            "-p smtp",
            "-em",
            "-Am",
            "-O DeliveryMode=b"
        ]
    );
    assert_eq!(inv.recipients, ["a@x"]);
}

#[test]
fn config_and_verbose() {
    let inv = p(&["-v", "-C", "/etc/smarthost.toml", "a@x"]);
    assert!(inv.verbose);
    assert_eq!(inv.config, Some(PathBuf::from("/etc/smarthost.toml")));
}

#[test]
fn unknown_and_missing() {
    assert_eq!(err(&["-Z"]), UsageError::UnknownOption("-Z".into()));
    assert_eq!(err(&["-Z"]).to_string(), "unknown option -Z");
    assert_eq!(err(&["-tZ"]), UsageError::UnknownOption("-Z".into()));
    assert_eq!(err(&["--help"]), UsageError::UnknownOption("--help".into()));
    assert_eq!(err(&["-f"]), UsageError::MissingArgument('f'));
    assert_eq!(err(&["-ti", "-F"]), UsageError::MissingArgument('F'));
    assert_eq!(err(&["-é"]), UsageError::UnknownOption("-é".into()));
}

#[cfg(unix)]
#[test]
fn non_utf8_argument() {
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(vec![b'a', 0xff, b'@', b'x']);
    assert!(matches!(parse([bad]), Err(UsageError::NotUnicode(_))));
}

#[test]
fn usage_mentions_flags() {
    for flag in [
        "-t", "-i", "-f", "-F", "-bs", "-bp", "-q", "-N", "-V", "-R", "-B",
    ] {
        assert!(usage().contains(flag), "{flag}");
    }
}
