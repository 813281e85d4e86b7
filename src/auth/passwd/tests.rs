use super::*;
use crate::auth::test_hashes::{argon2, bcrypt, sha_crypt, without_rounds};

fn parse(text: &str) -> (PasswdFile, Vec<LoadWarning>) {
    PasswdFile::parse(text.as_bytes())
}

fn warning(line: usize, user: Option<&str>, what: Warning) -> LoadWarning {
    LoadWarning {
        line,
        user: user.map(str::to_string),
        what,
    }
}

#[test]
fn comments_blank_lines_and_the_other_fields() {
    let text = format!(
        "# users of the submission port\n\
         \n\
         \x20  # indented comment\n\
         alice:{{ARGON2ID}}{}::::::\r\n\
         bob@example.com:{{SHA512-CRYPT}}{}:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\n\
         carol:{{BLF-CRYPT}}{}\n",
        argon2(argon2::Algorithm::Argon2id, "a"),
        without_rounds(&sha_crypt(sha_crypt::Algorithm::Sha512Crypt, "b")),
        bcrypt(bcrypt::Version::TwoY, "c"),
    );
    let (file, warnings) = parse(&text);
    assert_eq!(file.len(), 3);
    for user in ["alice", "bob@example.com", "carol"] {
        assert!(file.contains(user), "{user}");
    }
    assert_eq!(warnings, [warning(5, None, Warning::ExtraFieldsIgnored(1))]);
}

#[test]
fn unknown_schemes_are_skipped_by_line_and_user() {
    let text = "carol:{MD5-CRYPT}$1$abcdefgh$0123456789abcdefghijkl\n\
                dave:{SSHA512}c2VjcmV0c2VjcmV0\n\
                erin:{what ever}x\n";
    let (file, warnings) = parse(text);
    assert!(file.is_empty());
    assert_eq!(
        warnings,
        [
            warning(
                1,
                Some("carol"),
                Warning::Hash(HashProblem::UnknownScheme("MD5-CRYPT".into()))
            ),
            warning(
                2,
                Some("dave"),
                Warning::Hash(HashProblem::UnknownScheme("SSHA512".into()))
            ),
            warning(
                3,
                Some("erin"),
                Warning::Hash(HashProblem::UnknownScheme("(not shown)".into()))
            ),
        ]
    );
    assert_eq!(
        warnings[0].to_string(),
        "line 1 (user carol): unknown password scheme {MD5-CRYPT}; skipped"
    );
}

#[test]
fn plain_is_taken_with_a_warning() {
    let (file, warnings) = parse("dave:{PLAIN}hunter2-secret\n");
    assert!(file.contains("dave"));
    assert_eq!(warnings, [warning(1, Some("dave"), Warning::Plaintext)]);
    assert!(!warnings[0].to_string().contains("hunter2"));
    assert!(file.entry("dave").unwrap().matches("hunter2-secret"));
    assert!(!file.entry("dave").unwrap().matches("hunter2-secreT"));
}

#[test]
fn without_a_scheme_the_crypt_prefix_decides() {
    let text = format!(
        "erin:{}\nfrank:$1$abcdefgh$0123456789abcdefghijkl\ngina:my-plain-password\n\
         hal:{{CRYPT}}{}\n",
        without_rounds(&sha_crypt(sha_crypt::Algorithm::Sha512Crypt, "e")),
        bcrypt(bcrypt::Version::TwoB, "h"),
    );
    let (file, warnings) = parse(&text);
    assert!(file.contains("erin") && file.contains("hal"));
    assert_eq!(file.entry("erin").unwrap().scheme(), Scheme::Sha512Crypt);
    assert_eq!(file.entry("hal").unwrap().scheme(), Scheme::BlfCrypt);
    assert_eq!(
        warnings,
        [
            warning(2, Some("frank"), Warning::Hash(HashProblem::NotCrypt)),
            warning(3, Some("gina"), Warning::Hash(HashProblem::NotCrypt)),
        ]
    );
    assert!(!warnings[1].to_string().contains("my-plain-password"));
}

#[test]
fn scheme_names_ignore_case_but_must_match_the_hash() {
    let sha = without_rounds(&sha_crypt(sha_crypt::Algorithm::Sha512Crypt, "x"));
    let blf = bcrypt(bcrypt::Version::TwoY, "x");
    let text = format!("a:{{sha512-crypt}}{sha}\nb:{{SHA512-CRYPT}}{blf}\nc:{{ARGON2ID}}nothing\n");
    let (file, warnings) = parse(&text);
    assert!(file.contains("a"));
    let mismatch = |declared, found| Warning::Hash(HashProblem::SchemeMismatch { declared, found });
    assert_eq!(
        warnings,
        [
            warning(
                2,
                Some("b"),
                mismatch(Scheme::Sha512Crypt, Some(Scheme::BlfCrypt))
            ),
            warning(3, Some("c"), mismatch(Scheme::Argon2id, None)),
        ]
    );
}

