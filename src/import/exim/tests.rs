use super::*;

#[test]
fn lsearch_keys_comments_and_continuations() {
    let text = "# comment\n\
                contoso.com: host=a::587\n\
                \"quoted key\": host=b\n\
                plain host=c\n\
                \x20  user=u password=p\n\
                \n\
                colon:host=d\r\n";
    let (entries, orphans) = lsearch_entries(text);
    assert!(orphans.is_empty());
    let got: Vec<(usize, &str, &str)> = entries
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "contoso.com", "host=a::587"),
            (3, "quoted key", "host=b"),
            (4, "plain", "host=c user=u password=p"),
            (7, "colon", "host=d"),
        ]
    );
    let (_, orphans) = lsearch_entries("  stray\n");
    assert_eq!(orphans, [1]);
}

#[test]
fn extract_fields() {
    let f = fields(
        "host=smtp.example.com::587 HELO = cms user=a@b password=\"p w\\\"x\" host=ignored flag",
    );
    assert_eq!(
        f,
        [
            ("host".to_string(), "smtp.example.com::587".to_string()),
            ("helo".to_string(), "cms".to_string()),
            ("user".to_string(), "a@b".to_string()),
            ("password".to_string(), "p w\"x".to_string()),
            ("flag".to_string(), String::new()),
        ]
    );
}

#[test]
fn host_lists() {
    let h = |s: &str| parse_hosts(s);
    assert_eq!(
        h("smtp.office365.com::587"),
        Ok(vec![("smtp.office365.com".into(), Some(587), false)])
    );
    assert_eq!(
        h("smtp.example.com"),
        Ok(vec![("smtp.example.com".into(), None, false)])
    );
    assert_eq!(
        h("a.example::2525 : b.example::2525"),
        Ok(vec![
            ("a.example".into(), Some(2525), false),
            ("b.example".into(), Some(2525), false)
        ])
    );
    assert_eq!(
        h("[2001:db8::25]::587"),
        Ok(vec![("2001:db8::25".into(), Some(587), false)])
    );
    assert_eq!(
        h("<; [2001:db8::25]:587 ; 192.0.2.1:587"),
        Ok(vec![
            ("2001:db8::25".into(), Some(587), false),
            ("192.0.2.1".into(), Some(587), false)
        ])
    );
    assert_eq!(
        h("<; 2001:db8::25"),
        Ok(vec![("2001:db8::25".into(), None, false)])
    );
    assert_eq!(
        h("relay.example/MX"),
        Ok(vec![("relay.example".into(), None, true)])
    );
    assert_eq!(
        h("smtp.example.com::http"),
        Err(HostListError::BadPort {
            item: "smtp.example.com:http".into(),
            port: "http".into()
        })
    );
    assert_eq!(h(""), Err(HostListError::Empty));
    assert_eq!(
        h("bad host::25"),
        Err(HostListError::BadHost("bad host:25".into()))
    );
    assert_eq!(
        h("[2001:db8::25"),
        Err(HostListError::Unclosed("[2001:db8::25".into()))
    );
}

#[test]
fn config_lines_join_backslashes() {
    let lines = exim_config_lines("a = 1 \\\n    2\n# c\n  b = 3\n");
    assert_eq!(
        lines,
        [(1, "a = 1 2".to_string()), (4, "b = 3".to_string())]
    );
}

fn import_text(text: &str, retry: Option<&RetryFrom>) -> Plan {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exim-smart-hosts");
    std::fs::write(&file, text).unwrap();
    import(&file, retry).unwrap()
}

/// One entry of each kind, with the mistakes the importer reports.
const SMART_HOSTS: &str =
    "contoso.com: host=smtp.office365.com::587 helo=cms user=app@contoso.com oauth=/run/cms.sock\n\
     fabrikam.com: host=smtp.office365.com::587 helo=cms user=ops@fabrikam.com oauth=/run/cms.sock password=old\n\
     shop.example: host=smtp.mailgun.org::587 user=pm@mg.shop.example password=\"s3cret pw\"\n\
     *@blog.example: host=smtp.mailgun.org::587 user=pm@mg.shop.example password=\"s3cret pw\"\n\
     *.eu.example: host=relay.eu.example::465 user=eu password=eu-pw\n\
     boss@shop.example: host=smtp.gmail.com::587 user=boss@shop.example password=app-pw tls=yes\n\
     nohost.example: user=x password=y\n\
     SHOP.example: host=other.example\n\
     equals.example = host=eq.example::587\n\
     *: host=smtp.mailgun.org::587 user=pm@mg.example.net password=default-pw\n";

