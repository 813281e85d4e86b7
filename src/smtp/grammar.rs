//! Pure SMTP grammar: command lines, envelope addresses and reply formatting
//! (RFC 5321, 1869/1870, 6152, 6531, 3463, 2034). No I/O and no session state:
//! the caller decides what is allowed *when*; this module only decides what
//! is well-formed, and is written to never panic on hostile input.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An SMTP reply the session sends: code, optional enhanced status (RFC 3463/2034), text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<&'static str>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// Wire form, "250 2.1.0 Ok\r\n"; one reply line per '\n' in the text
    /// ("250-...\r\n250 ...\r\n"), with the enhanced code on every line
    /// (RFC 2034 requires it on each) when `enhanced_codes` is true.
    pub fn to_wire(&self, enhanced_codes: bool) -> Vec<u8> {
        let code = self.code.to_string();
        let enhanced = self.enhanced.filter(|_| enhanced_codes);
        let mut out = Vec::with_capacity(self.text.len() + 16);
        let mut lines = self
            .text
            .trim_end_matches(['\r', '\n'])
            .split('\n')
            .peekable();
        while let Some(line) = lines.next() {
            // Text may echo client input; a stray CR or control byte must not
            // be able to forge extra reply lines.
            let clean: String = line
                .chars()
                .filter(|&c| c != '\r')
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let mut body = String::from(enhanced.unwrap_or(""));
            if !clean.is_empty() {
                if !body.is_empty() {
                    body.push(' ');
                }
                body.push_str(&clean);
            }
            out.extend_from_slice(code.as_bytes());
            if lines.peek().is_some() {
                out.push(b'-');
            } else if !body.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `from` is "" for the null reverse-path `<>`.
    Mail {
        from: String,
        params: MailParams,
    },
    /// `to` is kept as given; `postmaster` may appear without a domain.
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Syntax error: empty command")]
    Empty,
    #[error("Invalid characters in command")]
    InvalidCharacters,
    #[error("Command not recognized")]
    Unknown,
    #[error("Syntax: {0} hostname")]
    MissingArgument(&'static str),
    #[error("Syntax: {0} takes no arguments")]
    UnexpectedArgument(&'static str),
    #[error("Syntax: MAIL FROM:<address>")]
    MailSyntax,
    #[error("Syntax: RCPT TO:<address>")]
    RcptSyntax,
    #[error("Invalid parameter syntax")]
    ParamSyntax,
    #[error("Invalid SIZE value")]
    InvalidSize,
    #[error("Duplicate parameter {0}")]
    DuplicateParameter(String),
    #[error("Unsupported BODY type")]
    UnsupportedBody,
    #[error("Unsupported parameter {0}")]
    UnsupportedParameter(String),
    #[error("Null recipient not allowed")]
    NullRecipient,
    #[error("Non-ASCII sender address requires SMTPUTF8")]
    Utf8WithoutSmtputf8,
    #[error(transparent)]
    Address(#[from] AddressError),
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        let (code, enhanced) = match self {
            Self::Empty | Self::InvalidCharacters => (500, "5.5.2"),
            Self::Unknown => (500, "5.5.1"),
            Self::UnsupportedBody | Self::UnsupportedParameter(_) => (555, "5.5.4"),
            Self::NullRecipient => (501, "5.1.3"),
            Self::Utf8WithoutSmtputf8 => (553, "5.6.7"),
            Self::Address(e) => return e.reply(),
            _ => (501, "5.5.4"),
        };
        Reply::new(code, Some(enhanced), self.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address longer than 254 octets")]
    TooLong,
    #[error("address must contain an @ and a domain")]
    MissingAt,
    #[error("address contains more than one @")]
    MultipleAt,
    #[error("empty local part")]
    LocalPartEmpty,
    #[error("local part longer than 64 octets")]
    LocalPartTooLong,
    #[error("unterminated quoted local part")]
    UnterminatedQuote,
    #[error("quoted local part must be followed by @")]
    MisplacedQuote,
    #[error("character {} not allowed in local part", show(.0))]
    LocalChar(char),
    #[error("\"/../\" not allowed in local part")]
    PathTraversal,
    #[error("local part starts with a dot")]
    LeadingDot,
    #[error("local part ends with a dot")]
    TrailingDot,
    #[error("local part contains consecutive dots")]
    ConsecutiveDots,
    #[error("empty domain")]
    DomainEmpty,
    #[error("domain longer than 255 octets")]
    DomainTooLong,
    #[error("character {} not allowed in domain", show(.0))]
    DomainChar(char),
    #[error("empty domain label")]
    EmptyLabel,
    #[error("domain label longer than 63 octets")]
    LabelTooLong,
    #[error("domain label starts or ends with a hyphen")]
    LabelHyphen,
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

/// Reply text must stay printable ASCII whatever the offending character was.
fn show(c: &char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(*c))
    }
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Parse one command line, WITHOUT its trailing CRLF.
///
/// Non-ASCII addresses are always accepted here (the session always offers
/// SMTPUTF8); a MAIL whose sender needs SMTPUTF8 but lacks the parameter is
/// refused. RCPT cannot be checked the same way without transaction state, so
/// the session must compare `needs_smtputf8(to)` against the MAIL params.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::InvalidCharacters)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::InvalidCharacters);
    }
    let line = line.trim_matches(is_wsp);
    if line.is_empty() {
        return Err(CommandError::Empty);
    }
    let (verb, args) = line.split_once(is_wsp).unwrap_or((line, ""));
    let args = args.trim_start_matches(is_wsp);
    let no_args = |cmd: Command, name: &'static str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::UnexpectedArgument(name))
        }
    };
    let hello = |name: &'static str| {
        if args.is_empty() {
            Err(CommandError::MissingArgument(name))
        } else {
            Ok(args.to_string())
        }
    };
    // A long junk verb is simply unknown; no need to allocate for it.
    if verb.len() > 8 {
        return Err(CommandError::Unknown);
    }
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello("EHLO").map(Command::Ehlo),
        "HELO" => hello("HELO").map(Command::Helo),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(Command::Data, "DATA"),
        "RSET" => no_args(Command::Rset, "RSET"),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "AUTH" => Ok(Command::Auth),
        _ => Err(CommandError::Unknown),
    }
}

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(args, "FROM:").ok_or(CommandError::MailSyntax)?;
    let (path, params) = split_path(rest).ok_or(CommandError::MailSyntax)?;
    let from = strip_route(path)?;
    if !from.is_empty() {
        validate_mailbox(from)?;
    }
    let mut p = MailParams::default();
    for param in param_tokens(params) {
        let (key, value) = param?;
        if key.eq_ignore_ascii_case("SIZE") {
            if p.size.is_some() {
                return Err(duplicate(key));
            }
            p.size = Some(parse_size(value)?);
        } else if key.eq_ignore_ascii_case("BODY") {
            if p.body.is_some() {
                return Err(duplicate(key));
            }
            let value = value.ok_or(CommandError::ParamSyntax)?;
            p.body = Some(if value.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if value.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(CommandError::UnsupportedBody);
            });
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            if p.smtputf8 {
                return Err(duplicate(key));
            }
            if value.is_some() {
                return Err(CommandError::ParamSyntax);
            }
            p.smtputf8 = true;
        } else {
            return Err(CommandError::UnsupportedParameter(echo(key)));
        }
    }
    if needs_smtputf8(from) && !p.smtputf8 {
        return Err(CommandError::Utf8WithoutSmtputf8);
    }
    Ok(Command::Mail {
        from: from.to_string(),
        params: p,
    })
}

