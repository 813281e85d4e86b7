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

#[test]
fn conf_macros_and_conditionals() {
    let conf = conf::Conf::parse(
        ".ifndef ETC_MAILNAME\nETC_MAILNAME=mail.example.net\n.endif\n\
         .ifdef ETC_MAILNAME\nA = yes\n.else\nA = no\n.endif\n\
         .ifdef NOPE\nx = 1\n.elifndef NOPE\nx = 2\n.else\nx = 3\n.endif\n\
         .ifdef NOPE\n.ifdef A\ny = 1\n.else\ny = 2\n.endif\n.endif\n\
         .include /etc/exim4/more\n\
         q = ETC_MAILNAME, A, AB, xETC_MAILNAME\n\
         begin rewrite\n*@ETC_MAILNAME $1@example.com Ffrs\n",
    );
    assert_eq!(conf.main_option("x"), Some((12, "2")));
    assert_eq!(conf.main_option("y"), None);
    assert_eq!(
        conf.main_option("q"),
        Some((24, "mail.example.net, yes, AB, xETC_MAILNAME"))
    );
    assert_eq!(conf.includes, [23]);
    let rules: Vec<&str> = conf.section("rewrite").map(|l| l.text.as_str()).collect();
    assert_eq!(rules, ["*@mail.example.net $1@example.com Ffrs"]);
}

/// The plan for the smart-hosts file `* host=a.example::587` with the exim
/// configuration `conf`.
fn import_conf(conf: &str) -> Plan {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "* host=a.example::587\n").unwrap();
    let path = dir.path().join("exim4.conf");
    std::fs::write(&path, conf).unwrap();
    import(&hosts, Some(&RetryFrom::Config(path))).unwrap()
}

fn local_setting(s: &Option<Setting<String>>) -> Option<&str> {
    s.as_ref().map(|s| s.value.as_str())
}

#[test]
fn qualify_domain_becomes_sender_domain_or_mailname() {
    // Debian's generated configuration.
    let plan = import_conf(
        ".ifndef ETC_MAILNAME\nETC_MAILNAME=mail.example.net\n.endif\n\
         .ifndef MAIN_PRIMARY_HOSTNAME_AS_QUALIFY_DOMAIN\n.ifndef MAIN_QUALIFY_DOMAIN\n\
         qualify_domain = ETC_MAILNAME\n.else\nqualify_domain = MAIN_QUALIFY_DOMAIN\n.endif\n.endif\n",
    );
    assert_eq!(
        local_setting(&plan.local.sender_domain),
        Some("mail.example.net")
    );
    let plan = import_conf("qualify_domain = ETC_MAILNAME\n");
    assert_eq!(local_setting(&plan.local.mailname), Some("/etc/mailname"));
    assert!(plan.local.sender_domain.is_none());
    let plan = import_conf(
        "qualify_domain = ${if exists{/etc/mailname}{${readfile{/etc/mailname}{}}}{$primary_hostname}}\n",
    );
    assert_eq!(local_setting(&plan.local.mailname), Some("/etc/mailname"));
    let plan = import_conf("primary_hostname = web1.example.net\n");
    assert_eq!(
        local_setting(&plan.local.sender_domain),
        Some("web1.example.net")
    );
    let plan = import_conf("qualify_domain = ${lookup{x}lsearch{/f}}\n");
    assert!(plan.local.sender_domain.is_none() && plan.local.mailname.is_none());
    assert!(plan
        .report_text()
        .contains("exim4.conf:1: qualify_domain = ${lookup"));
    let plan = import_conf("");
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("qualify_domain and primary_hostname are not set")));
}

#[test]
fn the_aliases_router_gives_aliases() {
    let plan = import_conf(
        "begin routers\n\
         userforward:\n  driver = redirect\n  file = $home/.forward\n\
         system_aliases:\n  driver = redirect\n  domains = +local_domains\n  allow_fail\n\
         \x20 data = ${lookup{$local_part}lsearch{/etc/aliases}}\n\
         more_aliases:\n  driver = redirect\n  data = ${lookup{${local_part}} lsearch{/etc/more-aliases}}\n\
         smarthost:\n  driver = manualroute\n  data = ${lookup{$local_part}lsearch{/etc/not-aliases}}\n",
    );
    assert_eq!(local_setting(&plan.local.aliases), Some("/etc/aliases"));
    let why = plan.report_text();
    assert!(
        why.contains("exim4.conf:12: router more_aliases: /etc/more-aliases: smarthost reads one aliases file (/etc/aliases)"),
        "{why}"
    );
    assert!(!why.contains("not-aliases"), "{why}");
}

