//! The `sendmail` command (also `mailq`): what PHP's `mail()`, cron, mutt,
//! Django and git send-email call. [`args`] parses the command line,
//! [`message`] reads and completes the message, [`submit`] hands it to the
//! daemon; when the daemon is not running, [`crate::dropdir`] keeps it.
//!
//! Either way sendmail exits 0 only once the message is durably stored, and every
//! failure exits with a sysexits.h code and one clear line on stderr.

pub(crate) mod address_list;
pub mod args;
mod input;
mod mailq;
pub mod message;
pub mod submit;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use args::{FlushTarget, Invocation, Mode};
use message::{InputError, PrepareError, PrepareOptions};
use submit::{Submission, SubmitError};

use crate::config::Config;
use crate::control::{self, client::ClientError, Action, Selection};
use crate::smtp::address::{needs_smtputf8, validate_mailbox};
use crate::sysexits::*;

pub const DEFAULT_CONFIG: &str = "/etc/smarthost/smarthost.toml";

/// A failure: the exit code and the line for stderr.
struct Fail(u8, String);

/// Runs `sendmail` with the arguments after argv[0]; returns the exit code.
pub fn main(args: Vec<OsString>) -> u8 {
    finish("sendmail", run(args))
}

/// Runs `mailq` (the queue listing).
pub fn mailq(args: Vec<OsString>) -> u8 {
    let mut all = vec![OsString::from("-bp")];
    all.extend(args);
    finish("mailq", run(all))
}