#[test]
fn malformed_and_costly_hashes_are_skipped() {
    let huge = "$argon2id$v=19$m=4194304,t=3,p=1$MDEyMzQ1Njc4OWFiY2RlZg$\
                AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let text = format!(
        "a:{{ARGON2ID}}$argon2id$v=19$garbage\nb:$6$salt$short\nc:$2y$04$tooshort\nd:{huge}\n\
         e:{{ARGON2I}}{}\nf:\ng:{{PLAIN}}tab\there\n",
        argon2(argon2::Algorithm::Argon2id, "x"),
    );
    let (file, warnings) = parse(&text);
    assert!(file.is_empty());
    let problems: Vec<_> = warnings.iter().map(|w| w.what.clone()).collect();
    assert_eq!(
        problems,
        [
            Warning::Hash(HashProblem::Malformed(Scheme::Argon2id)),
            Warning::Hash(HashProblem::Malformed(Scheme::Sha512Crypt)),
            Warning::Hash(HashProblem::Malformed(Scheme::BlfCrypt)),
            Warning::Hash(HashProblem::TooMuchMemory(Scheme::Argon2id, 4_194_304)),
            Warning::Hash(HashProblem::SchemeMismatch {
                declared: Scheme::Argon2i,
                found: Some(Scheme::Argon2id)
            }),
            Warning::Hash(HashProblem::Empty),
            Warning::Hash(HashProblem::PlainNotPrecis),
        ]
    );
}

