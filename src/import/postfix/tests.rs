use super::*;

#[test]
fn logical_lines_follow_postfix() {
    let text = "a = 1\n\
                b = one,\n    two,\n# a comment inside a continued value\n\n\tthree\n\
                c = x # not a comment\n\
                  # indented comment\n\
                d=\r\n";
    let (lines, orphans) = logical_lines(text);
    assert!(orphans.is_empty());
    assert_eq!(
        lines,
        [
            (1, "a = 1".to_string()),
            (2, "b = one, two, three".to_string()),
            (7, "c = x # not a comment".to_string()),
            (9, "d=".to_string()),
        ]
    );
    let (_, orphans) = logical_lines("  stray\nx = 1\n");
    assert_eq!(orphans, [1]);
}

#[test]
fn main_cf_last_definition_wins_and_bad_lines_are_kept() {
    let m = MainCf::parse("relayhost = a\nnonsense\nrelayhost = b\n");
    assert_eq!(m.params["relayhost"].raw, "b");
    assert_eq!(m.params["relayhost"].line, 3);
    assert_eq!(m.bad_lines.len(), 1);
    assert_eq!(m.bad_lines[0].0, 2);
}

fn expand(main_cf: &str, value: &str) -> (String, Vec<String>) {
    let main = MainCf::parse(main_cf);
    let mut x = Expander {
        main: &main,
        config_directory: "/import".into(),
        undefined: Vec::new(),
    };
    let v = x.expand(value, 0);
    (v, x.undefined)
}

#[test]
fn expansion_forms() {
    let cf = "mydomain = example.com\nmyhostname = mail.$mydomain\nempty =\nloop = $loop\n";
    assert_eq!(expand(cf, "$myhostname").0, "mail.example.com");
    assert_eq!(expand(cf, "${myhostname}:587").0, "mail.example.com:587");
    assert_eq!(expand(cf, "$(mydomain)x").0, "example.comx");
    assert_eq!(expand(cf, "${mydomain?yes}${empty?no}").0, "yes");
    assert_eq!(
        expand(cf, "${empty:{fallback}}${mydomain:no}").0,
        "fallback"
    );
    assert_eq!(expand(cf, "cost $$5").0, "cost $5");
    assert_eq!(
        expand(cf, "hash:$config_directory/sasl_passwd").0,
        "hash:/import/sasl_passwd"
    );
    let (v, undefined) = expand(cf, "[$relay_host]:587");
    assert_eq!(v, "[]:587");
    assert_eq!(undefined, ["relay_host"]);
    // A parameter that refers to itself ends instead of looping.
    assert_eq!(expand(cf, "$loop").0, "");
    // A lone or unbalanced dollar is text.
    assert_eq!(expand(cf, "a$ b ${x").0, "a$ b ${x");
}

#[test]
fn nexthops() {
    let hop = |s: &str| parse_nexthop(s).map(|h| (h.host, h.port, h.mx));
    assert_eq!(
        hop("[smtp.mailgun.org]:587"),
        Ok(("smtp.mailgun.org".into(), 587, false))
    );
    assert_eq!(
        hop("[smtp.gmail.com]:submission"),
        Ok(("smtp.gmail.com".into(), 587, false))
    );
    assert_eq!(
        hop("smtp.example.com:2525"),
        Ok(("smtp.example.com".into(), 2525, true))
    );
    assert_eq!(
        hop("[relay.example.com]"),
        Ok(("relay.example.com".into(), 25, false))
    );
    assert_eq!(hop("example.com"), Ok(("example.com".into(), 25, true)));
    assert_eq!(
        hop("[ipv6:2001:db8::25]:587"),
        Ok(("2001:db8::25".into(), 587, false))
    );
    assert_eq!(
        hop("[192.0.2.1]:smtps"),
        Ok(("192.0.2.1".into(), 465, false))
    );
    assert_eq!(
        hop("2001:db8::1"),
        Err(NexthopError::BareIpv6("2001:db8::1".into()))
    );
    assert_eq!(
        hop("[smtp.example.com:587"),
        Err(NexthopError::Unclosed("[smtp.example.com:587".into()))
    );
    assert_eq!(
        hop("smtp.example.com:http"),
        Err(NexthopError::BadPort {
            written: "smtp.example.com:http".into(),
            port: "http".into()
        })
    );
    assert_eq!(
        hop("[a/b]:25"),
        Err(NexthopError::BadHost("[a/b]:25".into()))
    );
    assert_eq!(
        hop("[a.example]587"),
        Err(NexthopError::BadPortAfterBracket("[a.example]587".into()))
    );
    assert_eq!(parse_nexthops(" , "), Err(NexthopError::Empty));
    let hops = parse_nexthops("[a.example]:587, [b.example]:587").unwrap();
    assert_eq!(hops.len(), 2);
    assert_eq!(hops[1].written, "[b.example]:587");
}

