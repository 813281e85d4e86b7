use super::*;
use crate::config::{Config, ConfigError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("/nonexistent"))
}

#[test]
fn plaintext_rules() {
    let remote = r#"
[[route]]
name = "up"
host = "smtp.example.com"
tls = "none"
[routing]
default = "up"
"#;
    let err = parse(remote).unwrap_err().to_string();
    assert!(err.contains("allow_plaintext"), "{err}");
    let allowed = remote.replace("tls = \"none\"", "tls = \"none\"\nallow_plaintext = true");
    assert!(parse(&allowed).is_ok());
    let local = remote.replace("smtp.example.com", "127.0.0.1");
    assert!(parse(&local).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    let mut f = std::fs::File::create(&secret).unwrap();
    f.write_all(b"hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let creds = local.replace(
        "tls = \"none\"",
        &format!(
            "tls = \"none\"\nusername = \"u\"\npassword_file = \"{}\"",
            secret.display()
        ),
    );
    let err = parse(&creds).unwrap_err().to_string();
    assert!(err.contains("clear text"), "{err}");
    assert!(!err.contains("hunter2"));
}

#[test]
fn helo_per_route() {
    let text = r#"
[[route]]
name = "up"
host = "smtp.example.com"
helo = "cms.example.org"
[[route]]
name = "plain"
host = "smtp.example.net"
[routing]
default = "up"
"#;
    let c = parse(text).expect("valid");
    let helo = |name: &str| match &c.routes[name].transport {
        Transport::Smtp(s) => s.helo.clone(),
        Transport::Directory(_) => panic!("smtp route expected"),
    };
    assert_eq!(helo("up").as_deref(), Some("cms.example.org"));
    assert_eq!(helo("plain"), None);
    assert!(describe(&c).contains("helo=cms.example.org"));

    let err = parse(&text.replace("cms.example.org", "two words"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a host name"), "{err}");
    let dir = "[[route]]\nname = \"d\"\ntype = \"directory\"\npath = \"x\"\nhelo = \"h\"\n[routing]\ndefault = \"d\"\n";
    let err = parse(dir).unwrap_err().to_string();
    assert!(err.contains("takes only path"), "{err}");
}

#[test]
fn secret_file_permissions_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "s3cret-value\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        r#"
[[route]]
name = "up"
host = "smtp.example.com"
username = "me@example.com"
password_file = "{}"
[routing]
default = "up"
"#,
        secret.display()
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = parse(&text).expect("valid");
    let route = c.routes.get("up").unwrap();
    let Transport::Smtp(s) = &route.transport else {
        panic!("smtp route expected")
    };
    let creds = s.credentials.as_ref().unwrap();
    let AuthSecret::Password { password, .. } = &creds.secret else {
        panic!("password expected")
    };
    assert_eq!(password.expose(), "s3cret-value");
    assert_eq!(s.port, 587);
    assert_eq!(s.tls, TlsMode::StartTls);
    let shown = format!("{c:?}\n{}", describe(&c));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("me@example.com"));
}
