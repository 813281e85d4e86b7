//! The `smarthost` command: `serve` runs the relay; `check` and `route` inspect a
//! configuration without touching the queue; `queue` talks to the running daemon.
//! Invoked as `sendmail` or `mailq` (a link or a copy), it is those commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use smarthost::config::{self, Config};

use smarthost::control::client::{self, ClientError, Command};
use smarthost::control::{Action, ListFilter, Selection};
use smarthost::sysexits::*;

const CONFIG_HELP: &str = "/etc/smarthost/smarthost.toml";

#[derive(Parser)]
#[command(
    name = "smarthost",
    version,
    about = "A small, durable mail relay to upstream smarthosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: listen, queue, deliver.
    Serve {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
        /// Log lines as Postfix-style `key=value` text or as JSON objects.
        #[arg(long, env = "SMARTHOST_LOG_FORMAT", value_enum, default_value_t)]
        log_format: smarthost::daemon::LogFormat,
    },
    /// Validate a configuration and print its route table (never its secrets).
    Check {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Show which route a sender's mail takes, and which table entry decided it.
    Route {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
        /// The envelope sender, e.g. app@example.com ("" or "<>" for the null sender).
        sender: String,
    },
    /// Make the running daemon re-read its configuration (as SIGHUP does); a
    /// configuration that fails validation is refused and the old one stays.
    Reload {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Look at and steer the queue of the running daemon.
    Queue {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
        #[command(subcommand)]
        command: QueueCmd,
    },
    /// OAuth2 token sources: sign in once, check them, print a token.
    Oauth {
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
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
        #[arg(long, short, env = "SMARTHOST_CONFIG", default_value = CONFIG_HELP)]
        config: PathBuf,
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
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sendmail { args } => ExitCode::from(smarthost::sendmail::main(args)),
        Cmd::Mailq { args } => ExitCode::from(smarthost::sendmail::mailq(args)),
        Cmd::Queue { config, command } => queue(&config, command),
        Cmd::Reload { config } => control_command(&config, Command::Reload, EX_CONFIG),
        Cmd::Import { command } => ExitCode::from(smarthost::import::cli::run(command)),
        Cmd::Oauth { config, command } => oauth(&config, command),
        Cmd::Check { config } => check(&config),
        Cmd::Route { config, sender } => route(&config, &sender),
        Cmd::Serve { config, log_format } => {
            ExitCode::from(smarthost::daemon::run(&config, log_format))
        }
        Cmd::TestSend {
            config,
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
            print!("{}", config::describe(&c));
            println!("{}: OK", config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `smarthost route SENDER`: which route the sender's mail takes, and why.
fn route(config: &std::path::Path, sender: &str) -> ExitCode {
    match Config::load(config) {
        Ok(c) => {
            let sender = sender.trim_start_matches('<').trim_end_matches('>');
            let m = c.routing.lookup(sender);
            println!(
                "{} -> route {} (decided by {})",
                if sender.is_empty() { "<>" } else { sender },
                m.route,
                m.decided_by
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
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
            println!(
                "salvaged {} record(s) from {} into {}: {} message(s), {} of them damaged; {} record(s) too large left out",
                s.records,
                from.display(),
                to.display(),
                s.messages,
                s.damaged,
                s.too_large
            );
            if let Some(why) = s.stopped {
                println!("the scan stopped early: {why}");
            }
            println!(
                "next: move {} aside, move {} to its place, start the daemon",
                from.display(),
                to.display()
            );
            ExitCode::SUCCESS
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
