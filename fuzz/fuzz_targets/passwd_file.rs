//! The Dovecot passwd-file parser (`auth::passwd`), on any bytes.
//!
//! Properties: parsing never panics; every warning names an existing line
//! and is one line of text; a warning never shows the stored data of its line
//! (a hash or a plaintext password).

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::auth::PasswdFile;

fuzz_target!(|data: &[u8]| {
    let (file, warnings) = PasswdFile::parse(data);
    let lines = data.split(|&b| b == b'\n').count();
    for w in &warnings {
        assert!((1..=lines).contains(&w.line), "{w} of {lines} lines");
        let shown = w.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        // The stored data of its line (after `{SCHEME}`), when long enough
        // to be a secret rather than a word a warning may use itself.
        let line = data
            .split(|&b| b == b'\n')
            .nth(w.line - 1)
            .unwrap_or_default();
        if let Some(field) = line.split(|&b| b == b':').nth(1) {
            let field = String::from_utf8_lossy(field);
            // The user is the only text a warning takes from the file: it
            // may hold the secret only if the user field itself does.
            let user_field =
                String::from_utf8_lossy(line.split(|&b| b == b':').next().unwrap_or_default());
            if let (Some((_, secret)), Some(user)) = (field.split_once('}'), &w.user) {
                if secret.len() >= 12 && !user_field.contains(secret) {
                    assert!(!user.contains(secret), "{shown}");
                }
            }
        }
    }
    assert!(file.len() <= lines);
});
