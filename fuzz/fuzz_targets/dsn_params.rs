//! The DSN parameter grammar (`smarthost::dsn`): xtext, NOTIFY, RET, ENVID,
//! ORCPT.
//!
//! Properties: nothing panics; encoding any octets gives xtext that decodes
//! back to them; an accepted NOTIFY or ORCPT written back out parses to the
//! same value (ORCPT exactly as given, as it is passed upstream unchanged);
//! an accepted ENVID is at most 100 characters and decodes to printable
//! ASCII.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::dsn::{parse_envid, xtext_decode, xtext_encode, Notify, Orcpt, Ret};

fuzz_target!(|data: &[u8]| {
    let encoded = xtext_encode(data);
    assert_eq!(xtext_decode(&encoded).as_deref(), Ok(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = xtext_decode(text) {
        assert_eq!(xtext_decode(&xtext_encode(&bytes)), Ok(bytes));
    }
    if let Ok(n) = Notify::parse(text) {
        assert_eq!(Notify::parse(&n.value()), Ok(n));
    }
    if let Ok(o) = Orcpt::parse(text) {
        assert_eq!(o.value(), text);
        assert_eq!(Orcpt::parse(&o.value()), Ok(o.clone()));
        assert!(!o.address().chars().any(char::is_control));
    }
    if let Ok(envid) = parse_envid(text) {
        assert!(envid.len() <= 100);
        let decoded = xtext_decode(&envid).unwrap_or_default();
        assert!(decoded.iter().all(|&c| (b' '..=b'~').contains(&c)));
    }
    if let Ok(r) = Ret::parse(text) {
        assert!(r.value().eq_ignore_ascii_case(text));
    }
});