#[test]
fn entries_become_routes_and_senders() {
    let plan = import_text(SMART_HOSTS, None);
    let route = |pattern: &str| plan.upstream_of(pattern);
    let contoso = route("contoso.com");
    assert_eq!(
        (contoso.hosts[0].as_str(), contoso.port),
        ("smtp.office365.com", 587)
    );
    assert_eq!(contoso.helo.as_deref(), Some("cms"));
    assert_eq!(
        contoso.auth,
        Auth::Socket {
            username: "app@contoso.com".into(),
            path: "/run/cms.sock".into()
        }
    );
    assert!(
        matches!(&route("fabrikam.com").auth, Auth::Socket { username, .. } if username == "ops@fabrikam.com")
    );
    let shop = route("shop.example");
    assert!(
        matches!(&shop.auth, Auth::Password { password, .. } if password.expose() == "s3cret pw")
    );
    // Same upstream, same route.
    assert!(std::ptr::eq(shop, route("blog.example")));
    let eu = route(".eu.example");
    assert_eq!(eu.tls, TlsMode::Implicit);
    assert!(std::ptr::eq(eu, route("eu.example")));
    assert_eq!(route("boss@shop.example").hosts, ["smtp.gmail.com"]);
    let default = plan.default_upstream();
    assert!(
        matches!(&default.auth, Auth::Password { username, .. } if username == "pm@mg.example.net")
    );
    assert_eq!(route("equals.example").hosts, ["eq.example"]);
}

#[test]
fn entries_are_reported_without_their_secrets() {
    let plan = import_text(SMART_HOSTS, None);
    let why = plan.report_text();
    assert!(
        why.contains("exim-smart-hosts:6: boss@shop.example: tls=: not a field"),
        "{why}"
    );
    assert!(
        why.contains("exim-smart-hosts:7: nohost.example: no host="),
        "{why}"
    );
    assert!(
        why.contains("exim-smart-hosts:8: shop.example: repeats an earlier entry"),
        "{why}"
    );
    for secret in ["s3cret", "default-pw", "eu-pw", "app-pw", "old"] {
        assert!(!why.contains(secret), "{why}");
        assert!(!plan.notes.join("\n").contains(secret));
    }
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("password is not used")));
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("equals.example = ...")));
}

#[test]
fn without_a_star_entry_the_busiest_route_is_the_default() {
    let plan = import_text(
        "a.example host=one.example::587\nb.example host=two.example::587\nc.example host=two.example::587\n",
        None,
    );
    let default = plan.default_upstream();
    assert_eq!(default.hosts, ["two.example"]);
    assert_eq!(default.port, 587);
    assert!(plan.report_text().contains("no * entry"));
    let plan = import_text("a.example host=one.example\n", None);
    assert_eq!(plan.routes[0].upstream.port, 25);
}

#[test]
fn retry_from_rules_or_config() {
    let plan = import_text(
        "* host=a.example::587\n",
        Some(&RetryFrom::Rules("F,1h,10m; F,2d,1h".into())),
    );
    assert_eq!(plan.retry.unwrap().value, "F,1h,10m; F,2d,1h");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(&file, "* host=a.example::587\n").unwrap();
    assert!(matches!(
        import(&file, Some(&RetryFrom::Rules("F,2h".into()))),
        Err(ImportError::Retry(_))
    ));

    let conf = dir.path().join("exim.conf");
    std::fs::write(
        &conf,
        "begin routers\nx:\n  driver = manualroute\n\
         begin retry\n\
         # Address or Domain    Error       Retries\n\
         *.office365.com        rcpt_4xx    F,1h,10m\n\
         *                      *           F,2h,15m; G,16h,1h,1.5; \\\n\
         \x20                                  F,5d,6h\n\
         *                      *           F,1d,1h\n\
         begin rewrite\n\
         *  *  F,9d,1h\n",
    )
    .unwrap();
    let plan = import(&file, Some(&RetryFrom::Config(conf.clone()))).unwrap();
    let retry = plan.retry.clone().unwrap();
    assert_eq!(retry.value, "F,2h,15m; G,16h,1h,1.5; F,5d,6h");
    assert!(retry.comment.contains("exim.conf:7"), "{}", retry.comment);
    let why = plan.report_text();
    assert!(
        why.contains("exim.conf:6: retry rule *.office365.com rcpt_4xx"),
        "{why}"
    );
    assert!(
        why.contains("exim.conf:9: retry rule * *: after the * * rule"),
        "{why}"
    );

    std::fs::write(&conf, "begin retry\n* * H,1d,1h\n").unwrap();
    let plan = import(&file, Some(&RetryFrom::Config(conf.clone()))).unwrap();
    assert!(plan.retry.is_none());
    assert!(plan.report_text().contains("unknown rule type"));

    std::fs::write(&conf, "begin routers\n").unwrap();
    let plan = import(&file, Some(&RetryFrom::Config(conf))).unwrap();
    assert!(plan.report_text().contains("no * * rule"));
}
