//! Hashes for the tests, made with the crates that verify them, at the
//! lowest costs so that the tests stay quick in a debug build.

use argon2::{Argon2, PasswordHasher as _};

pub(crate) const SALT: [u8; 16] = *b"0123456789abcdef";

pub(crate) fn argon2(algorithm: argon2::Algorithm, password: &str) -> String {
    argon2_costing(algorithm, password, 1024)
}

/// ARGON2 with `kib` of memory: a slower check, for the pool's tests.
pub(crate) fn argon2_costing(algorithm: argon2::Algorithm, password: &str, kib: u32) -> String {
    let params = argon2::Params::new(kib, 1, 1, None).unwrap();
    let hasher = Argon2::new(algorithm, argon2::Version::V0x13, params);
    let hash: argon2::PasswordHash = hasher
        .hash_password_with_salt(password.as_bytes(), &SALT)
        .unwrap();
    hash.to_string()
}

/// `$6$rounds=5000$...` as sha-crypt writes it; [`without_rounds`] gives the
/// `$6$salt$hash` that glibc and Dovecot write for the default rounds.
pub(crate) fn sha_crypt(algorithm: sha_crypt::Algorithm, password: &str) -> String {
    use sha_crypt::PasswordHasher as _;
    let hasher = sha_crypt::ShaCrypt::new(algorithm, sha_crypt::Params::RECOMMENDED);
    let hash: sha_crypt::PasswordHash = hasher
        .hash_password_with_salt(password.as_bytes(), &SALT)
        .unwrap();
    hash.to_string()
}

pub(crate) fn without_rounds(hash: &str) -> String {
    hash.replacen("rounds=5000$", "", 1)
}

pub(crate) fn bcrypt(version: bcrypt::Version, password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, SALT)
        .unwrap()
        .format_for_version(version)
}