fn parse_rcpt(args: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(args, "TO:").ok_or(CommandError::RcptSyntax)?;
    let (path, params) = split_path(rest).ok_or(CommandError::RcptSyntax)?;
    if path.is_empty() {
        return Err(CommandError::NullRecipient);
    }
    let to = strip_route(path)?;
    // RFC 5321 4.5.1: "postmaster" with no domain must always be deliverable.
    if !to.eq_ignore_ascii_case("postmaster") {
        validate_mailbox(to)?;
    }
    // DSN is not advertised, but clients that send NOTIFY/ORCPT anyway lose
    // nothing by having them ignored rather than refused.
    let (mut notify, mut orcpt) = (false, false);
    for param in param_tokens(params) {
        let (key, _) = param?;
        let seen = if key.eq_ignore_ascii_case("NOTIFY") {
            &mut notify
        } else if key.eq_ignore_ascii_case("ORCPT") {
            &mut orcpt
        } else {
            return Err(CommandError::UnsupportedParameter(echo(key)));
        };
        if std::mem::replace(seen, true) {
            return Err(duplicate(key));
        }
    }
    Ok(Command::Rcpt { to: to.to_string() })
}

/// Splits `[SP] "<" path ">" [SP params]`, returning the path without its
/// brackets. The closing '>' is searched outside quotes, since a quoted local
/// part may legally contain one.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix(' ').unwrap_or(s);
    let inner = s.strip_prefix('<')?;
    let (mut quoted, mut escaped) = (false, false);
    let close = inner.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
        None
    })?;
    let path = inner.get(..close)?;
    let tail = inner.get(close + 1..)?;
    if tail.is_empty() || tail.starts_with(is_wsp) {
        Some((path, tail))
    } else {
        None
    }
}