fn finish(name: &str, result: Result<(), Fail>) -> u8 {
    match result {
        Ok(()) => EX_OK,
        Err(Fail(code, message)) => {
            eprintln!("{name}: {message}");
            code
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), Fail> {
    let inv = args::parse(args).map_err(|e| Fail(EX_USAGE, format!("{e}\n{}", args::usage())))?;
    let config_path = config_path(&inv);
    let config =
        Config::load_for_client(&config_path).map_err(|e| Fail(EX_CONFIG, e.to_string()))?;
    if inv.verbose && !inv.ignored.is_empty() {
        eprintln!("sendmail: ignoring {}", inv.ignored.join(" "));
    }
    match &inv.mode {
        Mode::NewAliases => newaliases(&config),
        Mode::ListQueue => list_queue(&config),
        Mode::Flush(target) => {
            let selection = match target {
                FlushTarget::All => Selection {
                    all: true,
                    ..Default::default()
                },
                FlushTarget::Site(route) => Selection {
                    route: Some(route.clone()),
                    ..Default::default()
                },
                FlushTarget::Id(id) => Selection {
                    ids: vec![id.clone()],
                    ..Default::default()
                },
                FlushTarget::Sender(_) => {
                    return Err(Fail(
                        EX_USAGE,
                        "-qS is not supported; find the messages with `smarthost queue find <address>` and flush them by id".into(),
                    ))
                }
            };
            queue(
                &config,
                control::client::Command::Act {
                    action: Action::Flush,
                    selection,
                },
            )
        }
        Mode::Smtp => {
            let socket = config.local.submit_socket();
            submit::proxy(&socket).map_err(|e| {
                // The client waits for a greeting: tell it, in SMTP, to come back.
                use std::io::Write;
                let _ = std::io::stdout().write_all(
                    b"421 4.3.0 The smarthost daemon is not running, try again later\r\n",
                );
                Fail(EX_TEMPFAIL, format!("{}: {e}", socket.display()))
            })
        }
        Mode::Deliver => deliver(&config, &inv),
    }
}

/// `-C` or `$SMARTHOST_CONFIG`, unless this process runs setgid: then a caller
/// could point it at a drop directory of their choosing, so only the system
/// configuration counts (as Postfix's postdrop ignores its environment).
fn config_path(inv: &Invocation) -> PathBuf {
    if running_setgid() {
        return PathBuf::from(DEFAULT_CONFIG);
    }
    inv.config
        .clone()
        .or_else(|| std::env::var_os("SMARTHOST_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

pub fn running_setgid() -> bool {
    nix::unistd::getegid() != nix::unistd::getgid()
}

/// `mailq`, `-bp` and `-q`: the setgid group is for the drop directory only,
/// so it is given up first and the caller gets what their own groups allow
/// on the queue sockets (README: a user in neither group sees nothing).
/// `newaliases`: checks `/etc/aliases` (every alias expands: no loop, no
/// program or file) and has the daemon read it again. There is no database
/// to build: the daemon reads the text file.
fn newaliases(config: &Config) -> Result<(), Fail> {
    let path = config.local.aliases_path.display();
    let aliases = match config.local.aliases.as_ref() {
        Ok(a) => a,
        Err(e) => return Err(Fail(EX_CONFIG, e.to_string())),
    };
    let problems: Vec<String> = aliases
        .names()
        .filter_map(|n| aliases.expand(n).err().map(|e| e.to_string()))
        .collect();
    if !problems.is_empty() {
        return Err(Fail(
            EX_DATAERR,
            format!("{path}:\n  {}", problems.join("\n  ")),
        ));
    }
    println!("newaliases: {path}: {} aliases", aliases.len());
    let mut out = std::io::stdout().lock();
    match control::client::run(&config.local, control::client::Command::Reload, &mut out) {
        Ok(_) => Ok(()),
        // Not running: it reads the file when it starts.
        Err(ClientError::Unreachable { .. }) => {
            println!("newaliases: the daemon is not running; it reads the file when it starts");
            Ok(())
        }
        Err(e) => Err(client_failure(e)),
    }
}

fn queue(config: &Config, command: control::client::Command) -> Result<(), Fail> {
    give_up_setgid()?;
    let mut out = std::io::stdout().lock();
    answered(control::client::run(&config.local, command, &mut out))
}

/// `mailq` and `-bp`: the daemon's listing. While the daemon is down, what
/// waits in the drop directory instead, for those who may read it (see
/// [`mailq`]); the exit code stays 69 (EX_UNAVAILABLE) either way: the queue
/// itself could not be listed.
fn list_queue(config: &Config) -> Result<(), Fail> {
    give_up_setgid()?;
    let command = control::client::Command::List {
        json: false,
        filter: control::ListFilter::default(),
    };
    let mut out = std::io::stdout().lock();
    match control::client::run(&config.local, command, &mut out) {
        Err(e @ ClientError::Unreachable { .. }) => {
            drop(out);
            mailq::daemon_down(&config.local, &e)
        }
        other => answered(other),
    }
}

fn give_up_setgid() -> Result<(), Fail> {
    if running_setgid() {
        let gid = nix::unistd::getgid();
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(|e| Fail(EX_OSERR, format!("cannot give up the setgid group: {e}")))?;
    }
    Ok(())
}

/// The daemon's answer to a queue command. A reader that went away
/// (`mailq | head -1`) is not an error: exit 0, nothing on stderr.
fn answered(result: Result<bool, ClientError>) -> Result<(), Fail> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Fail(1, "not every message could be handled".into())),
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(client_failure(e)),
    }
}

fn client_failure(e: ClientError) -> Fail {
    let code = match &e {
        ClientError::Unreachable { .. } => EX_UNAVAILABLE,
        ClientError::Denied { .. } => EX_NOPERM,
        ClientError::Io(_) => EX_IOERR,
        ClientError::Protocol(_) => EX_PROTOCOL,
        ClientError::Failed(_) => EX_DATAERR,
    };
    Fail(code, e.to_string())
}

/// The invoking user's login name, for the default sender.
fn login_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid{}", uid.as_raw()),
    }
}

