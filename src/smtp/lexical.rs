//! Small lexical helpers shared by the command grammar and the address
//! rules: finding structure outside quoted strings, case-insensitive
//! prefixes, and showing a character in a reply.

/// Reply text must stay printable ASCII whatever the offending character was.
pub(super) fn show(c: &char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(*c))
    }
}

pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    s.get(prefix.len()..)
        .filter(|_| head.eq_ignore_ascii_case(prefix))
}

/// Byte index of the first `target` outside quoted strings and address
/// literals: a '>', '@' or ':' in a quoted local part or an IPv6 literal is
/// data, not structure.
pub(super) fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let (mut quoted, mut escaped, mut bracket) = (false, false, false);
    s.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            '[' => bracket = true,
            ']' => bracket = false,
            c if c == target && !bracket => return Some(i),
            _ => {}
        }
        None
    })
}
