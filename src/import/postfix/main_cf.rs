//! Reading main.cf: Postfix's logical lines, the last definition of each
//! parameter, and `$name` expansion.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Param {
    pub(super) raw: String,
    pub(super) line: usize,
}

#[derive(Debug, Default)]
pub(super) struct MainCf {
    /// The last definition of a name wins, as in Postfix.
    pub(super) params: HashMap<String, Param>,
    pub(super) bad_lines: Vec<(usize, String)>,
}

/// Postfix's logical lines: a line starting with whitespace continues the one
/// before; blank lines and lines whose first non-blank is `#` are skipped
/// without ending a logical line. `#` elsewhere is text, not a comment.
/// Returns (first line number, text) pairs and the orphan continuation lines.
pub(super) fn logical_lines(text: &str) -> (Vec<(usize, String)>, Vec<usize>) {
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut orphans = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            match lines.last_mut() {
                Some((_, l)) => {
                    l.push(' ');
                    l.push_str(trimmed);
                }
                None => orphans.push(i + 1),
            }
        } else {
            lines.push((i + 1, raw.trim_end().to_string()));
        }
    }
    (lines, orphans)
}

impl MainCf {
    pub(super) fn parse(text: &str) -> MainCf {
        let mut m = MainCf::default();
        let (lines, orphans) = logical_lines(text);
        for line in orphans {
            m.bad_lines.push((
                line,
                "continuation line with nothing to continue; Postfix ignores it".into(),
            ));
        }
        for (line, l) in lines {
            match l.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    m.params.insert(
                        name.trim().to_string(),
                        Param {
                            raw: value.trim().to_string(),
                            line,
                        },
                    );
                }
                _ => m.bad_lines.push((
                    line,
                    "not `name = value`; Postfix refuses a main.cf with this line".into(),
                )),
            }
        }
        m
    }

    pub(super) fn line(&self, name: &str) -> Option<usize> {
        self.params.get(name).map(|p| p.line)
    }

    /// Whether the parameter is set in main.cf at all.
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }
}

// ---- expansion ---------------------------------------------------------------

/// `$name`, `${name}`, `$(name)`, `${name?text}` (text when name is not empty),
/// `${name:text}` (text when it is), `$$`. Parameters not in main.cf expand to
/// their Postfix default where that matters here, else to nothing, and are
/// collected in `undefined`.
pub(super) struct Expander<'a> {
    pub(super) main: &'a MainCf,
    pub(super) config_directory: String,
    pub(super) undefined: Vec<String>,
}

impl Expander<'_> {
    pub(super) fn value_of(&mut self, name: &str, depth: usize) -> String {
        match self.main.params.get(name) {
            Some(p) => {
                let raw = p.raw.clone();
                self.expand(&raw, depth + 1)
            }
            None if name == "config_directory" => self.config_directory.clone(),
            // `myorigin = $mydomain` is common: Postfix's default is
            // $myhostname without its first label.
            None if name == "mydomain" && self.main.params.contains_key("myhostname") => {
                let host = self.value_of("myhostname", depth + 1);
                match host.split_once('.') {
                    Some((_, domain)) if !domain.is_empty() => domain.to_string(),
                    _ => "localdomain".into(),
                }
            }
            None => {
                if !self.undefined.iter().any(|u| u == name) {
                    self.undefined.push(name.to_string());
                }
                String::new()
            }
        }
    }

    pub(super) fn expand(&mut self, text: &str, depth: usize) -> String {
        // A parameter that refers to itself, directly or not: Postfix gives
        // up too ("recursion"); stop rather than loop.
        if depth > 20 {
            return String::new();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            }
            let close = match after.chars().next() {
                Some('{') => Some('}'),
                Some('(') => Some(')'),
                _ => None,
            };
            if let Some(close) = close {
                let inner_start = &after[1..];
                let Some(end) = matching(inner_start, close) else {
                    // Unbalanced: keep the text as it is.
                    out.push('$');
                    rest = after;
                    continue;
                };
                let group = self.group(&inner_start[..end], depth);
                out.push_str(&group);
                rest = &inner_start[end + 1..];
            } else {
                let name_end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if name_end == 0 {
                    out.push('$');
                    rest = after;
                    continue;
                }
                let value = self.value_of(&after[..name_end], depth);
                out.push_str(&value);
                rest = &after[name_end..];
            }
        }
        out.push_str(rest);
        out
    }

    /// What `${...}` or `$(...)` stands for, given the text between the
    /// brackets: the value, or the conditional text expanded in its turn.
    fn group(&mut self, inner: &str, depth: usize) -> String {
        let name_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_end);
        let value = self.value_of(name, depth);
        let chosen = match op.chars().next() {
            None => Some(value),
            Some('?') => (!value.is_empty()).then(|| unbrace(&op[1..]).to_string()),
            Some(':') => value.is_empty().then(|| unbrace(&op[1..]).to_string()),
            Some(_) => Some(value),
        };
        match chosen {
            Some(t) if !op.is_empty() => self.expand(&t, depth + 1),
            Some(t) => t,
            None => String::new(),
        }
    }
}

/// The index of the `close` that ends a group whose opening was just passed.
pub(super) fn matching(s: &str, close: char) -> Option<usize> {
    let open = if close == '}' { '{' } else { '(' };
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// `{text}` → `text` (Postfix 3.0 allows braces around conditional text).
pub(super) fn unbrace(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(s)
}