#[test]
fn time_units() {
    let d = |s: &str| postfix_time(s).map(|d| d.as_secs());
    assert_eq!(d("5d"), Ok(5 * 86400));
    assert_eq!(d("5"), Ok(5 * 86400));
    assert_eq!(d("3600s"), Ok(3600));
    assert_eq!(d("90m"), Ok(5400));
    assert_eq!(d("12h"), Ok(43200));
    assert_eq!(d("2w"), Ok(14 * 86400));
    assert_eq!(
        d("1y"),
        Err(TimeError::UnknownUnit {
            value: "1y".into(),
            unit: "y".into()
        })
    );
    assert_eq!(d("h"), Err(TimeError::NotANumber("h".into())));
    assert_eq!(
        d("1.5d"),
        Err(TimeError::UnknownUnit {
            value: "1.5d".into(),
            unit: ".5d".into()
        })
    );
    assert_eq!(
        d("99999999999999999w"),
        Err(TimeError::TooLong("99999999999999999w".into()))
    );
}

#[test]
fn queue_lifetime_ends_the_default_schedule() {
    let s = |secs: u64| {
        schedule_ending_at(Duration::from_secs(secs))
            .unwrap()
            .to_string()
    };
    assert_eq!(s(5 * 86400), "F,2h,15m; G,16h,1h,1.5; F,5d,6h");
    assert_eq!(s(4 * 86400), "F,2h,15m; G,16h,1h,1.5; F,4d,6h");
    assert_eq!(s(86400), "F,2h,15m; G,16h,1h,1.5; F,1d,6h");
    assert_eq!(s(10 * 3600), "F,2h,15m; G,10h,1h,1.5");
    assert_eq!(s(3600), "F,1h,15m");
}

/// A Postfix directory in a temp dir; files are (name, text).
fn postfix_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn password(u: &Upstream) -> Option<(&str, &str)> {
    match &u.auth {
        Auth::Password {
            username, password, ..
        } => Some((username, password.expose())),
        _ => None,
    }
}

#[test]
fn sender_dependent_relays_and_credentials() {
    let dir = postfix_dir(&[
        (
            "main.cf",
            "relayhost = [smtp.mailgun.org]:587\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sender_dependent_authentication = yes\n\
             smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n\
             sender_dependent_relayhost_maps = lmdb:${config_directory}/relay\n\
             smtp_tls_security_level = encrypt\n",
        ),
        (
            "sasl_passwd",
            "[smtp.mailgun.org]:587 postmaster@mg.example.org:relay-pw\n\
             @Contoso.com app@contoso.com:o365-pw\n\
             boss@contoso.com boss@contoso.com:boss:pw\n\
             @shop.example postmaster@mg.shop.example:shop-pw\n",
        ),
        (
            "relay",
            "@contoso.com [smtp.office365.com]:587\n\
             boss@contoso.com [smtp.office365.com]:587\n\
             ceo@contoso.com DUNNO\n\
             contoso.net [smtp.office365.com]:587\n",
        ),
    ]);
    let plan = import(dir.path()).unwrap();
    let default = plan.default_upstream();
    assert_eq!(default.hosts, ["smtp.mailgun.org"]);
    assert_eq!(
        password(default),
        Some(("postmaster@mg.example.org", "relay-pw"))
    );

    let contoso = plan.upstream_of("contoso.com");
    assert_eq!(
        (contoso.hosts[0].as_str(), contoso.port),
        ("smtp.office365.com", 587)
    );
    assert_eq!(password(contoso), Some(("app@contoso.com", "o365-pw")));
    // The password is split at the first colon only.
    assert_eq!(
        password(plan.upstream_of("boss@contoso.com")),
        Some(("boss@contoso.com", "boss:pw"))
    );
    // DUNNO: relayhost, and the credentials of the sender's domain.
    let ceo = plan.upstream_of("ceo@contoso.com");
    assert_eq!(ceo.hosts, ["smtp.mailgun.org"]);
    assert_eq!(password(ceo), Some(("app@contoso.com", "o365-pw")));
    // A password entry alone: relayhost with the sender's own credentials.
    let shop = plan.upstream_of("shop.example");
    assert_eq!(shop.hosts, ["smtp.mailgun.org"]);
    assert_eq!(
        password(shop),
        Some(("postmaster@mg.shop.example", "shop-pw"))
    );
    assert_eq!(shop.tls, TlsMode::StartTls);

    let why = plan.report_text();
    assert!(why.contains("relay:4: contoso.net: no @"), "{why}");
    assert!(!why.contains("pw"), "{why}");
    assert!(plan.notes.iter().any(|n| n.contains("encrypt")));
}

