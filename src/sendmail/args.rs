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

/// RFC 3461 NOTIFY. `never` is exclusive of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
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
    let mut i = 0;
    let mut operands = args.len();
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            operands = i;
            break;
        }
        if arg == "-" {
            return Err(UsageError::LoneDash);
        }
        let Some(cluster) = arg.strip_prefix('-') else {
            // POSIX getopt: the first operand ends the options, no permutation.
            operands = i - 1;
            break;
        };
        if cluster.starts_with('-') {
            return Err(UsageError::UnknownOption(arg.clone()));
        }
        for (pos, c) in cluster.char_indices() {
            let rest = cluster.get(pos + c.len_utf8()..).unwrap_or("");
            if apply_flag(&mut inv, c) {
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
                let value = args.get(i).ok_or(UsageError::MissingArgument(c))?;
                i += 1;
                (value.as_str(), format!("-{c} {value}"))
            } else {
                (rest, format!("-{c}{rest}"))
            };
            apply_option(&mut inv, c, value, given)?;
            break;
        }
    }

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
            if value.is_empty() || value.len() > 100 {
                return Err(invalid("must be 1 to 100 characters"));
            }
            if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(invalid("must be printable ASCII without spaces"));
            }
            inv.envid = Some(value.to_string());
        }
        'R' => {
            inv.ret = Some(if value.eq_ignore_ascii_case("full") {
                Ret::Full
            } else if value.eq_ignore_ascii_case("hdrs") {
                Ret::Hdrs
            } else {
                return Err(invalid("expected full or hdrs"));
            });
        }
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

fn parse_notify(value: &str) -> Result<Notify, &'static str> {
    let mut notify = Notify::default();
    for item in value.split(',').map(str::trim) {
        if item.eq_ignore_ascii_case("never") {
            notify.never = true;
        } else if item.eq_ignore_ascii_case("success") {
            notify.success = true;
        } else if item.eq_ignore_ascii_case("failure") {
            notify.failure = true;
        } else if item.eq_ignore_ascii_case("delay") {
            notify.delay = true;
        } else {
            return Err("expected never, or a list of success, failure, delay");
        }
    }
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err("never cannot be combined with other values");
    }
    Ok(notify)
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
    let (addrs, warnings) = super::message::parse_address_list(arg);
    if !warnings.is_empty() {
        return Err(invalid("not a valid address"));
    }
    out.extend(addrs);
    Ok(())
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            n,
            Some(Notify {
                never: false,
                success: true,
                failure: true,
                delay: false
            })
        );
        let n = p(&["-NNever", "a@x"]).notify;
        assert_eq!(
            n,
            Some(Notify {
                never: true,
                ..Notify::default()
            })
        );
        let n = p(&["-N", "DELAY, failure", "a@x"]).notify;
        assert!(n.is_some_and(|n| n.delay && n.failure && !n.success));
        for bad in ["never,success", "sometimes", "", "success,"] {
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
        for bad in [
            String::new(),
            "x".repeat(101),
            "a b".into(),
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
}
