//! The two string rules of a login: user names in Unicode NFC, passwords by
//! PRECIS OpaqueString (RFC 8265 4.2), as mox does.
//!
//! NFC makes a name typed on a keyboard that sends "e" + U+0301 the same as
//! the "é" in the file. OpaqueString maps every non-ASCII space to U+0020 and
//! normalizes to NFC, and refuses control characters and empty strings; it
//! maps neither width nor case, so "Ａ" (fullwidth) stays a different
//! password from "A", as it should for a secret.

use precis_profiles::precis_core::profile::Profile;
use precis_profiles::OpaqueString;
use unicode_normalization::UnicodeNormalization;

/// A user name as the file and the client are compared: NFC, nothing else
/// (case is kept, as Dovecot keeps it unless told `auth_username_format`).
pub fn username(raw: &str) -> String {
    raw.nfc().collect()
}

/// The longest password taken, in bytes. SHA-crypt's work grows with the
/// password's length times its rounds, so a client's megabyte "password"
/// would hold a place in the hash pool for seconds; nobody types 1 KiB.
pub const MAX_PASSWORD: usize = 1024;

/// The password as it is hashed: OpaqueString's enforcement of the bytes
/// the client sent, or None when they are not UTF-8, longer than
/// [`MAX_PASSWORD`] or not allowed (a control character, an empty
/// password): a login that simply fails.
pub fn password(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_PASSWORD {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    OpaqueString::new()
        .enforce(text)
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passwords_are_unchanged() {
        let pw = "correct horse battery staple !#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        assert_eq!(password(pw.as_bytes()).as_deref(), Some(pw));
    }

    #[test]
    fn non_ascii_spaces_become_ascii_spaces() {
        // NO-BREAK SPACE, EN SPACE, IDEOGRAPHIC SPACE.
        for space in ['\u{a0}', '\u{2002}', '\u{3000}'] {
            let typed = format!("two{space}words");
            assert_eq!(password(typed.as_bytes()).as_deref(), Some("two words"));
        }
    }

    #[test]
    fn width_and_case_are_kept() {
        assert_eq!(password("ＡＢＣ".as_bytes()).as_deref(), Some("ＡＢＣ"));
        assert_ne!(password("ＡＢＣ".as_bytes()), password(b"ABC"));
        assert_ne!(password(b"abc"), password(b"ABC"));
    }

    #[test]
    fn passwords_are_nfc() {
        assert_eq!(
            password("cafe\u{301}".as_bytes()).as_deref(),
            Some("caf\u{e9}")
        );
    }

    #[test]
    fn refused_passwords() {
        assert_eq!(password(b""), None);
        assert_eq!(password(b"tab\there"), None);
        assert_eq!(password(b"nul\0here"), None);
        assert_eq!(password(b"\xff\xfe not utf-8"), None);
        assert!(password(&[b'x'; MAX_PASSWORD]).is_some());
        assert_eq!(password(&[b'x'; MAX_PASSWORD + 1]), None);
    }

    #[test]
    fn usernames_are_nfc_and_keep_their_case() {
        assert_eq!(username("Jose\u{301}"), "Jos\u{e9}");
        assert_eq!(username("Alice"), "Alice");
    }
}
