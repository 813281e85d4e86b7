use std::path::Path;

use super::*;
use crate::upstream::transcript::TlsInfo;

fn config(text: &str) -> Config {
    Config::parse(text, "test.toml", Path::new("/nonexistent")).expect("valid config")
}

/// Routes without secrets (a password file would have to exist) and a table.
const ROUTES: &str = r#"
hostname = "relay.example.org"
[[route]]
name = "mailgun"
host = "smtp.mailgun.org"
[[route]]
name = "office365"
host = "smtp.office365.com"
[[route]]
name = "subdomains"
host = "smtp.example.net"
[[route]]
name = "default"
host = "smtp.example.com"
[[route]]
name = "capture"
type = "directory"
path = "/tmp/mail"
[routing]
default = "default"
[routing.senders]
"shop.example" = "mailgun"
"app@contoso.com" = "office365"
"contoso.com" = "office365"
".example.net" = "subdomains"
"#;

#[test]
fn default_sender_table() {
    let c = config(ROUTES);
    for (route, sender) in [
        // An address beats a domain in the table's own order.
        ("office365", "app@contoso.com"),
        ("mailgun", "postmaster@shop.example"),
        // No sender in the table names it exactly: the relay's own name.
        ("subdomains", "postmaster@relay.example.org"),
        ("default", "postmaster@relay.example.org"),
    ] {
        assert_eq!(default_sender(&c, &c.routes[route]), sender, "{route}");
    }
}

#[test]
fn default_sender_prefers_an_address_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_user = |user: &str| {
        config(&ROUTES.replace(
            "host = \"smtp.mailgun.org\"",
            &format!(
                "host = \"smtp.mailgun.org\"\nusername = \"{user}\"\npassword_file = \"{}\"",
                pw.display()
            ),
        ))
    };
    let c = with_user("postmaster@mg.shop.example");
    assert_eq!(
        default_sender(&c, &c.routes["mailgun"]),
        "postmaster@mg.shop.example"
    );
    // An SES-style access key id is no address.
    let c = with_user("AKIAIOSFODNN7EXAMPLE");
    assert_eq!(
        default_sender(&c, &c.routes["mailgun"]),
        "postmaster@shop.example"
    );
}

#[test]
fn routes_that_cannot_be_tested() {
    let c = config(ROUTES);
    let err = smtp_route(&c, "nope").unwrap_err();
    assert_eq!(err.exit_code(), EX_USAGE);
    assert_eq!(
        err.to_string(),
        "no route named \"nope\"; the routes are: capture, default, mailgun, office365, subdomains"
    );
    let err = smtp_route(&c, "capture").unwrap_err();
    assert_eq!(err.exit_code(), EX_USAGE);
    assert!(smtp_route(&c, "mailgun").is_ok());
}

#[tokio::test]
async fn bad_input_is_refused_before_connecting() {
    let c = config(ROUTES);
    let t = Transcript::new(|e| panic!("nothing may be attempted: {e:?}"));
    for (to, from, subject) in [
        ("not-an-address", None, None),
        ("you@example.net", Some("a|b@example.com"), None),
        ("you@example.net", None, Some("two\r\nlines")),
    ] {
        let opts = Options {
            route: "mailgun".into(),
            to: to.into(),
            from: from.map(String::from),
            subject: subject.map(String::from),
        };
        let err = attempt(&c, &opts, &t).await.unwrap_err();
        assert_eq!(err.exit_code(), EX_USAGE, "{err}");
    }
}

#[test]
fn events_as_lines() {
    assert_eq!(format_event(&Event::Server("220 hi"), 0), "S: 220 hi");
    assert_eq!(format_event(&Event::Client("EHLO x"), 0), "C: EHLO x");
    assert_eq!(
        format_event(&Event::Note("connecting to x"), 0),
        "[connecting to x]"
    );
    let info = TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        certificate: None,
    };
    assert_eq!(
        format_event(&Event::Tls(&info), 0),
        "[TLS handshake: TLSv1.3, TLS13_AES_256_GCM_SHA384]"
    );
    let odd = TlsInfo {
        certificate: Some(vec![1, 2, 3]),
        ..info
    };
    assert!(format_event(&Event::Tls(&odd), 0).ends_with("; server certificate: (not understood)]"));
}

#[test]
fn verdict_lines() {
    let ok = Verdict::Delivered {
        relay: "smtp.example.com[192.0.2.1]:587".into(),
        reply: "250 2.0.0 OK".into(),
    };
    assert_eq!(ok.exit_code(), 0);
    assert_eq!(
        ok.line("you@example.net"),
        "test-send: delivered to you@example.net via smtp.example.com[192.0.2.1]:587 (250 2.0.0 OK)"
    );
    let failed = Verdict::Failed {
        reason: "connect: Connection refused".into(),
        exit_code: EX_TEMPFAIL,
    };
    assert_eq!(failed.exit_code(), 75);
    assert_eq!(
        failed.line("you@example.net"),
        "test-send: FAILED: connect: Connection refused"
    );
}
