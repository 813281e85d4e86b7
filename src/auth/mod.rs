//! Password checks for the submission listeners' AUTH PLAIN and LOGIN,
//! against a passwd-file in Dovecot's format (`user:{SCHEME}hash[:...]`).
//!
//! - [`passwd`]: the file, parsed; each stored hash checked at load
//!   ([`hash`]), so a bad line is a warning at start-up, not a mystery at
//!   login.
//! - [`precis`]: user names in NFC, passwords by PRECIS OpaqueString.
//! - [`Verifier`]: what a session calls. It re-reads the file when it
//!   changes, runs the costly hash checks in a pool no larger than the core
//!   count (ARGON2ID as `doveadm pw` makes it takes 64 MiB and tens of
//!   milliseconds), and remembers recent successes for a minute, so a good
//!   client logging in again and again costs nothing and a flood of bad ones
//!   cannot take more than that pool.
//!
//! Nothing here puts a password or a stored hash into an error, a warning or
//! a `Debug` output: a line of the file is named by its number and its user.
//!
//! ```no_run
//! # async fn session(user: &str, password: &[u8]) {
//! use smarthost::auth::{Verdict, Verifier};
//! let verifier = std::sync::Arc::new(Verifier::new("/etc/smarthost/passwd"));
//! match verifier.verify(user, password).await {
//!     Verdict::Ok { identity } => { /* 235, the session is `identity` */ }
//!     Verdict::Refused => { /* 535 */ }
//!     Verdict::Unavailable(reason) => { /* 454; log `reason` */ }
//! }
//! # }
//! ```

mod cache;
pub mod hash;
pub mod passwd;
pub mod precis;
mod verifier;

pub use hash::{HashProblem, Scheme};
pub use passwd::{FileStamp, LoadError, LoadReport, LoadWarning, PasswdFile, Warning};
pub use verifier::{Options, Unavailable, Verdict, Verifier};

#[cfg(test)]
mod test_hashes;