fn deliver(config: &Config, inv: &Invocation) -> Result<(), Fail> {
    let sender = envelope_sender(config, inv)?;
    let max = config.limits.max_message_size;
    let input = read_stdin(config, inv, max)?;
    // Only the head is completed (its header section is all that changes);
    // the rest of a large message follows it unread until it is sent.
    let prepared = prepare_message(config, inv, &sender, &input.head)?;
    drop(input.head);
    if inv.verbose {
        for w in &prepared.warnings {
            eprintln!("sendmail: warning: {w}");
        }
    }
    check_limits(config, &prepared.message, input.rest.as_ref())?;
    let recipients = envelope_recipients(config, &prepared.recipients)?;
    let smtputf8 = needs_smtputf8(&sender) || recipients.iter().any(|r| needs_smtputf8(r));
    let eight_bit = prepared.eight_bit
        || input.rest.as_ref().is_some_and(|r| r.eight_bit)
        || matches!(inv.body, Some(args::BodyType::EightBitMime));
    // More recipients than the daemon takes in one transaction: one copy per batch.
    let notices = crate::dropdir::Notices {
        mail: crate::dsn::MailDsn {
            ret: inv.ret,
            envid: inv.envid.clone(),
        },
        notify: inv.notify,
    };
    for batch in recipients.chunks(config.limits.max_recipients.max(1)) {
        let m = Submission {
            notices: &notices,
            sender: &sender,
            recipients: batch,
            head: &prepared.message,
            rest: input.rest.as_ref(),
            eight_bit,
            smtputf8,
        };
        submit_or_drop(config, &m, inv.verbose)?;
    }
    Ok(())
}

/// The envelope sender: `-f` qualified (`-f ""` is the null sender), else the
/// login name qualified.
fn envelope_sender(config: &Config, inv: &Invocation) -> Result<String, Fail> {
    let local = &config.local;
    let sender = match inv.sender.as_deref() {
        Some("") => String::new(),
        Some(s) => local.qualify(s),
        None => local.qualify(&login_name()),
    };
    if !sender.is_empty() {
        validate_mailbox(&sender)
            .map_err(|e| Fail(EX_USAGE, format!("invalid sender address <{sender}>: {e}")))?;
    }
    Ok(sender)
}

/// Reads the message from stdin, refusing one over `max` bytes or with a NUL.
fn read_stdin(config: &Config, inv: &Invocation, max: u64) -> Result<input::Input, Fail> {
    let max_line = config.limits.max_line_length;
    input::read_spilling(std::io::stdin().lock(), inv.ignore_dots, max, max_line).map_err(|e| {
        match e {
            InputError::TooLarge { limit } => Fail(
                EX_DATAERR,
                format!("message is larger than the limit of {limit} bytes; nothing was sent"),
            ),
            InputError::Nul => Fail(
                EX_DATAERR,
                "message contains NUL bytes; nothing was sent".into(),
            ),
            InputError::LineTooLong { limit } => Fail(
                EX_DATAERR,
                format!("message has a line longer than {limit} bytes; nothing was sent"),
            ),
            InputError::Spill(e) => {
                let full = matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                );
                let code = if full { EX_TEMPFAIL } else { EX_CANTCREAT };
                Fail(code, format!("{}; nothing was sent", InputError::Spill(e)))
            }
            InputError::Io(e) => Fail(EX_IOERR, format!("reading the message: {e}")),
        }
    })
}

/// Completes the message read from stdin (see [`message::prepare`]).
fn prepare_message(
    config: &Config,
    inv: &Invocation,
    sender: &str,
    raw: &[u8],
) -> Result<message::Prepared, Fail> {
    let local = &config.local;
    let unique = format!(
        "{}.{}.{:x}",
        crate::clock::unix_now(),
        std::process::id(),
        nanos()
    );
    let qualify = |a: &str| local.qualify(a);
    let opts = PrepareOptions {
        extract_recipients: inv.extract_recipients,
        cli_recipients: &inv.recipients,
        sender,
        full_name: inv.full_name.as_deref(),
        hostname: &config.hostname,
        now: SystemTime::now(),
        unique: &unique,
        qualify: &qualify,
        keep_local_recipients: true,
    };
    message::prepare(raw, &opts).map_err(|e| match e {
        PrepareError::NoRecipients => Fail(
            EX_USAGE,
            "no recipients: give them on the command line or use -t".into(),
        ),
        other => Fail(EX_DATAERR, other.to_string()),
    })
}

