//! TLS and SASL: what `smtp_tls_*` and `smtp_sasl_*` say, and the credentials
//! their tables give each route.

use super::*;

impl Postfix {
    pub(super) fn tls_policy(&mut self) -> TlsPolicy {
        let (level, level_origin) = match self.get("smtp_tls_security_level") {
            Some(l) if !l.is_empty() => (
                l.to_ascii_lowercase(),
                self.origin("smtp_tls_security_level"),
            ),
            // The settings Postfix 2.2 used before security levels.
            _ if self.flag("smtp_enforce_tls") => {
                ("encrypt".into(), self.origin("smtp_enforce_tls"))
            }
            _ if self.flag("smtp_use_tls") => ("may".into(), self.origin("smtp_use_tls")),
            _ => ("none".into(), self.origin("smtp_tls_security_level")),
        };
        let wrapper = self.flag("smtp_tls_wrappermode");
        let mut ca_file = None;
        if let Some(f) = self.get("smtp_tls_CAfile").filter(|f| !f.is_empty()) {
            if SYSTEM_CA_FILES.contains(&f.as_str()) {
                self.plan.note(format!(
                    "smtp_tls_CAfile = {f} is the system's CA bundle, which smarthost uses anyway: no ca_file"
                ));
            } else {
                ca_file = Some(self.resolve(&f));
            }
        }
        if let Some(d) = self.get("smtp_tls_CApath").filter(|d| !d.is_empty()) {
            let d = d.trim_end_matches('/').to_string();
            if !SYSTEM_CA_DIRS.contains(&d.as_str()) {
                let origin = self.origin("smtp_tls_CApath");
                self.plan.untranslated(
                    origin,
                    format!("smtp_tls_CApath = {d}"),
                    "CA directories are not supported: put the certificates in one PEM file and set ca_file",
                );
            }
        }
        TlsPolicy {
            level,
            level_origin,
            wrapper,
            ca_file,
        }
    }

    /// The TLS mode for a route to `hops`, reporting what changes.
    pub(super) fn tls_for(&mut self, policy: &TlsPolicy, hops: &[Nexthop]) -> TlsMode {
        let port = hops.first().map_or(25, |h| h.port);
        if policy.wrapper {
            return TlsMode::Implicit;
        }
        if port == 465 {
            self.plan.note("port 465 speaks only implicit TLS: routes to it use tls = \"tls\" (Postfix needs smtp_tls_wrappermode = yes for it, perhaps set in master.cf)");
            return TlsMode::Implicit;
        }
        let origin = policy.level_origin.clone();
        match policy.level.as_str() {
            "none" => {
                if hops.iter().all(|h| is_loopback(&h.host)) {
                    return TlsMode::None;
                }
                self.plan.untranslated(
                    origin,
                    "smtp_tls_security_level = none",
                    "smarthost never sends mail in clear text to a remote host; routes use starttls",
                );
            }
            "may" => self.plan.note("smtp_tls_security_level = may: smarthost always requires STARTTLS and a valid certificate; it never falls back to clear text"),
            "encrypt" => self.plan.note("smtp_tls_security_level = encrypt: smarthost also verifies the server's certificate"),
            "verify" | "secure" => {}
            "dane" | "dane-only" => self.plan.note(format!(
                "smtp_tls_security_level = {}: TLSA records are not checked; certificates are verified against CA roots",
                policy.level
            )),
            other => self.plan.untranslated(
                origin,
                format!("smtp_tls_security_level = {other}"),
                "not supported; routes use starttls with verified certificates",
            ),
        }
        TlsMode::StartTls
    }

    pub(super) fn sasl(&mut self) -> Option<Sasl> {
        let enabled = self.flag("smtp_sasl_auth_enable");
        if !enabled {
            if self.main.is_set("smtp_sasl_password_maps") {
                let origin = self.origin("smtp_sasl_password_maps");
                self.plan.note(format!(
                    "{origin}: smtp_sasl_password_maps is not used: smtp_sasl_auth_enable is not yes, so Postfix never authenticated, nor does the translation"
                ));
            }
            return None;
        }
        let sender_dependent = self.flag("smtp_sender_dependent_authentication");
        let table = self.table("smtp_sasl_password_maps");
        let mut mechanism = AuthMechanism::Plain;
        let mut unusable = None;
        if let Some(filter) = self.get("smtp_sasl_mechanism_filter") {
            let mechs: Vec<String> = split_list(&filter)
                .iter()
                .map(|m| m.to_ascii_lowercase())
                .collect();
            let origin = self.origin("smtp_sasl_mechanism_filter");
            let has = |name: &str| mechs.iter().any(|m| m == name);
            if mechs.is_empty() || has("plain") {
                // PLAIN is what routes use by default.
            } else if has("login") {
                mechanism = AuthMechanism::Login;
            } else if has("xoauth2") {
                unusable = Some(
                    "with smtp_sasl_mechanism_filter = xoauth2 the \"password\" is an XOAUTH2 plugin's token file: set up a [[token_source]] (README \"OAuth2\"), then smarthost oauth login"
                        .to_string(),
                );
            } else {
                self.plan.untranslated(
                    origin,
                    format!("smtp_sasl_mechanism_filter = {filter}"),
                    "smarthost authenticates with PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER; routes use PLAIN",
                );
            }
        }
        Some(Sasl {
            table,
            sender_dependent,
            mechanism,
            unusable,
        })
    }

