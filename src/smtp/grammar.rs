//! Pure SMTP grammar: command lines, envelope addresses and reply formatting
//! (RFC 5321, 1869/1870, 6152, 6531, 3463, 2034). No I/O and no session state:
//! the caller decides what is allowed *when*; this module only decides what
//! is well-formed, and is written to never panic on hostile input.

use super::address::validate_domain;
pub use super::address::{needs_smtputf8, validate_mailbox, AddressError};
use super::lexical::{find_unquoted, strip_prefix_ci};
pub use super::reply::Reply;
use crate::dsn::{self, MailDsn, Notify, Orcpt, ParamError, RcptDsn, Ret};

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
    /// RET and ENVID (RFC 3461).
    pub dsn: MailDsn,
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
    /// `to` is kept as given; a local name (`postmaster`, `root`) may appear
    /// without a domain.
    Rcpt {
        to: String,
        dsn: RcptDsn,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// RFC 4954: the mechanism (upper-cased) and the initial response as
    /// sent (base64, or `=` for an empty one).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Syntax error: empty command")]
    Empty,
    #[error("Invalid characters in command")]
    InvalidCharacters,
    #[error("Command not recognized")]
    Unknown,
    /// A missing, extra or malformed argument; the text shows the right form.
    #[error("Syntax: {0}")]
    Syntax(&'static str),
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
    /// A malformed RET, ENVID, NOTIFY or ORCPT (RFC 3461: 501).
    #[error(transparent)]
    Dsn(#[from] ParamError),
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

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
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
    let bare = |cmd: Command, syntax| match args {
        "" => Ok(cmd),
        _ => Err(CommandError::Syntax(syntax)),
    };
    let hello = |syntax| match args {
        "" => Err(CommandError::Syntax(syntax)),
        _ => Ok(args.to_string()),
    };
    // A long junk verb is simply unknown; no need to allocate for it.
    if verb.len() > 8 {
        return Err(CommandError::Unknown);
    }
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello("EHLO hostname").map(Command::Ehlo),
        "HELO" => hello("HELO hostname").map(Command::Helo),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => bare(Command::Data, "DATA"),
        "RSET" => bare(Command::Rset, "RSET"),
        "QUIT" => bare(Command::Quit, "QUIT"),
        "STARTTLS" => bare(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "AUTH" => parse_auth(args),
        _ => Err(CommandError::Unknown),
    }
}

const MAIL_SYNTAX: CommandError = CommandError::Syntax("MAIL FROM:<address>");
const RCPT_SYNTAX: CommandError = CommandError::Syntax("RCPT TO:<address>");

/// `AUTH mechanism [initial-response]` (RFC 4954 4).
fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split_ascii_whitespace();
    let syntax = CommandError::Syntax("AUTH mechanism [initial-response]");
    let mechanism = words.next().ok_or(syntax.clone())?;
    let initial = words.next().map(str::to_string);
    if words.next().is_some() || mechanism.len() > 20 {
        return Err(syntax);
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial,
    })
}

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(args, "FROM:").ok_or(MAIL_SYNTAX)?;
    let (path, params) = split_path(rest).ok_or(MAIL_SYNTAX)?;
    let from = strip_route(path)?;
    if !from.is_empty() {
        validate_mailbox(from)?;
    }
    let (mut size, mut body, mut utf8) = (None, None, None);
    let (mut ret, mut envid) = (None, None);
    for param in param_tokens(params) {
        let (key, value) = param?;
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", v) => set(&mut size, key, parse_size(v)?)?,
            ("RET", v) => set(&mut ret, key, Ret::parse(dsn_value("RET", v)?)?)?,
            ("ENVID", v) => set(&mut envid, key, dsn::parse_envid(dsn_value("ENVID", v)?)?)?,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {
                set(&mut body, key, Body::SevenBit)?
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                set(&mut body, key, Body::EightBitMime)?
            }
            ("BODY", Some(_)) => return Err(CommandError::UnsupportedBody),
            ("SMTPUTF8", None) => set(&mut utf8, key, ())?,
            // RFC 4954 5: a server that offers AUTH takes the parameter; the
            // identity that counts is the session's own, so it is ignored.
            ("AUTH", Some(_)) => {}
            ("BODY", None) | ("SMTPUTF8", Some(_)) => return Err(CommandError::ParamSyntax),
            _ => return Err(CommandError::UnsupportedParameter(echo(key))),
        }
    }
    let params = MailParams {
        size,
        body,
        smtputf8: utf8.is_some(),
        dsn: MailDsn { ret, envid },
    };
    if needs_smtputf8(from) && !params.smtputf8 {
        return Err(CommandError::Utf8WithoutSmtputf8);
    }
    Ok(Command::Mail {
        from: from.to_string(),
        params,
    })
}

