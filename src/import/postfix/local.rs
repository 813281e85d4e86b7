//! Local names: `myorigin`, `alias_maps` and `smtp_generic_maps`, which
//! become `[local]`'s `sender_domain` (or `mailname`), `aliases` and
//! `[local.generic]`.

use super::*;
use crate::import::is_domain;

/// What `myorigin` comes to, for the generic(5) keys without `@`.
enum Myorigin {
    /// A domain main.cf spells out.
    Domain(String),
    /// Known only on the target machine: why, for the report.
    Unknown(String),
}

impl Postfix {
    pub(super) fn local_names(&mut self) {
        let origin = self.myorigin();
        self.alias_maps();
        self.generic_maps(&origin);
    }

    /// A path from main.cf as the target machine names it: the imported
    /// directory, where `$config_directory` expands to, is /etc/postfix there.
    fn target_path(&self, path: &str) -> String {
        match Path::new(path).strip_prefix(&self.dir) {
            Ok(rest) => Path::new(POSTFIX_DIR).join(rest).display().to_string(),
            Err(_) => path.to_string(),
        }
    }

    /// `myorigin`: the domain of unqualified local names.
    fn myorigin(&mut self) -> Myorigin {
        let raw = self.main.params.get("myorigin").map(|p| p.raw.clone());
        let is_default = raw.as_deref().is_none_or(|r| {
            r.is_empty() || matches!(r, "$myhostname" | "${myhostname}" | "$(myhostname)")
        });
        if is_default {
            return self.hostname_origin();
        }
        let value = self.get("myorigin").unwrap_or_default();
        let origin = self.origin("myorigin");
        if value.starts_with('/') {
            // Debian's Postfix reads the domain from the file (the default
            // there is /etc/mailname); smarthost's mailname does the same.
            let path = self.target_path(&value);
            self.plan.local.mailname = Some(Setting {
                value: path.clone(),
                comment: format!("myorigin ({origin})"),
            });
            return Myorigin::Unknown(format!("the domain in {path}"));
        }
        if !is_domain(&value) {
            self.plan.untranslated(
                origin,
                format!("myorigin = {}", short(&value)),
                "not a domain; smarthost uses /etc/mailname, else hostname",
            );
            return Myorigin::Unknown("which is not a domain".into());
        }
        self.plan.local.sender_domain = Some(Setting {
            value: value.clone(),
            comment: format!("myorigin ({origin})"),
        });
        Myorigin::Domain(value)
    }

    /// Postfix's `myorigin` is `$myhostname` by default. smarthost without
    /// `sender_domain` would try /etc/mailname first, which a Debian machine
    /// has even where Postfix never read it: so the host name is written
    /// out, and local names keep the domain they had.
    fn hostname_origin(&mut self) -> Myorigin {
        match self.get("myhostname").filter(|h| is_domain(h)) {
            Some(host) => {
                self.plan.local.sender_domain = Some(Setting {
                    value: host.clone(),
                    comment: "myorigin is $myhostname, Postfix's default".into(),
                });
                Myorigin::Domain(host)
            }
            None => {
                self.plan.note("myorigin and myhostname are not set: Postfix gave local names this machine's host name; smarthost takes the domain in /etc/mailname when that file exists, else the host name");
                Myorigin::Unknown("this machine's host name".into())
            }
        }
    }

    /// `alias_maps`: the first aliases(5) file becomes `aliases`. Unset,
    /// Postfix reads /etc/aliases (and NIS where built in), as smarthost
    /// does by default: nothing to write.
    fn alias_maps(&mut self) {
        let Some(value) = self.get("alias_maps") else {
            return;
        };
        let origin = self.origin("alias_maps");
        if value.contains('{') {
            self.plan.untranslated(
                origin,
                "alias_maps = inline:{...}",
                "inline: tables are not read; smarthost reads one aliases(5) file",
            );
            return;
        }
        if split_list(&value).is_empty() {
            self.plan.untranslated(
                origin.clone(),
                "alias_maps =",
                "empty: Postfix used no aliases; smarthost reads /etc/aliases unless aliases names an empty file",
            );
        }
        for spec in split_list(&value) {
            if let Some(why) = self.alias_map(spec, &origin) {
                self.plan
                    .untranslated(origin.clone(), format!("alias_maps = {spec}"), why);
            }
        }
    }