/// Refuses a completed message the daemon would refuse: the added fields can
/// take it over the size limit.
fn check_limits(config: &Config, message: &[u8], rest: Option<&input::Rest>) -> Result<(), Fail> {
    let max = config.limits.max_message_size;
    if message.len() as u64 + rest.map_or(0, |r| r.len) > max {
        return Err(Fail(
            EX_DATAERR,
            format!("message is larger than the limit of {max} bytes; nothing was sent"),
        ));
    }
    // The daemon refuses such a line at the end of DATA; refuse it here too, so
    // that the drop directory does not take it while the daemon is down.
    let max_line = config.limits.max_line_length;
    if crate::dropdir::line_too_long(message, max_line)
        || rest.is_some_and(|r| r.longest_line > max_line)
    {
        return Err(Fail(
            EX_DATAERR,
            format!("message has a line longer than {max_line} bytes; nothing was sent"),
        ));
    }
    Ok(())
}

/// The recipients qualified and checked, in order.
/// Local names through `/etc/aliases`, `[local.rewrite]` and
/// `admin_address` (see `config::Local::resolve`), each address once.
fn envelope_recipients(config: &Config, recipients: &[String]) -> Result<Vec<String>, Fail> {
    let mut out: Vec<String> = Vec::with_capacity(recipients.len());
    for given in recipients {
        let resolved = config.local.resolve(given).map_err(|e| {
            let code = if e.is_temporary() {
                EX_TEMPFAIL
            } else {
                EX_NOUSER
            };
            Fail(code, format!("recipient <{given}>: {e}; nothing was sent"))
        })?;
        for r in resolved {
            validate_mailbox(&r)
                .map_err(|e| Fail(EX_NOUSER, format!("invalid recipient <{r}>: {e}")))?;
            if !out.iter().any(|o| o.eq_ignore_ascii_case(&r)) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn submit_or_drop(config: &Config, m: &Submission<'_>, verbose: bool) -> Result<(), Fail> {
    let socket = config.local.submit_socket();
    match submit::submit(&socket, m, verbose) {
        Ok(id) => {
            if verbose {
                eprintln!("sendmail: queued as {id}");
            }
            Ok(())
        }
        Err(SubmitError::Refused { command, reply }) => {
            let code = match reply.code {
                400..=499 => EX_TEMPFAIL,
                552 => EX_DATAERR,
                _ if command == "RCPT TO" => EX_NOUSER,
                _ if command == "MAIL FROM" => EX_USAGE,
                _ => EX_DATAERR,
            };
            Err(Fail(code, format!("refused at {command}: {reply}")))
        }
        Err(e @ SubmitError::Unreadable(_)) => {
            Err(Fail(EX_IOERR, format!("{e}; nothing was sent")))
        }
        Err(SubmitError::Unreachable(why)) => {
            let dir = &config.local.drop_dir;
            drop_message(dir, m).map_err(|e| {
                Fail(
                    EX_CANTCREAT,
                    format!("the daemon is not reachable ({why}) and the drop directory is not writable: {e}"),
                )
            })?;
            if verbose {
                eprintln!(
                    "sendmail: the daemon is not reachable ({why}); message left in {} for pickup",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

fn drop_message(dir: &Path, m: &Submission<'_>) -> Result<PathBuf, crate::dropdir::DropError> {
    let mut message = m
        .message()
        .map_err(|source| crate::dropdir::DropError::Io {
            dir: dir.display().to_string(),
            source,
        })?;
    crate::dropdir::write(dir, m.sender, m.recipients, m.notices, &mut message)
}

fn nanos() -> u32 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
