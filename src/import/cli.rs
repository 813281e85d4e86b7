//! The `smarthost import` command line. It lives here rather than in main.rs
//! so the binary only has to hand it over.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::exim::RetryFrom;
use super::{ImportError, Plan};
use crate::sysexits::{EX_CANTCREAT, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Translate Postfix's smarthost settings (main.cf and its postmap files).
    ///
    /// Reads relayhost, sender_dependent_relayhost_maps, smtp_sasl_password_maps
    /// and their source files, the smtp_tls_* settings, maximal_queue_lifetime,
    /// myhostname, myorigin, alias_maps and smtp_generic_maps; reports what it
    /// cannot translate.
    Postfix {
        /// The Postfix configuration directory.
        #[arg(default_value = "/etc/postfix")]
        dir: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Translate an exim smart-hosts lookup file (and a retry rule, and the
    /// local names of the exim configuration).
    ///
    /// Lines like `domain: host=name::port helo=name user=login
    /// password=...` or `oauth=/path/to/credential/socket`.
    Exim {
        /// The lookup file the smarthost router searches by sender domain.
        file: PathBuf,
        /// The retry rule to use, as exim writes it: "F,2h,15m; G,16h,1h,1.5; F,4d,6h".
        #[arg(long, conflicts_with = "retry_file")]
        retry: Option<String>,
        /// Read this exim configuration: the `* *` line of its `begin retry`
        /// section becomes the retry schedule; its qualify_domain, aliases
        /// router and `begin rewrite` rules for senders carry over to [local].
        #[arg(long)]
        retry_file: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(clap::Args)]
pub struct Output {
    /// Where each route's password goes, as `<route>.password` (mode 0600).
    #[arg(long, default_value = "/etc/smarthost/secrets")]
    secrets_dir: PathBuf,
    /// Write the configuration to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Replace secret files (and the output file) that exist already.
    #[arg(long)]
    force: bool,
}

/// Runs the command; returns the exit code. The configuration goes to stdout
/// (or `--output`), everything else to stderr, and no password to either.
pub fn run(command: Command) -> u8 {
    let (plan, out) = match command {
        Command::Postfix { dir, out } => (super::postfix::import(&dir), out),
        Command::Exim {
            file,
            retry,
            retry_file,
            out,
        } => {
            let from = match (retry, retry_file) {
                (Some(r), _) => Some(RetryFrom::Rules(r)),
                (None, Some(f)) => Some(RetryFrom::Config(f)),
                (None, None) => None,
            };
            (super::exim::import(&file, from.as_ref()), out)
        }
    };
    match plan.and_then(|p| finish(&p, &out)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("smarthost import: {e}");
            match e {
                ImportError::Read { .. } => EX_NOINPUT,
                ImportError::Exists(_) => EX_CANTCREAT,
                ImportError::Write { .. } => EX_IOERR,
                ImportError::Unsafe(_) => EX_NOPERM,
                ImportError::Nothing(_) | ImportError::Retry(_) => EX_DATAERR,
            }
        }
    }
}

fn finish(plan: &Plan, out: &Output) -> Result<(), ImportError> {
    // Config files name secrets by absolute path: the config may be moved.
    let secrets_dir =
        std::path::absolute(&out.secrets_dir).map_err(|source| ImportError::Write {
            path: out.secrets_dir.display().to_string(),
            source,
        })?;
    let rendered = plan.render(&secrets_dir, std::time::SystemTime::now());
    super::write(&rendered, out.output.as_deref(), out.force)?;
    if out.output.is_none() {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(rendered.config.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|source| ImportError::Write {
                path: "standard output".into(),
                source,
            })?;
    }
    let mut err = std::io::stderr().lock();
    for s in &rendered.secrets {
        let _ = writeln!(
            err,
            "wrote {} (mode 0600{})",
            s.path.display(),
            owner(&s.path)
        );
    }
    if let Some(o) = &out.output {
        let _ = writeln!(err, "wrote {}", o.display());
    }
    if let Some(hint) = readable_hint(&rendered, &secrets_dir) {
        let _ = writeln!(err, "{hint}");
    }
    for n in &rendered.notes {
        let _ = writeln!(err, "note: {n}");
    }
    if rendered.untranslated.is_empty() {
        let _ = writeln!(err, "everything relevant was translated");
    } else {
        let _ = writeln!(err, "NOT TRANSLATED ({}):", rendered.untranslated.len());
        for u in &rendered.untranslated {
            let _ = writeln!(err, "  {u}");
        }
    }
    let shown = out
        .output
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<file>".into());
    let _ = writeln!(
        err,
        "next: review it, then smarthost check --config {shown}"
    );
    Ok(())
}

/// The packaged service runs as `smarthost` and reads its secrets itself: a
/// root-owned secret would stop it at start-up, so say so now.
fn readable_hint(rendered: &super::Rendered, dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let first = rendered.secrets.first()?;
    let root_owned = std::fs::metadata(&first.path).ok()?.uid() == 0;
    let daemon = nix::unistd::User::from_name("smarthost").ok()??;
    root_owned.then(|| {
        format!(
            "note: the secrets belong to root; the service runs as {0}: chown -R {0}: {1} (or load them with LoadCredential=, see README)",
            daemon.name,
            dir.display()
        )
    })
}

/// ", owner NAME": the daemon's user must be able to read its secrets.
fn owner(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return String::new();
    };
    let uid = nix::unistd::Uid::from_raw(meta.uid());
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!(", owner {}", u.name),
        _ => format!(", owner uid {uid}"),
    }
}
