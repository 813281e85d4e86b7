//! One stored password, as the second field of a Dovecot passwd-file line
//! (`{SCHEME}data`), checked when the file is read and verified at login.
//!
//! Dovecot's default scheme, for a field without `{SCHEME}`, is CRYPT: the
//! C library's crypt(3), which tells the algorithm by the hash's prefix. We
//! take `$argon2id$`, `$argon2i$`, `$6$`, `$5$` and `$2y$`/`$2b$`/`$2a$` that
//! way (also under an explicit `{CRYPT}`); DES and MD5 crypt, and anything
//! else, are refused rather than guessed at. Scheme names are matched
//! without regard to case, as Dovecot matches them.
//!
//! Nothing here shows the stored data: [`HashProblem`] names the scheme and
//! what is wrong, `Debug` of a [`StoredHash`] names only its scheme.

use std::fmt;
use std::str::FromStr;

use argon2::{Argon2, PasswordHash, PasswordVerifier as _};

use super::precis;

/// The largest ARGON2 memory cost taken from the file, in KiB (1 GiB): each
/// check in the pool allocates it, and a typo of a few digits would
/// otherwise take the machine's memory at the first login.
pub const MAX_ARGON2_KIB: u32 = 1024 * 1024;

/// The password schemes taken from the file, by Dovecot's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Argon2id,
    Argon2i,
    Sha512Crypt,
    Sha256Crypt,
    BlfCrypt,
    Plain,
}

impl Scheme {
    /// Dovecot's name for it (`doveadm pw -s NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Plain => "PLAIN",
        }
    }

    /// The scheme a crypt(3) string is, by its prefix.
    fn of_crypt(data: &str) -> Option<Scheme> {
        const PREFIXES: [(&str, Scheme); 7] = [
            ("$argon2id$", Scheme::Argon2id),
            ("$argon2i$", Scheme::Argon2i),
            ("$6$", Scheme::Sha512Crypt),
            ("$5$", Scheme::Sha256Crypt),
            ("$2y$", Scheme::BlfCrypt),
            ("$2b$", Scheme::BlfCrypt),
            ("$2a$", Scheme::BlfCrypt),
        ];
        PREFIXES
            .iter()
            .find(|(prefix, _)| data.starts_with(prefix))
            .map(|&(_, scheme)| scheme)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stored password was not taken. Never holds any of its data: the
/// scheme name shown is only ever one of ours, or a short plain word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashProblem {
    #[error("no password")]
    Empty,
    #[error("unknown password scheme {{{0}}}")]
    UnknownScheme(String),
    #[error(
        "no {{SCHEME}} and not a crypt hash smarthost knows ($argon2id$, $argon2i$, $6$, $5$, \
         $2y$, $2b$, $2a$; DES and MD5 crypt are not supported)"
    )]
    NotCrypt,
    #[error("{{{declared}}} holds something else ({})", .found.map_or("not a crypt hash", Scheme::name))]
    SchemeMismatch {
        declared: Scheme,
        found: Option<Scheme>,
    },
    #[error("malformed {0} hash")]
    Malformed(Scheme),
    #[error("{0} memory cost m={1} KiB is over smarthost's limit of {MAX_ARGON2_KIB} KiB")]
    TooMuchMemory(Scheme, u32),
    #[error(
        "{{PLAIN}} password that PRECIS OpaqueString refuses (empty, a control character, or \
         longer than {} bytes)",
        precis::MAX_PASSWORD
    )]
    PlainNotPrecis,
}

/// A stored password, parsed and checked. Cloned into the hash pool for
/// each check, so it holds no borrowed data.
#[derive(Clone)]
pub struct StoredHash {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Argon2(Scheme, Box<PasswordHash>),
    ShaCrypt(Scheme, String),
    Bcrypt(String),
    Plain(Vec<u8>),
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.scheme())
            .finish_non_exhaustive()
    }
}

