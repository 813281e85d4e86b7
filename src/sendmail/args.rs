//! The `sendmail` command line (Postfix sendmail(1) compatible).
//!
//! Parsing is getopt style with Postfix's option string
//! `B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx` plus sendmail 8.12's `-A`,
//! because callers (PHP, cron, mutt, git send-email, monitoring scripts) were
//! written against that interface and rarely check what they pass. Legacy
//! options that cannot change the outcome are accepted and recorded so `-v`
//! can show them; options that would silently do the wrong thing are refused.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::dsn::{parse_envid, Notify, Ret};

/// What one `sendmail` invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub mode: Mode,
    /// `-t`
    pub extract_recipients: bool,
    /// `-i`, `-oi`: a lone "." line does not end input.
    pub ignore_dots: bool,
    /// `-f` / `-r`, validated by [`validate_sender`]; `Some("")` is the null sender.
    pub sender: Option<String>,
    /// `-F`, raw; message.rs makes it safe.
    pub full_name: Option<String>,
    /// `-v`
    pub verbose: bool,
    /// `-C <file>`
    pub config: Option<PathBuf>,
    /// `-N`
    pub notify: Option<Notify>,
    /// `-V`
    pub envid: Option<String>,
    /// `-R full|hdrs`
    pub ret: Option<Ret>,
    /// `-B 7BIT|8BITMIME`
    pub body: Option<BodyType>,
    /// `-odi` / `-odb` / `-odq` / `-odd`
    pub delivery: DeliveryMode,
    /// `-oep` / `-oem` / `-oeq` / `-oew` / `-oee`
    pub errors: ErrorMode,
    /// Command-line recipients, already split into single addresses.
    pub recipients: Vec<String>,
    /// Accepted-but-ignored legacy options as given, for `-v` diagnostics.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-bm`, the default.
    #[default]
    Deliver,
    /// `-bs`
    Smtp,
    /// `-bp`, and what `mailq` means.
    ListQueue,
    /// `-q`
    Flush(FlushTarget),
    /// `-bi`, `-I`: accepted, does nothing (there is no alias database).
    NewAliases,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushTarget {
    All,
    /// `-qR<site>`
    Site(String),
    /// `-qI<id>`
    Id(String),
    /// `-qS<addr>`
    Sender(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    Interactive,
    #[default]
    Background,
    Queue,
    Deferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorMode {
    #[default]
    Print,
    Mail,
    Quiet,
    Write,
    Exit,
}

/// A command line that cannot be honoured. Display is fit for stderr as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("option -{0} requires an argument")]
    MissingArgument(char),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid value {value:?} for -{option}: {reason}")]
    InvalidValue {
        option: char,
        value: String,
        reason: &'static str,
    },
    #[error("invalid sender address {address:?}: {reason}")]
    InvalidSender {
        address: String,
        reason: &'static str,
    },
    #[error("invalid recipient address {address:?}: {reason}")]
    InvalidRecipient {
        address: String,
        reason: &'static str,
    },
    #[error("a lone \"-\" is not a valid argument")]
    LoneDash,
    #[error("argument {0:?} is not valid UTF-8")]
    NotUnicode(String),
    #[error("{0} does not take recipient arguments")]
    RecipientsNotAllowed(&'static str),
}

/// Short usage text listing the supported flags.
pub fn usage() -> &'static str {
    "usage: sendmail [options] [--] [recipient ...]\n\
     \n\
     \x20 -t             take recipients from To/Cc/Bcc (added to the command line ones)\n\
     \x20 -i, -oi        a line with a single \".\" does not end the message\n\
     \x20 -f ADDR, -r ADDR  envelope sender ('<>' for the null sender)\n\
     \x20 -F NAME        full name for an added From: header\n\
     \x20 -v             verbose\n\
     \x20 -C FILE        configuration file\n\
     \x20 -N never|success,failure,delay  delivery status notification\n\
     \x20 -R full|hdrs   what a bounce returns\n\
     \x20 -V ENVID       envelope id\n\
     \x20 -B 7BIT|8BITMIME  body type\n\
     \x20 -odi|-odb|-odq|-odd  delivery mode\n\
     \x20 -oep|-oem|-oeq|-oew|-oee  error reporting mode\n\
     \x20 -bm            deliver a message (default)\n\
     \x20 -bs            speak SMTP on stdin/stdout\n\
     \x20 -bp            list the queue (mailq)\n\
     \x20 -bi, -I        rebuild aliases (does nothing)\n\
     \x20 -q[INTERVAL], -qRSITE, -qIID, -qSADDR  flush the queue\n\
     \n\
     Accepted and ignored: -c -n -m -x -G -U -h N -L LABEL -X FILE -p PROTO\n\
     -e X -A X -O OPT=VAL and other -o options.\n"
}

/// Validates a `-f`/`-r` sender: `addr`, `<addr>`, `<>` or empty (the null
/// sender). Returns the address without brackets.
///
/// The value ends up in MAIL FROM and possibly in an added From: header, so
/// anything that could start a new line, a new address or a new SMTP
/// parameter is refused rather than cleaned up.
pub fn validate_sender(raw: &str) -> Result<String, UsageError> {
    let err = |reason| UsageError::InvalidSender {
        address: raw.to_string(),
        reason,
    };
    if raw.chars().any(char::is_control) {
        return Err(err("contains control characters"));
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(err("contains whitespace"));
    }
    let inner = match raw.strip_prefix('<') {
        Some(rest) => rest
            .strip_suffix('>')
            .ok_or_else(|| err("unbalanced angle brackets"))?,
        None => raw,
    };
    if inner.contains(['<', '>']) {
        return Err(err("unexpected angle bracket"));
    }
    Ok(inner.to_string())
}

/// Parses the arguments after `argv[0]`.
pub fn parse<I, S>(args: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args = args
        .into_iter()
        .map(|a| {
            a.into()
                .into_string()
                .map_err(|os| UsageError::NotUnicode(os.to_string_lossy().into_owned()))
        })
        .collect::<Result<Vec<String>, _>>()?;

    let mut inv = Invocation::default();
    let operands = parse_options(&mut inv, &args)?;
    for arg in args.get(operands..).unwrap_or(&[]) {
        add_recipients(&mut inv.recipients, arg)?;
    }
    if !inv.recipients.is_empty() {
        let mode = match inv.mode {
            Mode::Deliver => None,
            Mode::Smtp => Some("-bs"),
            Mode::ListQueue => Some("-bp"),
            Mode::Flush(_) => Some("-q"),
            Mode::NewAliases => Some("-bi"),
        };
        if let Some(mode) = mode {
            return Err(UsageError::RecipientsNotAllowed(mode));
        }
    }
    Ok(inv)
}

/// Applies the options at the front of `args`; returns where the operands start.
fn parse_options(inv: &mut Invocation, args: &[String]) -> Result<usize, UsageError> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            return Ok(i);
        }
        if arg == "-" {
            return Err(UsageError::LoneDash);
        }
        let Some(cluster) = arg.strip_prefix('-') else {
            // POSIX getopt: the first operand ends the options, no permutation.
            return Ok(i - 1);
        };
        if cluster.starts_with('-') {
            return Err(UsageError::UnknownOption(arg.clone()));
        }
        apply_cluster(inv, cluster, args, &mut i)?;
    }
    Ok(args.len())
}