    /// The entries of every map a parameter lists, first map first.
    pub(super) fn table(&mut self, param: &str) -> Table {
        let mut table = Table::default();
        let Some(value) = self.get(param) else {
            return table;
        };
        let origin = self.origin(param);
        // The table itself is in the value: never show it, it may hold a
        // password.
        if value.contains('{') {
            self.plan.untranslated(
                origin,
                format!("{param} = inline:{{...}}"),
                "inline: tables are not read; put the entries in a postmap file",
            );
            return table;
        }
        for spec in split_list(&value) {
            let mut rest = spec;
            while let Some(r) = rest.strip_prefix("proxy:") {
                rest = r;
            }
            let Some((kind, name)) = rest.split_once(':') else {
                self.plan.untranslated(
                    origin.clone(),
                    format!("{param} = {spec}"),
                    "not a type:name table",
                );
                continue;
            };
            if !TABLE_TYPES.contains(&kind) {
                // static: holds its result, which may be user:password.
                let shown_spec = if kind == "static" { "static:..." } else { spec };
                self.plan.untranslated(
                    origin.clone(),
                    format!("{param} = {shown_spec}"),
                    format!(
                        "{kind}: tables are not read, only postmap files ({})",
                        TABLE_TYPES.join(":, ") + ":"
                    ),
                );
                continue;
            }
            let path = self.resolve(name);
            let file = shown(&path, &self.dir);
            match read(&path) {
                Ok(text) => self.load_table(&text, &file, &mut table),
                Err(e) => {
                    let why = match kind {
                        "texthash" => e.to_string(),
                        _ => format!(
                            "{e}; if only the indexed file is left, recreate the source with `postmap -s {kind}:{name} > {name}` and import again"
                        ),
                    };
                    self.plan
                        .untranslated(origin.clone(), format!("{param} = {spec}"), why);
                }
            }
        }
        table
    }

    pub(super) fn load_table(&mut self, text: &str, file: &str, table: &mut Table) {
        let (lines, orphans) = logical_lines(text);
        for line in orphans {
            self.plan.untranslated(
                format!("{file}:{line}"),
                "continuation line",
                "nothing to continue; postmap ignores it",
            );
        }
        for (line, l) in lines {
            let origin = format!("{file}:{line}");
            // Never quote the line: its value may be a password.
            let (key, value) = match l.split_once(char::is_whitespace) {
                Some((k, v)) if !v.trim().is_empty() => (k, v.trim()),
                _ => {
                    let key: String = l.split_whitespace().next().unwrap_or("").into();
                    self.plan.untranslated(
                        origin,
                        key,
                        "no value; postmap expects `key whitespace value`",
                    );
                    continue;
                }
            };
            let entry = Entry {
                key: key.to_lowercase(),
                value: value.to_string(),
                origin: origin.clone(),
            };
            if !table.add(entry) {
                self.plan.untranslated(
                    origin,
                    key.to_lowercase(),
                    "duplicate key; postmap keeps the first",
                );
            }
        }
    }

    /// `user:password` from a password map entry.
    pub(super) fn credentials(&mut self, sasl: &Sasl, entry: &Entry) -> Auth {
        if let Some(why) = &sasl.unusable {
            self.plan
                .untranslated(entry.origin.clone(), entry.key.clone(), why.clone());
            return Auth::None;
        }
        match entry.value.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Auth::Password {
                mechanism: sasl.mechanism,
                username: user.to_string(),
                password: Secret::new(password),
            },
            _ => {
                self.plan.untranslated(
                    entry.origin.clone(),
                    entry.key.clone(),
                    "not username:password with both parts; the route gets no credentials",
                );
                Auth::None
            }
        }
    }

    /// The credentials Postfix uses for a relay when no sender entry applies:
    /// the host's entry, then the next-hop's as written.
    pub(super) fn host_credentials(&mut self, sasl: Option<&Sasl>, hops: &[Nexthop]) -> Auth {
        let (Some(sasl), Some(first)) = (sasl, hops.first()) else {
            return Auth::None;
        };
        let entry = sasl
            .table
            .get(&first.host)
            .or_else(|| sasl.table.get(&first.written))
            .cloned();
        match entry {
            Some(e) => self.credentials(sasl, &e),
            None => Auth::None,
        }
    }
}

/// Whether a Postfix protocol list (`!SSLv2, !TLSv1`, `>=TLSv1.2`,
/// `TLSv1.2 TLSv1.3`) allows both TLS 1.2 and 1.3, smarthost's only two: then
/// smarthost is at least as strict and nothing needs saying.
pub(super) fn allows_tls12_and_13(list: &str) -> bool {
    const ORDER: [&str; 6] = ["sslv2", "sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |v: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(v));
    let mut listed = Vec::new();
    let mut excluded = Vec::new();
    let (mut min, mut max) = (0, ORDER.len() - 1);
    for token in split_list(list) {
        if let Some(v) = token.strip_prefix(">=") {
            min = rank(v).unwrap_or(min);
        } else if let Some(v) = token.strip_prefix("<=") {
            max = rank(v).unwrap_or(max);
        } else if let Some(v) = token.strip_prefix('!') {
            excluded.extend(rank(v));
        } else {
            listed.extend(rank(token));
        }
    }
    let allowed = |r: usize| {
        (listed.is_empty() || listed.contains(&r))
            && !excluded.contains(&r)
            && (min..=max).contains(&r)
    };
    allowed(4) && allowed(5)
}
