//! `smarthost import postfix` carries myorigin, alias_maps and
//! smtp_generic_maps over, and the `[local.generic]` table it writes maps
//! every key of the generic file as Postfix does: each key is asked of
//! `postmap -q` on a table built from the same file, and the answer compared
//! with what the imported configuration (parsed by smarthost itself) gives.
//!
//! Postfix's side is generic(5)'s lookup order, computed from postmap's
//! answers: `user@domain`, then `user` when the domain is local, then
//! `@domain`; a result `@other` keeps the user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/import/postfix-local-names"
);
const POSTMAP: &str = "/usr/sbin/postmap";

/// The domains of the fixture's mydestination, where a key without @
/// matches (its $myorigin is in /etc/mailname, unknown to the import).
const LOCAL_SITES: &[&str] = &["web1.host.lan", "localhost.localdomain", "localhost"];

/// A hash: table built by postmap from a copy of the generic file.
struct Postmap {
    dir: tempfile::TempDir,
}

impl Postmap {
    fn build(source: &Path) -> Postmap {
        let dir = tempfile::tempdir().unwrap();
        // postmap wants a main.cf; an empty one keeps the machine's out.
        std::fs::create_dir(dir.path().join("cf")).unwrap();
        std::fs::write(dir.path().join("cf/main.cf"), "").unwrap();
        std::fs::copy(source, dir.path().join("generic")).unwrap();
        let pm = Postmap { dir };
        let out = pm.postmap(&[]);
        assert!(out.status.success(), "postmap: {out:?}");
        pm
    }

    fn postmap(&self, query: &[&str]) -> std::process::Output {
        let table = format!("hash:{}", self.dir.path().join("generic").display());
        Command::new(POSTMAP)
            .arg("-c")
            .arg(self.dir.path().join("cf"))
            .args(query)
            .arg(table)
            .output()
            .expect("run postmap")
    }

    /// `postmap -q key`: the value, or None when the key is not there.
    fn query(&self, key: &str) -> Option<String> {
        let out = self.postmap(&["-q", key]);
        match out.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            Some(1) => None,
            _ => panic!("postmap -q {key}: {out:?}"),
        }
    }

    /// What Postfix's smtp_generic_maps makes of `address`, or None.
    fn generic(&self, address: &str) -> Option<String> {
        let (user, domain) = address.rsplit_once('@')?;
        let local = LOCAL_SITES.contains(&domain.to_ascii_lowercase().as_str());
        let result = self
            .query(address)
            .or_else(|| if local { self.query(user) } else { None })
            .or_else(|| self.query(&format!("@{domain}")))?;
        Some(match result.strip_prefix('@') {
            Some(other) => format!("{user}@{other}"),
            None => result,
        })
    }
}

/// The keys of a postmap source file as written.
fn keys(source: &Path) -> Vec<String> {
    std::fs::read_to_string(source)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Runs the import; returns the configuration text and what it printed.
fn import(secrets: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["import", "postfix", FIXTURE, "--secrets-dir"])
        .arg(secrets)
        .output()
        .expect("run smarthost");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The import's output, parsed by smarthost and as plain TOML.
struct Imported {
    text: String,
    stderr: String,
    config: smarthost::config::Config,
    raw: toml::Table,
}

impl Imported {
    /// The `[local.generic]` value written for a key.
    fn value(&self, key: &str) -> Option<&str> {
        self.raw["local"]["generic"]
            .get(key.to_ascii_lowercase())
            .and_then(|v| v.as_str())
    }

    fn map(&self, address: &str) -> Option<String> {
        self.config.local.generic.map(address)
    }
}

#[test]
fn imported_generic_table_maps_every_key_as_postmap_does() {
    if !common::require(
        "postmap (/usr/sbin/postmap, package postfix)",
        Path::new(POSTMAP).exists(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (text, stderr) = import(&dir.path().join("secrets"));
    let config = smarthost::config::Config::parse(&text, "imported.toml", dir.path())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let raw: toml::Table = toml::from_str(&text).unwrap();
    let imported = Imported {
        text,
        stderr,
        config,
        raw,
    };
    let source = PathBuf::from(FIXTURE).join("generic");
    let postfix = Postmap::build(&source);
    for key in keys(&source) {
        assert_key_maps_as_postfix(&imported, &postfix, &key);
    }
    for address in ["nobody@elsewhere.example", "www-data@example.com"] {
        assert_eq!(imported.map(address), None, "{address}");
        assert_eq!(postfix.generic(address), None, "{address}");
    }
    assert_local_settings(&imported);
}

/// One key of the generic file: what Postfix makes of the addresses it
/// matches, smarthost makes of them too.
fn assert_key_maps_as_postfix(imported: &Imported, postfix: &Postmap, key: &str) {
    let text = &imported.text;
    let addresses: Vec<String> = match key.split_once('@') {
        // @domain: the value itself, and a user of the domain.
        Some(("", _)) => {
            assert_eq!(
                imported.value(key),
                postfix.query(key).as_deref(),
                "{key}\n{text}"
            );
            vec![format!("someone{key}")]
        }
        // user@domain, as written and in other cases.
        Some(_) => {
            assert_eq!(
                imported.value(key),
                postfix.query(key).as_deref(),
                "{key}\n{text}"
            );
            vec![
                key.to_string(),
                key.to_ascii_lowercase(),
                key.to_ascii_uppercase(),
            ]
        }
        // A local name: the user at each local domain; $myorigin's is reported.
        None => {
            let reported = format!(
                "generic:16: {key}: no @: Postfix matched this user at $myorigin, the domain in /etc/mailname"
            );
            assert!(imported.stderr.contains(&reported), "{}", imported.stderr);
            LOCAL_SITES
                .iter()
                .map(|site| format!("{key}@{site}"))
                .collect()
        }
    };
    for address in addresses {
        let want = postfix.generic(&address);
        assert!(want.is_some(), "{address}: the fixture should map it");
        assert_eq!(imported.map(&address), want, "{address}\n{text}");
    }
}

/// myorigin names a file, alias_maps the aliases: both as on the machine;
/// what smarthost's map does not do is said, in the config and on stderr.
fn assert_local_settings(imported: &Imported) {
    let (text, stderr) = (&imported.text, &imported.stderr);
    assert_eq!(
        imported.config.local.mailname_path,
        Path::new("/etc/mailname")
    );
    assert_eq!(
        imported.config.local.aliases_path,
        Path::new("/etc/aliases")
    );
    assert!(
        text.contains("\nmailname = \"/etc/mailname\"  # myorigin (main.cf:4)\n"),
        "{text}"
    );
    assert!(
        text.contains("\naliases = \"/etc/aliases\"  # alias_maps (main.cf:6)\n"),
        "{text}"
    );
    assert!(!text.contains("sender_domain"), "{text}");
    let note = "smtp_generic_maps: Postfix also rewrote recipients";
    assert!(text.contains(&format!("# Note: {note}")), "{text}");
    assert!(stderr.contains(&format!("note: {note}")), "{stderr}");
}