#[test]
fn host_credentials_without_sender_dependence() {
    let dir = postfix_dir(&[
        (
            "main.cf",
            "relayhost = smtp.example.net:2525\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:/etc/postfix/sasl/passwd\n\
             smtp_sasl_mechanism_filter = login\n\
             smtp_tls_security_level = may\n\
             smtp_tls_CAfile = /etc/postfix/relay-ca.pem\n\
             smtp_helo_name = out.example.net\n\
             myhostname = mail.example.net\n\
             maximal_queue_lifetime = 2d\n\
             message_size_limit = 1000000\n",
        ),
        ("relay-ca.pem", "-----BEGIN CERTIFICATE-----\n"),
    ]);
    std::fs::create_dir(dir.path().join("sasl")).unwrap();
    std::fs::write(
        dir.path().join("sasl/passwd"),
        "# host entries\nsmtp.example.net relay-user:relay-pw\nuser@example.net u:p\n",
    )
    .unwrap();
    let plan = import(dir.path()).unwrap();
    assert_eq!(plan.routes.len(), 1);
    let u = &plan.routes[0].upstream;
    assert_eq!((u.hosts[0].as_str(), u.port), ("smtp.example.net", 2525));
    assert_eq!(password(u), Some(("relay-user", "relay-pw")));
    let Auth::Password { mechanism, .. } = &u.auth else {
        panic!()
    };
    assert_eq!(*mechanism, AuthMechanism::Login);
    assert_eq!(
        u.ca_file.as_deref(),
        Some(dir.path().join("relay-ca.pem").as_path())
    );
    assert_eq!(u.helo.as_deref(), Some("out.example.net"));
    assert!(plan.routes[0].notes.iter().any(|n| n.contains("MX")));
    assert_eq!(plan.hostname.as_ref().unwrap().value, "mail.example.net");
    assert_eq!(
        plan.retry.as_ref().unwrap().value,
        "F,2h,15m; G,16h,1h,1.5; F,2d,6h"
    );
    assert_eq!(plan.max_message_size.as_ref().unwrap().value, 1_000_000);
    assert!(plan.senders.is_empty());
    assert!(plan.notes.iter().any(|n| n.contains("may")));
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("user@example.net") && n.contains("sender entry")));
}

#[test]
fn unsupported_settings_are_reported() {
    let dir = postfix_dir(&[(
        "main.cf",
        "relayhost = [127.0.0.1]:10025\n\
         transport_maps = hash:/etc/postfix/transport\n\
         default_transport = smtp\n\
         relay_transport = relay-out\n\
         smtp_sasl_password_maps = hash:/etc/postfix/missing\n\
         sender_dependent_relayhost_maps = pcre:/etc/postfix/relay.pcre, hash:/etc/postfix/gone\n\
         inet_interfaces = all\n\
         mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24\n\
         mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\n\
         smtp_tls_CApath = /etc/postfix/certs\n\
         maximal_queue_lifetime = 0\n\
         smtp_generic_maps = hash:/etc/postfix/generic\n",
    )]);
    let plan = import(dir.path()).unwrap();
    let why = plan.report_text();
    for expected in [
        "main.cf:2: transport_maps = hash:/etc/postfix/transport",
        "main.cf:4: relay_transport = relay-out",
        "main.cf:6: sender_dependent_relayhost_maps = pcre:/etc/postfix/relay.pcre: pcre: tables are not read",
        "postmap -s hash:/etc/postfix/gone",
        "main.cf:7: inet_interfaces = all",
        "main.cf:8: mynetworks",
        "main.cf:9: mydestination",
        "main.cf:10: smtp_tls_CApath",
        "main.cf:11: maximal_queue_lifetime = 0",
        "main.cf:12: smtp_generic_maps",
    ] {
        assert!(why.contains(expected), "missing {expected:?} in\n{why}");
    }
    // Default values and maps of a disabled feature are not reported.
    assert!(!why.contains("default_transport"), "{why}");
    assert!(!why.contains("missing"), "{why}");
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("smtp_sasl_auth_enable")));
    // No TLS to a loopback relay stays without TLS.
    let u = &plan.routes[0].upstream;
    assert_eq!(u.tls, TlsMode::None);
}