    /// Takes one map of `alias_maps`, or says why not.
    fn alias_map(&mut self, spec: &str, origin: &str) -> Option<String> {
        let mut rest = spec;
        while let Some(r) = rest.strip_prefix("proxy:") {
            rest = r;
        }
        let Some((kind, name)) = rest.split_once(':') else {
            return Some("not a type:name table".into());
        };
        if kind == "texthash" {
            return Some(
                "texthash: files are in postmap's format, not aliases(5) as smarthost reads them"
                    .into(),
            );
        }
        if !TABLE_TYPES.contains(&kind) {
            return Some(format!(
                "{kind}: tables are not read; smarthost reads one aliases(5) file"
            ));
        }
        if let Some(first) = &self.plan.local.aliases {
            return Some(format!(
                "smarthost reads one aliases file ({}): merge this one's entries into it",
                first.value
            ));
        }
        self.plan.local.aliases = Some(Setting {
            value: self.target_path(name),
            comment: format!("alias_maps ({origin})"),
        });
        None
    }

    /// `smtp_generic_maps`: every entry of its postmap files becomes a
    /// `[local.generic]` entry, in the precedence generic(5) gives them.
    fn generic_maps(&mut self, myorigin: &Myorigin) {
        if !self.main.is_set("smtp_generic_maps") {
            return;
        }
        let table = self.table("smtp_generic_maps");
        let (with_at, bare): (Vec<&Entry>, Vec<&Entry>) =
            table.entries.iter().partition(|e| e.key.contains('@'));
        for e in &with_at {
            let comment = format!("{} {}", e.origin, e.key);
            self.plan.generic(&e.key, &e.value, &e.origin, &comment);
        }
        // After every user@domain key: Postfix looks up user@domain before
        // user, so an exact entry wins over what a bare key comes to.
        if !bare.is_empty() {
            let sites = self.local_sites(myorigin);
            for e in bare {
                self.bare_generic(e, myorigin, &sites);
            }
        }
        if !table.entries.is_empty() {
            self.generic_caveats(&table);
        }
    }

    /// A generic(5) key without `@`: the user at `$myorigin`, or at any
    /// domain of `$mydestination` (or an `$inet_interfaces` address, which
    /// no program sends from). Each such address gets its own entry.
    fn bare_generic(&mut self, e: &Entry, myorigin: &Myorigin, sites: &[String]) {
        if let Myorigin::Unknown(what) = myorigin {
            self.plan.untranslated(
                e.origin.clone(),
                e.key.clone(),
                format!("no @: Postfix matched this user at $myorigin, {what}; add \"{}@<that domain>\" to [local.generic]", e.key),
            );
        }
        for site in sites {
            let key = format!("{}@{site}", e.key);
            if self.plan.has_generic(&key) {
                continue;
            }
            let comment = format!("{} {} (a local name, at {site})", e.origin, e.key);
            self.plan.generic(&key, &e.value, &e.origin, &comment);
        }
    }

    /// The domains a generic(5) key without `@` matches: `$myorigin` when
    /// known, and the domains `$mydestination` spells out; its tables and
    /// files are reported.
    fn local_sites(&mut self, myorigin: &Myorigin) -> Vec<String> {
        let mut sites: Vec<String> = Vec::new();
        if let Myorigin::Domain(d) = myorigin {
            sites.push(d.to_ascii_lowercase());
        }
        let list = match self.main.is_set("mydestination") {
            true => self.get("mydestination").unwrap_or_default(),
            false => self.quiet_expand("$myhostname, localhost.$mydomain, localhost"),
        };
        let origin = self.origin("mydestination");
        for item in split_list(&list) {
            let item = item.to_ascii_lowercase();
            if item.contains(':') || item.starts_with('/') {
                self.plan.untranslated(
                    origin.clone(),
                    format!("mydestination = {}", short(&item)),
                    "smtp_generic_maps keys without @ also matched users of the domains in this table; they are not mapped",
                );
            } else if is_domain(&item) && !item.ends_with('.') && !sites.contains(&item) {
                sites.push(item);
            }
        }
        sites
    }

    /// Expands a default value, where a parameter main.cf does not set
    /// just leaves its part empty (and so no domain).
    fn quiet_expand(&self, text: &str) -> String {
        let mut x = Expander {
            main: &self.main,
            config_directory: self.dir.display().to_string(),
            undefined: Vec::new(),
        };
        x.expand(text, 0)
    }

    /// What smarthost's map does differently from Postfix's.
    fn generic_caveats(&mut self, table: &Table) {
        self.plan.note("smtp_generic_maps: Postfix also rewrote recipients and the addresses in To, Cc and the other headers; smarthost maps the envelope sender and From, Sender and Reply-To only");
        let exact = table.entries.iter().any(|e| !e.key.starts_with('@'));
        let delimiter = self.get("recipient_delimiter").filter(|d| !d.is_empty());
        if let (true, Some(d)) = (exact, delimiter) {
            let origin = self.origin("recipient_delimiter");
            self.plan.untranslated(
                origin,
                format!("recipient_delimiter = {d}"),
                "smtp_generic_maps also matched user+extension@domain to a user@domain entry; [local.generic] matches addresses exactly",
            );
        }
    }
}