/// Applies one cluster of option letters (`-ti`, `-fsender`); an option that
/// takes an argument ends it, and takes `args[*i]` when the cluster has no more.
fn apply_cluster(
    inv: &mut Invocation,
    cluster: &str,
    args: &[String],
    i: &mut usize,
) -> Result<(), UsageError> {
    for (pos, c) in cluster.char_indices() {
        let rest = cluster.get(pos + c.len_utf8()..).unwrap_or("");
        if apply_flag(inv, c) {
            continue;
        }
        if c == 'q' {
            // The interval is optional, so it can only come from the cluster.
            inv.mode = Mode::Flush(parse_flush(rest)?);
            break;
        }
        if !takes_argument(c) {
            return Err(UsageError::UnknownOption(format!("-{c}")));
        }
        let (value, given) = if rest.is_empty() {
            let value = args.get(*i).ok_or(UsageError::MissingArgument(c))?;
            *i += 1;
            (value.as_str(), format!("-{c} {value}"))
        } else {
            (rest, format!("-{c}{rest}"))
        };
        apply_option(inv, c, value, given)?;
        break;
    }
    Ok(())
}

/// Options without an argument. Returns false if `c` is not one.
fn apply_flag(inv: &mut Invocation, c: char) -> bool {
    match c {
        't' => inv.extract_recipients = true,
        'i' => inv.ignore_dots = true,
        'v' => inv.verbose = true,
        'I' => inv.mode = Mode::NewAliases,
        'c' | 'n' | 'm' | 'x' | 'G' | 'U' => inv.ignored.push(format!("-{c}")),
        _ => return false,
    }
    true
}

