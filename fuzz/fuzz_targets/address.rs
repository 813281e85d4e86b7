//! Envelope address validation (`smtp::address::validate_mailbox`), directly and
//! as the RCPT TO / MAIL FROM path of a command line, then the route lookup a
//! queued sender goes through.
//!
//! Properties: an accepted address has an '@' and a domain, is at most 254
//! octets, holds no control character (CR, LF, NUL, ...) and none of the
//! characters that mean pipes, files, the %-hack or bang paths downstream
//! (`| / % !`), and parses the same way inside a command line (where a bare
//! local name is taken too).

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::routing::RouteTable;
use smarthost::smtp::grammar::{needs_smtputf8, parse_command, validate_mailbox, Command};

fuzz_target!(|data: &[u8]| {
    let Ok(addr) = std::str::from_utf8(data) else {
        return;
    };
    let direct = validate_mailbox(addr);
    if direct.is_ok() {
        assert!(addr.len() <= 254 && addr.contains('@'), "{addr:?}");
        assert!(!addr.chars().any(char::is_control), "{addr:?}");
        assert!(!addr.contains(['|', '/', '%', '!']), "{addr:?}");
        assert_eq!(needs_smtputf8(addr), !addr.is_ascii());
        // The queue routes by sender: any accepted address must look up.
        let mut table = RouteTable::new("default".to_string());
        let _ = table.insert("example.org", "org".to_string());
        let _ = table.insert(".example.net", "net".to_string());
        let _ = table.lookup(addr);
    } else if let Err(e) = &direct {
        let wire = e.reply().to_wire(true);
        assert!(wire.starts_with(b"553 5.1.3 ") && wire.ends_with(b"\r\n"));
        assert_eq!(
            wire.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
            2
        );
    }
    // The same address as a command line: the grammar never accepts what the
    // validator refuses (the command may still refuse more, e.g. a stray '>').
    let line = format!("RCPT TO:<{addr}>");
    if let Ok(Command::Rcpt { to, .. }) = parse_command(line.as_bytes()) {
        if to == addr {
            // A bare local name (`root`, RFC 5321's `postmaster`) is a RCPT
            // the validator refuses, for want of a domain: it is resolved
            // through /etc/aliases, and its local part must be valid.
            let local_name =
                !addr.contains('@') && validate_mailbox(&format!("{addr}@localhost")).is_ok();
            assert!(direct.is_ok() || local_name, "{addr:?}");
        } else {
            // Only a source route is ever taken off.
            assert!(
                addr.starts_with('@') && addr.ends_with(to.as_str()),
                "{addr:?}"
            );
        }
    } else if direct.is_ok() && !addr.contains('>') && !addr.starts_with('@') {
        // A valid mailbox is a valid RCPT, unless brackets confuse the path
        // (`"a>b"@c` is fine, `a>b@c` is not an address anyway).
        panic!(
            "valid {addr:?} refused as RCPT: {:?}",
            parse_command(line.as_bytes())
        );
    }
    let line = format!("MAIL FROM:<{addr}> SMTPUTF8");
    if let Ok(Command::Mail { from, .. }) = parse_command(line.as_bytes()) {
        assert!(from.is_empty() || validate_mailbox(&from).is_ok());
    }
});
