//! Envelope addresses (RFC 5321 4.1.2, RFC 6531): what a mailbox in MAIL FROM or
//! RCPT TO may look like, and the local-part characters a relay must refuse because
//! they mean pipes, files, percent-hack or UUCP routing somewhere downstream.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::lexical::{find_unquoted, show, strip_prefix_ci};
use super::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address longer than 254 octets")]
    TooLong,
    #[error("address must contain @ and a domain")]
    MissingAt,
    #[error("address contains more than one @")]
    MultipleAt,
    #[error("local part must be 1 to 64 octets")]
    LocalPartLength,
    #[error("character {} not allowed in local part", show(.0))]
    LocalChar(char),
    #[error("\"/../\" not allowed in local part")]
    PathTraversal,
    #[error("local part has {0}")]
    Dots(&'static str),
    #[error("domain must be 1 to 255 octets")]
    DomainLength,
    #[error("character {} not allowed in domain", show(.0))]
    DomainChar(char),
    #[error("domain label {0}")]
    Label(&'static str),
    #[error("invalid address literal")]
    BadAddressLiteral,
    #[error("invalid source route")]
    BadSourceRoute,
}

impl AddressError {
    pub fn reply(&self) -> Reply {
        Reply::new(553, Some("5.1.3"), format!("Bad address syntax: {self}"))
    }
}

/// true if the address (or the local part) contains non-ASCII (needs SMTPUTF8).
pub fn needs_smtputf8(addr: &str) -> bool {
    !addr.is_ascii()
}

/// Validate a mailbox (already stripped of <>).
pub fn validate_mailbox(addr: &str) -> Result<(), AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if addr.len() > 254 {
        return Err(AddressError::TooLong);
    }
    // Only a local part that starts with a quote is a quoted string; a stray
    // quote elsewhere is just a bad character, reported as such below.
    let at = match addr.starts_with('"') {
        true => find_unquoted(addr, '@'),
        false => addr.find('@'),
    };
    let at = at.ok_or(AddressError::MissingAt)?;
    let local = addr.get(..at).unwrap_or("");
    let domain = addr.get(at + 1..).unwrap_or("");
    if domain.contains('@') {
        return Err(AddressError::MultipleAt);
    }
    validate_local(local)?;
    validate_domain(domain)
}

/// RFC 5321 atext, extended with UTF-8 by RFC 6531.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
}

fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

fn validate_local(local: &str) -> Result<(), AddressError> {
    if local.len() > 64 {
        return Err(AddressError::LocalPartLength);
    }
    let content = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(quoted) => {
            let mut out = String::with_capacity(quoted.len());
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                let c = match c {
                    '\\' => chars.next().unwrap_or('\\'),
                    '"' => return Err(AddressError::LocalChar('"')),
                    c => c,
                };
                if !(c == ' ' || c.is_ascii_graphic() || is_utf8_text(c)) {
                    return Err(AddressError::LocalChar(c));
                }
                out.push(c);
            }
            out
        }
        None => match local.chars().find(|&c| c != '.' && !is_atext(c)) {
            Some(c) => return Err(AddressError::LocalChar(c)),
            None => local.to_string(),
        },
    };
    // Relay policy, applied even inside quotes: these characters and dot
    // patterns drive pipe/file delivery, the %-hack, UUCP bang paths and
    // path traversal in downstream MTAs and delivery agents.
    if content.is_empty() {
        return Err(AddressError::LocalPartLength);
    }
    if content.contains("/../") {
        return Err(AddressError::PathTraversal);
    }
    if let Some(c) = content.chars().find(|c| matches!(c, '|' | '/' | '%' | '!')) {
        return Err(AddressError::LocalChar(c));
    }
    let dots = if content.starts_with('.') {
        "a leading dot"
    } else if content.ends_with('.') {
        "a trailing dot"
    } else if content.contains("..") {
        "consecutive dots"
    } else {
        return Ok(());
    };
    Err(AddressError::Dots(dots))
}

/// A domain name (labels, U-labels allowed) or an address literal.
pub fn validate_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() || domain.len() > 255 {
        return Err(AddressError::DomainLength);
    }
    if let Some(lit) = domain.strip_prefix('[') {
        let inner = lit
            .strip_suffix(']')
            .ok_or(AddressError::BadAddressLiteral)?;
        let ok = match strip_prefix_ci(inner, "IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => inner.parse::<Ipv4Addr>().is_ok(),
        };
        return ok.then_some(()).ok_or(AddressError::BadAddressLiteral);
    }
    if let Some(c) = domain.chars().find(|&c| !(c == '.' || is_label_char(c))) {
        return Err(AddressError::DomainChar(c));
    }
    for label in domain.split('.') {
        // A U-label is measured in characters: the 63-octet limit really
        // applies to its A-label, which only the later IDNA step produces.
        let problem = match () {
            _ if label.is_empty() => "is empty",
            _ if label.chars().count() > 63 => "is longer than 63 octets",
            _ if label.starts_with('-') || label.ends_with('-') => "starts or ends with a hyphen",
            _ => continue,
        };
        return Err(AddressError::Label(problem));
    }
    Ok(())
}