fn takes_argument(c: char) -> bool {
    "ABCFLNORVXbefhopr".contains(c)
}

/// Applies an option that takes an argument; `given` is how it was written.
fn apply_option(
    inv: &mut Invocation,
    c: char,
    value: &str,
    given: String,
) -> Result<(), UsageError> {
    let invalid = |reason| UsageError::InvalidValue {
        option: c,
        value: value.to_string(),
        reason,
    };
    match c {
        'b' => inv.mode = parse_mode(value)?,
        'f' | 'r' => inv.sender = Some(validate_sender(value)?),
        'F' => inv.full_name = Some(value.to_string()),
        'C' => inv.config = Some(PathBuf::from(value)),
        'N' => inv.notify = Some(parse_notify(value).map_err(invalid)?),
        'V' => {
            // Given as text, sent as xtext: its encoding must fit ENVID's 100.
            if value.is_empty() || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(invalid("must be printable ASCII"));
            }
            let envid = crate::dsn::xtext_encode(value.as_bytes());
            inv.envid = Some(parse_envid(&envid).map_err(|e| invalid(e.reason))?);
        }
        'R' => inv.ret = Some(Ret::parse(value).map_err(|_| invalid("expected full or hdrs"))?),
        'B' => {
            inv.body = Some(if value.eq_ignore_ascii_case("7bit") {
                BodyType::SevenBit
            } else if value.eq_ignore_ascii_case("8bitmime") {
                BodyType::EightBitMime
            } else {
                return Err(invalid("expected 7BIT or 8BITMIME"));
            });
        }
        'o' => apply_o(inv, value, given),
        // -A -L -X -O -e -h -p: nothing they select applies to a relay.
        _ => inv.ignored.push(given),
    }
    Ok(())
}

/// `-o<x>`: only the options that change what happens are honoured; sendmail
/// has dozens more (-oQ, -oR, -oM..., -om, -oL) that are meaningless here.
fn apply_o(inv: &mut Invocation, value: &str, given: String) {
    let errors = match value {
        "ep" => Some(ErrorMode::Print),
        "em" => Some(ErrorMode::Mail),
        "eq" => Some(ErrorMode::Quiet),
        "ew" => Some(ErrorMode::Write),
        "ee" => Some(ErrorMode::Exit),
        _ => None,
    };
    let delivery = match value {
        "d" | "db" => Some(DeliveryMode::Background),
        "di" => Some(DeliveryMode::Interactive),
        "dq" => Some(DeliveryMode::Queue),
        "dd" => Some(DeliveryMode::Deferred),
        _ => None,
    };
    if value == "i" {
        inv.ignore_dots = true;
    } else if let Some(errors) = errors {
        inv.errors = errors;
    } else if let Some(delivery) = delivery {
        inv.delivery = delivery;
    } else {
        inv.ignored.push(given);
    }
}