/// RFC 5321 lets a receiver ignore a source route but it must accept one, so
/// the route is checked for shape and dropped.
fn strip_route(path: &str) -> Result<&str, AddressError> {
    if !path.starts_with('@') {
        return Ok(path);
    }
    // IPv6 literals in the route contain ':', so skip bracketed text.
    let mut bracket = false;
    let colon = path
        .char_indices()
        .find_map(|(i, c)| {
            match c {
                '[' => bracket = true,
                ']' => bracket = false,
                ':' if !bracket => return Some(i),
                _ => {}
            }
            None
        })
        .ok_or(AddressError::BadSourceRoute)?;
    let route = path.get(..colon).unwrap_or("");
    let mailbox = path.get(colon + 1..).unwrap_or("");
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::BadSourceRoute)?;
        validate_domain(domain).map_err(|_| AddressError::BadSourceRoute)?;
    }
    if mailbox.is_empty() {
        return Err(AddressError::BadSourceRoute);
    }
    Ok(mailbox)
}

type Param<'a> = Result<(&'a str, Option<&'a str>), CommandError>;

/// Lazily yields `KEY[=VALUE]` so that the first bad token stops parsing
/// (a line of many distinct unknown keys costs no more than one).
fn param_tokens(s: &str) -> impl Iterator<Item = Param<'_>> {
    s.split(is_wsp).filter(|t| !t.is_empty()).map(|tok| {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // RFC 6531 extends esmtp-value with UTF-8; '=' and controls stay out.
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| ((33..=126).contains(&b) && b != b'=') || b >= 128)
        });
        if key_ok && value_ok {
            Ok((key, value))
        } else {
            Err(CommandError::ParamSyntax)
        }
    })
}

fn parse_size(value: Option<&str>) -> Result<u64, CommandError> {
    let v = value.ok_or(CommandError::InvalidSize)?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::InvalidSize);
    }
    // RFC 1870 allows 20 digits, more than u64 holds; such a size is simply
    // "too big", which the session's limit check will then say.
    Ok(v.parse().unwrap_or(u64::MAX))
}

/// Keys are validated ASCII by then; the cap keeps replies short.
fn echo(key: &str) -> String {
    key.get(..32).unwrap_or(key).to_string()
}

fn duplicate(key: &str) -> CommandError {
    CommandError::DuplicateParameter(echo(key))
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
    let (local, domain, quoted) = if let Some(after) = addr.strip_prefix('"') {
        let mut escaped = false;
        let close = after
            .char_indices()
            .find_map(|(i, c)| match c {
                _ if escaped => {
                    escaped = false;
                    None
                }
                '\\' => {
                    escaped = true;
                    None
                }
                '"' => Some(i),
                _ => None,
            })
            .ok_or(AddressError::UnterminatedQuote)?;
        let local = after.get(..close).unwrap_or("");
        let rest = after.get(close + 1..).unwrap_or("");
        let domain = match rest.strip_prefix('@') {
            Some(d) => d,
            None if rest.is_empty() => return Err(AddressError::MissingAt),
            None => return Err(AddressError::MisplacedQuote),
        };
        (local, domain, true)
    } else {
        let (local, domain) = addr.split_once('@').ok_or(AddressError::MissingAt)?;
        (local, domain, false)
    };
    if domain.contains('@') {
        return Err(AddressError::MultipleAt);
    }
    validate_local(local, quoted)?;
    validate_domain(domain)
}

