//! `smarthost check` and `smarthost route` as an operator runs them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn smarthost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(args)
        .output()
        .expect("run smarthost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sample configs validate once their secret files exist with mode 0600.
#[test]
fn sample_configs_validate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    for sample in ["mailgun", "office365", "gmail", "dev"] {
        let text = std::fs::read_to_string(format!("{root}/conf/{sample}.toml")).unwrap();
        let text = text.replace("/etc/smarthost/", &format!("{}/", dir.path().display()));
        for secret in ["mailgun", "office365", "gmail", "gmail-client"] {
            let p = dir.path().join(format!("{secret}.secret"));
            std::fs::write(&p, "sample-secret-value\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = dir.path().join(format!("{sample}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let (code, out, err) = smarthost(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{sample}: {out}{err}");
        assert!(out.contains("OK"), "{out}");
        assert!(!out.contains("sample-secret-value") && !err.contains("sample-secret-value"));
    }
}

#[test]
fn check_refuses_readable_secret_and_reports_lines() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "TopSecret-123").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[route]]\nname = \"up\"\nhost = \"smtp.example.com\"\nusername = \"u@example.com\"\npassword_file = \"{}\"\n\n[routing]\ndefault = \"up\"\n[routing.senders]\n\"example.org\" = \"missing\"\n",
            pw.display()
        ),
    )
    .unwrap();
    let (code, out, err) = smarthost(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains(&format!("{}:1:", cfg.display())), "{err}");
    assert!(err.contains(&format!("{}:10:", cfg.display())), "{err}");
    assert!(!err.contains("TopSecret") && !out.contains("TopSecret"));

    std::fs::write(&cfg, "listen = [\"127.0.0.1:25\"]\nbogus_key = 1\n").unwrap();
    let (code, _, err) = smarthost(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(err.contains("bogus_key") && err.contains("line 2"), "{err}");
}

#[test]
fn route_explains_its_decision() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let mut text = String::new();
    for r in ["a", "b", "c", "d"] {
        text.push_str(&format!(
            "[[route]]\nname = \"{r}\"\ntype = \"directory\"\npath = \"out-{r}\"\n"
        ));
    }
    text.push_str(
        "[routing]\ndefault = \"d\"\n[routing.senders]\n\"boss@example.com\" = \"a\"\n\"example.com\" = \"b\"\n\".example.com\" = \"c\"\n\"bücher.example\" = \"a\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let c = cfg.to_str().unwrap();
    for (sender, route, why) in [
        ("Boss@EXAMPLE.com", "a", "address"),
        ("staff@example.com", "b", "domain example.com"),
        ("x@shop.eu.example.com", "c", "parent domain .example.com"),
        (
            "x@xn--bcher-kva.example",
            "a",
            "domain xn--bcher-kva.example",
        ),
        ("x@other.org", "d", "default"),
        ("<>", "d", "default"),
    ] {
        let (code, out, err) = smarthost(&["route", "--config", c, sender]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("route {route} ")), "{sender}: {out}");
        assert!(out.contains(why), "{sender}: {out}");
    }
}