const REWRITE: &str = "begin rewrite\n\
    *@host.lan            $1@example.com          Ffrs\n\
    www-data@host.lan     noreply@example.com     Ffrs\n\
    www-data@example.com  web@example.com         F\n\
    boss@old.example      *                       Ffrs\n\
    *@old.example         ops@example.com         Ffrs\n\
    *@lan.example         ${local_part}@example.org  Eh\n\
    *@q.example           $1@mid.example          F f s r q\n\
    *@q.example           $1@never.example        Ffrs\n\
    *@mid.example         $1@end.example          Ffrs\n\
    ^(.*)@x.example       $1@y.example            F\n\
    root@+local_domains   user@domain.com         Ffrs\n\
    *@to.example          $1@x.example            T\n\
    *@s.example           $1@x.example            S\n\
    *@r.example           $1@x.example            FR\n\
    *@lk.example          \"${lookup{${local_part}}lsearch{/etc/email-addresses}{$value}fail}\" Ffrs\n\
    *@bad.example         $domain@x.example       Ffrs\n";

#[test]
fn rewrite_rules_become_local_generic_as_exim_applies_them() {
    let plan = import_conf(REWRITE);
    let g = |k: &str| plan.generic_value(k);
    assert_eq!(g("@host.lan"), Some("@example.com"));
    // exim rewrites www-data@host.lan by the first rule, then the third.
    assert_eq!(g("www-data@host.lan"), Some("web@example.com"));
    assert_eq!(g("www-data@example.com"), Some("web@example.com"));
    // `*`: boss keeps the address the domain rule would change.
    assert_eq!(g("@old.example"), Some("ops@example.com"));
    assert_eq!(g("boss@old.example"), Some("boss@old.example"));
    assert_eq!(g("@lan.example"), Some("@example.org"));
    // q stops after the first *@q.example rule: no @never, no @end.
    assert_eq!(g("@q.example"), Some("@mid.example"));
    assert_eq!(g("@mid.example"), Some("@end.example"));
    for domain in [
        "x.example",
        "to.example",
        "s.example",
        "r.example",
        "lk.example",
        "bad.example",
    ] {
        assert_eq!(g(&format!("@{domain}")), None, "{domain}");
    }
    let why = plan.report_text();
    for expected in [
        "exim4.conf:11: rewrite rule ^(.*)@x.example: only user@domain and *@domain",
        "exim4.conf:12: rewrite rule root@+local_domains: domain lists are not read; for mail from this machine's own names, [local.rewrite] root = ",
        "exim4.conf:13: rewrite rule *@to.example: rewrites recipient addresses only",
        "exim4.conf:14: rewrite rule *@s.example: S: SMTP-time rewriting",
        "exim4.conf:15: rewrite rule *@r.example: R: rules applied repeatedly",
        "exim4.conf:16: rewrite rule *@lk.example: Debian's /etc/email-addresses lookup",
        "exim4.conf:17: rewrite rule *@bad.example: the replacement is not an address",
    ] {
        assert!(why.contains(expected), "missing {expected:?} in\n{why}");
    }
    let notes = plan.notes.join("\n");
    for expected in [
        "exim4.conf:3: rewrite rule www-data@host.lan never acts",
        "exim4.conf:9: rewrite rule *@q.example never acts",
        "exim4.conf:4: rewrite rule www-data@example.com: exim left From, Sender, Reply-To alone",
        "exim4.conf:7: rewrite rule *@lan.example: exim also rewrote recipient addresses",
    ] {
        assert!(notes.contains(expected), "missing {expected:?} in\n{notes}");
    }
    assert!(!notes.contains("exim4.conf:2: rewrite rule"), "{notes}");
}

#[test]
fn rewrite_rule_words_and_flags() {
    assert_eq!(
        rewrite::split_rule("\"*@x.example\"   \"c \\\"d\\\"\"  F f  q"),
        (
            "*@x.example".to_string(),
            "c \"d\"".to_string(),
            "Ffq".to_string()
        )
    );
}