/// IDNA (UTS 46) maps fullwidth ASCII and the ideographic/halfwidth full stops
/// onto '@', '/', '.' and friends, so a label that looks harmless here could
/// become a different domain after conversion; refuse those outright.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c == '-'
        || (is_utf8_text(c) && !matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3002}' | '\u{FF61}'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::grammar::tests::table;
    use crate::smtp::grammar::{parse_command, CommandError};

    #[test]
    fn bad_bytes() {
        let lines: [&[u8]; 5] = [
            b"NOOP \xff",
            b"MAIL FROM:<a\x00@b>",
            b"NOOP\r",
            b"a\x7f",
            b"\xc3",
        ];
        for line in lines {
            let e = parse_command(line).unwrap_err();
            assert_eq!(e, CommandError::InvalidCharacters);
            assert_eq!((e.reply().code, e.reply().enhanced), (500, Some("5.5.2")));
        }
        assert!(needs_smtputf8("jörg@example.org") && needs_smtputf8("a@bücher.de"));
        assert!(!needs_smtputf8("a@b.c"));
    }

    #[test]
    fn mailboxes() {
        let cases = r#"
            a@b ¦ first.last@example.org ¦ a+tag@sub.example.co.uk ¦ x@[192.0.2.1] => Ok
            x@[IPv6:2001:db8::1] ¦ x@[ipv6:::ffff:1.2.3.4] ¦ "john smith"@example.org => Ok
            "a\"b"@c.d ¦ o'brien@x-y.z ¦ 用户@例子.广告 ¦ a@xn--bcher-kva.de ¦ a@1.2.3.4 => Ok
             => Empty
            ab ¦ "ab@c => MissingAt
            a@b@c ¦ "a"@b@c => MultipleAt
            @b ¦ ""@b => LocalPartLength
            a@ => DomainLength
            "a"b@c ¦ "a"b"c"@d ¦ a"b@c => LocalChar('"')
            a|b@c ¦ "|cmd"@c => LocalChar('|')
            a/b@c ¦ "/etc/passwd"@c => LocalChar('/')
            u%d@c => LocalChar('%')
            h!u@c => LocalChar('!')
            "a/../b"@c => PathTraversal
            .a@c ¦ ".a"@c => Dots("a leading dot")
            a.@c => Dots("a trailing dot")
            a..b@c ¦ "a..b"@c => Dots("consecutive dots")
            a b@c => LocalChar(' ')
            a(b)@c => LocalChar('(')
            a@b c => DomainChar(' ')
            a@b%c => DomainChar('%')
            a@b!c => DomainChar('!')
            a@b:25 => DomainChar(':')
            a@b/c => DomainChar('/')
            a@"b" => DomainChar('"')
            a@b_c => DomainChar('_')
            a@b。c => DomainChar('。')
            a@b＠c => DomainChar('＠')
            a@b..c ¦ a@.b ¦ a@b. => Label("is empty")
            a@-b.c ¦ a@b-.c => Label("starts or ends with a hyphen")
            a@[1.2.3] ¦ a@[1.2.3.4 ¦ a@[IPv6:1.2.3.4] ¦ a@[IPv6:fe80::1%eth0] => BadAddressLiteral
            a@[01.2.3.4] ¦ a@[x:y] => BadAddressLiteral"#;
        for (addr, want) in table(cases) {
            let got = validate_mailbox(addr).map_or_else(|e| format!("{e:?}"), |()| "Ok".into());
            assert_eq!(got, want, "{addr:?}");
        }
        use AddressError::*;
        let check = |a: String| validate_mailbox(&a);
        assert_eq!(check("a\u{a0}b@c".into()), Err(LocalChar('\u{a0}')));
        assert_eq!(check("\"a\tb\"@c".into()), Err(LocalChar('\t')));
        assert_eq!(check(format!("{}@b", "a".repeat(64))), Ok(()));
        assert_eq!(check(format!("{}@b", "a".repeat(65))), Err(LocalPartLength));
        let label = "d".repeat(63);
        let long = format!("{}@{label}.{label}.{label}.e", "l".repeat(60));
        assert_eq!((long.len(), check(long.clone())), (254, Ok(())));
        assert_eq!(check(format!("{long}x")), Err(TooLong));
        let too_long = Err(Label("is longer than 63 octets"));
        assert_eq!(check(format!("a@{label}d.c")), too_long);
        let r = validate_mailbox("a\r\nb@c").unwrap_err().reply();
        assert_eq!((r.code, r.enhanced), (553, Some("5.1.3")));
        let text = "Bad address syntax: character U+000D not allowed in local part";
        assert_eq!(r.text, text);
    }

    #[test]
    fn never_panics_on_junk() {
        let mut x: u32 = 0x1234_5678;
        let alphabet = b"<>@\":[]\\.,%|/! =aZ9\t\x00\xc3\xa9\xff-MAILFROM:RCPTO";
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut line = [&b"MAIL FROM:<"[..], b"RCPT TO:"][round % 2].to_vec();
            for i in 0..(x % 40) {
                let k = x.rotate_left(i * 3).wrapping_add(i) as usize % alphabet.len();
                line.push(alphabet.get(k).copied().unwrap_or(b'a'));
            }
            if let Err(e) = parse_command(&line) {
                let wire = e.reply().to_wire(true);
                assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
            }
            let _ = validate_mailbox(&String::from_utf8_lossy(&line));
        }
    }
}
