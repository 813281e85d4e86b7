use super::*;

#[test]
fn xtext_round_trips_and_refuses_what_it_must() {
    for (text, bytes) in [
        ("abc", &b"abc"[..]),
        ("a+2Bb+3Dc", b"a+b=c"),
        ("+20+7F+00", b" \x7f\x00"),
        ("", b""),
    ] {
        assert_eq!(xtext_decode(text).unwrap(), bytes, "{text}");
        assert_eq!(xtext_encode(bytes), text);
    }
    for bad in ["a b", "a=b", "+2", "+2b", "+G0", "é", "a\r\n", "+"] {
        assert!(xtext_decode(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn notify_is_never_alone_or_a_set() {
    assert!(Notify::parse("never").unwrap().is_never());
    let n = Notify::parse("success,Delay").unwrap();
    assert!(n.success && n.delay && !n.failure);
    assert_eq!(n.value(), "SUCCESS,DELAY");
    assert_eq!(Notify::parse("FAILURE").unwrap().value(), "FAILURE");
    for bad in [
        "",
        "NEVER,SUCCESS",
        "SUCCESS,SUCCESS",
        "SOMETIMES",
        "SUCCESS,",
        ",FAILURE",
    ] {
        let err = Notify::parse(bad).unwrap_err();
        assert_eq!(err.param, "NOTIFY", "{bad:?}");
        assert!(
            err.to_string().starts_with("Bad NOTIFY parameter: "),
            "{err}"
        );
    }
}

#[test]
fn ret_envid_and_orcpt() {
    assert_eq!(Ret::parse("hdrs"), Ok(Ret::Hdrs));
    assert_eq!(Ret::parse("FULL").unwrap().value(), "FULL");
    assert!(Ret::parse("BODY").is_err());

    assert_eq!(parse_envid("QQ314159+2Bx").unwrap(), "QQ314159+2Bx");
    for bad in ["", "a b", "+0A", &"x".repeat(101)] {
        assert_eq!(parse_envid(bad).unwrap_err().param, "ENVID", "{bad:?}");
    }

    let o = Orcpt::parse("rfc822;Bob+2Bx@example.com").unwrap();
    assert_eq!(o.addr_type, "rfc822");
    assert_eq!(o.address(), "Bob+x@example.com");
    assert_eq!(o.value(), "rfc822;Bob+2Bx@example.com");
    let utf8 = Orcpt::parse("utf-8;J+C3+B8rgen@example.com").unwrap();
    assert_eq!(utf8.address(), "Jørgen@example.com");
    for bad in [
        "rfc822",
        ";a@b",
        "rfc 822;a@b",
        "rfc822;",
        "rfc822;a+0Db@c",
        "rfc822;a b",
        "rfc822;+FF",
        &format!("rfc822;{}", "a".repeat(500)),
    ] {
        assert_eq!(Orcpt::parse(bad).unwrap_err().param, "ORCPT", "{bad:?}");
    }
}