impl StoredHash {
    /// Parses the password field of a passwd-file line.
    pub fn parse(field: &str) -> Result<StoredHash, HashProblem> {
        if field.is_empty() {
            return Err(HashProblem::Empty);
        }
        let (declared, data) = split_scheme(field)?;
        if declared == Some(Scheme::Plain) {
            let prepared = precis::password(data.as_bytes()).ok_or(HashProblem::PlainNotPrecis)?;
            return Ok(StoredHash {
                kind: Kind::Plain(prepared.into_bytes()),
            });
        }
        let found = Scheme::of_crypt(data);
        let scheme = match (declared, found) {
            (None, None) => return Err(HashProblem::NotCrypt),
            (None, Some(f)) => f,
            (Some(d), Some(f)) if f == d => d,
            (Some(d), f) => {
                return Err(HashProblem::SchemeMismatch {
                    declared: d,
                    found: f,
                })
            }
        };
        let kind = match scheme {
            Scheme::Argon2id | Scheme::Argon2i => argon2_kind(scheme, data)?,
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => sha_crypt_kind(scheme, data)?,
            Scheme::BlfCrypt => bcrypt_kind(data)?,
            // of_crypt never answers PLAIN, and {PLAIN} returned above.
            Scheme::Plain => return Err(HashProblem::Malformed(Scheme::Plain)),
        };
        Ok(StoredHash { kind })
    }

    pub fn scheme(&self) -> Scheme {
        match &self.kind {
            Kind::Argon2(s, _) | Kind::ShaCrypt(s, _) => *s,
            Kind::Bcrypt(_) => Scheme::BlfCrypt,
            Kind::Plain(_) => Scheme::Plain,
        }
    }

    /// Whether `password` (already prepared, [`precis::password`]) is the
    /// one stored. Slow by design for every scheme but PLAIN: call it off
    /// the async runtime.
    pub fn matches(&self, password: &str) -> bool {
        let pw = password.as_bytes();
        match &self.kind {
            Kind::Argon2(_, hash) => Argon2::default().verify_password(pw, hash.as_ref()).is_ok(),
            Kind::ShaCrypt(_, text) => sha_crypt::PasswordVerifier::verify_password(
                &sha_crypt::ShaCrypt::default(),
                pw,
                text.as_str(),
            )
            .is_ok(),
            Kind::Bcrypt(text) => bcrypt::verify(pw, text).unwrap_or(false),
            Kind::Plain(stored) => plain_matches(stored, pw),
        }
    }

    /// What a check of this hash costs, as a key to group entries by (the
    /// scheme and its parameters; no salt, no output).
    pub fn cost_class(&self) -> String {
        match &self.kind {
            Kind::Argon2(scheme, hash) => match argon2::Params::try_from(hash.as_ref()) {
                Ok(p) => format!(
                    "{scheme} m={} t={} p={}",
                    p.m_cost(),
                    p.t_cost(),
                    p.p_cost()
                ),
                Err(_) => scheme.to_string(),
            },
            Kind::ShaCrypt(scheme, text) => format!("{scheme} {}", sha_rounds(text)),
            Kind::Bcrypt(text) => format!("BLF-CRYPT cost={}", text.get(4..6).unwrap_or("?")),
            Kind::Plain(_) => "PLAIN".to_string(),
        }
    }

    /// A hash of the same scheme and cost that no password matches: what a
    /// user who is not in the file is checked against, so that the time a
    /// refusal takes does not tell whether the user exists.
    pub fn decoy(&self) -> StoredHash {
        let kind = match &self.kind {
            Kind::Argon2(scheme, hash) => {
                let text = blank_last_field(&hash.to_string(), 'A');
                match PasswordHash::new(&text) {
                    Ok(h) => Kind::Argon2(*scheme, Box::new(h)),
                    Err(_) => return StoredHash::default_decoy(),
                }
            }
            Kind::ShaCrypt(scheme, text) => Kind::ShaCrypt(*scheme, blank_last_field(text, '.')),
            // `$2y$NN$` and the 22 characters of salt, then the 31 of output.
            Kind::Bcrypt(text) => Kind::Bcrypt(format!(
                "{}{}",
                text.get(..29).unwrap_or(""),
                ".".repeat(31)
            )),
            // A prepared password never holds NUL (OpaqueString refuses it).
            Kind::Plain(_) => Kind::Plain(vec![0]),
        };
        StoredHash { kind }
    }

    /// The decoy for an empty file: ARGON2ID with the costs `doveadm pw`
    /// uses by default (m=65536 KiB, t=3, p=1).
    pub fn default_decoy() -> StoredHash {
        const DEFAULT: &str = "$argon2id$v=19$m=65536,t=3,p=1$AAAAAAAAAAAAAAAAAAAAAA$\
                               AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let kind = match PasswordHash::new(DEFAULT) {
            Ok(h) => Kind::Argon2(Scheme::Argon2id, Box::new(h)),
            Err(_) => Kind::Plain(vec![0]),
        };
        StoredHash { kind }
    }
}

