//! `smarthost import` on realistic Postfix and exim setups (tests/fixtures/import):
//! the imported configuration passes `smarthost check`, and every sender key of
//! the original maps leaves through the same host and port with the same login.
//! The expectations below are read off the fixtures by hand, as Postfix and
//! exim would look those senders up, not computed by the importer's code.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn smarthost(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(args)
        .output()
        .expect("run smarthost");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What `smarthost check` says about one route.
#[derive(Debug)]
struct CheckedRoute {
    /// `host:port`, hosts joined by commas.
    target: String,
    tls: String,
    user: Option<String>,
    password_file: Option<String>,
    token_source: Option<String>,
    helo: Option<String>,
}

/// The route lines of `check`: `  name: smtp host:port tls=.. auth=.. user=..
/// password_file=.. max_connections=..`.
fn checked_routes(check: &str) -> HashMap<String, CheckedRoute> {
    let mut routes = HashMap::new();
    for line in check
        .lines()
        .skip_while(|l| *l != "routes:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let (name, rest) = line.trim().split_once(": smtp ").expect(line);
        let mut words = rest.split(' ');
        let target = words.next().unwrap_or_default().to_string();
        let fields: HashMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
        let field = |k: &str| fields.get(k).map(|v| v.to_string());
        routes.insert(
            name.to_string(),
            CheckedRoute {
                target,
                tls: field("tls").unwrap_or_default(),
                user: field("user"),
                password_file: field("password_file"),
                token_source: field("token_source"),
                helo: field("helo"),
            },
        );
    }
    routes
}

