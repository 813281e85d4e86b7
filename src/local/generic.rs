//! Outbound address mapping, as Postfix's `smtp_generic_maps` does it: a
//! sender address that only makes sense on this machine (`www-data@host.lan`)
//! becomes one the world accepts (`noreply@example.com`) as the message
//! leaves, in the envelope sender and in the From, Sender and Reply-To
//! fields. The queued message keeps what the program wrote; bounces go back
//! the way they came.
//!
//! Keys, as in generic(5): `user@domain` (exact, the highest precedence) and
//! `@domain` (any user in the domain). A value `@other` keeps the user and
//! changes the domain; any other value replaces the whole address.

use std::collections::BTreeMap;

use crate::sendmail::address_list::parse_spans;

/// Header fields that say who a message is from (RFC 5322 3.6.2).
const FIELDS: &[&str] = &["from", "sender", "reply-to"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generic {
    /// Lower-cased `user@domain` → replacement.
    addresses: BTreeMap<String, String>,
    /// Lower-cased domain → replacement (`@other` or an address).
    domains: BTreeMap<String, String>,
}

impl Generic {
    /// Adds one entry; `key` is `user@domain` or `@domain`, `value` an
    /// address or `@domain` (both checked by the caller).
    pub fn insert(&mut self, key: &str, value: &str) {
        let key = key.trim().to_ascii_lowercase();
        match key.strip_prefix('@') {
            Some(domain) => self.domains.insert(domain.to_string(), value.to_string()),
            None => self.addresses.insert(key, value.to_string()),
        };
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// What `address` becomes, or None when no entry matches.
    pub fn map(&self, address: &str) -> Option<String> {
        let (user, domain) = address.rsplit_once('@')?;
        if let Some(to) = self.addresses.get(&address.to_ascii_lowercase()) {
            return Some(to.clone());
        }
        let to = self.domains.get(&domain.to_ascii_lowercase())?;
        Some(match to.strip_prefix('@') {
            Some(other) => format!("{user}@{other}"),
            None => to.clone(),
        })
    }

    /// The envelope sender as it goes out; the null sender stays null.
    pub fn sender(&self, sender: &str) -> String {
        self.map(sender).unwrap_or_else(|| sender.to_string())
    }

    /// `head` (a header section, CRLF lines) with the addresses of its
    /// From, Sender and Reply-To fields mapped, every other byte kept; None
    /// when nothing changes.
    pub fn rewrite_header(&self, head: &[u8]) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(head.len() + 64);
        let mut changed = false;
        for field in fields(head) {
            match self.rewrite_field(field) {
                Some(new) => {
                    out.extend_from_slice(&new);
                    changed = true;
                }
                None => out.extend_from_slice(field),
            }
        }
        changed.then_some(out)
    }

    /// One whole field (folds and its CRLF included), rewritten if it is
    /// one of [`FIELDS`] and holds an address that maps.
    fn rewrite_field(&self, field: &[u8]) -> Option<Vec<u8>> {
        let colon = field.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(field.get(..colon)?).ok()?;
        if !FIELDS
            .iter()
            .any(|f| name.trim_end().eq_ignore_ascii_case(f))
        {
            return None;
        }
        // Non-UTF-8 values are left alone rather than risk mangling them.
        let value = std::str::from_utf8(field.get(colon + 1..)?).ok()?;
        let (found, _) = parse_spans(value);
        let mut out = String::from(name);
        out.push(':');
        let mut last = 0;
        for p in &found {
            let Some(to) = self.map(&p.addr) else {
                continue;
            };
            out.push_str(value.get(last..p.start)?);
            out.push_str(&to);
            last = p.end;
        }
        if last == 0 {
            return None;
        }
        out.push_str(value.get(last..)?);
        Some(out.into_bytes())
    }
}

/// A body with its first `skip` bytes (the header section) replaced by
/// `head`: how a mapped header goes out without copying the message.
pub struct HeaderSwap {
    skip: usize,
    head: Option<Vec<u8>>,
}

impl HeaderSwap {
    pub fn new(skip: usize, head: Vec<u8>) -> HeaderSwap {
        HeaderSwap {
            skip,
            head: Some(head),
        }
    }
}

impl crate::spool::body::Transform for HeaderSwap {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        let dropped = self.skip.min(chunk.len());
        self.skip -= dropped;
        out.extend_from_slice(&chunk[dropped..]);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
    }
}

/// The fields of a header section, each with its continuation lines and
/// line ends; the empty line that ends the section, if there, is the last
/// item.
fn fields(head: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end = head[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |p| i + p + 1);
        let continues = matches!(head.get(end), Some(b' ' | b'\t'));
        let blank = matches!(&head[i..end], b"\r\n" | b"\n");
        if blank || !continues {
            out.push(&head[start..end]);
            start = end;
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Generic {
        let mut g = Generic::default();
        g.insert("www-data@host.lan", "noreply@example.com");
        g.insert("@host.lan", "@example.com");
        g.insert("@old.example", "ops@example.com");
        g
    }

    #[test]
    fn exact_addresses_win_over_domains() {
        let g = table();
        assert_eq!(
            g.map("WWW-Data@Host.LAN").as_deref(),
            Some("noreply@example.com")
        );
        assert_eq!(g.map("cron@host.lan").as_deref(), Some("cron@example.com"));
        assert_eq!(
            g.map("anyone@old.example").as_deref(),
            Some("ops@example.com")
        );
        assert_eq!(g.map("me@example.org"), None);
        assert_eq!(g.map("root"), None);
        assert_eq!(g.sender(""), "");
    }

    #[test]
    fn header_fields_keep_names_and_folds() {
        let g = table();
        let head = b"Subject: from www-data@host.lan\r\n\
            From: \"Web (site)\" <www-data@host.lan>\r\n\
            Reply-To: a@example.org,\r\n cron@host.lan (cron)\r\n\
            To: www-data@host.lan\r\n\r\n";
        let out = g.rewrite_header(head).expect("changed");
        let want = "Subject: from www-data@host.lan\r\n\
            From: \"Web (site)\" <noreply@example.com>\r\n\
            Reply-To: a@example.org,\r\n cron@example.com (cron)\r\n\
            To: www-data@host.lan\r\n\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert_eq!(g.rewrite_header(b"From: me@example.org\r\n\r\n"), None);
        assert_eq!(Generic::default().rewrite_header(head), None);
    }

    #[test]
    fn header_swap_replaces_only_the_head() {
        use crate::spool::body::Transform;
        let mut swap = HeaderSwap::new(9, b"From: b\r\n".to_vec());
        let mut out = Vec::new();
        for chunk in [&b"From"[..], b": a\r\n\r", b"\nbody"] {
            swap.feed(chunk, &mut out);
        }
        swap.finish(&mut out);
        assert_eq!(out, b"From: b\r\n\r\nbody");
    }

    #[test]
    fn fields_split_at_unfolded_lines() {
        let f = fields(b"A: 1\r\n 2\r\nB: 3\r\n\r\n");
        assert_eq!(f, vec![&b"A: 1\r\n 2\r\n"[..], b"B: 3\r\n", b"\r\n"]);
    }
}