/// `{SCHEME}data` into the scheme (None: Dovecot's default, CRYPT, which
/// [`Scheme::of_crypt`] tells apart) and the data.
fn split_scheme(field: &str) -> Result<(Option<Scheme>, &str), HashProblem> {
    let Some((name, data)) = field.strip_prefix('{').and_then(|r| r.split_once('}')) else {
        return Ok((None, field));
    };
    let scheme = match name.to_ascii_uppercase().as_str() {
        "CRYPT" => None,
        "ARGON2ID" => Some(Scheme::Argon2id),
        "ARGON2I" => Some(Scheme::Argon2i),
        "SHA512-CRYPT" => Some(Scheme::Sha512Crypt),
        "SHA256-CRYPT" => Some(Scheme::Sha256Crypt),
        "BLF-CRYPT" => Some(Scheme::BlfCrypt),
        "PLAIN" => Some(Scheme::Plain),
        _ => return Err(HashProblem::UnknownScheme(shown_scheme(name))),
    };
    Ok((scheme, data))
}

/// A scheme name as a warning may show it: Dovecot's names are short words
/// of letters, digits, `-` and `.`; anything else may be a misplaced secret.
fn shown_scheme(name: &str) -> String {
    let plain_word = name.len() <= 24
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if plain_word && !name.is_empty() {
        name.to_string()
    } else {
        "(not shown)".to_string()
    }
}

fn argon2_kind(scheme: Scheme, data: &str) -> Result<Kind, HashProblem> {
    let hash = PasswordHash::new(data).map_err(|_| HashProblem::Malformed(scheme))?;
    let ident = match scheme {
        Scheme::Argon2i => "argon2i",
        _ => "argon2id",
    };
    if hash.algorithm.as_str() != ident || hash.salt.is_none() || hash.hash.is_none() {
        return Err(HashProblem::Malformed(scheme));
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| HashProblem::Malformed(scheme))?;
    if params.m_cost() > MAX_ARGON2_KIB {
        return Err(HashProblem::TooMuchMemory(scheme, params.m_cost()));
    }
    Ok(Kind::Argon2(scheme, Box::new(hash)))
}

/// `$6$[rounds=N$]salt$hash` (or `$5$`): checked as sha-crypt will read it,
/// so that a hash it cannot verify is a warning now, not a refusal later.
fn sha_crypt_kind(scheme: Scheme, data: &str) -> Result<Kind, HashProblem> {
    let bad = || HashProblem::Malformed(scheme);
    let (prefix, output_len) = match scheme {
        Scheme::Sha512Crypt => ("$6$", 86),
        _ => ("$5$", 43),
    };
    let mut fields: Vec<&str> = data
        .strip_prefix(prefix)
        .ok_or_else(bad)?
        .split('$')
        .collect();
    if fields.first().is_some_and(|f| f.starts_with("rounds=")) {
        sha_crypt::Params::from_str(fields.remove(0)).map_err(|_| bad())?;
    }
    let [salt, output] = fields[..] else {
        return Err(bad());
    };
    let crypt64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    if salt.is_empty() || output.len() != output_len || !crypt64(output) {
        return Err(bad());
    }
    sha_crypt::PasswordHashRef::new(data).map_err(|_| bad())?;
    Ok(Kind::ShaCrypt(scheme, data.to_string()))
}

fn bcrypt_kind(data: &str) -> Result<Kind, HashProblem> {
    let parts =
        bcrypt::HashParts::from_str(data).map_err(|_| HashProblem::Malformed(Scheme::BlfCrypt))?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(HashProblem::Malformed(Scheme::BlfCrypt));
    }
    Ok(Kind::Bcrypt(data.to_string()))
}

/// The rounds a SHA-crypt string asks for (5000 when it does not say).
fn sha_rounds(text: &str) -> String {
    text.split('$')
        .find(|f| f.starts_with("rounds="))
        .unwrap_or("rounds=5000")
        .to_string()
}

/// `text` with its last `$` field replaced by as many `fill` characters:
/// the same parameters and salt, an output no password computes.
fn blank_last_field(text: &str, fill: char) -> String {
    match text.rsplit_once('$') {
        Some((head, last)) => format!("{head}${}", fill.to_string().repeat(last.len())),
        None => text.to_string(),
    }
}

/// A PLAIN comparison in constant time: HMAC tags compared by ring (the key
/// needs no secrecy, only the comparison must not stop at the first
/// differing byte).
fn plain_matches(stored: &[u8], given: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"smarthost PLAIN comparison");
    let tag = ring::hmac::sign(&key, stored);
    ring::hmac::verify(&key, given, tag.as_ref()).is_ok()
}
