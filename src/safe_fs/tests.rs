use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

fn put_bytes(dir: &Dir, name: &str, bytes: &[u8], replace: bool) -> Result<(), SafeFsError> {
    let mut t = dir.temp(name, 0o600)?;
    t.file.write_all(bytes).unwrap();
    dir.put(&t.file, &t.name, OsStr::new(name), replace)?;
    dir.sync(&t.file)
}

#[test]
fn a_file_is_written_under_a_temp_name_and_put_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::create(&tmp.path().join("a/b"), 0o700).unwrap();
    put_bytes(&dir, "s.json", b"one", false).unwrap();
    let err = put_bytes(&dir, "s.json", b"two", false).unwrap_err();
    assert!(
        matches!(&err, SafeFsError::Io { source, .. }
        if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    put_bytes(&dir, "s.json", b"three", true).unwrap();
    let (mut f, st) = dir.read("s.json").unwrap().unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text, "three");
    assert_eq!(st.st_mode & 0o777, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temp file is left behind");
    let made = std::fs::metadata(tmp.path().join("a")).unwrap();
    assert_eq!(made.permissions().mode() & 0o777, 0o700);
    assert!(dir.read("absent").unwrap().is_none());
}

#[test]
fn links_at_a_files_name_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "root's").unwrap();
    let dir = Dir::create(&tmp.path().join("state"), 0o700).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("sym")).unwrap();
    std::fs::hard_link(&victim, dir.path().join("hard")).unwrap();
    nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    for name in ["sym", "hard", "fifo"] {
        let read = dir.read(name).unwrap_err();
        let lock = dir.open_or_create(name, 0o600).unwrap_err();
        for err in [read, lock] {
            let right = match name {
                "sym" => matches!(err, SafeFsError::Link(_)),
                "hard" => matches!(err, SafeFsError::HardLinked { links: 2, .. }),
                _ => matches!(err, SafeFsError::NotAFile(_)),
            };
            assert!(right, "{name}: {err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
}

#[test]
fn links_are_followed_only_where_nobody_else_could_have_put_them() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("mine")).unwrap();
    assert!(Dir::open(&tmp.path().join("mine")).is_ok());

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&real, shared.join("planted")).unwrap();
    let err = Dir::create(&shared.join("planted/oauth"), 0o700).unwrap_err();
    assert!(matches!(err, SafeFsError::Link(_)), "{err}");
    assert!(!real.join("oauth").exists());

    let err = Dir::open(&tmp.path().join("real/../real")).unwrap_err();
    assert!(matches!(err, SafeFsError::DotDot(_)), "{err}");
    let dir = Dir::open(&real).unwrap();
    let err = dir.read("../x").unwrap_err();
    assert!(matches!(err, SafeFsError::DotDot(_)), "{err}");
}

#[test]
fn a_temp_file_swapped_before_it_is_put_in_place_is_noticed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let t = dir.temp("s", 0o600).unwrap();
    let swapped = dir.path().join(&t.name);
    std::fs::remove_file(&swapped).unwrap();
    std::fs::write(&swapped, "someone else's").unwrap();
    let err = dir
        .put(&t.file, &t.name, OsStr::new("s"), true)
        .unwrap_err();
    assert!(matches!(err, SafeFsError::Replaced(_)), "{err}");
}

#[test]
fn a_subdirectory_planted_as_a_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join(".bad")).unwrap();
    let err = dir.subdir(".bad", 0o700).unwrap_err();
    assert!(matches!(err, SafeFsError::Link(_)), "{err}");
    let ok = dir.subdir(".good", 0o700).unwrap();
    assert_eq!(ok.stat().st_mode & 0o777, 0o700);
}

#[test]
fn a_trusted_link_is_walked_under_the_same_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let (mine, shared) = (tmp.path().join("mine"), tmp.path().join("shared"));
    std::fs::create_dir(&mine).unwrap();
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(tmp.path().join("private"), "root's").unwrap();
    std::fs::set_permissions(
        tmp.path().join("private"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // Ours: mine/token -> ../shared/token; theirs: shared/token -> ../private.
    std::os::unix::fs::symlink("../shared/token", mine.join("token")).unwrap();
    std::os::unix::fs::symlink("../private", shared.join("token")).unwrap();
    let dir = Dir::open(&mine).unwrap();
    let err = dir.read_linked("token").unwrap_err();
    assert!(matches!(err, SafeFsError::Link(_)), "{err}");

    // A relative link with `..`, as /var/run -> ../run, is followed.
    std::fs::remove_file(mine.join("token")).unwrap();
    std::os::unix::fs::symlink("../private", mine.join("token")).unwrap();
    let (mut f, _) = dir.read_linked("token").unwrap().unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text, "root's");
    std::os::unix::fs::symlink("shared/../mine", tmp.path().join("via")).unwrap();
    assert!(Dir::open(&tmp.path().join("via")).is_ok());
    std::os::unix::fs::symlink("loop", mine.join("loop")).unwrap();
    let err = dir.read_linked("loop").unwrap_err();
    assert!(matches!(err, SafeFsError::TooManyLinks(_)), "{err}");
}

/// A file in a directory someone else owns must be theirs: root's file there
/// may be a hard link whose other name was removed between open and check.
#[test]
fn in_someone_elses_directory_only_their_files_are_read() {
    if !geteuid().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let nobody = Some(Uid::from_raw(65534));
    nix::unistd::chown(&theirs, nobody, None).unwrap();
    std::fs::write(theirs.join("roots"), "x").unwrap();
    std::fs::write(theirs.join("own"), "y").unwrap();
    nix::unistd::chown(&theirs.join("own"), nobody, None).unwrap();
    let dir = Dir::open(&theirs).unwrap();
    let err = dir.read("roots").unwrap_err();
    assert!(matches!(err, SafeFsError::Foreign { uid: 0, .. }), "{err}");
    assert!(dir.read("own").unwrap().is_some());
    // What we create there ourselves is ours to use, and becomes theirs.
    let t = dir.temp("s", 0o600).unwrap();
    assert_eq!(fstat(t.file.as_fd()).unwrap().st_uid, 65534);
}