/// The route `smarthost route` picks for a sender.
fn route_of(config: &Path, sender: &str) -> String {
    let r = smarthost(&["route", "--config", config.to_str().unwrap(), sender]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let after = r.stdout.split(" -> route ").nth(1).expect(&r.stdout);
    after.split(' ').next().unwrap_or_default().to_string()
}

/// How a sender should leave: host:port, user, and the password (or, for a
/// token route, the token source's socket).
struct Expect {
    sender: &'static str,
    target: &'static str,
    user: &'static str,
    secret: Secret,
}

enum Secret {
    Password(&'static str),
    Socket(&'static str),
}

/// One row of the tables below.
const fn e(
    sender: &'static str,
    target: &'static str,
    user: &'static str,
    secret: Secret,
) -> Expect {
    Expect {
        sender,
        target,
        user,
        secret,
    }
}

/// Checks every expectation against `check` and `route` on the imported
/// config, and that the secret files hold the passwords, mode 0600.
fn assert_routes_as_before(config: &Path, expected: &[Expect], all_output: &mut String) {
    let check = smarthost(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    all_output.push_str(&check.stdout);
    all_output.push_str(&check.stderr);
    let routes = checked_routes(&check.stdout);
    for e in expected {
        let name = route_of(config, e.sender);
        let route = routes
            .get(&name)
            .unwrap_or_else(|| panic!("{}: route {name} not in\n{}", e.sender, check.stdout));
        assert_eq!(route.target, e.target, "{}: {route:?}", e.sender);
        assert_eq!(
            route.user.as_deref(),
            Some(e.user),
            "{}: {route:?}",
            e.sender
        );
        match e.secret {
            Secret::Password(password) => {
                let file = route.password_file.as_deref().expect("password_file");
                let meta = std::fs::metadata(file).unwrap();
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
                assert_eq!(
                    std::fs::read_to_string(file).unwrap(),
                    password,
                    "{}",
                    e.sender
                );
            }
            Secret::Socket(path) => {
                let source = route.token_source.as_deref().expect("token_source");
                assert!(
                    check
                        .stdout
                        .contains(&format!("  {source}: socket {path}\n")),
                    "{}: {source}\n{}",
                    e.sender,
                    check.stdout
                );
            }
        }
        assert!(route.tls == "starttls" || route.tls == "tls", "{route:?}");
    }
}

fn assert_no_password(output: &str, expected: &[Expect]) {
    for e in expected {
        if let Secret::Password(p) = e.secret {
            assert!(
                !output.contains(p),
                "password of {} printed:\n{output}",
                e.sender
            );
        }
    }
}

// One sender a line: (sender, host:port, user, password or token socket).
#[rustfmt::skip]
const POSTFIX: &[Expect] = &[
    e("app@contoso.com", "smtp.office365.com:587", "app@contoso.com", Secret::Password("O365-app-Pass!")),
    e("Alerts@Contoso.com", "smtp.office365.com:587", "alerts@contoso.com", Secret::Password("O365:alerts#pass")),
    // DUNNO in sender_relay: relayhost, with contoso's login from sasl_passwd.
    e("ceo@contoso.com", "smtp.mailgun.org:587", "app@contoso.com", Secret::Password("O365-app-Pass!")),
    e("billing@fabrikam.com", "smtp.office365.com:587", "relay@fabrikam.com", Secret::Password("Fabrikam#2024 with spaces")),
    e("digest@news.example", "email-smtp.eu-west-1.amazonaws.com:587", "AKIAIOSFODNN7EXAMPLE", Secret::Password("BMses+SMTP/pw/wJalrXUtnFEMI")),
    e("ops@gmail-user.example", "smtp.gmail.com:587", "ops@gmail-user.example", Secret::Password("abcdefghijklmnop")),
    e("orders@eu.shop.example", "smtp.eu.mailgun.org:587", "postmaster@mg.eu.shop.example", Secret::Password("mg-eu-55aa01")),
    // Only in sasl_passwd: relayhost with the shop's login.
    e("orders@shop.example", "smtp.mailgun.org:587", "postmaster@mg.shop.example", Secret::Password("mg-shop-2b8e41d0")),
    // A key without @ never matched in Postfix; neither do subdomains.
    e("x@legacy.example", "smtp.mailgun.org:587", "postmaster@mg.example.net", Secret::Password("mg-default-7f3a9c21")),
    e("x@eu.contoso.com", "smtp.mailgun.org:587", "postmaster@mg.example.net", Secret::Password("mg-default-7f3a9c21")),
    e("www-data@web1.example.net", "smtp.mailgun.org:587", "postmaster@mg.example.net", Secret::Password("mg-default-7f3a9c21")),
];

#[test]
fn postfix_import_routes_every_sender_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let source = format!("{FIXTURES}/postfix");
    let args = [
        "import",
        "postfix",
        source.as_str(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    let run = smarthost(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut printed = format!("{}{}", run.stdout, run.stderr);

    let config = dir.path().join("smarthost.toml");
    std::fs::write(&config, &run.stdout).unwrap();
    assert_eq!(mode(&secrets), 0o700);
    for f in std::fs::read_dir(&secrets).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
    assert_routes_as_before(&config, POSTFIX, &mut printed);

    assert_postfix_settings(&run);
    assert_no_password(&printed, POSTFIX);

    assert_reimport_needs_force(&args, &secrets);
}

/// A file's permission bits.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The Postfix import's settings beyond routes, and what it could not translate.
fn assert_postfix_settings(run: &Run) {
    let text = &run.stdout;
    assert!(text.contains("# smarthost configuration imported from the Postfix configuration in"));
    assert!(text.contains("hostname = \"web1.example.net\""), "{text}");
    assert!(
        text.contains("retry = \"F,2h,15m; G,16h,1h,1.5; F,3d,6h\""),
        "{text}"
    );
    assert!(text.contains("max_message_size = 20480000"), "{text}");
    // myorigin is unset, so $myhostname; alias_maps names /etc/aliases.
    assert!(
        text.contains("\n[local]\nsender_domain = \"web1.example.net\""),
        "{text}"
    );
    assert!(text.contains("\naliases = \"/etc/aliases\""), "{text}");
    assert!(text.contains("\n[routing]\ndefault = "), "{text}");
    // What could not be translated: in the config and on stderr.
    for item in [
        "main.cf:69: sender_canonical_maps",
        "main.cf:70: smtp_header_checks",
        "main.cf:45: recipient_delimiter",
        "sender_relay:23: legacy.example: no @",
    ] {
        assert!(
            text.contains(&format!("# NOT TRANSLATED: {item}")),
            "{item}\n{text}"
        );
        assert!(run.stderr.contains(item), "{item}\n{}", run.stderr);
    }
    // Defaults are not reported, nor is the system CA bundle a ca_file.
    assert!(!text.contains("smtp_sasl_security_options ="), "{text}");
    assert!(!text.contains("smtp_sasl_tls_security_options ="), "{text}");
    assert!(!text.contains("\nca_file ="), "{text}");
}

/// A second import would replace the secrets: refused without --force.
fn assert_reimport_needs_force(args: &[&str], secrets: &Path) {
    std::fs::write(secrets.join("ses.password"), "edited").unwrap();
    let again = smarthost(args);
    assert_eq!(again.code, 73, "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert!(again.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(secrets.join("ses.password")).unwrap(),
        "edited"
    );
    let mut forced: Vec<&str> = args.to_vec();
    forced.push("--force");
    let forced = smarthost(&forced);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(
        std::fs::read_to_string(secrets.join("ses.password")).unwrap(),
        "BMses+SMTP/pw/wJalrXUtnFEMI"
    );
    assert_eq!(mode(&secrets.join("ses.password")), 0o600);
}

const SOCKET: &str = "/home/jg/mail/.cms/exim/cms.sock";

#[rustfmt::skip]
const EXIM: &[Expect] = &[
    e("app@contoso.com", "smtp.office365.com:587", "app@contoso.com", Secret::Socket(SOCKET)),
    e("alerts@Fabrikam.com", "smtp.office365.com:587", "alerts@fabrikam.com", Secret::Socket(SOCKET)),
    e("orders@shop.example", "smtp.mailgun.org:587", "postmaster@mg.shop.example", Secret::Password("mg-shop 2b8e41d0")),
    e("editor@blog.example", "smtp.mailgun.org:587", "postmaster@mg.blog.example", Secret::Password("mg-blog-77c1")),
    e("invoices@billing.example", "email-smtp.eu-west-1.amazonaws.com:465", "AKIAIOSFODNN7EXAMPLE", Secret::Password("BMses+SMTP/pw/wJalrXUtnFEMI")),
    e("ops@gmail-user.example", "smtp.gmail.com:587", "ops@gmail-user.example", Secret::Password("abcdefghijklmnop")),
    e("old@legacy.example", "[2001:db8::25]:587", "legacy", Secret::Password("legacy-pw!")),
    e("cron@intranet.example", "relay1.intranet.example,relay2.intranet.example:25", "app", Secret::Password("intra-pw")),
    // The * entry.
    e("someone@elsewhere.example", "smtp.mailgun.org:587", "postmaster@mg.example.net", Secret::Password("mg-default-7f3a9c21")),
];

#[test]
fn exim_import_routes_every_domain_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let config = dir.path().join("smarthost.toml");
    let hosts = format!("{FIXTURES}/exim/exim-smart-hosts");
    let retry = format!("{FIXTURES}/exim/exim4.conf");
    let run = smarthost(&[
        "import",
        "exim",
        &hosts,
        "--retry-file",
        &retry,
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "--output",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let mut printed = run.stderr.clone();
    assert_routes_as_before(&config, EXIM, &mut printed);

    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("retry = \"F,2h,15m; G,16h,1h,1.5; F,5d,6h\""),
        "{text}"
    );
    let check = smarthost(&["check", "--config", config.to_str().unwrap()]);
    let routes = checked_routes(&check.stdout);
    let by_target = |t: &str| routes.values().find(|r| r.target == t).unwrap();
    assert_eq!(
        by_target("smtp.office365.com:587").helo.as_deref(),
        Some("cms")
    );
    assert_eq!(
        by_target("email-smtp.eu-west-1.amazonaws.com:465").tls,
        "tls"
    );
    assert_eq!(
        by_target("smtp.gmail.com:587").helo.as_deref(),
        Some("web1.example.net")
    );
    // Both Office 365 routes ask the one socket.
    assert_eq!(
        check.stdout.matches(": socket ").count(),
        1,
        "{}",
        check.stdout
    );
    for item in [
        "exim-smart-hosts:15: intranet.example: queue=",
        "exim4.conf:50: retry rule *.office365.com rcpt_4xx",
    ] {
        assert!(
            text.contains(&format!("# NOT TRANSLATED: {item}")),
            "{item}\n{text}"
        );
        assert!(run.stderr.contains(item), "{item}\n{}", run.stderr);
    }
    assert_exim_local_names(&text, &run.stderr);
    printed.push_str(&text);
    assert_no_password(&printed, EXIM);
}

/// qualify_domain (a Debian macro), the aliases router and the rewrite
/// rules for senders, as `[local]`; the other rules reported.
fn assert_exim_local_names(text: &str, stderr: &str) {
    for item in [
        "exim4.conf:56: rewrite rule root@+local_domains: domain lists are not read",
        "exim4.conf:61: rewrite rule *@example.net: rewrites recipient addresses only",
    ] {
        assert!(
            text.contains(&format!("# NOT TRANSLATED: {item}")),
            "{item}\n{text}"
        );
        assert!(stderr.contains(item), "{item}\n{stderr}");
    }
    let v: toml::Table = toml::from_str(text).unwrap();
    let local = &v["local"];
    assert_eq!(
        local["sender_domain"].as_str(),
        Some("example.net"),
        "{text}"
    );
    assert_eq!(local["aliases"].as_str(), Some("/etc/aliases"), "{text}");
    let generic = &local["generic"];
    assert_eq!(
        generic["@build.example.net"].as_str(),
        Some("@example.net"),
        "{text}"
    );
    assert_eq!(
        generic["www-data@web1.example.net"].as_str(),
        Some("noreply@example.net"),
        "{text}"
    );
    assert_eq!(generic.as_table().map(|t| t.len()), Some(2), "{text}");
}

#[test]
fn exim_retry_option_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = format!("{FIXTURES}/exim/exim-smart-hosts");
    let secrets = dir.path().join("s");
    let config = dir.path().join("c.toml");
    let run = smarthost(&[
        "import",
        "exim",
        &hosts,
        "--retry",
        "F,1h,10m; F,2d,1h",
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "-o",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let check = smarthost(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        check.stdout.contains("retry: F,1h,10m; F,2d,1h"),
        "{}",
        check.stdout
    );

    let bad = smarthost(&["import", "exim", &hosts, "--retry", "F,2h"]);
    assert_eq!(bad.code, 65, "{}", bad.stderr);
    assert!(bad.stderr.contains("retry"), "{}", bad.stderr);
    let missing = smarthost(&["import", "postfix", dir.path().to_str().unwrap()]);
    assert_eq!(missing.code, 66, "{}", missing.stderr);
    assert!(missing.stderr.contains("main.cf"), "{}", missing.stderr);
}