fn parse_rcpt(args: &str) -> Result<Command, CommandError> {
    let rest = strip_prefix_ci(args, "TO:").ok_or(RCPT_SYNTAX)?;
    let (path, params) = split_path(rest).ok_or(RCPT_SYNTAX)?;
    if path.is_empty() {
        return Err(CommandError::NullRecipient);
    }
    let to = strip_route(path)?;
    // RFC 5321 4.5.1: "postmaster" with no domain must always be accepted;
    // other local names (`root`) too, as Postfix does: they are resolved
    // through /etc/aliases, and only trusted clients get that far.
    if to.contains('@') {
        validate_mailbox(to)?;
    } else {
        validate_mailbox(&format!("{to}@localhost"))?;
    }
    let (mut notify, mut orcpt) = (None, None);
    for param in param_tokens(params) {
        let (key, value) = param?;
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => set(
                &mut notify,
                key,
                Notify::parse(dsn_value("NOTIFY", value)?)?,
            )?,
            "ORCPT" => set(&mut orcpt, key, Orcpt::parse(dsn_value("ORCPT", value)?)?)?,
            _ => return Err(CommandError::UnsupportedParameter(echo(key))),
        }
    }
    Ok(Command::Rcpt {
        to: to.to_string(),
        dsn: RcptDsn { notify, orcpt },
    })
}

/// A DSN parameter's value: every one of them needs one.
fn dsn_value<'a>(param: &'static str, v: Option<&'a str>) -> Result<&'a str, ParamError> {
    v.ok_or(ParamError {
        param,
        reason: "a value is required",
    })
}

fn set<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), CommandError> {
    match slot.replace(value) {
        Some(_) => Err(CommandError::DuplicateParameter(echo(key))),
        None => Ok(()),
    }
}

/// Splits `[SP] "<" path ">" [SP params]`, returning the path without its
/// brackets and the unparsed parameter text.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix(' ').unwrap_or(s).strip_prefix('<')?;
    let close = find_unquoted(inner, '>')?;
    let tail = inner.get(close + 1..)?;
    let path = inner.get(..close)?;
    (tail.is_empty() || tail.starts_with(is_wsp)).then_some((path, tail))
}

/// RFC 5321 lets a receiver ignore a source route but it must accept one, so
/// the route is checked for shape and dropped.
fn strip_route(path: &str) -> Result<&str, AddressError> {
    if !path.starts_with('@') {
        return Ok(path);
    }
    let (route, mailbox) = find_unquoted(path, ':')
        .and_then(|i| Some((path.get(..i)?, path.get(i + 1..)?)))
        .ok_or(AddressError::BadSourceRoute)?;
    let hop_ok = |hop: &str| {
        hop.strip_prefix('@')
            .is_some_and(|d| validate_domain(d).is_ok())
    };
    if mailbox.is_empty() || !route.split(',').all(hop_ok) {
        return Err(AddressError::BadSourceRoute);
    }
    Ok(mailbox)
}

type Param<'a> = Result<(&'a str, Option<&'a str>), CommandError>;