/// RFC 5321 atext, extended with UTF-8 by RFC 6531.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
}

fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// `local` is the raw local part, without the surrounding quotes if `quoted`.
fn validate_local(local: &str, quoted: bool) -> Result<(), AddressError> {
    let raw_len = local.len() + if quoted { 2 } else { 0 };
    if raw_len > 64 {
        return Err(AddressError::LocalPartTooLong);
    }
    let content = if quoted {
        let mut out = String::with_capacity(local.len());
        let mut chars = local.chars();
        while let Some(c) = chars.next() {
            let c = if c == '\\' {
                chars.next().unwrap_or('\\')
            } else {
                c
            };
            if !(c == ' ' || c.is_ascii_graphic() || is_utf8_text(c)) {
                return Err(AddressError::LocalChar(c));
            }
            out.push(c);
        }
        out
    } else {
        if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
            return Err(AddressError::LocalChar(c));
        }
        local.to_string()
    };
    // Relay policy, applied even inside quotes: these characters and dot
    // patterns drive pipe/file delivery, the %-hack, UUCP bang paths and
    // path traversal in downstream MTAs and delivery agents.
    if content.is_empty() {
        return Err(AddressError::LocalPartEmpty);
    }
    if content.contains("/../") {
        return Err(AddressError::PathTraversal);
    }
    if let Some(c) = content.chars().find(|c| matches!(c, '|' | '/' | '%' | '!')) {
        return Err(AddressError::LocalChar(c));
    }
    if content.starts_with('.') {
        return Err(AddressError::LeadingDot);
    }
    if content.ends_with('.') {
        return Err(AddressError::TrailingDot);
    }
    if content.contains("..") {
        return Err(AddressError::ConsecutiveDots);
    }
    Ok(())
}

