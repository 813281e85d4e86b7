//! An exim configuration as exim itself reads it before anything else:
//! macros (`NAME = value`, which Debian's update-exim4.conf writes as
//! `NAME=value`), `.ifdef`/`.ifndef`/`.elifdef`/`.else`/`.endif` blocks, and
//! the `begin` sections. Debian's generated configuration leans on all of it:
//! `qualify_domain = ETC_MAILNAME` inside `.ifndef MAIN_QUALIFY_DOMAIN`.

use super::exim_config_lines;

/// One line of a section, macros replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConfLine {
    pub(super) line: usize,
    /// "" for the main section, before the first `begin`.
    pub(super) section: String,
    pub(super) text: String,
}

#[derive(Debug, Default)]
pub(super) struct Conf {
    pub(super) lines: Vec<ConfLine>,
    /// `.include` lines in effect: their files are not read.
    pub(super) includes: Vec<usize>,
}

/// One `.ifdef` level: whether its lines are in effect, and whether a
/// branch of it was taken already (for `.elifdef` and `.else`).
struct Branch {
    active: bool,
    taken: bool,
}

/// A router of the `begin routers` section.
#[derive(Debug, Default)]
pub(super) struct Router {
    pub(super) name: String,
    /// (line, name, value) as written, in order.
    pub(super) options: Vec<(usize, String, String)>,
}

impl Router {
    /// The last setting of an option, with its line.
    pub(super) fn option(&self, name: &str) -> Option<(usize, &str)> {
        self.options
            .iter()
            .rev()
            .find(|(_, n, _)| n == name)
            .map(|(l, _, v)| (*l, v.as_str()))
    }
}

impl Conf {
    pub(super) fn parse(text: &str) -> Conf {
        let mut conf = Conf::default();
        let mut macros: Vec<(String, String)> = Vec::new();
        let mut stack: Vec<Branch> = Vec::new();
        let mut section = String::new();
        for (line, l) in exim_config_lines(text) {
            if let Some(directive) = l.strip_prefix('.') {
                conf.directive(line, directive, &macros, &mut stack);
                continue;
            }
            if !stack.iter().all(|b| b.active) {
                continue;
            }
            if let Some((name, value)) = macro_definition(&l) {
                let value = substitute(&macros, value);
                match macros.iter_mut().find(|(n, _)| n == name) {
                    Some(m) => m.1 = value,
                    None => macros.push((name.to_string(), value)),
                }
                continue;
            }
            let l = substitute(&macros, &l);
            if let Some(s) = l.strip_prefix("begin ") {
                section = s.trim().to_string();
                continue;
            }
            conf.lines.push(ConfLine {
                line,
                section: section.clone(),
                text: l,
            });
        }
        conf
    }

    fn directive(
        &mut self,
        line: usize,
        directive: &str,
        macros: &[(String, String)],
        stack: &mut Vec<Branch>,
    ) {
        let (word, arg) = super::token(directive);
        let defined = |name: &str| macros.iter().any(|(n, _)| n == name.trim());
        let outer = stack.iter().all(|b| b.active);
        match word {
            "ifdef" | "ifndef" => {
                let active = outer && (defined(arg) == (word == "ifdef"));
                stack.push(Branch {
                    active,
                    taken: active,
                });
            }
            "elifdef" | "elifndef" | "else" => {
                let cond = word == "else" || (defined(arg) == (word == "elifdef"));
                let parent = stack.len().saturating_sub(1);
                let outer = stack.iter().take(parent).all(|b| b.active);
                if let Some(b) = stack.last_mut() {
                    b.active = outer && !b.taken && cond;
                    b.taken |= b.active;
                }
            }
            "endif" => {
                stack.pop();
            }
            "include" | "include_if_exists" if outer => self.includes.push(line),
            _ => {}
        }
    }

    /// The lines of a `begin` section.
    pub(super) fn section<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ConfLine> {
        self.lines.iter().filter(move |l| l.section == name)
    }

    /// The last setting of a main-section option, with its line.
    pub(super) fn main_option(&self, name: &str) -> Option<(usize, &str)> {
        self.section("")
            .filter_map(|l| {
                let (n, v) = l.text.split_once('=')?;
                (n.trim() == name).then(|| (l.line, v.trim()))
            })
            .last()
    }

    /// The routers, in order, with their `name = value` options.
    pub(super) fn routers(&self) -> Vec<Router> {
        let mut routers: Vec<Router> = Vec::new();
        for l in self.section("routers") {
            let text = l.text.trim();
            match (text.strip_suffix(':'), text.split_once('=')) {
                (Some(name), None) => routers.push(Router {
                    name: name.trim().to_string(),
                    options: Vec::new(),
                }),
                (_, Some((n, v))) => {
                    if let Some(r) = routers.last_mut() {
                        r.options
                            .push((l.line, n.trim().to_string(), v.trim().to_string()));
                    }
                }
                _ => {}
            }
        }
        routers
    }
}

/// `NAME = value`, `NAME=value` or `NAME == value` (a redefinition): a
/// macro name starts with a capital letter.
fn macro_definition(l: &str) -> Option<(&str, &str)> {
    let end = l
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(l.len());
    let name = &l[..end];
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let rest = l[end..].trim_start();
    let value = rest.strip_prefix("==").or_else(|| rest.strip_prefix('='))?;
    Some((name, value.trim()))
}

/// The line with each defined macro name replaced by its value. Names are
/// matched as whole words, which is how they are written.
fn substitute(macros: &[(String, String)], line: &str) -> String {
    if macros.is_empty() {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match macros.iter().find(|(n, _)| n == word) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}
