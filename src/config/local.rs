//! `[local]`: how local programs reach the daemon (the `sendmail` command, the
//! queue commands) and how local user names become real addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use crate::smtp::address::validate_mailbox;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocal {
    socket_dir: Option<PathBuf>,
    control_group: Option<String>,
    admin_group: Option<String>,
    drop_dir: Option<PathBuf>,
    sender_domain: Option<Spanned<String>>,
    history: Option<Spanned<String>>,
    history_max: Option<usize>,
    #[serde(default)]
    rewrite: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct Local {
    /// Holds `submit.sock` (any local user may submit, as anyone may connect to
    /// 127.0.0.1:25), `control.sock` (looking at the queue, restricted by
    /// group) and `admin.sock` (acting on mail, headers, reload and tokens).
    pub socket_dir: PathBuf,
    /// The group that may use the control socket; None keeps the daemon's group.
    pub control_group: Option<String>,
    /// The group that may use the admin socket besides root and the daemon's
    /// user; None: nobody else.
    pub admin_group: Option<String>,
    /// Where `sendmail` leaves messages while the daemon is not running.
    pub drop_dir: PathBuf,
    /// Domain for local user names: `www-data` becomes `www-data@<sender_domain>`.
    pub sender_domain: String,
    /// Local user name → real address, for envelope and header addresses.
    pub rewrite: BTreeMap<String, String>,
    /// How long finished messages stay findable with `queue find`.
    pub history: Duration,
    /// At most this many finished messages are remembered.
    pub history_max: usize,
    hostname: String,
}

impl Local {
    pub fn submit_socket(&self) -> PathBuf {
        self.socket_dir.join("submit.sock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.socket_dir.join("control.sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.socket_dir.join("admin.sock")
    }

    /// Who may use the socket for `access`, for a refusal to name.
    pub fn who_may(&self, access: crate::control::Access) -> String {
        use crate::control::Access;
        match (access, &self.control_group, &self.admin_group) {
            (Access::Read, Some(g), _) => {
                format!("root, the daemon's user or group {g} (control_group)")
            }
            (Access::Read, None, _) => {
                "root, the daemon's user or the daemon's group (control_group)".into()
            }
            (Access::Admin, _, Some(g)) => {
                format!("root, the daemon's user or group {g} (admin_group)")
            }
            (Access::Admin, _, None) => {
                "root or the daemon's user (set admin_group to let a group in)".into()
            }
        }
    }

    /// Maps a local name (`root`, `root@<hostname>`, `root@localhost`) to a real
    /// address: the rewrite table first, else `name@sender_domain`. Addresses in
    /// other domains are returned unchanged.
    pub fn qualify(&self, address: &str) -> String {
        let (user, local) = match address.rsplit_once('@') {
            None => (address, true),
            Some((user, domain)) => {
                let d = domain.to_ascii_lowercase();
                let local = d == self.hostname.to_ascii_lowercase()
                    || d == "localhost"
                    || d == "localhost.localdomain";
                (user, local)
            }
        };
        if !local || user.is_empty() {
            return address.to_string();
        }
        match self.rewrite.get(&user.to_ascii_lowercase()) {
            Some(real) => real.clone(),
            None => format!("{user}@{}", self.sender_domain),
        }
    }
}

impl Validator<'_> {
    pub(super) fn local(&mut self, raw: RawLocal, base: &Path, hostname: &str) -> Local {
        let sender_domain = match &raw.sender_domain {
            None => hostname.to_string(),
            Some(d) => {
                let domain = d.get_ref().trim().trim_start_matches('@').to_string();
                if validate_mailbox(&format!("postmaster@{domain}")).is_err() {
                    self.problem(
                        Some(d.span()),
                        format!("local.sender_domain {:?} is not a domain", d.get_ref()),
                    );
                }
                domain
            }
        };
        let mut rewrite = BTreeMap::new();
        for (user, address) in raw.rewrite {
            let target = address.get_ref().trim();
            if user.is_empty() || user.contains('@') {
                self.problem(
                    Some(address.span()),
                    format!("local.rewrite: {user:?} must be a local user name, without @"),
                );
            } else if !target.contains('@') || validate_mailbox(target).is_err() {
                self.problem(
                    Some(address.span()),
                    format!("local.rewrite.{user}: {target:?} is not a valid address"),
                );
            } else {
                rewrite.insert(user.to_ascii_lowercase(), target.to_string());
            }
        }
        let history = self.duration(&raw.history, Duration::from_secs(7 * 86400));
        Local {
            socket_dir: base.join(
                raw.socket_dir
                    .unwrap_or_else(|| PathBuf::from("/run/smarthost")),
            ),
            control_group: raw.control_group,
            admin_group: raw.admin_group,
            drop_dir: base.join(
                raw.drop_dir
                    .unwrap_or_else(|| PathBuf::from("/var/lib/smarthost/drop")),
            ),
            sender_domain,
            rewrite,
            history,
            history_max: raw.history_max.unwrap_or(50_000),
            hostname: hostname.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "hostname = \"web1.example.com\"\n[[route]]\nname = \"c\"\ntype = \"directory\"\npath = \"/tmp/x\"\n[routing]\ndefault = \"c\"\n";

    #[test]
    fn qualify_local_names() {
        let text = format!(
            "{BASE}[local]\nsender_domain = \"example.com\"\nsocket_dir = \"run\"\n[local.rewrite]\nroot = \"ops@example.com\"\n"
        );
        let c = Config::parse(&text, "t.toml", Path::new("/etc/smarthost")).unwrap();
        let l = &c.local;
        assert_eq!(l.qualify("root"), "ops@example.com");
        assert_eq!(l.qualify("ROOT@web1.example.com"), "ops@example.com");
        assert_eq!(l.qualify("root@localhost"), "ops@example.com");
        assert_eq!(l.qualify("www-data"), "www-data@example.com");
        assert_eq!(l.qualify("root@other.example"), "root@other.example");
        assert_eq!(
            l.submit_socket(),
            Path::new("/etc/smarthost/run/submit.sock")
        );
    }

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse(BASE, "t.toml", Path::new("/")).unwrap();
        assert_eq!(c.local.sender_domain, "web1.example.com");
        assert_eq!(c.local.qualify("cron"), "cron@web1.example.com");
        assert_eq!(c.local.drop_dir, Path::new("/var/lib/smarthost/drop"));
        let bad =
            format!("{BASE}[local.rewrite]\nroot = \"not an address\"\n\"a@b\" = \"x@y.z\"\n");
        let err = Config::parse(&bad, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("local.rewrite.root"), "{err}");
        assert!(err.contains("must be a local user name"), "{err}");
    }
}