#[test]
fn no_tls_to_a_remote_relay_is_reported_and_upgraded() {
    let dir = postfix_dir(&[("main.cf", "relayhost = [relay.example.com]\n")]);
    let plan = import(dir.path()).unwrap();
    assert_eq!(plan.routes[0].upstream.tls, TlsMode::StartTls);
    assert_eq!(plan.routes[0].upstream.port, 25);
    assert!(plan
        .report_text()
        .contains("smtp_tls_security_level = none"));
}

#[test]
fn wrappermode_and_port_465_use_implicit_tls() {
    let dir = postfix_dir(&[(
        "main.cf",
        "relayhost = [smtp.example.com]:465\nsmtp_tls_security_level = encrypt\n",
    )]);
    let plan = import(dir.path()).unwrap();
    assert_eq!(plan.routes[0].upstream.tls, TlsMode::Implicit);
    assert!(plan.notes.iter().any(|n| n.contains("465")));
    let dir = postfix_dir(&[(
        "main.cf",
        "relayhost = [smtp.example.com]:4650\nsmtp_tls_wrappermode = yes\nsmtp_tls_security_level = encrypt\n",
    )]);
    let plan = import(dir.path()).unwrap();
    assert_eq!(plan.routes[0].upstream.tls, TlsMode::Implicit);
}

#[test]
fn xoauth2_plugin_passwords_are_not_taken_as_passwords() {
    let dir = postfix_dir(&[
        (
            "main.cf",
            "relayhost = [smtp.gmail.com]:587\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n\
             smtp_sasl_mechanism_filter = xoauth2\nsmtp_tls_security_level = verify\n",
        ),
        (
            "sasl_passwd",
            "[smtp.gmail.com]:587 me@gmail.com:/etc/tokens/me.tokens.json\n",
        ),
    ]);
    let plan = import(dir.path()).unwrap();
    assert_eq!(plan.routes[0].upstream.auth, Auth::None);
    let why = plan.report_text();
    assert!(why.contains("sasl_passwd:1: [smtp.gmail.com]:587"), "{why}");
    assert!(why.contains("token_source"), "{why}");
    assert!(!why.contains("tokens.json"), "{why}");
}

#[test]
fn no_relayhost_takes_the_busiest_route_as_default() {
    let dir = postfix_dir(&[
        (
            "main.cf",
            "sender_dependent_relayhost_maps = hash:/etc/postfix/relay\nsmtp_tls_security_level = secure\n",
        ),
        (
            "relay",
            "@a.example [smtp.one.example]:587\n@b.example [smtp.two.example]:587\n@c.example [smtp.two.example]:587\n",
        ),
    ]);
    let plan = import(dir.path()).unwrap();
    let default = plan.default_upstream();
    assert_eq!(default.hosts, ["smtp.two.example"]);
    assert!(plan.report_text().contains("relayhost: empty"));
    assert_eq!(plan.senders.len(), 3);
}

#[test]
fn nothing_to_import() {
    let dir = postfix_dir(&[("main.cf", "myhostname = mail.example.com\n")]);
    assert!(matches!(import(dir.path()), Err(ImportError::Nothing(_))));
    let dir = postfix_dir(&[]);
    assert!(matches!(import(dir.path()), Err(ImportError::Read { .. })));
}

