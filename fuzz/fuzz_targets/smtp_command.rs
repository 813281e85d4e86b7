//! The SMTP command parser (`smtp::grammar::parse_command`) on any line, and
//! the reply formatter on any text (replies echo client input).
//!
//! Properties: an accepted MAIL or RCPT carries a valid mailbox (or, for RCPT,
//! a bare local name with a valid local part) without control characters; every refusal formats as exactly one well-formed reply line; no
//! reply text, whatever bytes it holds, can forge an extra reply line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::smtp::grammar::{needs_smtputf8, parse_command, validate_mailbox, Command, Reply};

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Ok(Command::Mail { from, params }) => {
            assert!(!from.chars().any(char::is_control), "{from:?}");
            if !from.is_empty() {
                assert_eq!(validate_mailbox(&from), Ok(()), "{from:?}");
            }
            assert!(params.smtputf8 || !needs_smtputf8(&from), "{from:?}");
        }
        Ok(Command::Rcpt { to, .. }) => {
            assert!(!to.chars().any(char::is_control), "{to:?}");
            // A bare local name (`postmaster`, `root`) has no domain: its
            // local part must still be a valid one.
            let local_name =
                !to.contains('@') && validate_mailbox(&format!("{to}@localhost")).is_ok();
            assert!(validate_mailbox(&to).is_ok() || local_name, "{to:?}");
        }
        Ok(Command::Ehlo(name) | Command::Helo(name)) => {
            assert!(!name.is_empty() && !name.chars().any(|c| c.is_control() && c != '\t'));
        }
        Ok(_) => {}
        Err(e) => {
            let wire = e.reply().to_wire(true);
            assert_one_reply(&wire, e.reply().code, true);
        }
    }
    let text = String::from_utf8_lossy(line);
    for enhanced in [true, false] {
        let wire = Reply::new(250, Some("2.0.0"), text.as_ref()).to_wire(enhanced);
        check_wire(&wire, 250);
    }
});

/// `wire` is a well-formed reply: lines "ddd-..." then one "ddd ..." (or a bare
/// "ddd"), each ending in CRLF, with no other CR or LF anywhere.
fn check_wire(wire: &[u8], code: u16) -> usize {
    assert!(wire.ends_with(b"\r\n"), "{wire:?}");
    let body = &wire[..wire.len() - 2];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let code = code.to_string();
    for (i, l) in lines.iter().enumerate() {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        assert!(!l.contains(&b'\r'), "bare CR in {wire:?}");
        assert!(l.starts_with(code.as_bytes()), "{wire:?}");
        let sep = l.get(3).copied();
        let last = i + 1 == lines.len();
        match (last, sep) {
            (true, None | Some(b' ')) | (false, Some(b'-')) => {}
            _ => panic!("bad continuation in {wire:?}"),
        }
        assert!(
            !l.iter().any(|&b| b < 0x20 || b == 0x7f),
            "control in {wire:?}"
        );
    }
    lines.len()
}

fn assert_one_reply(wire: &[u8], code: u16, _enhanced: bool) {
    assert_eq!(check_wire(wire, code), 1, "{wire:?}");
}
