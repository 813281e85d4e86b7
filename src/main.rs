//! The `smarthost` command: `serve` runs the relay; `check` and `route` inspect a
//! configuration without touching the queue; `queue` talks to the running daemon.
//! Invoked as `sendmail` or `mailq` (a link or a copy), it is those commands.
//!
//! `--config` may stand before or after any subcommand; a usage error exits 64
//! (EX_USAGE), as sendmail's do; output cut short by its reader (`| head`) ends
//! the command quietly with 0.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use smarthost::config::{self, Config};

use smarthost::control::client::{self, ClientError, Command};
use smarthost::control::{Action, ListFilter, Selection};
use smarthost::sysexits::*;

#[derive(Parser)]
#[command(
    name = "smarthost",
    version,
    about = "A small, durable mail relay to upstream smarthosts"
)]
struct Cli {
    /// The configuration file [default: /etc/smarthost/smarthost.toml]. Before
    /// or after the subcommand (`smarthost queue list --config F`).
    #[arg(
        long,
        short,
        global = true,
        env = "SMARTHOST_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: listen, queue, deliver.
    Serve {
        /// Log lines as Postfix-style `key=value` text or as JSON objects.
        #[arg(long, env = "SMARTHOST_LOG_FORMAT", value_enum, default_value_t)]
        log_format: smarthost::daemon::LogFormat,
    },
    /// Validate a configuration and print its route table (never its secrets).
    Check,
    /// Show which route a sender's mail takes, and which table entry decided it
    /// (exit 64 for something that is not an address).
    Route {
        /// The envelope sender, e.g. app@example.com ("" or "<>" for the null sender).
        sender: String,
    },
    /// Make the running daemon re-read its configuration (as SIGHUP does); a
    /// configuration that fails validation is refused and the old one stays.
    Reload,
    /// Look at and steer the queue of the running daemon.
    Queue {
        #[command(subcommand)]
        command: QueueCmd,
    },
    /// OAuth2 token sources: sign in once, check them, print a token.
    Oauth {
        #[command(subcommand)]
        command: OauthCmd,
    },
    /// Translate a Postfix or exim smarthost setup into a smarthost config.
    Import {
        #[command(subcommand)]
        command: smarthost::import::cli::Command,
    },
    /// Send a test message through a route now, showing the SMTP conversation.
    ///
    /// AUTH data is redacted and nothing is queued. Exit 0 delivered, 75
    /// temporary failure, 77 credentials refused (or `oauth login` needed),
    /// 69 message refused, 64 usage, 78 configuration.
    TestSend {
        /// The route to test (a name from `smarthost check`).
        #[arg(long)]
        route: String,
        /// Where the test message goes.
        #[arg(long)]
        to: String,
        /// Envelope and From: sender. Default: the route's user name if it is
        /// an address, else an address or domain the route table sends through
        /// the route, else postmaster@<hostname>.
        #[arg(long)]
        from: Option<String>,
        /// Default: "smarthost test-send via route R".
        #[arg(long)]
        subject: Option<String>,
    },
    /// The sendmail command (the same as invoking this binary as `sendmail`).
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The mailq command: list the queue (the same as `sendmail -bp`).
    #[command(disable_help_flag = true)]
    Mailq {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FlowArg {
    /// RFC 8628: a code to type on any device's browser.
    Device,
    /// RFC 7636: a browser on this machine (or through `ssh -L`).
    Browser,
}

#[derive(Subcommand)]
enum OauthCmd {
    /// Sign in once and store the refresh token of an `oauth2` token source:
    /// the device-code flow where the provider has one, else a browser with PKCE.
    Login {
        source: String,
        #[arg(long, value_enum)]
        flow: Option<FlowArg>,
        /// Loopback port for the browser flow's redirect (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Whether each token source works now, when its tokens expire, and what
    /// to do about any that does not (exit 75 if any does not work).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print a current access token of a token source, for scripts.
    Token {
        source: String,
        /// The user to ask a socket or HTTP source for (default: the route's).
        #[arg(long)]
        user: Option<String>,
    },
    /// Store a refresh token obtained elsewhere (a login on a workstation,
    /// sasl-xoauth2's token file) as the `oauth2` source's state.
    Import {
        source: String,
        /// A file with the bare refresh token or sasl-xoauth2's JSON; `-`
        /// for standard input.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List queued messages: id, size, arrival, route, sender, and each
    /// recipient still queued with its state, next attempt and last error.
    /// The first line counts the whole queue, at once.
    List {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
        /// Show at most this many messages (the oldest first).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only messages that leave through this route.
        #[arg(long)]
        route: Option<String>,
        /// Only messages in this state.
        #[arg(long, value_enum)]
        state: Option<smarthost::control::ListState>,
        /// Only messages queued at least this long (30m, 2h, 1d).
        #[arg(long, value_name = "AGE", value_parser = age_seconds)]
        older_than: Option<u64>,
    },
    /// Everything about one message: envelope, attempt history, headers.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Attempt now, ignoring the retry schedule (all messages without arguments).
    Flush(Target),
    /// Keep messages queued without trying them until released.
    Hold(Target),
    /// Undo hold; the messages are tried at once.
    Release(Target),
    /// Remove messages without telling the sender.
    Delete(Target),
    /// Give up now and send the sender a non-delivery notification.
    Bounce(Target),
    /// Where is a message? By Message-ID, queue id, or address; searches the
    /// queue and the recently finished messages.
    Find {
        query: String,
        #[arg(long)]
        json: bool,
    },
    /// With the daemon stopped: copy every record still readable from a queue
    /// that cannot be opened into a new queue directory, to put in its place.
    Salvage {
        /// The damaged queue directory (default: queue_path of the config).
        #[arg(long)]
        from: Option<PathBuf>,
        /// A directory that does not exist yet.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(clap::Args)]
struct Target {
    /// Queue ids.
    ids: Vec<String>,
    /// Every message leaving through this route.
    #[arg(long)]
    route: Option<String>,
    /// Every message in the queue.
    #[arg(long)]
    all: bool,
}

impl Target {
    fn selection(self) -> Selection {
        Selection {
            ids: self.ids,
            route: self.route,
            all: self.all,
        }
    }
}

fn main() -> ExitCode {
    let (name, argv) = invoked_as();
    match name.as_str() {
        "sendmail" => return ExitCode::from(smarthost::sendmail::main(argv)),
        "mailq" => return ExitCode::from(smarthost::sendmail::mailq(argv)),
        "newaliases" => {
            let mut args = vec![std::ffi::OsString::from("-bi")];
            args.extend(argv);
            return ExitCode::from(smarthost::sendmail::main(args));
        }
        _ => {}
    }
    // A setgid install exists only so sendmail can write the drop directory;
    // every other command gives that group up before doing anything.
    if smarthost::sendmail::running_setgid() {
        let gid = nix::unistd::getgid();
        if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
            eprintln!("cannot drop the setgid group: {e}");
            return ExitCode::from(EX_OSERR);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    dispatch(cli)
}

/// clap's own exit code for a usage error is 2; ours is sysexits' 64, as
/// `sendmail`'s. `--help` and `--version` stay 0, and like any output they
/// may be cut short by their reader.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { EX_USAGE } else { EX_OK })
}

fn dispatch(cli: Cli) -> ExitCode {
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(smarthost::sendmail::DEFAULT_CONFIG));
    match cli.command {
        Cmd::Sendmail { args } => {
            ExitCode::from(smarthost::sendmail::main(with_config(&cli.config, args)))
        }
        Cmd::Mailq { args } => {
            ExitCode::from(smarthost::sendmail::mailq(with_config(&cli.config, args)))
        }
        Cmd::Queue { command } => queue(&config, command),
        Cmd::Reload => control_command(&config, Command::Reload, EX_CONFIG),
        // Import reads Postfix's or exim's files, not ours: `--config` has
        // nothing to say to it (its output file is `--output`).
        Cmd::Import { command } => ExitCode::from(smarthost::import::cli::run(command)),
        Cmd::Oauth { command } => oauth(&config, command),
        Cmd::Check => check(&config),
        Cmd::Route { sender } => route(&config, &sender),
        Cmd::Serve { log_format } => ExitCode::from(smarthost::daemon::run(&config, log_format)),
        Cmd::TestSend {
            route,
            to,
            from,
            subject,
        } => ExitCode::from(smarthost::testsend::run(
            &config,
            &smarthost::testsend::Options {
                route,
                to,
                from,
                subject,
            },
        )),
    }
}

/// `smarthost --config F sendmail ...` (or `mailq`): the file as sendmail's
/// own `-C F`. The setgid group is already given up on this path, so the
/// choice of file grants nothing.
fn with_config(config: &Option<PathBuf>, args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    match config {
        Some(c) => [std::ffi::OsString::from("-C"), c.clone().into_os_string()]
            .into_iter()
            .chain(args)
            .collect(),
        None => args,
    }
}

/// The name this binary was run as, and its arguments: `smarthost sendmail
/// ...` counts as `sendmail ...`, bypassing clap, which would swallow a `--`
/// that ends sendmail's options.
fn invoked_as() -> (String, Vec<std::ffi::OsString>) {
    let mut argv = std::env::args_os();
    let name = argv
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let rest: Vec<std::ffi::OsString> = argv.collect();
    match rest.first().and_then(|a| a.to_str()) {
        Some(sub @ ("sendmail" | "mailq" | "newaliases"))
            if !matches!(name.as_str(), "sendmail" | "mailq" | "newaliases") =>
        {
            (sub.to_string(), rest.get(1..).unwrap_or_default().to_vec())
        }
        _ => (name, rest),
    }
}

fn oauth(config: &std::path::Path, command: OauthCmd) -> ExitCode {
    use smarthost::oauth::cli::{run, Command};
    let command = match command {
        OauthCmd::Login { source, flow, port } => Command::Login {
            source,
            flow: flow.map(|f| match f {
                FlowArg::Device => smarthost::oauth::login::Flow::Device,
                FlowArg::Browser => smarthost::oauth::login::Flow::Browser,
            }),
            port,
        },
        OauthCmd::Status { json } => Command::Status { json },
        OauthCmd::Token { source, user } => Command::Token { source, user },
        OauthCmd::Import { source, file } => Command::Import { source, file },
    };
    ExitCode::from(run(config, command))
}

/// `smarthost check`: the configuration as understood, or why it is refused.
fn check(config: &std::path::Path) -> ExitCode {
    match Config::load(config) {
        Ok(c) => {
            // Certificates and the passwd-file are read here as the daemon
            // reads them at start: `check` says whether it would start.
            let submission = match smarthost::smtp::submission::check(&c) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let text = format!(
                "{}{submission}{}: OK\n",
                config::describe(&c),
                config.display()
            );
            print_then(&text, ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `smarthost route SENDER`: which route the sender's mail takes, and why.
/// Something that is not an address is a usage error (64), before the
/// configuration is read: the daemon would refuse it at MAIL FROM.
fn route(config: &std::path::Path, sender: &str) -> ExitCode {
    let sender = sender
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(sender);
    if !sender.is_empty() {
        if let Err(e) = smarthost::smtp::address::validate_mailbox(sender) {
            eprintln!(
                "smarthost route: {sender:?} is not an address ({e}); give one like app@example.com, or \"<>\" for the null sender"
            );
            return ExitCode::from(EX_USAGE);
        }
    }
    match Config::load(config) {
        Ok(c) => {
            let m = c.routing.lookup(sender);
            let text = format!(
                "{} -> route {} (decided by {})\n",
                if sender.is_empty() { "<>" } else { sender },
                m.route,
                m.decided_by
            );
            print_then(&text, ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Prints `text` and ends with `done`. A reader that has gone away
/// (`smarthost check | head -1`) is not an error: the command ends quietly
/// with 0, as `queue list` does. Any other write error is 74 (EX_IOERR).
fn print_then(text: &str, done: ExitCode) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => done,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smarthost: standard output: {e}");
            ExitCode::from(EX_IOERR)
        }
    }
}

fn queue(path: &std::path::Path, command: QueueCmd) -> ExitCode {
    if let QueueCmd::Salvage { from, to } = command {
        return salvage(path, from, &to);
    }
    let act = |action, t: Target| Command::Act {
        action,
        selection: t.selection(),
    };
    let command = match command {
        QueueCmd::List {
            json,
            limit,
            route,
            state,
            older_than,
        } => Command::List {
            json,
            filter: ListFilter {
                limit,
                route,
                state,
                older_than,
            },
        },
        QueueCmd::Show { id, json } => Command::Show { id, json },
        QueueCmd::Find { query, json } => Command::Find { query, json },
        QueueCmd::Flush(t) if t.ids.is_empty() && t.route.is_none() => Command::Act {
            action: Action::Flush,
            selection: Selection {
                all: true,
                ..Default::default()
            },
        },
        QueueCmd::Flush(t) => act(Action::Flush, t),
        QueueCmd::Hold(t) => act(Action::Hold, t),
        QueueCmd::Release(t) => act(Action::Release, t),
        QueueCmd::Delete(t) => act(Action::Delete, t),
        QueueCmd::Bounce(t) => act(Action::Bounce, t),
        QueueCmd::Salvage { .. } => return ExitCode::from(EX_SOFTWARE),
    };
    control_command(path, command, EX_DATAERR)
}

/// `queue salvage`: exit 0 with what was copied, 65 if the old queue cannot
/// be read at all, 73 if the new one cannot be made.
fn salvage(config: &std::path::Path, from: Option<PathBuf>, to: &std::path::Path) -> ExitCode {
    use smarthost::spool::salvage::{salvage, SalvageError};
    let from = match from {
        Some(f) => f,
        None => match Config::load_for_client(config) {
            Ok(c) => c.queue_path.clone(),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
    };
    match salvage(&from, to) {
        Ok(s) => {
            let mut text = format!(
                "salvaged {} record(s) from {} into {}: {} message(s), {} of them damaged; {} record(s) too large left out\n",
                s.records,
                from.display(),
                to.display(),
                s.messages,
                s.damaged,
                s.too_large
            );
            if let Some(why) = s.stopped {
                text.push_str(&format!("the scan stopped early: {why}\n"));
            }
            text.push_str(&format!(
                "next: move {} aside, move {} to its place, start the daemon\n",
                from.display(),
                to.display()
            ));
            print_then(&text, ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("smarthost: {e}");
            ExitCode::from(match e {
                SalvageError::Unreadable { .. } => EX_DATAERR,
                SalvageError::TargetExists(_) | SalvageError::Store(_) => EX_CANTCREAT,
            })
        }
    }
}

/// Sends a command to the running daemon over its control socket; `refused` is
/// the exit code when the daemon says no.
fn control_command(path: &std::path::Path, command: Command, refused: u8) -> ExitCode {
    let config = match Config::load_for_client(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut out = std::io::stdout().lock();
    match client::run(&config.local, command, &mut out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `smarthost queue list | head` is not an error.
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smarthost: {e}");
            ExitCode::from(match e {
                ClientError::Unreachable { .. } => EX_UNAVAILABLE,
                ClientError::Denied { .. } => EX_NOPERM,
                ClientError::Failed(_) => refused,
                ClientError::Protocol(_) => EX_PROTOCOL,
                ClientError::Io(_) => EX_IOERR,
            })
        }
    }
}

/// `--older-than`'s age, in exim's notation like the retry rules.
fn age_seconds(value: &str) -> Result<u64, String> {
    smarthost::retry::parse_age(value)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}
