use super::*;

fn parse(text: &str) -> Aliases {
    Aliases::parse(text, Path::new("/etc/aliases")).unwrap()
}

fn names(targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| match t {
            Target::Name(n) => format!("name:{n}"),
            Target::Address(a) => a.clone(),
            Target::Unsupported(u) => format!("unsupported:{u}"),
        })
        .collect()
}

#[test]
fn lists_continuations_and_comments() {
    let a = parse(
        "# See man 5 aliases for format\n\
         postmaster:    root\n\
         root: ops@example.com,\n  \"Night Desk\" <night@example.com>,\n\
         \tpager@example.net\n\
         \n\
         www-data: root, www-data\n\
         Cron: root\n",
    );
    assert_eq!(a.len(), 4);
    let want = ["ops@example.com", "night@example.com", "pager@example.net"];
    assert_eq!(names(&a.expand("postmaster").unwrap()), want);
    // Listing itself means the name itself; each address once.
    let mut www = want.to_vec();
    www.push("name:www-data");
    assert_eq!(names(&a.expand("www-data").unwrap()), www);
    assert_eq!(names(&a.expand("CRON").unwrap()), want);
    assert_eq!(names(&a.expand("nobody").unwrap()), ["name:nobody"]);
}

#[test]
fn include_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list");
    std::fs::write(
        &list,
        "# the team\na@example.com, b@example.com\nc@example.com\n",
    )
    .unwrap();
    let a = parse(&format!(
        "team: :include:{}, boss@example.com\n",
        list.display()
    ));
    let want = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "boss@example.com",
    ];
    assert_eq!(names(&a.expand("team").unwrap()), want);
    let missing = Aliases::parse("x: :include:/nonexistent/list\n", Path::new("/etc/aliases"));
    assert!(
        matches!(missing, Err(AliasError::Unreadable { .. })),
        "{missing:?}"
    );
    let relative = Aliases::parse("x: :include:list\n", Path::new("/etc/aliases"));
    assert!(
        matches!(relative, Err(AliasError::Syntax { line: 1, .. })),
        "{relative:?}"
    );
}

#[test]
fn loops_programs_and_files_are_refused() {
    let a = parse("a: b\nb: c, x@example.com\nc: a\nprog: |/usr/bin/procmail\nfile: /var/mail/f\n");
    let err = a.expand("a").unwrap_err();
    assert_eq!(
        err,
        AliasError::Loop(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(err.to_string(), "alias loop: a -> b -> c -> a");
    for name in ["prog", "file"] {
        let err = a.expand(name).unwrap_err();
        assert!(matches!(err, AliasError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("does not run programs"), "{err}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    for (text, line) in [
        ("root ops@example.com\n", 1),
        ("# c\nok: a\n: x\n", 3),
        ("x:\n", 1),
    ] {
        let err = Aliases::parse(text, Path::new("/etc/aliases")).unwrap_err();
        assert!(
            matches!(err, AliasError::Syntax { line: l, .. } if l == line),
            "{text:?}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/aliases:{line}: ")),
            "{err}"
        );
    }
    let bad = Aliases::parse("x: a@b@c\n", Path::new("/etc/aliases")).unwrap_err();
    assert!(
        bad.to_string().contains("not a name or an address"),
        "{bad}"
    );
}

#[test]
fn a_missing_file_is_no_aliases() {
    let a = Aliases::load(Path::new("/nonexistent/aliases")).unwrap();
    assert!(a.is_empty());
}

#[test]
fn expansion_is_bounded() {
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("a{i}: a{}\n", i + 1));
    }
    let err = parse(&text).expand("a0").unwrap_err();
    assert!(matches!(err, AliasError::TooBig(_)), "{err:?}");
}
