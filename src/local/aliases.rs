//! `/etc/aliases` (aliases(5)), as Postfix's local delivery reads it: `name:
//! value, value`, continuation lines that start with whitespace, `#`
//! comments, and `:include:/file` for a list kept elsewhere. A relay has no
//! local mailboxes, programs or files to deliver to: `|command` and
//! `/file` targets are kept so that mail for such an alias is refused with a
//! clear reason, never sent somewhere unexpected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How deep aliases may nest, and how many addresses one may expand to:
/// bounds on a hostile or mistaken file.
const MAX_DEPTH: usize = 20;
const MAX_EXPANSION: usize = 1000;
/// `:include:` files may include others, this deep.
const MAX_INCLUDE_DEPTH: usize = 5;

/// One thing an alias names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local name (no `@`): looked up again.
    Name(String),
    /// A full address: where mail goes.
    Address(String),
    /// `|command`, `/file` or another form the relay does not deliver to.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("alias {alias:?} delivers to {target:?}: smarthost only relays mail, it does not run programs or write files")]
    Unsupported { alias: String, target: String },
    #[error("alias loop: {}", .0.join(" -> "))]
    Loop(Vec<String>),
    #[error("alias {0:?} expands to more than {MAX_EXPANSION} addresses or {MAX_DEPTH} levels")]
    TooBig(String),
}

impl AliasError {
    /// The file itself cannot be used: mail for local names waits (4xx)
    /// until it is fixed, rather than bouncing.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            AliasError::Syntax { .. } | AliasError::Unreadable { .. }
        )
    }
}

/// The parsed file: lower-cased name to its targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, Vec<Target>>,
}

impl Aliases {
    /// Reads `path`; a missing file is no aliases (Debian has one only
    /// once a mail system installed it).
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Aliases::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Aliases::default()),
            Err(e) => Err(unreadable(path, &e)),
        }
    }

    /// Parses the text of `file` (whose directory `:include:` paths are not
    /// relative to: aliases(5) wants them absolute).
    pub fn parse(text: &str, file: &Path) -> Result<Aliases, AliasError> {
        let mut map = BTreeMap::new();
        for (line, entry) in entries(text) {
            let syntax = |reason: &str| AliasError::Syntax {
                file: file.display().to_string(),
                line,
                reason: reason.to_string(),
            };
            let (name, value) = entry
                .split_once(':')
                .ok_or_else(|| syntax("no ':' after the name"))?;
            let name = name.trim().trim_matches('"').to_ascii_lowercase();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(syntax("the alias name is empty or has spaces"));
            }
            let targets = targets(value, 0).map_err(|e| match e {
                AliasError::Syntax { reason, .. } => syntax(&reason),
                other => other,
            })?;
            if targets.is_empty() {
                return Err(syntax("the alias has no targets"));
            }
            map.entry(name).or_insert_with(Vec::new).extend(targets);
        }
        Ok(Aliases { map })
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every alias name, for `newaliases` to check.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The targets of `name`, if it is an alias.
    pub fn get(&self, name: &str) -> Option<&[Target]> {
        self.map.get(&name.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// Expands local `name` to the local names (without an alias of their
    /// own, or naming themselves) and addresses it stands for, in order,
    /// each once.
    pub fn expand(&self, name: &str) -> Result<Vec<Target>, AliasError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut path = Vec::new();
        self.walk(name, &mut path, &mut out, &mut seen)?;
        Ok(out)
    }

    fn walk(
        &self,
        name: &str,
        path: &mut Vec<String>,
        out: &mut Vec<Target>,
        seen: &mut BTreeSet<String>,
    ) -> Result<(), AliasError> {
        let key = name.to_ascii_lowercase();
        let Some(targets) = self.map.get(&key) else {
            push(out, seen, Target::Name(name.to_string()));
            return Ok(());
        };
        if path.contains(&key) {
            let mut cycle = path.clone();
            cycle.push(key);
            return Err(AliasError::Loop(cycle));
        }
        if path.len() >= MAX_DEPTH || out.len() >= MAX_EXPANSION {
            return Err(AliasError::TooBig(path.first().unwrap_or(&key).clone()));
        }
        path.push(key.clone());
        for t in targets {
            match t {
                // `root: root, ops@x`: the name itself, not looked up again.
                Target::Name(n) if n.eq_ignore_ascii_case(&key) => {
                    push(out, seen, Target::Name(n.clone()))
                }
                Target::Name(n) => self.walk(n, path, out, seen)?,
                Target::Address(_) => push(out, seen, t.clone()),
                Target::Unsupported(what) => {
                    return Err(AliasError::Unsupported {
                        alias: key,
                        target: what.clone(),
                    })
                }
            }
        }
        path.pop();
        Ok(())
    }
}

fn push(out: &mut Vec<Target>, seen: &mut BTreeSet<String>, t: Target) {
    let key = match &t {
        Target::Name(n) | Target::Address(n) | Target::Unsupported(n) => n.to_ascii_lowercase(),
    };
    if seen.insert(key) {
        out.push(t);
    }
}

/// Logical entries with their first line numbers: comments and blank lines
/// dropped, continuation lines joined.
fn entries(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, last)) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        out.push((i + 1, line.trim().to_string()));
    }
    out
}

/// The comma-separated targets of a value, `:include:` files read in.
fn targets(value: &str, depth: usize) -> Result<Vec<Target>, AliasError> {
    let mut out = Vec::new();
    for item in split_list(value) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(file) = strip_prefix_ci(item, ":include:") {
            out.extend(include(Path::new(file.trim()), depth)?);
        } else if item.starts_with('|') || item.starts_with('/') || item.starts_with("\"|") {
            out.push(Target::Unsupported(item.to_string()));
        } else if let Some(address) = address_of(item) {
            out.push(address);
        } else {
            return Err(AliasError::Syntax {
                file: String::new(),
                line: 0,
                reason: format!("{item:?} is not a name or an address"),
            });
        }
    }
    Ok(out)
}

fn include(file: &Path, depth: usize) -> Result<Vec<Target>, AliasError> {
    if !file.is_absolute() {
        return Err(AliasError::Syntax {
            file: String::new(),
            line: 0,
            reason: format!(":include:{} must be an absolute path", file.display()),
        });
    }
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(AliasError::Unreadable {
            file: file.display().to_string(),
            reason: format!("included more than {MAX_INCLUDE_DEPTH} deep"),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|e| unreadable(file, &e))?;
    let lines = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    let joined = lines.collect::<Vec<_>>().join(",");
    targets(&joined, depth + 1)
}

/// A name, `user@domain`, or `Name <user@domain>`.
fn address_of(item: &str) -> Option<Target> {
    let item = match (item.find('<'), item.rfind('>')) {
        (Some(a), Some(b)) if a < b => &item[a + 1..b],
        _ => item,
    };
    let item = item.trim().trim_start_matches('\\');
    if item.is_empty() || item.contains(char::is_whitespace) {
        return None;
    }
    if item.contains('@') {
        crate::smtp::address::validate_mailbox(item).ok()?;
        return Some(Target::Address(item.to_string()));
    }
    Some(Target::Name(item.to_string()))
}

/// Splits at commas outside double quotes.
fn split_list(value: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn unreadable(path: &Path, e: &std::io::Error) -> AliasError {
    AliasError::Unreadable {
        file: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Where Debian keeps it.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/aliases")
}

#[cfg(test)]
mod tests;