#[test]
fn tls_protocol_lists() {
    assert!(allows_tls12_and_13("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"));
    assert!(allows_tls12_and_13(">=TLSv1.2"));
    assert!(allows_tls12_and_13("TLSv1.2 TLSv1.3"));
    assert!(allows_tls12_and_13("!SSLv2 !SSLv3"));
    assert!(!allows_tls12_and_13(">=TLSv1.3"));
    assert!(!allows_tls12_and_13("!TLSv1.2"));
    assert!(!allows_tls12_and_13("TLSv1.2"));
    assert!(!allows_tls12_and_13("<=TLSv1.2"));
}

#[test]
fn passwords_in_main_cf_tables_are_never_shown() {
    for maps in [
        "static:relay-user:Hunter2-in-main",
        "inline:{ [smtp.example.com]:587=relay-user:Hunter2-in-main }",
    ] {
        let dir = postfix_dir(&[(
            "main.cf",
            &format!(
                "relayhost = [smtp.example.com]:587\nsmtp_sasl_auth_enable = yes\n\
                 smtp_sasl_password_maps = {maps}\nsmtp_tls_security_level = secure\n"
            ),
        )]);
        let plan = import(dir.path()).unwrap();
        let why = plan.report_text();
        assert!(why.contains("main.cf:3: smtp_sasl_password_maps"), "{why}");
        assert!(!why.contains("Hunter2"), "{why}");
    }
}

/// A Postfix directory with a relay and these extra main.cf lines.
fn with_relay(main_cf: &str, files: &[(&str, &str)]) -> Plan {
    let text =
        format!("relayhost = [smtp.example.com]:587\nsmtp_tls_security_level = secure\n{main_cf}");
    let mut all = vec![("main.cf", text.as_str())];
    all.extend_from_slice(files);
    let dir = postfix_dir(&all);
    import(dir.path()).unwrap()
}

fn local_setting(s: &Option<Setting<String>>) -> Option<&str> {
    s.as_ref().map(|s| s.value.as_str())
}

#[test]
fn myorigin_file_is_mailname_and_the_first_alias_file_is_aliases() {
    let plan = with_relay(
        "myorigin = /etc/mailname\n\
         myhostname = web1.example.net\n\
         alias_maps = nis:mail.aliases, proxy:hash:/etc/aliases, lmdb:/etc/postfix/more, texthash:/etc/t\n\
         alias_database = hash:/etc/aliases\n",
        &[],
    );
    assert_eq!(local_setting(&plan.local.mailname), Some("/etc/mailname"));
    assert_eq!(local_setting(&plan.local.sender_domain), None);
    assert_eq!(local_setting(&plan.local.aliases), Some("/etc/aliases"));
    let why = plan.report_text();
    for expected in [
        "main.cf:5: alias_maps = nis:mail.aliases: nis: tables are not read",
        "main.cf:5: alias_maps = lmdb:/etc/postfix/more: smarthost reads one aliases file (/etc/aliases)",
        "main.cf:5: alias_maps = texthash:/etc/t: texthash: files are in postmap's format",
    ] {
        assert!(why.contains(expected), "missing {expected:?} in\n{why}");
    }
    assert!(!why.contains("alias_database"), "{why}");
}

#[test]
fn myorigin_domain_defaults_to_myhostname() {
    let domain = |main_cf: &str| {
        let plan = with_relay(main_cf, &[]);
        local_setting(&plan.local.sender_domain).map(String::from)
    };
    assert_eq!(
        domain("myhostname = mail.example.com\nmyorigin = $mydomain\n").as_deref(),
        Some("example.com")
    );
    assert_eq!(
        domain("mydomain = example.org\nmyorigin = $mydomain\n").as_deref(),
        Some("example.org")
    );
    // Postfix's default, unset or written out: $myhostname.
    assert_eq!(
        domain("myhostname = mail.example.com\n").as_deref(),
        Some("mail.example.com")
    );
    assert_eq!(
        domain("myhostname = mail.example.com\nmyorigin = $myhostname\n").as_deref(),
        Some("mail.example.com")
    );
    let plan = with_relay("", &[]);
    assert!(plan.local.sender_domain.is_none());
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("myorigin and myhostname are not set")));
    let plan = with_relay("myorigin = not a domain\n", &[]);
    assert!(plan.local.sender_domain.is_none());
    assert!(plan
        .report_text()
        .contains("main.cf:3: myorigin = not a domain: not a domain"));
}