/// Lazily yields `KEY[=VALUE]` so that the first bad token stops parsing.
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
        (key_ok && value_ok)
            .then_some((key, value))
            .ok_or(CommandError::ParamSyntax)
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Rows of `input ¦ input ... => expected`, grouped by outcome.
    pub(in crate::smtp) fn table<'a>(t: &'a str) -> Vec<(&'a str, &'a str)> {
        let rows: Vec<_> = t.lines().skip(1).collect();
        let parsed: Vec<_> = rows.iter().filter_map(|l| l.rsplit_once("=> ")).collect();
        assert_eq!(parsed.len(), rows.len(), "malformed table row");
        let split = |(inputs, want): (&'a str, &'a str)| {
            inputs
                .split(" ¦ ")
                .map(move |i| (i.trim_matches(' '), want))
        };
        parsed.into_iter().flat_map(split).collect()
    }

    #[test]
    fn reply_wire_forms() {
        let r = Reply::new(250, Some("2.1.0"), "Ok");
        assert_eq!(r.to_wire(true), b"250 2.1.0 Ok\r\n");
        assert_eq!(r.to_wire(false), b"250 Ok\r\n");
        let m = Reply::new(250, Some("2.0.0"), "host\nSIZE 10\n\n8BITMIME\n");
        let want = b"250-2.0.0 host\r\n250-2.0.0 SIZE 10\r\n250-2.0.0\r\n250 2.0.0 8BITMIME\r\n";
        assert_eq!(m.to_wire(true), want);
        let want = b"250-host\r\n250-SIZE 10\r\n250-\r\n250 8BITMIME\r\n";
        assert_eq!(m.to_wire(false), want);
        let wire = |code, enh, text: &str| Reply::new(code, enh, text).to_wire(true);
        assert_eq!(wire(354, None, ""), b"354\r\n");
        assert_eq!(wire(221, Some("2.0.0"), ""), b"221 2.0.0\r\n");
        assert_eq!(wire(500, None, "a\r\x00b"), b"500 a b\r\n");
    }

    #[test]
    #[allow(clippy::too_many_lines)] // a table of commands and their parses
    fn commands() {
        let cases = "
            ehlo  mx.example.org => Ehlo(\"mx.example.org\")
            HELO [10.0.0.1] => Helo(\"[10.0.0.1]\")
            data => Data
            RSET => Rset
            Quit => Quit
            StartTLS => StartTls
            NOOP anything ¦ NOOP\tx => Noop
            help me => Help
            VRFY root => Vrfy
            AUTH PLAIN AGZvbwBiYXI= => Auth { mechanism: \"PLAIN\", initial: Some(\"AGZvbwBiYXI=\") }
            auth login => Auth { mechanism: \"LOGIN\", initial: None }
            AUTH => 501 5.5.4 Syntax: AUTH mechanism [initial-response]
            MAIL FROM:<a@b.c> ¦ mail from: <a@b.c> => a@b.c None None false
            MAIL FROM:<> =>  None None false
            MAIL FROM:<@x.org,@[1.2.3.4]:u@d.e> => u@d.e None None false
            MAIL FROM:<@[IPv6:::1]:u@d.e> => u@d.e None None false
            MAIL FROM:<\"a>b\"@c.d> => \"a>b\"@c.d None None false
            MAIL FROM:<a@b> size=1000  Body=8bitmime SMTPUTF8 => a@b Some(1000) Some(EightBitMime) true
            MAIL FROM:<a@b> BODY=7bit => a@b None Some(SevenBit) false
            MAIL FROM:<a@b> SIZE=99999999999999999999 => a@b Some(18446744073709551615) None false
            MAIL FROM:<jörg@bücher.de> SMTPUTF8 => jörg@bücher.de None None true
            RCPT TO:<u@d.e> => u@d.e None None
            rcpt to: <u@d.e> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@d.e => u@d.e SUCCESS,FAILURE rfc822;u@d.e
            RCPT TO:<u@d.e> notify=never ORCPT=utf-8;j+C3+B6rg@d.e => u@d.e NEVER utf-8;j+C3+B6rg@d.e
            RCPT TO:<@relay.x:u@d.e> => u@d.e None None
            RCPT TO:<Postmaster> => Postmaster None None
            RCPT TO:<root> => root None None
            RCPT TO:<jörg@bücher.de> => jörg@bücher.de None None
            MAIL FROM:<a@b> RET=hdrs ENVID=QQ+2B1 => a@b ret=Some(Hdrs) envid=Some(\"QQ+2B1\")
            MAIL FROM:<> ret=FULL =>  ret=Some(Full) envid=None
             ¦ \t => 500 5.5.2 Syntax error: empty command
            EXPN x ¦ MAILFROM:<a@b> ¦ XXXXXXXXXXXXXXXXXXXX => 500 5.5.1 Command not recognized
            EHLO => 501 5.5.4 Syntax: EHLO hostname
            HELO \t => 501 5.5.4 Syntax: HELO hostname
            DATA x => 501 5.5.4 Syntax: DATA
            RSET x => 501 5.5.4 Syntax: RSET
            QUIT now => 501 5.5.4 Syntax: QUIT
            STARTTLS x => 501 5.5.4 Syntax: STARTTLS
            MAIL ¦ MAIL FROM:a@b ¦ MAIL FROM:  <a@b> => 501 5.5.4 Syntax: MAIL FROM:<address>
            MAIL TO:<a@b> ¦ MAIL FROM:<a@b => 501 5.5.4 Syntax: MAIL FROM:<address>
            MAIL FROM:<\"a@b> ¦ MAIL FROM:<a@b>SIZE=1 => 501 5.5.4 Syntax: MAIL FROM:<address>
            MAIL FROM:<@x:> ¦ MAIL FROM:<@x> => 553 5.1.3 Bad address syntax: invalid source route
            MAIL FROM:<@x,y:a@b> => 553 5.1.3 Bad address syntax: invalid source route
            MAIL FROM:<x@:a@b> => 553 5.1.3 Bad address syntax: address contains more than one @
            MAIL FROM:<a b@c> => 553 5.1.3 Bad address syntax: character U+0020 not allowed in local part
            MAIL FROM:<jörg@bücher.de> => 553 5.6.7 Non-ASCII sender address requires SMTPUTF8
            MAIL FROM:<a@b> SIZE ¦ MAIL FROM:<a@b> SIZE=1k => 501 5.5.4 Invalid SIZE value
            MAIL FROM:<a@b> SIZE=-1 => 501 5.5.4 Invalid SIZE value
            MAIL FROM:<a@b> SIZE=999999999999999999999 => 501 5.5.4 Invalid SIZE value
            MAIL FROM:<a@b> SIZE= ¦ MAIL FROM:<a@b> BODY => 501 5.5.4 Invalid parameter syntax
            MAIL FROM:<a@b> SMTPUTF8=yes ¦ MAIL FROM:<a@b> =x => 501 5.5.4 Invalid parameter syntax
            MAIL FROM:<a@b> -X=1 ¦ MAIL FROM:<a@b> X==1 => 501 5.5.4 Invalid parameter syntax
            MAIL FROM:<a@b> SIZE=1 size=2 => 501 5.5.4 Duplicate parameter size
            MAIL FROM:<a@b> BODY=7BIT body=7bit => 501 5.5.4 Duplicate parameter body
            MAIL FROM:<a@b> SMTPUTF8 smtputf8 => 501 5.5.4 Duplicate parameter smtputf8
            MAIL FROM:<a@b> BODY=BINARYMIME => 555 5.5.4 Unsupported BODY type
            MAIL FROM:<a@b> BODY=8bit => 555 5.5.4 Unsupported BODY type
            MAIL FROM:<a@b> AUTH=<> => a@b None None false
            MAIL FROM:<a@b> RET=FULL ret=HDRS => 501 5.5.4 Duplicate parameter ret
            MAIL FROM:<a@b> RET=PART => 501 5.5.4 Bad RET parameter: not FULL or HDRS
            MAIL FROM:<a@b> RET => 501 5.5.4 Bad RET parameter: a value is required
            MAIL FROM:<a@b> ENVID => 501 5.5.4 Bad ENVID parameter: a value is required
            MAIL FROM:<a@b> ENVID=a+2 => 501 5.5.4 Bad ENVID parameter: a '+' without two hex digits
            MAIL FROM:<a@b> ENVID=a+0A => 501 5.5.4 Bad ENVID parameter: not printable ASCII once decoded
            RCPT TO:<u@d.e> NOTIFY=NEVER,SUCCESS => 501 5.5.4 Bad NOTIFY parameter: NEVER cannot be combined
            RCPT TO:<u@d.e> NOTIFY=SOMETIMES => 501 5.5.4 Bad NOTIFY parameter: not SUCCESS, FAILURE, DELAY or NEVER
            RCPT TO:<u@d.e> NOTIFY => 501 5.5.4 Bad NOTIFY parameter: a value is required
            RCPT TO:<u@d.e> ORCPT=u@d.e => 501 5.5.4 Bad ORCPT parameter: no ';' after the address type
            RCPT TO:<u@d.e> ORCPT=rfc822;a+0Db => 501 5.5.4 Bad ORCPT parameter: empty, or control characters once decoded
            RCPT TO:<> => 501 5.1.3 Null recipient not allowed
            RCPT TO:u@d.e ¦ RCPT FROM:<u@d.e> => 501 5.5.4 Syntax: RCPT TO:<address>
            RCPT TO:<u@d.e> NOTIFY=NEVER notify=NEVER => 501 5.5.4 Duplicate parameter notify
            RCPT TO:<u@d.e> SIZE=1 => 555 5.5.4 Unsupported parameter SIZE
            RCPT TO:<a|b> => 553 5.1.3 Bad address syntax: character '|' not allowed in local part
            RCPT TO:<a|b@d.e> => 553 5.1.3 Bad address syntax: character '|' not allowed in local part";
        for (line, want) in table(cases) {
            let got = match parse_command(line.as_bytes()) {
                Ok(Command::Mail { from, params: p }) if p.dsn != MailDsn::default() => {
                    let d = p.dsn;
                    format!("{from} ret={:?} envid={:?}", d.ret, d.envid)
                }
                Ok(Command::Mail { from, params: p }) => {
                    format!("{from} {:?} {:?} {}", p.size, p.body, p.smtputf8)
                }
                Ok(Command::Rcpt { to, dsn }) => {
                    let notify = dsn.notify.map_or("None".into(), |n| n.value());
                    let orcpt = dsn.orcpt.map_or("None".into(), |o| o.value());
                    format!("{to} {notify} {orcpt}")
                }
                Ok(cmd) => format!("{cmd:?}"),
                Err(e) => {
                    let r = e.reply();
                    format!("{} {} {}", r.code, r.enhanced.unwrap_or(""), r.text)
                }
            };
            assert_eq!(got, want, "{line:?}");
        }
    }
}