fn parse_mode(value: &str) -> Result<Mode, UsageError> {
    let unsupported = |msg: &str| Err(UsageError::Unsupported(msg.to_string()));
    match value {
        "m" => Ok(Mode::Deliver),
        "s" => Ok(Mode::Smtp),
        "p" => Ok(Mode::ListQueue),
        "i" => Ok(Mode::NewAliases),
        "d" | "D" | "l" => unsupported(&format!("-b{value}: run `smarthost serve` instead")),
        "v" => unsupported("-bv (verify addresses) is not supported"),
        "t" => unsupported("-bt (address test mode) is not supported"),
        "h" | "H" => unsupported(&format!("-b{value} (host status) is not supported")),
        _ => unsupported(&format!("-b{value} is not supported")),
    }
}

/// `-q`, `-q<interval>`, `-qR<site>`, `-qI<id>`, `-qS<addr>`.
fn parse_flush(rest: &str) -> Result<FlushTarget, UsageError> {
    let target = |kind: char, value: &str, what: &'static str| {
        if value.is_empty() {
            Err(UsageError::InvalidValue {
                option: 'q',
                value: format!("{kind}"),
                reason: what,
            })
        } else {
            Ok(value.to_string())
        }
    };
    if let Some(site) = rest.strip_prefix('R') {
        return target('R', site, "specify -qR<site>").map(FlushTarget::Site);
    }
    if let Some(id) = rest.strip_prefix('I') {
        return target('I', id, "specify -qI<queue id>").map(FlushTarget::Id);
    }
    if let Some(addr) = rest.strip_prefix('S') {
        return target('S', addr, "specify -qS<sender>").map(FlushTarget::Sender);
    }
    // sendmail's -qf (foreground) and -qp (persistent) only change how the
    // flush runs, and the daemon schedules itself, so the interval is dropped.
    let interval = rest
        .strip_prefix('f')
        .or_else(|| rest.strip_prefix('p'))
        .unwrap_or(rest);
    if is_interval(interval) {
        Ok(FlushTarget::All)
    } else {
        Err(UsageError::InvalidValue {
            option: 'q',
            value: rest.to_string(),
            reason: "expected an interval like 15m, or R<site>, I<id>, S<sender>",
        })
    }
}

/// Empty, or digits each group optionally followed by one of s m h d w (`1h30m`).
fn is_interval(s: &str) -> bool {
    let mut after_digit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            after_digit = true;
        } else if matches!(c, 's' | 'm' | 'h' | 'd' | 'w') && after_digit {
            after_digit = false;
        } else {
            return false;
        }
    }
    true
}

/// Postfix's `-N` takes the keywords in any case, separated by commas or
/// spaces; a keyword given twice means it once.
fn parse_notify(value: &str) -> Result<Notify, &'static str> {
    let words: Vec<String> = value
        .split([',', ' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let mut unique = words.clone();
    unique.sort();
    unique.dedup();
    match Notify::parse(&unique.join(",")) {
        Ok(n) if !words.is_empty() => Ok(n),
        _ => Err("expected never, or a list of success, failure, delay"),
    }
}

/// Splits one command-line argument into addresses. Postfix parses argv
/// recipients as RFC 822 address lists, so `a@x,b@y`, `Name <a@x>` and
/// `a@x (comment)` all work; anything the parser cannot make sense of is
/// refused instead of being sent somewhere unexpected.
fn add_recipients(out: &mut Vec<String>, arg: &str) -> Result<(), UsageError> {
    let invalid = |reason| UsageError::InvalidRecipient {
        address: arg.to_string(),
        reason,
    };
    if arg.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    let (addrs, warnings) = super::address_list::parse_address_list(arg);
    if !warnings.is_empty() {
        return Err(invalid("not a valid address"));
    }
    out.extend(addrs);
    Ok(())
}

#[cfg(test)]
mod tests;
