use std::time::Duration;

use super::*;
use crate::auth::test_hashes::{argon2, argon2_costing, bcrypt, sha_crypt, without_rounds};

struct Site {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Site {
    fn new(text: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, text).unwrap();
        Site { _dir: dir, path }
    }

    /// Replaces the file the way an editor or `mv` does: a new inode.
    fn replace(&self, text: &str) {
        let tmp = self.path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn verifier(&self, options: Options) -> Verifier {
        Verifier::with_options(&self.path, options)
    }
}

/// Looks at the file at every login, so changes are seen at once.
fn eager() -> Options {
    Options {
        check_every: Duration::ZERO,
        ..Options::default()
    }
}

fn is_ok(v: &Verdict, user: &str) -> bool {
    matches!(v, Verdict::Ok { identity } if identity == user)
}

#[tokio::test]
async fn each_scheme_accepts_its_password_and_refuses_others() {
    let text = format!(
        "argon:{{ARGON2ID}}{}\nargoni:{{ARGON2I}}{}\nsha512:{{SHA512-CRYPT}}{}\n\
         sha256:{{SHA256-CRYPT}}{}\nblf:{{BLF-CRYPT}}{}\nplain:{{PLAIN}}pw-plain\n",
        argon2(argon2::Algorithm::Argon2id, "pw-argon"),
        argon2(argon2::Algorithm::Argon2i, "pw-argoni"),
        without_rounds(&sha_crypt(sha_crypt::Algorithm::Sha512Crypt, "pw-sha512")),
        sha_crypt(sha_crypt::Algorithm::Sha256Crypt, "pw-sha256"),
        bcrypt(bcrypt::Version::TwoY, "pw-blf"),
    );
    let site = Site::new(&text);
    let v = site.verifier(Options::default());
    for user in ["argon", "argoni", "sha512", "sha256", "blf", "plain"] {
        let right = format!("pw-{user}");
        assert!(
            is_ok(&v.verify(user, right.as_bytes()).await, user),
            "{user}"
        );
        let verdict = v.verify(user, b"pw-wrong").await;
        assert!(matches!(verdict, Verdict::Refused), "{user}: {verdict:?}");
        if user != "argon" {
            // Another user's password is no good either.
            assert!(matches!(
                v.verify(user, b"pw-argon").await,
                Verdict::Refused
            ));
        }
    }
}

#[tokio::test]
async fn a_decomposed_user_name_finds_the_composed_one() {
    let site = Site::new(&format!(
        "jos\u{e9}:{}\n",
        argon2(argon2::Algorithm::Argon2id, "pw")
    ));
    let v = site.verifier(Options::default());
    let verdict = v.verify("jose\u{301}", b"pw").await;
    assert!(is_ok(&verdict, "jos\u{e9}"), "{verdict:?}");
    assert!(v.knows("jose\u{301}").await);
    assert!(matches!(
        v.verify("JOS\u{c9}", b"pw").await,
        Verdict::Refused
    ));
}

#[tokio::test]
async fn passwords_are_prepared_by_opaque_string() {
    let site = Site::new(&format!(
        "u:{}\n",
        argon2(argon2::Algorithm::Argon2id, "two words caf\u{e9}")
    ));
    let v = site.verifier(Options::default());
    // A no-break space and an ideographic space are spaces; é may come
    // decomposed.
    for typed in ["two words caf\u{e9}", "two\u{a0}words\u{3000}cafe\u{301}"] {
        assert!(
            is_ok(&v.verify("u", typed.as_bytes()).await, "u"),
            "{typed:?}"
        );
    }
    // No width mapping, no case mapping; control characters and non-UTF-8
    // are refused, not errors.
    for typed in [
        "ｔｗｏ words caf\u{e9}".as_bytes(),
        "Two words caf\u{e9}".as_bytes(),
        b"two\twords caf\xc3\xa9",
        b"two words caf\xe9",
        b"",
    ] {
        assert!(
            matches!(v.verify("u", typed).await, Verdict::Refused),
            "{typed:?}"
        );
    }
}

#[tokio::test]
async fn a_cached_success_skips_the_pool() {
    let site = Site::new(&format!(
        "alice:{}\n",
        argon2(argon2::Algorithm::Argon2id, "pw")
    ));
    let v = site.verifier(Options::default());
    assert!(is_ok(&v.verify("alice", b"pw").await, "alice"));
    assert_eq!(v.hash_checks(), 1);
    for _ in 0..5 {
        assert!(is_ok(&v.verify("alice", b"pw").await, "alice"));
    }
    assert_eq!(v.hash_checks(), 1);
    // Failures are not cached: each one is checked in full.
    assert!(matches!(
        v.verify("alice", b"wrong").await,
        Verdict::Refused
    ));
    assert!(matches!(
        v.verify("alice", b"wrong").await,
        Verdict::Refused
    ));
    assert_eq!(v.hash_checks(), 3);
}

#[tokio::test]
async fn a_cached_success_expires() {
    let site = Site::new(&format!(
        "alice:{}\n",
        argon2(argon2::Algorithm::Argon2id, "pw")
    ));
    let v = site.verifier(Options {
        cache_ttl: Duration::from_millis(50),
        ..Options::default()
    });
    assert!(is_ok(&v.verify("alice", b"pw").await, "alice"));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(is_ok(&v.verify("alice", b"pw").await, "alice"));
    assert_eq!(v.hash_checks(), 2);
}

#[tokio::test]
async fn an_unknown_user_costs_a_check_like_a_known_one() {
    let site = Site::new(&format!(
        "alice:{}\n",
        argon2(argon2::Algorithm::Argon2id, "pw")
    ));
    let v = site.verifier(Options::default());
    assert!(matches!(v.verify("mallory", b"pw").await, Verdict::Refused));
    assert!(matches!(v.verify("mallory", b"pw").await, Verdict::Refused));
    assert_eq!(v.hash_checks(), 2);
    assert!(!v.knows("mallory").await);
    assert!(v.knows("alice").await);
}

#[tokio::test]
async fn a_changed_file_is_read_again_and_the_cache_dropped() {
    let site = Site::new(&format!(
        "alice:{}\n",
        argon2(argon2::Algorithm::Argon2id, "old")
    ));
    let v = site.verifier(eager());
    assert!(is_ok(&v.verify("alice", b"old").await, "alice"));
    site.replace(&format!(
        "alice:{}\nbob:{{PLAIN}}bob-pw\n",
        argon2(argon2::Algorithm::Argon2id, "new")
    ));
    // The old password was cached; the change drops it.
    assert!(matches!(v.verify("alice", b"old").await, Verdict::Refused));
    assert!(is_ok(&v.verify("alice", b"new").await, "alice"));
    assert!(is_ok(&v.verify("bob", b"bob-pw").await, "bob"));
    // Rewritten in place, same inode, different size.
    std::fs::write(&site.path, "bob:{PLAIN}bob-pw2\n").unwrap();
    assert!(matches!(v.verify("alice", b"new").await, Verdict::Refused));
    assert!(is_ok(&v.verify("bob", b"bob-pw2").await, "bob"));
}

#[tokio::test]
async fn the_file_is_looked_at_once_per_interval_or_on_reload() {
    let site = Site::new("alice:{PLAIN}old-pw\n");
    let v = site.verifier(Options {
        check_every: Duration::from_secs(1),
        ..Options::default()
    });
    site.replace("alice:{PLAIN}new-pw\n");
    assert!(is_ok(&v.verify("alice", b"old-pw").await, "alice"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(is_ok(&v.verify("alice", b"new-pw").await, "alice"));

    let v = site.verifier(Options {
        check_every: Duration::from_secs(3600),
        ..Options::default()
    });
    site.replace("alice:{PLAIN}newer-pw\nbob:{MD5}x\n");
    assert!(is_ok(&v.verify("alice", b"new-pw").await, "alice"));
    let report = v.reload().await.unwrap();
    assert_eq!((report.users, report.warnings.len()), (1, 2));
    assert!(matches!(
        v.verify("alice", b"new-pw").await,
        Verdict::Refused
    ));
    assert!(is_ok(&v.verify("alice", b"newer-pw").await, "alice"));
}

#[tokio::test]
async fn an_unreadable_file_is_a_temporary_failure_until_it_is_back() {
    let site = Site::new("alice:{PLAIN}secret-pw\n");
    std::fs::remove_file(&site.path).unwrap();
    let v = site.verifier(eager());
    let verdict = v.verify("alice", b"secret-pw").await;
    let Verdict::Unavailable(reason) = &verdict else {
        panic!("{verdict:?}");
    };
    assert!(reason.to_string().contains("passwd-file"), "{reason}");
    assert!(!v.knows("alice").await);
    std::fs::write(&site.path, "alice:{PLAIN}secret-pw\n").unwrap();
    assert!(is_ok(&v.verify("alice", b"secret-pw").await, "alice"));
    std::fs::remove_file(&site.path).unwrap();
    assert!(matches!(
        v.verify("alice", b"secret-pw").await,
        Verdict::Unavailable(_)
    ));
    assert!(v.reload().await.is_err());
}

#[tokio::test]
async fn checks_beyond_the_pool_wait_and_then_give_up() {
    // One place in the pool, and a check slow enough (16 MiB of ARGON2 in
    // a debug build) that a second cannot start within 1 ms.
    let site = Site::new(&format!(
        "alice:{}\n",
        argon2_costing(argon2::Algorithm::Argon2id, "pw", 16 * 1024)
    ));
    let v = Arc::new(site.verifier(Options {
        pool: 1,
        queue_wait: Duration::from_millis(1),
        ..Options::default()
    }));
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let v = v.clone();
            tokio::spawn(async move { v.verify("alice", if i == 0 { b"pw" } else { b"px" }).await })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        if let Verdict::Unavailable(Unavailable::Busy(_)) = t.await.unwrap() {
            busy += 1;
        }
    }
    assert!(busy >= 1, "every check started at once with a pool of one");
    assert!(v.hash_checks() < 3);
}

#[test]
fn the_pool_is_the_core_count() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(Options::default().pool, cores);
    assert_eq!(Options::default().cache_ttl, Duration::from_secs(60));
    assert_eq!(Options::default().cache_entries, 1024);
}

#[tokio::test]
async fn no_verdict_or_error_shows_a_password_or_a_hash() {
    let hash = argon2(argon2::Algorithm::Argon2id, "the-password");
    let output = hash.rsplit('$').next().unwrap().to_string();
    let site = Site::new(&format!("alice:{hash}\nbob:{{PLAIN}}bob-secret\n"));
    let v = site.verifier(eager());
    let mut shown = format!("{v:?}");
    for (user, pw) in [
        ("alice", "the-password"),
        ("alice", "x"),
        ("bob", "bob-secret"),
        ("eve", "y"),
    ] {
        shown += &format!("{:?}\n", v.verify(user, pw.as_bytes()).await);
    }
    std::fs::remove_file(&site.path).unwrap();
    if let Verdict::Unavailable(reason) = v.verify("alice", b"the-password").await {
        shown += &format!("{reason}\n{reason:?}\n");
    }
    for secret in ["the-password", "bob-secret", &output, &output[..16]] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}
