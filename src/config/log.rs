//! `[log]`: where the daemon's log goes besides stderr (the journal).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    syslog: bool,
    syslog_socket: Option<PathBuf>,
    syslog_name: Option<Spanned<String>>,
}

/// Syslog output, facility mail, in Postfix's line shapes (see
/// `daemon::syslog`), for `/var/log/mail.log`, pflogsumm and logwatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// The local syslog socket (`/dev/log`).
    pub socket: PathBuf,
    /// The program name before `/smtpd`, `/smtp`, `/qmgr`...: pflogsumm's
    /// and logwatch's `--syslog_name`.
    pub name: String,
}

impl Validator<'_> {
    pub(super) fn log(&mut self, raw: RawLog, base: &Path) -> Option<SyslogSettings> {
        let name = match &raw.syslog_name {
            None => "smarthost".to_string(),
            Some(n) => {
                let name = n.get_ref().trim();
                // It goes into every syslog line's tag: no spaces, no
                // brackets or colons that would end the tag early.
                let ok = !name.is_empty()
                    && name.len() <= 32
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    self.problem(
                        Some(n.span()),
                        format!("log.syslog_name {name:?}: use 1 to 32 letters, digits, '-', '_' or '.'"),
                    );
                }
                name.to_string()
            }
        };
        raw.syslog.then(|| SyslogSettings {
            socket: raw
                .syslog_socket
                .map_or_else(|| PathBuf::from("/dev/log"), |p| base.join(p)),
            name,
        })
    }
}
