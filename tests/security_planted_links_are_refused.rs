//! Root's commands writing where the daemon's user can plant links: `oauth
//! login`, `oauth token`, `oauth status` and `test-send` with the OAuth state
//! directory belonging to that user (here `nobody`), and `import` writing
//! secrets into a directory it owns. A symbolic or hard link to a root-owned
//! file at any name they use gives a clear error and leaves the file as it was;
//! without the links the same commands work and what they make belongs to the
//! directory's owner. A racer replacing import's temporary file never gets a
//! root-owned file or root's chown.
//!
//! Needs root and `setpriv` (as CI has); without them it says it skipped, or
//! fails under `CI=true`.

mod common;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use oauth_peers::{oauth2_source, write_state, Endpoint};

const NOBODY: u32 = 65534;
const VICTIM: &str = "root's own file\n";

fn root_with_setpriv(test: &str) -> bool {
    let ok = nix::unistd::geteuid().is_root() && common::have("setpriv");
    common::require(&format!("root and setpriv ({test})"), ok)
}

/// The daemon's directory (owned by `nobody`) with its `oauth` state
/// directory, a root-owned file beside it, and a configuration whose token
/// source keeps its state there.
struct Site {
    top: tempfile::TempDir,
    oauth: PathBuf,
    victim: PathBuf,
    config: PathBuf,
    _ep: Endpoint,
}

fn site() -> Site {
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let lib = top.path().join("lib");
    let oauth = lib.join("oauth");
    for d in [&lib, &oauth] {
        std::fs::create_dir(d).unwrap();
        give_to_nobody(d);
    }
    let victim = top.path().join("victim");
    std::fs::write(&victim, VICTIM).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ep = Endpoint::start();
    ep.add_refresh_token("rt-planted-0001");
    let config = top.path().join("smarthost.toml");
    let source = oauth2_source(&ep.url("/token"), &oauth.join("o365.json")).replace(
        "scopes = [",
        &format!("device_url = \"{}\"\nscopes = [", ep.url("/device")),
    );
    let body = format!(
        "hostname = \"relay.test\"\nqueue_path = \"{q}\"\n{source}[[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nallow_plaintext = true\nauth = \"xoauth2\"\nusername = \"app@contoso.test\"\ntoken_source = \"o365\"\n[routing]\ndefault = \"up\"\n[local]\nsocket_dir = \"{s}\"\ndrop_dir = \"{d}\"\n",
        q = top.path().join("queue").display(),
        port = common::free_port(),
        s = top.path().join("run").display(),
        d = top.path().join("drop").display(),
    );
    std::fs::write(&config, body).unwrap();
    Site {
        top,
        oauth,
        victim,
        config,
        _ep: ep,
    }
}

