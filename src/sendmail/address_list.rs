//! RFC 5322 address lists (section 3.4, with the obsolete forms of 4.4) as
//! local programs write them in To/Cc/Bcc/From: groups, comments, quoted
//! names, routes, bare local names. Positions are kept so that an address can
//! be rewritten in place without touching the rest of the field.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted,
    Literal,
    Special(u8),
    Bad,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// One address found in a list; `start..end` is its addr-spec in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) addr: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(super) fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Index just past the delimited run starting at `open`, honouring quoted
/// pairs, and whether the closing delimiter was found.
fn scan_delimited(b: &[u8], open: usize, close: u8) -> (usize, bool) {
    let mut i = open + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            c if c == close => return (i + 1, true),
            _ => i += 1,
        }
    }
    (b.len(), false)
}

/// Comments nest (RFC 5322 3.2.2), so they need their own scanner.
fn skip_comment(b: &[u8], open: usize) -> (usize, bool) {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (i + 1, true);
                }
            }
            _ => {}
        }
        i += 1;
    }
    (b.len(), false)
}

/// Tokens never split a UTF-8 sequence: every boundary is next to an ASCII
/// byte or at the end, so slicing the source with them is safe.
fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                let (end, closed) = skip_comment(b, i);
                i = end;
                if closed {
                    continue;
                }
                Kind::Bad
            }
            b'"' | b'[' => {
                let close = if c == b'"' { b'"' } else { b']' };
                let (end, closed) = scan_delimited(b, i, close);
                i = end.min(b.len());
                match (closed, c) {
                    (false, _) => Kind::Bad,
                    (true, b'"') => Kind::Quoted,
                    (true, _) => Kind::Literal,
                }
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' => {
                i += 1;
                Kind::Special(c)
            }
            c if is_atext(c) || c == b'.' || c >= 0x80 => {
                while b
                    .get(i)
                    .is_some_and(|&c| is_atext(c) || c == b'.' || c >= 0x80)
                {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += 1;
                Kind::Bad
            }
        };
        toks.push(Token {
            kind,
            start,
            end: i,
        });
    }
    toks
}

fn text<'s>(src: &'s str, t: &Token) -> &'s str {
    src.get(t.start..t.end).unwrap_or("")
}

/// Joins dot-atom parts, refusing words separated only by whitespace
/// (`john smith@x`), which no sender means as one address.
fn join_parts(src: &str, toks: &[Token], allowed: &[Kind]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        if !allowed.contains(&t.kind) {
            return None;
        }
        let part = text(src, t);
        if !out.is_empty() && !out.ends_with('.') && !part.starts_with('.') {
            return None;
        }
        out.push_str(part);
    }
    (!out.is_empty()).then_some(out)
}

fn addr_spec(src: &str, toks: &[Token]) -> Option<Parsed> {
    let (first, last) = (toks.first()?, toks.last()?);
    let at = toks.iter().position(|t| t.kind == Kind::Special(b'@'));
    let local_toks = toks.get(..at.unwrap_or(toks.len()))?;
    let mut addr = join_parts(src, local_toks, &[Kind::Word, Kind::Quoted])?;
    if let Some(at) = at {
        let domain_toks = toks.get(at + 1..)?;
        let domain = match domain_toks {
            [t] if t.kind == Kind::Literal => text(src, t).to_string(),
            _ => join_parts(src, domain_toks, &[Kind::Word])?,
        };
        addr.push('@');
        addr.push_str(&domain);
    }
    if addr.chars().any(char::is_control) {
        return None;
    }
    Some(Parsed {
        addr,
        start: first.start,
        end: last.end,
    })
}

/// One mailbox: `addr-spec` or `[phrase] <[@route:]addr-spec>`.
fn mailbox(src: &str, toks: &[Token]) -> Option<Parsed> {
    if toks.iter().any(|t| t.kind == Kind::Bad) {
        return None;
    }
    let Some(lt) = toks.iter().position(|t| t.kind == Kind::Special(b'<')) else {
        return addr_spec(src, toks);
    };
    let after = toks.get(lt + 1..)?;
    let gt = after.iter().position(|t| t.kind == Kind::Special(b'>'))?;
    if gt + 1 != after.len() {
        return None;
    }
    let mut inner = after.get(..gt)?;
    if inner.first().map(|t| t.kind) == Some(Kind::Special(b'@')) {
        let colon = inner.iter().position(|t| t.kind == Kind::Special(b':'))?;
        inner = inner.get(colon + 1..)?;
    }
    if inner.iter().any(|t| t.kind == Kind::Special(b'<')) {
        return None;
    }
    addr_spec(src, inner)
}

fn excerpt(src: &str, toks: &[Token]) -> String {
    let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
        return String::new();
    };
    let raw = src.get(first.start..last.end).unwrap_or("");
    let mut short: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(100)
        .collect();
    if raw.chars().nth(100).is_some() {
        short.push_str("...");
    }
    short
}

/// Parses an address list, remembering where each addr-spec is so callers
/// can rewrite it in place. CR and LF count as whitespace, so a folded raw
/// field value parses like its unfolded form.
pub(crate) fn parse_spans(src: &str) -> (Vec<Parsed>, Vec<String>) {
    let toks = tokenize(src);
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let mut finish = |element: &[Token]| {
        if element.is_empty() {
            return;
        }
        match mailbox(src, element) {
            Some(p) => found.push(p),
            None => warnings.push(format!(
                "unparseable address {:?} skipped",
                excerpt(src, element)
            )),
        }
    };
    let mut start = 0;
    let mut angle = false;
    let mut in_group = false;
    for (i, t) in toks.iter().enumerate() {
        let element = toks.get(start..i).unwrap_or_default();
        match t.kind {
            Kind::Special(b'<') => angle = true,
            Kind::Special(b'>') => angle = false,
            // Inside angle brackets a colon ends an obsolete route instead.
            Kind::Special(b':') if !angle && !in_group => {
                in_group = true;
                start = i + 1;
            }
            Kind::Special(b',') if !angle => {
                finish(element);
                start = i + 1;
            }
            // Outside a group, a ';' is taken as the separator some mail
            // programs use instead of ','.
            Kind::Special(b';') if !angle => {
                finish(element);
                start = i + 1;
                in_group = false;
            }
            _ => {}
        }
    }
    finish(toks.get(start..).unwrap_or_default());
    (found, warnings)
}

/// Parses an RFC 5322 address list (To, Cc, From, ...) into addr-specs.
/// Display names, comments and group names are dropped, obsolete routes
/// removed, quoted local parts kept as written, and a bare local name (no
/// '@') returned as is. Unparseable elements are skipped and described in
/// the second vector.
pub fn parse_address_list(value: &str) -> (Vec<String>, Vec<String>) {
    let (found, warnings) = parse_spans(value);
    (found.into_iter().map(|p| p.addr).collect(), warnings)
}
