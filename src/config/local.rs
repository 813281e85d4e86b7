//! `[local]`: how local programs reach the daemon (the `sendmail` command, the
//! queue commands) and how local user names become real addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use std::sync::Arc;

use super::Validator;
use crate::local::{AliasError, Aliases, Target};
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
    aliases: Option<PathBuf>,
    mailname: Option<PathBuf>,
    admin_address: Option<Spanned<String>>,
    #[serde(default)]
    generic: BTreeMap<String, Spanned<String>>,
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
    /// aliases(5), read at load and reload (default `/etc/aliases`); a file
    /// that cannot be used is kept as its error, which mail for local names
    /// then gets (temporarily), rather than stopping the relay.
    pub aliases_path: PathBuf,
    pub aliases: Arc<Result<Aliases, AliasError>>,
    /// The local domain when `sender_domain` is not set (default
    /// `/etc/mailname`), if the file exists.
    pub mailname_path: PathBuf,
    /// Where mail for a local name without an alias goes (nullmailer's
    /// `adminaddr`); None: to `name@<sender_domain>`.
    pub admin_address: Option<String>,
    /// Sender addresses mapped as mail leaves (`smtp_generic_maps`).
    pub generic: crate::local::Generic,
    sender_domain_given: bool,
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

    /// The local name in `address` (`root`, `root@<hostname>`,
    /// `root@localhost`), or None for an address elsewhere.
    fn local_name<'a>(&self, address: &'a str) -> Option<&'a str> {
        let user = match address.rsplit_once('@') {
            None => address,
            Some((user, domain)) => {
                let d = domain.to_ascii_lowercase();
                let local = d == self.hostname.to_ascii_lowercase()
                    || d == "localhost"
                    || d == "localhost.localdomain";
                local.then_some(user)?
            }
        };
        (!user.is_empty()).then_some(user)
    }

    /// Maps a local name to a real address, aliases aside: the rewrite
    /// table first, else `name@sender_domain`. For senders (a sender is
    /// not an alias). Addresses in other domains are returned unchanged.
    pub fn qualify(&self, address: &str) -> String {
        let Some(user) = self.local_name(address) else {
            return address.to_string();
        };
        match self.rewrite.get(&user.to_ascii_lowercase()) {
            Some(real) => real.clone(),
            None => format!("{user}@{}", self.sender_domain),
        }
    }

    /// Where mail for a recipient goes: a local name through
    /// `/etc/aliases`, each name left through the rewrite table, else
    /// `admin_address`, else `name@sender_domain`; an address elsewhere as
    /// it is. Idempotent: what it returns resolves to itself.
    pub fn resolve(&self, address: &str) -> Result<Vec<String>, AliasError> {
        let Some(user) = self.local_name(address) else {
            return Ok(vec![address.to_string()]);
        };
        let aliases = match self.aliases.as_ref() {
            Ok(a) => a,
            Err(e) => return Err(e.clone()),
        };
        let mut out: Vec<String> = Vec::new();
        for target in aliases.expand(user)? {
            let address = match target {
                Target::Address(a) => a,
                Target::Name(n) => match self.rewrite.get(&n.to_ascii_lowercase()) {
                    Some(real) => real.clone(),
                    None => match &self.admin_address {
                        Some(admin) => admin.clone(),
                        None => format!("{n}@{}", self.sender_domain),
                    },
                },
                Target::Unsupported(_) => continue,
            };
            if !out.iter().any(|a| a.eq_ignore_ascii_case(&address)) {
                out.push(address);
            }
        }
        Ok(out)
    }

    /// Reads `/etc/mailname` (when `sender_domain` is not set) and
    /// `/etc/aliases`, or the files configured instead. An unusable mailname
    /// is an error (every sender would be wrong); unusable aliases are kept
    /// as their error (see [`Local::aliases`]).
    pub fn load_names(&mut self) -> Result<(), AliasError> {
        if !self.sender_domain_given {
            match std::fs::read_to_string(&self.mailname_path) {
                Ok(text) => {
                    let domain = text.trim().to_string();
                    if validate_mailbox(&format!("postmaster@{domain}")).is_err() {
                        return Err(AliasError::Unreadable {
                            file: self.mailname_path.display().to_string(),
                            reason: format!("{domain:?} is not a domain"),
                        });
                    }
                    self.sender_domain = domain;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(AliasError::Unreadable {
                        file: self.mailname_path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        self.aliases = Arc::new(Aliases::load(&self.aliases_path));
        Ok(())
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
        let rewrite = self.rewrite(raw.rewrite);
        let history = self.duration(&raw.history, Duration::from_secs(7 * 86400));
        let admin_address = raw.admin_address.as_ref().and_then(|a| {
            let address = a.get_ref().trim();
            let ok = address.contains('@') && validate_mailbox(address).is_ok();
            if !ok {
                self.problem(
                    Some(a.span()),
                    format!("local.admin_address {address:?} is not a valid address"),
                );
            }
            ok.then(|| address.to_string())
        });
        let generic = self.generic(raw.generic);
        Local {
            socket_dir: base.join(
                raw.socket_dir
                    .unwrap_or_else(|| PathBuf::from("/run/smarthost")),
            ),
            control_group: raw.control_group,
            admin_group: raw.admin_group,
            // Without `..`: the drop directory is opened through safe_fs,
            // which follows no `..` (conf/dev.toml's is `../target/...`).
            drop_dir: lexical(
                &base.join(
                    raw.drop_dir
                        .unwrap_or_else(|| PathBuf::from("/var/lib/smarthost/drop")),
                ),
            ),
            sender_domain,
            rewrite,
            history,
            history_max: raw.history_max.unwrap_or(50_000),
            aliases_path: raw
                .aliases
                .map_or_else(crate::local::aliases::default_path, |p| base.join(p)),
            aliases: Arc::new(Ok(Aliases::default())),
            mailname_path: base.join(
                raw.mailname
                    .unwrap_or_else(|| PathBuf::from("/etc/mailname")),
            ),
            admin_address,
            generic,
            sender_domain_given: raw.sender_domain.is_some(),
            hostname: hostname.to_string(),
        }
    }
}

/// `path` with each `..` taking away the component before it. Done on the
/// path as written: `conf/../target/dev-drop` is `target/dev-drop` as the
/// operator meant it (the daemon makes its configuration path canonical
/// first, so no link in the configuration's own directory is skipped).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Validator<'_> {
    /// `[local.rewrite]`: local user name = address.
    fn rewrite(&mut self, raw: BTreeMap<String, Spanned<String>>) -> BTreeMap<String, String> {
        let mut rewrite = BTreeMap::new();
        for (user, address) in raw {
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
        rewrite
    }

    /// `[local.generic]`: `user@domain` or `@domain` = an address or `@domain`.
    fn generic(&mut self, raw: BTreeMap<String, Spanned<String>>) -> crate::local::Generic {
        let mut generic = crate::local::Generic::default();
        let usable = |s: &str| match s.strip_prefix('@') {
            Some(domain) => validate_mailbox(&format!("postmaster@{domain}")).is_ok(),
            None => s.contains('@') && validate_mailbox(s).is_ok(),
        };
        for (key, value) in raw {
            let to = value.get_ref().trim();
            if !usable(key.trim()) {
                self.problem(
                    Some(value.span()),
                    format!("local.generic: {key:?} must be user@domain or @domain"),
                );
            } else if !usable(to) {
                self.problem(
                    Some(value.span()),
                    format!("local.generic.{key:?}: {to:?} must be an address or @domain"),
                );
            } else {
                generic.insert(&key, to);
            }
        }
        generic
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

    #[test]
    fn drop_dir_loses_its_dot_dots() {
        use super::lexical;
        assert_eq!(
            lexical(Path::new("conf/../target/dev-drop")),
            Path::new("target/dev-drop")
        );
        assert_eq!(lexical(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(lexical(Path::new("../x")), Path::new("../x"));
    }

    #[test]
    fn resolve_goes_through_aliases_rewrite_and_admin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("aliases"),
            "root: ops, x@example.org\nops: ops\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("mailname"), "mail.example.com\n").unwrap();
        let text = format!(
            "{BASE}[local]\naliases = \"aliases\"\nmailname = \"mailname\"\n\
             admin_address = \"admin@example.com\"\n[local.rewrite]\nops = \"ops@example.com\"\n"
        );
        let mut c = Config::parse(&text, "t.toml", dir.path()).unwrap();
        c.local.load_names().unwrap();
        let l = &c.local;
        assert_eq!(l.sender_domain, "mail.example.com");
        assert_eq!(
            l.resolve("root@localhost").unwrap(),
            ["ops@example.com", "x@example.org"]
        );
        assert_eq!(l.resolve("www-data").unwrap(), ["admin@example.com"]);
        assert_eq!(l.resolve("a@example.net").unwrap(), ["a@example.net"]);
        assert_eq!(l.qualify("cron"), "cron@mail.example.com");
    }

    #[test]
    fn a_bad_mailname_or_generic_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mailname"), "not a domain\n").unwrap();
        let text = format!("{BASE}[local]\nmailname = \"mailname\"\n");
        let mut c = Config::parse(&text, "t.toml", dir.path()).unwrap();
        assert!(c.local.load_names().is_err());
        let bad = format!("{BASE}[local.generic]\n\"www-data\" = \"a@example.com\"\n\"@h.lan\" = \"not an address\"\n");
        let err = Config::parse(&bad, "t.toml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be user@domain or @domain"), "{err}");
        assert!(err.contains("must be an address or @domain"), "{err}");
        let good = format!("{BASE}[local.generic]\n\"@h.lan\" = \"@example.com\"\n");
        let c = Config::parse(&good, "t.toml", Path::new("/")).unwrap();
        assert_eq!(c.local.generic.sender("w@H.lan"), "w@example.com");
    }
}