/// A domain name (labels, U-labels allowed) or an address literal.
fn validate_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() {
        return Err(AddressError::DomainEmpty);
    }
    if domain.len() > 255 {
        return Err(AddressError::DomainTooLong);
    }
    if let Some(lit) = domain.strip_prefix('[') {
        let inner = lit
            .strip_suffix(']')
            .ok_or(AddressError::BadAddressLiteral)?;
        let ok = match strip_prefix_ci(inner, "IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => inner.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err(AddressError::BadAddressLiteral)
        };
    }
    if let Some(c) = domain.chars().find(|&c| !(c == '.' || is_label_char(c))) {
        return Err(AddressError::DomainChar(c));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyLabel);
        }
        // A U-label is measured in characters: its A-label, which is what
        // the 63-octet limit really applies to, is rarely longer.
        let len = if label.is_ascii() {
            label.len()
        } else {
            label.chars().count()
        };
        if len > 63 {
            return Err(AddressError::LabelTooLong);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::LabelHyphen);
        }
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

    fn parse(s: &str) -> Result<Command, CommandError> {
        parse_command(s.as_bytes())
    }

    fn code(s: &str) -> (u16, Option<&'static str>) {
        let r = parse(s).expect_err(s).reply();
        (r.code, r.enhanced)
    }

    fn mail(from: &str, params: MailParams) -> Command {
        Command::Mail {
            from: from.into(),
            params,
        }
    }

    #[test]
    fn reply_wire_forms() {
        let r = Reply::new(250, Some("2.1.0"), "Ok");
        assert_eq!(r.to_wire(true), b"250 2.1.0 Ok\r\n");
        assert_eq!(r.to_wire(false), b"250 Ok\r\n");
        let m = Reply::new(250, Some("2.0.0"), "host\nSIZE 10\n8BITMIME\n");
        assert_eq!(
            m.to_wire(true),
            b"250-2.0.0 host\r\n250-2.0.0 SIZE 10\r\n250 2.0.0 8BITMIME\r\n"
        );
        assert_eq!(
            m.to_wire(false),
            b"250-host\r\n250-SIZE 10\r\n250 8BITMIME\r\n"
        );
        assert_eq!(Reply::new(354, None, "").to_wire(true), b"354\r\n");
        assert_eq!(
            Reply::new(221, Some("2.0.0"), "").to_wire(true),
            b"221 2.0.0\r\n"
        );
        assert_eq!(
            Reply::new(500, None, "a\r\x00b").to_wire(true),
            b"500 a b\r\n"
        );
    }

    #[test]
    fn simple_verbs() {
        assert_eq!(
            parse("ehlo  mx.example.org "),
            Ok(Command::Ehlo("mx.example.org".into()))
        );
        assert_eq!(
            parse("HELO [10.0.0.1]"),
            Ok(Command::Helo("[10.0.0.1]".into()))
        );
        assert_eq!(code("EHLO"), (501, Some("5.5.4")));
        assert_eq!(code("HELO   "), (501, Some("5.5.4")));
        for (s, c) in [
            ("data", Command::Data),
            ("RSET", Command::Rset),
            ("Quit", Command::Quit),
        ] {
            assert_eq!(parse(s), Ok(c));
        }
        assert_eq!(parse("StartTLS"), Ok(Command::StartTls));
        assert_eq!(parse("NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse("help me"), Ok(Command::Help));
        assert_eq!(parse("VRFY root"), Ok(Command::Vrfy));
        assert_eq!(parse("AUTH PLAIN AGZvbwBiYXI="), Ok(Command::Auth));
        for s in ["DATA x", "RSET x", "QUIT now", "STARTTLS x"] {
            assert_eq!(code(s), (501, Some("5.5.4")), "{s}");
        }
        assert_eq!(code("EXPN x"), (500, Some("5.5.1")));
        assert_eq!(code("MAILFROM:<a@b>"), (500, Some("5.5.1")));
        assert_eq!(code("XXXXXXXXXXXXXXXXXXXXXXXXX"), (500, Some("5.5.1")));
        assert_eq!(code(""), (500, Some("5.5.2")));
        assert_eq!(code(" \t "), (500, Some("5.5.2")));
    }

    #[test]
    fn bad_bytes() {
        for line in [
            &b"NOOP \xff"[..],
            b"MAIL FROM:<a\x00@b>",
            b"NOOP\r",
            b"HELO a\x7f",
            b"\xc3",
        ] {
            let e = parse_command(line).unwrap_err();
            assert_eq!(e, CommandError::InvalidCharacters);
            assert_eq!((e.reply().code, e.reply().enhanced), (500, Some("5.5.2")));
        }
        assert_eq!(parse("NOOP\tx"), Ok(Command::Noop));
    }

    #[test]
    fn mail_from() {
        let d = MailParams::default();
        assert_eq!(parse("MAIL FROM:<a@b.c>"), Ok(mail("a@b.c", d.clone())));
        assert_eq!(parse("mail from: <a@b.c>"), Ok(mail("a@b.c", d.clone())));
        assert_eq!(parse("MAIL FROM:<>"), Ok(mail("", d.clone())));
        assert_eq!(
            parse("MAIL FROM:<@x.org,@[1.2.3.4]:u@d.e>"),
            Ok(mail("u@d.e", d.clone()))
        );
        assert_eq!(
            parse("MAIL FROM:<@[IPv6:::1]:u@d.e>"),
            Ok(mail("u@d.e", d.clone()))
        );
        assert_eq!(
            parse("MAIL FROM:<\"a>b\"@c.d>"),
            Ok(mail("\"a>b\"@c.d", d.clone()))
        );
        for s in [
            "MAIL FROM:a@b",
            "MAIL FROM:  <a@b>",
            "MAIL TO:<a@b>",
            "MAIL",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a@b>SIZE=1",
            "MAIL FROM",
            "MAIL FROM:<\"a@b>",
        ] {
            assert_eq!(code(s), (501, Some("5.5.4")), "{s}");
        }
        for s in [
            "MAIL FROM:<@x:>",
            "MAIL FROM:<@x>",
            "MAIL FROM:<x@:a@b>",
            "MAIL FROM:<a b@c>",
        ] {
            assert_eq!(code(s), (553, Some("5.1.3")), "{s}");
        }
    }

    #[test]
    fn mail_params() {
        let p = |s: &str| match parse(s) {
            Ok(Command::Mail { params, .. }) => Ok(params),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err((e.reply().code, e.reply().enhanced.unwrap_or(""))),
        };
        let want = MailParams {
            size: Some(1000),
            body: Some(Body::EightBitMime),
            smtputf8: true,
        };
        assert_eq!(
            p("MAIL FROM:<a@b> size=1000  Body=8bitmime SMTPUTF8"),
            Ok(want)
        );
        assert_eq!(
            p("MAIL FROM:<a@b> BODY=7BIT").map(|p| p.body),
            Ok(Some(Body::SevenBit))
        );
        assert_eq!(
            p("MAIL FROM:<a@b> SIZE=99999999999999999999").map(|p| p.size),
            Ok(Some(u64::MAX))
        );
        for s in [
            "SIZE",
            "SIZE=",
            "SIZE=1k",
            "SIZE=-1",
            "SIZE=999999999999999999999",
            "SIZE=1 SIZE=2",
            "BODY",
            "SMTPUTF8=yes",
            "SMTPUTF8 smtputf8",
            "=x",
            "-X=1",
            "X==1",
            "BODY=7BIT body=7bit",
        ] {
            assert_eq!(
                p(&format!("MAIL FROM:<a@b> {s}")),
                Err((501, "5.5.4")),
                "{s}"
            );
        }
        for s in [
            "BODY=BINARYMIME",
            "BODY=8bit",
            "AUTH=<>",
            "RET=FULL",
            "X-FOO",
        ] {
            assert_eq!(
                p(&format!("MAIL FROM:<a@b> {s}")),
                Err((555, "5.5.4")),
                "{s}"
            );
        }
        let e = parse("MAIL FROM:<a@b> ENVID=x").unwrap_err().reply();
        assert_eq!(e.text, "Unsupported parameter ENVID");
    }

    #[test]
    fn smtputf8_sender() {
        assert_eq!(code("MAIL FROM:<jörg@bücher.de>"), (553, Some("5.6.7")));
        let want = MailParams {
            smtputf8: true,
            ..Default::default()
        };
        assert_eq!(
            parse("MAIL FROM:<jörg@bücher.de> SMTPUTF8"),
            Ok(mail("jörg@bücher.de", want))
        );
        assert!(needs_smtputf8("jörg@example.org") && needs_smtputf8("a@bücher.de"));
        assert!(!needs_smtputf8("a@b.c"));
    }

    #[test]
    fn rcpt_to() {
        let r = |s: &str| Ok(Command::Rcpt { to: s.into() });
        assert_eq!(parse("RCPT TO:<u@d.e>"), r("u@d.e"));
        assert_eq!(
            parse("rcpt to: <u@d.e> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@d.e"),
            r("u@d.e")
        );
        assert_eq!(parse("RCPT TO:<Postmaster>"), r("Postmaster"));
        assert_eq!(parse("RCPT TO:<@relay.x:u@d.e>"), r("u@d.e"));
        assert_eq!(parse("RCPT TO:<jörg@bücher.de>"), r("jörg@bücher.de"));
        assert_eq!(code("RCPT TO:<>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:u@d.e"), (501, Some("5.5.4")));
        assert_eq!(code("RCPT FROM:<u@d.e>"), (501, Some("5.5.4")));
        assert_eq!(
            code("RCPT TO:<u@d.e> NOTIFY=NEVER NOTIFY=NEVER"),
            (501, Some("5.5.4"))
        );
        assert_eq!(code("RCPT TO:<u@d.e> SIZE=1"), (555, Some("5.5.4")));
        assert_eq!(code("RCPT TO:<postmaster2>"), (553, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<a|b@d.e>"), (553, Some("5.1.3")));
    }

    #[test]
    fn mailbox_ok() {
        for a in [
            "a@b",
            "first.last@example.org",
            "a+tag@sub.example.co.uk",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
            "x@[ipv6:::ffff:1.2.3.4]",
            "\"john smith\"@example.org",
            "\"a\\\"b\"@c.d",
            "o'brien@x-y.z",
            "用户@例子.广告",
            "a@xn--bcher-kva.de",
            "a@1.2.3.4",
        ] {
            assert_eq!(validate_mailbox(a), Ok(()), "{a}");
        }
        let local = "a".repeat(64);
        assert_eq!(validate_mailbox(&format!("{local}@b")), Ok(()));
        let label = "d".repeat(63);
        let long = format!(
            "{}@{label}.{label}.{label}.{}",
            "l".repeat(60),
            "e".repeat(1)
        );
        assert_eq!(long.len(), 254);
        assert_eq!(validate_mailbox(&long), Ok(()));
        assert_eq!(
            validate_mailbox(&format!("{long}x")),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn mailbox_refused() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            ("", Empty),
            ("ab", MissingAt),
            ("a@b@c", MultipleAt),
            ("@b", LocalPartEmpty),
            ("a@", DomainEmpty),
            ("\"\"@b", LocalPartEmpty),
            ("\"ab@c", UnterminatedQuote),
            ("\"a\"", MissingAt),
            ("\"a\"b@c", MisplacedQuote),
            ("\"a\"@b@c", MultipleAt),
            ("a|b@c", LocalChar('|')),
            ("\"|cmd\"@c", LocalChar('|')),
            ("a/b@c", LocalChar('/')),
            ("\"/etc/passwd\"@c", LocalChar('/')),
            ("u%d@c", LocalChar('%')),
            ("h!u@c", LocalChar('!')),
            ("\"a/../b\"@c", PathTraversal),
            (".a@c", LeadingDot),
            ("a.@c", TrailingDot),
            ("a..b@c", ConsecutiveDots),
            ("\".a\"@c", LeadingDot),
            ("\"a..b\"@c", ConsecutiveDots),
            ("a b@c", LocalChar(' ')),
            ("a\"b@c", LocalChar('"')),
            ("a(b)@c", LocalChar('(')),
            ("a\u{a0}b@c", LocalChar('\u{a0}')),
            ("\"a\tb\"@c", LocalChar('\t')),
            ("a@b c", DomainChar(' ')),
            ("a@b%c", DomainChar('%')),
            ("a@b!c", DomainChar('!')),
            ("a@b:25", DomainChar(':')),
            ("a@b/c", DomainChar('/')),
            ("a@\"b\"", DomainChar('"')),
            ("a@b_c", DomainChar('_')),
            ("a@b\u{3002}c", DomainChar('\u{3002}')),
            ("a@b\u{FF20}c", DomainChar('\u{FF20}')),
            ("a@b..c", EmptyLabel),
            ("a@.b", EmptyLabel),
            ("a@b.", EmptyLabel),
            ("a@-b.c", LabelHyphen),
            ("a@b-.c", LabelHyphen),
            ("a@[1.2.3]", BadAddressLiteral),
            ("a@[1.2.3.4", BadAddressLiteral),
            ("a@[IPv6:1.2.3.4]", BadAddressLiteral),
            ("a@[IPv6:fe80::1%eth0]", BadAddressLiteral),
            ("a@[01.2.3.4]", BadAddressLiteral),
            ("a@[x:y]", BadAddressLiteral),
        ];
        for (addr, want) in cases {
            assert_eq!(validate_mailbox(addr).as_ref(), Err(want), "{addr:?}");
        }
        assert_eq!(
            validate_mailbox(&format!("{}@b", "a".repeat(65))),
            Err(LocalPartTooLong)
        );
        assert_eq!(
            validate_mailbox(&format!("a@{}.c", "b".repeat(64))),
            Err(LabelTooLong)
        );
    }

    #[test]
    fn address_reply_text_is_safe() {
        let r = AddressError::LocalChar('|').reply();
        assert_eq!((r.code, r.enhanced), (553, Some("5.1.3")));
        assert_eq!(
            r.text,
            "Bad address syntax: character '|' not allowed in local part"
        );
        let r = validate_mailbox("a\r\nb@c").unwrap_err().reply();
        assert_eq!(
            r.text,
            "Bad address syntax: character U+000D not allowed in local part"
        );
        assert_eq!(
            AddressError::DomainChar(' ').to_string(),
            "character U+0020 not allowed in domain"
        );
    }

    #[test]
    fn never_panics_on_junk() {
        let mut x: u32 = 0x1234_5678;
        let alphabet = b"<>@\":[]\\.,%|/! =aZ9\t\x00\xc3\xa9\xff-MAILFROM:RCPTO";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 40) as usize;
            let mut line = b"MAIL FROM:<".to_vec();
            if x & 1 == 0 {
                line = b"RCPT TO:".to_vec();
            }
            for i in 0..len {
                let k = (x.rotate_left(i as u32 * 3) as usize + i) % alphabet.len();
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
