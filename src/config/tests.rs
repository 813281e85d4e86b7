use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("/nonexistent"))
}

const MINIMAL: &str = r#"
[[route]]
name = "capture"
type = "directory"
path = "/tmp/out"

[routing]
default = "capture"
"#;

#[test]
fn minimal_config_has_safe_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(
        c.listen,
        vec![
            "127.0.0.1:25".parse::<SocketAddr>().unwrap(),
            "[::1]:25".parse().unwrap()
        ]
    );
    assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
    assert!(c.is_trusted("::1".parse().unwrap()));
    assert!(c.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!c.is_trusted("192.0.2.1".parse().unwrap()));
    assert_eq!(c.retry.to_string(), crate::retry::DEFAULT_SCHEDULE);
    assert_eq!(c.limits.max_line_length, 1 << 20);
}

#[test]
fn unknown_keys_are_errors_with_line() {
    let text = format!("{MINIMAL}\n[limits]\nmax_mesage_size = 5\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("max_mesage_size"), "{err}");
    assert!(err.contains("line 11"), "{err}");
}

#[test]
fn parse_errors_say_where_without_quoting_the_line() {
    let text = "hostname = \"a\"\nurl = \"http://u:s3cret@h/\" oops\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(
        err.starts_with("test.toml: TOML parse error at line 2, column 28: "),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn unknown_route_reported_with_line() {
    let text = format!("{MINIMAL}[routing.senders]\n\"example.com\" = \"nope\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("test.toml:10:") && err.contains("unknown route \"nope\""),
        "{err}"
    );
}

#[test]
fn metrics_listener_is_optional_and_loopback_unless_allowed() {
    assert_eq!(parse(MINIMAL).expect("valid").metrics, None);
    let c = parse(&format!(
        "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9325\"\n"
    ))
    .expect("valid");
    assert_eq!(
        c.metrics.map(|m| m.listen),
        Some("127.0.0.1:9325".parse().unwrap())
    );
    let remote = format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9325\"\n");
    let err = parse(&remote).unwrap_err().to_string();
    assert!(
        err.contains("test.toml:10:") && err.contains("not a loopback address"),
        "{err}"
    );
    let allowed = format!("{remote}allow_remote = true\n");
    assert!(parse(&allowed).expect("valid").metrics.is_some());
    let bad = format!("{MINIMAL}[metrics]\nlisten = \"localhost:9325\"\n");
    assert!(parse(&bad).unwrap_err().to_string().contains("not IP:port"));
}

#[test]
fn bad_values_are_reported_together() {
    let text = r#"
listen = ["localhost:25"]
trusted_networks = ["10.0.0.0/33"]
retry = "F,2h"
[timeouts]
command = "soon"
[[route]]
name = "up"
host = "h"
tls = "maybe"
[routing]
default = "up"
"#;
    let Err(ConfigError::Invalid(problems)) = parse(text) else {
        panic!("expected problems")
    };
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert!(lines.contains(&Some(2)), "{problems:?}");
    assert!(lines.contains(&Some(3)), "{problems:?}");
    assert!(lines.contains(&Some(4)), "{problems:?}");
    assert!(lines.contains(&Some(6)), "{problems:?}");
    assert!(problems.iter().any(|p| p.message.contains("maybe")));
}

#[test]
fn loopback_hosts_for_routes_and_token_urls() {
    for host in [
        "localhost",
        "LocalHost",
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "[::1]",
    ] {
        assert!(is_loopback_host(host), "{host}");
    }
    for host in [
        "smtp.example.com",
        "192.0.2.1",
        "[2001:db8::1]",
        "",
        "::ffff:127.0.0.1",
    ] {
        assert!(!is_loopback_host(host), "{host}");
    }
    let http = |url: &str| {
        let text =
            format!("{MINIMAL}[[token_source]]\nname = \"t\"\ntype = \"http\"\nurl = \"{url}\"\n");
        parse(&text).map(|_| ()).map_err(|e| e.to_string())
    };
    for url in [
        "http://localhost:8080/token",
        "http://127.0.0.1/token",
        "http://[::1]:8080/token",
        "https://tokens.example.com/",
    ] {
        assert_eq!(http(url), Ok(()), "{url}");
    }
    let err = http("http://u:pw@tokens.example.com/").unwrap_err();
    assert!(
        err.contains("plain http to http://tokens.example.com/ would send tokens in clear text"),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
}

#[test]
fn delay_warning_defaults_to_a_day_and_can_be_turned_off() {
    let at = |line: &str| parse(&format!("{line}\n{MINIMAL}")).map(|c| c.delay_warning);
    assert_eq!(at("").unwrap(), Some(Duration::from_secs(86400)));
    assert_eq!(
        at("delay_warning = \"4h\"").unwrap(),
        Some(Duration::from_secs(4 * 3600))
    );
    assert_eq!(at("delay_warning = \"never\"").unwrap(), None);
    for bad in ["\"0s\"", "\"4 hours\"", "\"\""] {
        let err = at(&format!("delay_warning = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml:1: delay_warning"), "{bad}: {err}");
    }
}