#[test]
fn alias_paths_are_the_target_machines() {
    // $config_directory is the imported directory when read, /etc/postfix
    // on the machine the configuration is for.
    let plan = with_relay(
        "alias_maps = hash:$config_directory/aliases\nmyorigin = ${config_directory}/mailname\n",
        &[],
    );
    assert_eq!(
        local_setting(&plan.local.aliases),
        Some("/etc/postfix/aliases")
    );
    assert_eq!(
        local_setting(&plan.local.mailname),
        Some("/etc/postfix/mailname")
    );
    let plan = with_relay("alias_maps =\n", &[]);
    assert!(plan.local.aliases.is_none());
    assert!(plan
        .report_text()
        .contains("alias_maps =: empty: Postfix used no aliases"));
}

const GENERIC: &str = "# smtp_generic_maps\n\
    www-data@Host.LAN   noreply@example.com\n\
    @host.lan           @example.com\n\
    @old.example        ops@example.com\n\
    cron                cron-jobs@example.com\n\
    www-data            ignored@example.com\n\
    backup@host.lan     not an address\n\
    @host.lan           @twice.example\n\
    nobody@host.lan     nobody\n";

#[test]
fn generic_maps_become_local_generic() {
    let plan = with_relay(
        "myorigin = example.net\n\
         mydestination = $myorigin, web1.example.net, localhost, hash:/etc/postfix/dest\n\
         smtp_generic_maps = hash:/etc/postfix/generic, pcre:/etc/postfix/generic.pcre\n\
         recipient_delimiter = +\n",
        &[("generic", GENERIC)],
    );
    let g = |k: &str| plan.generic_value(k);
    assert_eq!(g("www-data@host.lan"), Some("noreply@example.com"));
    assert_eq!(g("@host.lan"), Some("@example.com"));
    assert_eq!(g("@old.example"), Some("ops@example.com"));
    // A local name: the user at $myorigin and at each $mydestination domain.
    for site in ["example.net", "web1.example.net", "localhost"] {
        assert_eq!(
            g(&format!("cron@{site}")),
            Some("cron-jobs@example.com"),
            "{site}"
        );
        assert_eq!(
            g(&format!("www-data@{site}")),
            Some("ignored@example.com"),
            "{site}"
        );
    }
    assert_eq!(g("backup@host.lan"), None);
    assert_eq!(g("nobody@host.lan"), None);
    let why = plan.report_text();
    for expected in [
        "main.cf:5: smtp_generic_maps = pcre:/etc/postfix/generic.pcre: pcre: tables are not read",
        "main.cf:4: mydestination = hash:/etc/postfix/dest: smtp_generic_maps keys without @ also matched",
        "main.cf:6: recipient_delimiter = +: smtp_generic_maps also matched user+extension@domain",
        "generic:7: backup@host.lan: \"not an address\" is not an address or @domain",
        "generic:8: @host.lan: duplicate key; postmap keeps the first",
        "generic:9: nobody@host.lan: \"nobody\" is not an address or @domain",
    ] {
        assert!(why.contains(expected), "missing {expected:?} in\n{why}");
    }
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("smtp_generic_maps: Postfix also rewrote recipients")));
    let text = plan
        .render(Path::new("/s"), std::time::SystemTime::UNIX_EPOCH)
        .config;
    let v: toml::Table = toml::from_str(&text).expect(&text);
    assert_eq!(v["local"]["sender_domain"].as_str(), Some("example.net"));
    assert_eq!(
        v["local"]["generic"]["www-data@host.lan"].as_str(),
        Some("noreply@example.com")
    );
}

#[test]
fn generic_keys_without_at_need_a_known_myorigin() {
    let plan = with_relay(
        "myorigin = /etc/mailname\nmyhostname = web1.example.net\n\
         smtp_generic_maps = hash:/etc/postfix/generic\n",
        &[("generic", "cron cron-jobs@example.com\n")],
    );
    // mydestination's default: $myhostname, localhost.$mydomain, localhost.
    for site in ["web1.example.net", "localhost.example.net", "localhost"] {
        assert_eq!(
            plan.generic_value(&format!("cron@{site}")),
            Some("cron-jobs@example.com")
        );
    }
    let why = plan.report_text();
    assert!(
        why.contains("generic:1: cron: no @: Postfix matched this user at $myorigin, the domain in /etc/mailname"),
        "{why}"
    );
}