fn give_to_nobody(p: &Path) {
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    let nogroup = Some(nix::unistd::Gid::from_raw(NOBODY));
    nix::unistd::chown(p, nobody, nogroup).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Runs a shell command as `nobody` (what the daemon's user could do).
fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv");
    assert!(out.status.success(), "{script}: {}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Root runs `smarthost <args>` on the site's configuration.
fn smarthost(site: &Site, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg(args[0])
        .arg("--config")
        .arg(&site.config)
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run smarthost")
}

fn assert_untouched(victim: &Path) {
    let meta = std::fs::symlink_metadata(victim).unwrap();
    assert_eq!(std::fs::read_to_string(victim).unwrap(), VICTIM);
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "the victim was chowned");
    assert_eq!(meta.mode() & 0o7777, 0o600, "the victim was chmodded");
}

/// Stops the racer however the test ends.
struct Racer(std::process::Child);

impl Drop for Racer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const COMMANDS: [&[&str]; 4] = [
    &["oauth", "login", "o365"],
    &["oauth", "token", "o365"],
    &["oauth", "status"],
    &[
        "test-send",
        "--route",
        "up",
        "--from",
        "app@contoso.test",
        "--to",
        "rcpt@dst.test",
    ],
];

/// Every command refuses, naming what it found, and the victim is as it was.
fn assert_each_refuses(site: &Site, planted: &str, why: &str) {
    for args in COMMANDS {
        let out = smarthost(site, args);
        let said = text(&out);
        assert!(!out.status.success(), "{args:?} with {planted}: {said}");
        assert!(said.contains(why), "{args:?} with {planted}: {said}");
        assert_untouched(&site.victim);
    }
}

#[test]
fn oauth_commands_refuse_links_planted_in_the_daemons_directory() {
    if !root_with_setpriv("planted links") {
        return;
    }
    let site = site();
    let v = site.victim.display().to_string();
    let o = site.oauth.display().to_string();
    write_state(&site.oauth.join("o365.json"), "rt-planted-0001");
    give_to_nobody(&site.oauth.join("o365.json"));
    std::fs::set_permissions(
        site.oauth.join("o365.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    as_nobody(&format!("ln -s {v} {o}/o365.json.lock"));
    assert_each_refuses(&site, "a symlink at the lock", "symbolic link");
    std::fs::remove_file(site.oauth.join("o365.json.lock")).unwrap();

    // A second name for root's file: the kernel lets only its owner make one
    // (protected_hardlinks), so root plants it for the test.
    std::fs::hard_link(&site.victim, site.oauth.join("o365.json.lock")).unwrap();
    assert_each_refuses(&site, "a hard link at the lock", "hard links");
    std::fs::remove_file(site.oauth.join("o365.json.lock")).unwrap();

    std::fs::rename(
        site.oauth.join("o365.json"),
        site.top.path().join("kept.json"),
    )
    .unwrap();
    as_nobody(&format!("ln -s {v} {o}/o365.json"));
    for args in &COMMANDS[1..3] {
        let out = smarthost(&site, args);
        assert!(
            text(&out).contains("symbolic link"),
            "{args:?}: {}",
            text(&out)
        );
        assert_untouched(&site.victim);
    }
    std::fs::remove_file(site.oauth.join("o365.json")).unwrap();
    assert_works_without_links(&site);
}

/// Without links the same commands work as root, and every file they made in
/// the daemon's directory belongs to the daemon's user.
fn assert_works_without_links(site: &Site) {
    let out = smarthost(site, &["oauth", "login", "o365"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = smarthost(site, &["oauth", "token", "o365"]);
    assert!(out.status.success(), "{}", text(&out));
    let names: Vec<_> = std::fs::read_dir(&site.oauth)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 2, "the state and its lock: {names:?}");
    for p in names {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.is_file(), "{}", p.display());
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (NOBODY, 0o600),
            "{}",
            p.display()
        );
    }
}

#[test]
fn a_state_directory_planted_as_a_link_is_refused() {
    if !root_with_setpriv("planted state directory") {
        return;
    }
    let site = site();
    let root_only = site.top.path().join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::remove_dir(&site.oauth).unwrap();
    as_nobody(&format!(
        "ln -s {} {}",
        root_only.display(),
        site.oauth.display()
    ));
    let out = smarthost(&site, &["oauth", "login", "o365"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&root_only).unwrap().count(), 0);
}

/// `import` as root into a secrets directory `nobody` owns, while `nobody`
/// replaces every temporary file it sees with a link to root's file.
#[test]
fn import_never_hands_a_racer_roots_file() {
    let python = Path::new(SYSTEM_PYTHON).exists();
    if !root_with_setpriv("import racer")
        || !common::require("/usr/bin/python3 for the racer", python)
    {
        return;
    }
    let site = site();
    let secrets = site.top.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    give_to_nobody(&secrets);
    // Python, not a shell loop: fast enough to win the race often.
    let racer = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            SYSTEM_PYTHON,
            "-c",
        ])
        .arg(RACER)
        .arg(&secrets)
        .arg(&site.victim)
        .spawn()
        .expect("racer");
    let _racer = Racer(racer);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import/postfix");
    let (mut ok, mut refused) = (0, 0);
    // At least 100 runs, and on until the racer has won a few.
    for run in 0.. {
        if run >= 100 && refused >= 3 || run >= 1000 {
            break;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
            .args(["import", "postfix", fixtures, "--force", "--secrets-dir"])
            .arg(&secrets)
            .output()
            .expect("import");
        assert_untouched(&site.victim);
        if out.status.success() {
            ok += 1;
        } else {
            assert!(
                text(&out).contains("replaced") || text(&out).contains("symbolic link"),
                "{}",
                text(&out)
            );
            refused += 1;
        }
        assert_secrets_are_imports(&secrets);
    }
    eprintln!("import against the racer: {ok} written, {refused} refused");
    assert!(refused >= 3, "the racer never won: the race was not run");
}

/// Every secret in `dir` is a file import wrote (the racer's own names aside).
fn assert_secrets_are_imports(dir: &Path) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        // The racer's own names (dot-files, `ln`'s temporaries) aside.
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".password") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            meta.is_file(),
            "{} is not the file import wrote",
            p.display()
        );
        assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o600));
    }
}

/// The system's Python: one in root's home is out of nobody's reach.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Replaces every temporary file in argv[1] with a link to argv[2].
const RACER: &str = r#"
import os, sys
d, victim = sys.argv[1], sys.argv[2]
link = os.path.join(d, ".racer-link")
while True:
    for n in os.listdir(d):
        if n.startswith(".") and n.endswith(".tmp"):
            try:
                os.symlink(victim, link)
                os.rename(link, os.path.join(d, n))
            except OSError:
                try:
                    os.unlink(link)
                except OSError:
                    pass
"#;

/// Links planted at the names `import --force` writes (a secret and the
/// configuration) are replaced by the files it wrote; what they pointed at
/// is left as it was.
#[test]
fn import_replaces_planted_links_without_writing_through_them() {
    if !root_with_setpriv("import planted links") {
        return;
    }
    let site = site();
    let secrets = site.top.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    give_to_nobody(&secrets);
    let v = site.victim.display().to_string();
    let s = secrets.display().to_string();
    as_nobody(&format!(
        "ln -s {v} {s}/gmail.password && ln -s {v} {s}/out.toml"
    ));
    std::fs::hard_link(
        &site.victim,
        secrets.join("office365-app-contoso-com.password"),
    )
    .unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import/postfix");
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args([
            "import",
            "postfix",
            fixtures,
            "--force",
            "--secrets-dir",
            &s,
        ])
        .arg("-o")
        .arg(secrets.join("out.toml"))
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", text(&out));
    assert_untouched(&site.victim);
    assert_secrets_are_imports(&secrets);
    let config = std::fs::symlink_metadata(secrets.join("out.toml")).unwrap();
    assert!(config.is_file(), "the configuration is a file of its own");
}