#[test]
fn lines_without_a_user_or_a_separator_or_utf8() {
    let mut text = b":{PLAIN}x\njust-a-password-on-its-own\n".to_vec();
    text.extend_from_slice(b"l\xe9a:{PLAIN}x\nok:{PLAIN}y\n{PLAIN}z:\n");
    let (file, warnings) = PasswdFile::parse(&text);
    assert_eq!(file.users().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(
        warnings,
        [
            warning(1, None, Warning::EmptyUser),
            warning(2, None, Warning::NoSeparator),
            warning(3, None, Warning::NotUtf8),
            warning(4, Some("ok"), Warning::Plaintext),
            warning(5, Some("(not shown)"), Warning::Hash(HashProblem::Empty)),
        ]
    );
    assert!(!warnings[1].to_string().contains("just-a-password"));
}

#[test]
fn the_first_line_of_a_user_wins() {
    let (file, warnings) = parse("dup:{PLAIN}first\ndup:{PLAIN}second\n");
    assert!(file.entry("dup").unwrap().matches("first"));
    assert_eq!(warnings[1], warning(2, Some("dup"), Warning::Duplicate(1)));
}

#[test]
fn user_names_are_nfc_and_case_sensitive() {
    // The file has "josé" decomposed, the client types it composed, and the
    // other way round.
    let (file, _) = parse("jose\u{301}:{PLAIN}x\nren\u{e9}e:{PLAIN}y\n");
    assert!(file.contains("jos\u{e9}"));
    assert!(file.contains("rene\u{301}e"));
    assert!(file.entry("jos\u{e9}").is_some());
    assert!(!file.contains("JOS\u{e9}"));
    // Composed and decomposed are one user, so the second is a duplicate.
    let (_, warnings) = parse("jos\u{e9}:{PLAIN}x\njose\u{301}:{PLAIN}y\n");
    assert_eq!(warnings.last().unwrap().what, Warning::Duplicate(1));
}

#[test]
fn every_scheme_verifies_its_own_hash_and_no_other_password() {
    use argon2::Algorithm::{Argon2i, Argon2id};
    use sha_crypt::Algorithm::{Sha256Crypt, Sha512Crypt};
    let pw = "pässwörd with spaces";
    let cases = [
        (
            format!("{{ARGON2ID}}{}", argon2(Argon2id, pw)),
            Scheme::Argon2id,
        ),
        (
            format!("{{ARGON2I}}{}", argon2(Argon2i, pw)),
            Scheme::Argon2i,
        ),
        (
            format!("{{SHA512-CRYPT}}{}", sha_crypt(Sha512Crypt, pw)),
            Scheme::Sha512Crypt,
        ),
        (
            without_rounds(&sha_crypt(Sha512Crypt, pw)),
            Scheme::Sha512Crypt,
        ),
        (
            format!("{{SHA256-CRYPT}}{}", sha_crypt(Sha256Crypt, pw)),
            Scheme::Sha256Crypt,
        ),
        (
            without_rounds(&sha_crypt(Sha256Crypt, pw)),
            Scheme::Sha256Crypt,
        ),
        (
            format!("{{BLF-CRYPT}}{}", bcrypt(bcrypt::Version::TwoY, pw)),
            Scheme::BlfCrypt,
        ),
        (bcrypt(bcrypt::Version::TwoB, pw), Scheme::BlfCrypt),
        (bcrypt(bcrypt::Version::TwoA, pw), Scheme::BlfCrypt),
        (format!("{{PLAIN}}{pw}"), Scheme::Plain),
    ];
    for (field, scheme) in cases {
        let hash = StoredHash::parse(&field).unwrap_or_else(|e| panic!("{scheme}: {e}"));
        assert_eq!(hash.scheme(), scheme);
        assert!(hash.matches(pw), "{scheme}");
        assert!(!hash.matches("pässwörd with spaceS"), "{scheme}");
        let decoy = hash.decoy();
        assert_eq!(decoy.scheme(), scheme);
        assert_eq!(decoy.cost_class(), hash.cost_class());
        assert!(!decoy.matches(pw), "{scheme} decoy");
    }
}

#[test]
fn the_decoy_is_of_the_most_common_scheme_and_cost() {
    let text = format!(
        "a:{}\nb:{}\nc:{}\nd:{{PLAIN}}x\n",
        bcrypt(bcrypt::Version::TwoY, "a"),
        argon2(argon2::Algorithm::Argon2id, "b"),
        argon2(argon2::Algorithm::Argon2id, "c"),
    );
    let (file, _) = parse(&text);
    assert_eq!(file.decoy().cost_class(), "ARGON2ID m=1024 t=1 p=1");
    let (empty, _) = parse("# nobody yet\n");
    assert_eq!(empty.decoy().cost_class(), "ARGON2ID m=65536 t=3 p=1");
}

#[test]
fn nothing_shows_a_password_or_a_hash() {
    let sha = without_rounds(&sha_crypt(sha_crypt::Algorithm::Sha512Crypt, "pw"));
    let output = sha.rsplit('$').next().unwrap().to_string();
    let text = format!(
        "a:{{PLAIN}}plain-secret\nb:{{SHA512-CRYPT}}{sha}:1:1::/:/bin/sh:nologin\n\
         c:{{BLF-CRYPT}}{sha}\nd:{{MD5}}{sha}\ne:plain-secret\nf:{{ARGON2ID}}{sha}\n"
    );
    let (file, warnings) = parse(&text);
    let mut shown = format!("{file:?}");
    for w in &warnings {
        shown += &format!("{w}\n{w:?}\n");
    }
    for user in ["a", "b"] {
        shown += &format!("{:?}", file.entry(user).unwrap());
    }
    for secret in ["plain-secret", &output, &output[..20]] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn read_refuses_what_is_not_a_safe_regular_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let missing = PasswdFile::read(&path).unwrap_err();
    assert!(matches!(&missing, LoadError::Read { .. }));
    assert!(missing.to_string().contains(&path.display().to_string()));
    assert!(matches!(
        PasswdFile::read(dir.path()),
        Err(LoadError::NotAFile(_))
    ));

    std::fs::write(&path, "alice:{PLAIN}secret-pw\nbob:{MD5}x\n").unwrap();
    let (file, report, _) = PasswdFile::read(&path).unwrap();
    assert!(file.contains("alice"));
    assert_eq!(report.users, 1);
    assert_eq!(report.warnings.len(), 2);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
    let e = PasswdFile::read(&path).unwrap_err();
    assert!(
        matches!(e, LoadError::WorldWritable { mode: 0o646, .. }),
        "{e}"
    );
    assert!(!e.to_string().contains("secret-pw"));
}

#[test]
fn stamps_change_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    assert_eq!(stamp(&path), None);
    std::fs::write(&path, "a:{PLAIN}x\n").unwrap();
    let (_, _, read) = PasswdFile::read(&path).unwrap();
    assert_eq!(stamp(&path), Some(read.clone()));
    std::fs::write(&path, "a:{PLAIN}xy\n").unwrap();
    assert_ne!(stamp(&path), Some(read));
    let before = stamp(&path);
    // A chmod alone (ctime) counts: the next read must see the new mode.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o602);
    std::fs::set_permissions(&path, mode).unwrap();
    assert_ne!(stamp(&path), before);
}
