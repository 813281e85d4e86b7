use super::*;
use base64::engine::general_purpose;
use std::time::Instant;
use tokio::net::{TcpListener, UnixListener};

const TOKEN: &str = "ya29.a0AfH6SMC-secret_token~xyz";

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn is_dead(r: &TokenError) -> bool {
    matches!(r, TokenError::Dead(_))
}

// ---- command ----

#[tokio::test]
async fn command_returns_trimmed_stdout() {
    let got = command(
        &argv(&["sh", "-c", &format!("echo '  {TOKEN}  '; echo noise >&2")]),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(got.expose(), TOKEN);
}

#[tokio::test]
async fn command_nonzero_exit_is_temporary_with_stderr_not_stdout() {
    let err = command(
        &argv(&[
            "sh",
            "-c",
            &format!("echo {TOKEN}; printf 'vault is\\nlocked\\n' >&2; exit 3"),
        ]),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    let TokenError::Temporary(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.starts_with("command sh: exited with status 3"),
        "{text}"
    );
    assert!(text.ends_with("vault is locked"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn command_stderr_is_cut_to_one_short_line() {
    let err = command(
        &argv(&[
            "sh",
            "-c",
            "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1",
        ]),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.chars().count() < 260, "{}", text.len());
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn command_timeout_is_temporary_and_fast() {
    let started = Instant::now();
    let err = command(&argv(&["sleep", "5"]), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
    assert!(err.to_string().contains("200ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn command_not_found_is_dead() {
    let err = command(
        &argv(&["/nonexistent/token-helper", "x"]),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        TokenError::Dead("command /nonexistent/token-helper: not found".into())
    );
}

#[tokio::test]
async fn command_not_executable_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helper");
    std::fs::write(&path, "#!/bin/sh\necho tok\n").unwrap();
    let err = command(&[path.display().to_string()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(is_dead(&err), "{err:?}");
}

#[tokio::test]
async fn command_empty_argv_is_dead() {
    assert!(is_dead(
        &command(&[], Duration::from_secs(1)).await.unwrap_err()
    ));
}

#[tokio::test]
async fn command_output_that_is_not_a_token_is_dead() {
    for script in ["true", "printf 'two\\nlines\\n'", "echo 'has space'"] {
        let err = command(&argv(&["sh", "-c", script]), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(is_dead(&err), "{script}: {err:?}");
        assert!(!err.to_string().contains("lines"), "{err}");
    }
}

#[tokio::test]
async fn command_huge_output_is_dead() {
    let err = command(
        &argv(&["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"]),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(is_dead(&err), "{err:?}");
}

// ---- file ----

#[tokio::test]
async fn file_reads_token_and_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    private(&path, format!("{TOKEN}\n"));
    let (token, stamp_read) = file(&path).await.unwrap();
    assert_eq!(token.expose(), TOKEN);
    assert_eq!(stamp(&path), Some(stamp_read));
}

#[tokio::test]
async fn file_missing_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let err = file(&path).await.unwrap_err();
    assert_eq!(
        err,
        TokenError::Dead(format!("file {}: does not exist", path.display()))
    );
    assert_eq!(stamp(&path), None);
}

#[tokio::test]
async fn file_empty_or_directory_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    private(&path, "\n");
    assert!(is_dead(&file(&path).await.unwrap_err()));
    assert!(is_dead(&file(dir.path()).await.unwrap_err()));
}

#[tokio::test]
async fn stamp_changes_when_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    private(&path, "first\n");
    let first = stamp(&path).unwrap();
    assert_eq!(stamp(&path), Some(first.clone()));

    // In place, different length.
    std::fs::write(&path, "second-token\n").unwrap();
    let second = stamp(&path).unwrap();
    assert_ne!(first, second);

    // Replaced by rename with the same length: a new inode.
    let tmp = dir.path().join("token.tmp");
    private(&tmp, "second-tokeX\n");
    std::fs::rename(&tmp, &path).unwrap();
    let third = stamp(&path).unwrap();
    assert_ne!(second, third);
    let (token, read_stamp) = file(&path).await.unwrap();
    assert_eq!(token.expose(), "second-tokeX");
    assert_eq!(read_stamp, third);
}

// ---- socket ----

/// One-shot credential server: reads the request to end of file like
/// cloud_mdir_sync, answers `reply`, and hands back what it received.
fn credential_server(
    dir: &Path,
    reply: Vec<u8>,
) -> (std::path::PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
    let path = dir.join("cms.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).await.unwrap();
        conn.write_all(&reply).await.unwrap();
        request
    });
    (path, server)
}

fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

#[tokio::test]
async fn socket_returns_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let reply = format!("{}\n", xoauth2("user@example.com", TOKEN));
    let (path, server) = credential_server(dir.path(), reply.into_bytes());
    let bearer = socket(&path, "user@example.com", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap(), b"SMTP user@example.com\n");
    assert_eq!(bearer.user, "user@example.com");
    assert_eq!(bearer.token.expose(), TOKEN);
    assert_eq!(bearer.expires_at, None);
}

#[tokio::test]
async fn socket_accepts_base64_reply() {
    let dir = tempfile::tempdir().unwrap();
    let encoded = general_purpose::STANDARD.encode(xoauth2("user@example.com", TOKEN));
    let (path, server) = credential_server(dir.path(), encoded.into_bytes());
    let bearer = socket(&path, "user@example.com", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap(), b"SMTP user@example.com\n");
    assert_eq!(bearer.user, "user@example.com");
    assert_eq!(bearer.token.expose(), TOKEN);
}

#[tokio::test]
async fn socket_malformed_reply_is_dead_without_echo() {
    for reply in [
        format!("auth=Bearer {TOKEN}\x01\x01"),
        format!("user=user@example.com\x01auth=Basic {TOKEN}\x01\x01"),
        format!("user=user@example.com\x01auth=Bearer {TOKEN} x\x01\x01"),
        format!("{TOKEN}\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (path, _server) = credential_server(dir.path(), reply.clone().into_bytes());
        let err = socket(&path, "user@example.com", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(is_dead(&err), "{reply:?}: {err:?}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }
}

#[tokio::test]
async fn socket_empty_reply_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _server) = credential_server(dir.path(), Vec::new());
    let err = socket(&path, "other@example.com", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(is_dead(&err), "{err:?}");
}

#[tokio::test]
async fn socket_without_listener_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    // No socket file at all.
    let err = socket(
        &dir.path().join("absent.sock"),
        "user@example.com",
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
    // A socket file left behind by a daemon that has exited.
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let err = socket(&path, "user@example.com", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
}

#[tokio::test]
async fn socket_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let _server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(conn);
    });
    let err = socket(&path, "user@example.com", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
}

#[tokio::test]
async fn socket_refuses_user_with_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    let err = socket(
        &dir.path().join("cms.sock"),
        "a@b\nSMTP c@d",
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(is_dead(&err), "{err:?}");
}

// ---- http ----

/// One-shot HTTP server: hands back the request head it received and
/// answers with `status` and `body`.
async fn http_server(status: &'static str, body: String) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).await.unwrap();
        let _ = conn.shutdown().await;
        String::from_utf8(head).unwrap()
    });
    (port, server)
}

fn client() -> reqwest::Client {
    // Plain http needs no roots; no_proxy keeps a proxy from the
    // environment out of loopback tests.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn http_returns_bearer_and_sends_basic_auth() {
    let body = format!(r#"{{"user":"user@example.com","accessToken":"{TOKEN}","x":1}}"#);
    let (port, server) = http_server("200 OK", body).await;
    let url = Secret::new(format!(
        "http://admin:pa%40ss@127.0.0.1:{port}/auth/token?region=eu"
    ));
    let bearer = http(&client(), &url, "acct-1", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(bearer.user, "user@example.com");
    assert_eq!(bearer.token.expose(), TOKEN);
    assert_eq!(bearer.expires_at, None);

    let head = server.await.unwrap();
    let request_line = head.lines().next().unwrap();
    assert_eq!(
        request_line,
        "GET /auth/token?region=eu&account=acct-1&proto=smtp HTTP/1.1"
    );
    let expected = format!("Basic {}", general_purpose::STANDARD.encode("admin:pa@ss"));
    assert_eq!(header(&head, "authorization"), Some(expected.as_str()));
}

#[tokio::test]
async fn http_without_credentials_sends_no_authorization() {
    let body = format!(r#"{{"user":"u@example.com","accessToken":"{TOKEN}"}}"#);
    let (port, server) = http_server("200 OK", body).await;
    let url = Secret::new(format!("http://127.0.0.1:{port}/"));
    http(&client(), &url, "a b&c", Duration::from_secs(5))
        .await
        .unwrap();
    let head = server.await.unwrap();
    assert!(
        head.starts_with("GET /?account=a+b%26c&proto=smtp HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(header(&head, "authorization"), None);
}

#[tokio::test]
async fn http_401_is_dead_and_leaks_nothing() {
    let body = format!(r#"{{"error":"bad","accessToken":"{TOKEN}"}}"#);
    let (port, _server) = http_server("401 Unauthorized", body).await;
    let url = Secret::new(format!("http://admin:hunter2@127.0.0.1:{port}/auth"));
    let err = http(&client(), &url, "acct", Duration::from_secs(5))
        .await
        .unwrap_err();
    let TokenError::Dead(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.starts_with(&format!("http http://127.0.0.1:{port}/auth: ")),
        "{text}"
    );
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(TOKEN) && !text.contains("hunter2") && !text.contains("admin"));
}

#[tokio::test]
async fn http_503_is_temporary() {
    let (port, _server) = http_server("503 Service Unavailable", "{}".into()).await;
    let url = Secret::new(format!("http://admin:hunter2@127.0.0.1:{port}/auth"));
    let err = http(&client(), &url, "acct", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn http_bad_replies_are_dead_and_leak_nothing() {
    for body in [
        format!(r#"{{"user":"u@example.com","token":"{TOKEN}"}}"#),
        format!(r#"{{"user":"u@example.com","accessToken":["{TOKEN}"]}}"#),
        format!(r#"{{"accessToken":"{TOKEN}"}}"#),
        format!(r#"{{"user":"u@example.com","accessToken":"{TOKEN} x"}}"#),
        format!("not json {TOKEN}"),
    ] {
        let (port, _server) = http_server("200 OK", body.clone()).await;
        let url = Secret::new(format!("http://admin:hunter2@127.0.0.1:{port}/"));
        let err = http(&client(), &url, "acct", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(is_dead(&err), "{body}: {err:?}");
        let text = err.to_string();
        assert!(!text.contains(TOKEN) && !text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn http_unreachable_or_silent_is_temporary() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = Secret::new(format!("http://admin:hunter2@127.0.0.1:{port}/"));
    let err = http(&client(), &url, "acct", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _server = tokio::spawn(async move {
        let (conn, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(conn);
    });
    let url = Secret::new(format!("http://127.0.0.1:{port}/"));
    let started = Instant::now();
    let err = http(&client(), &url, "acct", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Temporary(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http_bad_url_is_dead_and_leaks_nothing() {
    for url in ["ftp://admin:hunter2@host/x", "http://admin:hunter2@[::1/x"] {
        let err = http(&client(), &Secret::new(url), "acct", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(is_dead(&err), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn redact_url_drops_userinfo_only() {
    assert_eq!(
        redact_url("http://u:p@host:8080/a/b?c=d"),
        "http://host:8080/a/b?c=d"
    );
    assert_eq!(redact_url("https://user@host/"), "https://host/");
    assert_eq!(redact_url("http://host/x"), "http://host/x");
    // Unparseable, still redacted.
    assert_eq!(redact_url("http://u:p@[::1/x"), "http://[::1/x");
}

#[test]
fn percent_decode_handles_escapes() {
    assert_eq!(percent_decode("pa%40ss%2"), "pa@ss%2");
    assert_eq!(percent_decode("%zz%41"), "%zzA");
}

/// A token file as a helper writes it: mode 0600, like every secret.
fn private(path: &std::path::Path, text: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn a_token_file_others_can_write_or_a_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    private(&path, format!("{TOKEN}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = file(&path).await.unwrap_err();
    assert!(is_dead(&err), "{err:?}");
    assert!(format!("{err:?}").contains("writable by them"), "{err:?}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("token");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = file(&link).await.unwrap_err();
    assert!(
        is_dead(&err) && format!("{err:?}").contains("symbolic link"),
        "{err:?}"
    );
}
