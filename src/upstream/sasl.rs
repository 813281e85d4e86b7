//! SMTP AUTH with OAuth2 bearer tokens (XOAUTH2 and OAUTHBEARER), client side.
//!
//! Our own rather than mail-send's `authenticate`: that one answers a 334 error
//! challenge by sending the credentials again (up to three times) instead of
//! the response the mechanisms define, tries every other offered mechanism, and
//! folds each failure into one error. We need to tell "the token was refused,
//! fetch a fresh one" from "the server cannot check it right now" and from "the
//! connection is gone, QUIT is pointless", and to keep the server's JSON error
//! challenge (status, scope) in the reason, since that is what tells an
//! operator a token lacks the mail scope.
//!
//! The token is a credential: no reason built here contains it or the base64 we
//! sent, even when a server echoes them back. Nothing is logged here; the
//! caller decides what to log.

use std::time::Duration;

use super::wire::Wire;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::outcome::reply_text;

/// For challenges only: servers are not all careful about padding, and a
/// challenge we cannot decode is still worth answering and reporting.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest piece of server-chosen text quoted from a challenge, so a hostile or
/// broken server cannot flood the logs and DSNs through us.
const MAX_QUOTED: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The client's answer to an error challenge, which lets the server finish
    /// the exchange with its final (failure) reply.
    fn challenge_answer(self) -> &'static [u8] {
        match self {
            // Google's XOAUTH2 documentation: an empty response.
            Mechanism::XOAuth2 => b"\r\n",
            // RFC 7628 3.2.3: the single byte 0x01, base64-encoded. Not the
            // empty line of Google's XOAUTH2 document, which the RFC does not
            // allow here.
            Mechanism::OAuthBearer => b"AQ==\r\n",
        }
    }
}

/// Why AUTH did not succeed. `reason` never contains the token.
#[derive(Debug, Clone)]
pub struct SaslError {
    pub reason: String,
    /// The server refused the credentials (535, or any 5.7.x): a fresh token
    /// may help. A temporary failure such as 454 4.7.0 is not a rejection.
    pub rejected: bool,
    /// The session is still in step with the server (the caller may send QUIT).
    pub in_step: bool,
}

/// Authenticates an EHLO'd, secured session with `token`. Only the given
/// mechanism is tried: falling back to another would hide a misconfiguration.
pub async fn authenticate<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Wire<T>,
    mechanism: Mechanism,
    user: &str,
    token: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), SaslError> {
    let what = format!("AUTH {}", mechanism.name());
    check_fields(&what, user, token, host)?;

    let initial = match mechanism {
        Mechanism::XOAuth2 => xoauth2_initial(user, token),
        Mechanism::OAuthBearer => oauthbearer_initial(user, token, host, port),
    };
    let encoded = STANDARD.encode(&initial);
    let secrets = Secrets::new(token, &encoded);

    // The initial response goes on the AUTH line itself (RFC 4954): one round
    // trip, and no 334 to tell apart from an error challenge. A 4 KB token
    // makes a line of about 5.5 KB, within RFC 4954's 12288-octet limit.
    let line = format!("{what} {encoded}\r\n");
    let reply = send(client, timeout, &what, line.as_bytes(), &secrets, None).await?;

    if reply.code != 334 {
        return finish(&what, &reply, None, &secrets);
    }
    answer_challenge(client, timeout, &what, mechanism, &reply, &secrets).await
}

/// Refuses, before anything is sent, values that cannot go in the response.
fn check_fields(what: &str, user: &str, token: &str, host: &str) -> Result<(), SaslError> {
    // Fields are framed by 0x01: a control character in a value would cut or
    // forge fields (or, in a token read from a file, is a trailing newline the
    // server would refuse with a misleading "bad credentials").
    if token.is_empty() {
        return Err(not_sent(what, "the token is empty"));
    }
    for (field, value) in [("user name", user), ("token", token), ("host name", host)] {
        if value.chars().any(char::is_control) {
            return Err(not_sent(
                what,
                &format!("the {field} contains a control character"),
            ));
        }
    }
    Ok(())
}

/// Answers a 334 challenge to the initial response, and cancels a second one.
async fn answer_challenge<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Wire<T>,
    timeout: Duration,
    what: &str,
    mechanism: Mechanism,
    challenge: &Response<String>,
    secrets: &Secrets,
) -> Result<(), SaslError> {
    // The token was sent up front, so any challenge is the server's way of
    // saying it failed (or something we do not understand): answer so that the
    // server ends the exchange with a real reply, and report what it said.
    let said = describe_challenge(&challenge.message);
    let reply = send(
        client,
        timeout,
        what,
        mechanism.challenge_answer(),
        secrets,
        Some(&said),
    )
    .await?;

    if reply.code == 334 {
        // Answering again could go on forever; "*" cancels (RFC 4954 4), and
        // the server must then reply 501.
        let cancelled = send(client, timeout, what, b"*\r\n", secrets, Some(&said)).await?;
        return Err(SaslError {
            reason: secrets.scrub(format!(
                "{what}: server sent a second challenge; cancelled: {} ({said})",
                reply_text(&cancelled)
            )),
            rejected: false,
            in_step: cancelled.code != 334,
        });
    }
    finish(what, &reply, Some(&said), secrets)
}

/// The XOAUTH2 initial client response (unencoded).
pub fn xoauth2_initial(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// The OAUTHBEARER initial client response (unencoded): RFC 7628 3.1.
pub fn oauthbearer_initial(user: &str, token: &str, host: &str, port: u16) -> Vec<u8> {
    // The authzid is optional in the GS2 header, and RFC 5801's saslname
    // cannot be empty: without a user the header is just "n,,".
    let authzid = if user.is_empty() {
        String::new()
    } else {
        format!("a={}", saslname(user))
    };
    format!("n,{authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
        .into_bytes()
}

/// RFC 5801: `,` ends the GS2 header field and `=` starts an escape.
fn saslname(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for c in user.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

fn not_sent(what: &str, why: &str) -> SaslError {
    SaslError {
        reason: format!("{what}: {why}; not sent"),
        rejected: false,
        // Nothing was written, so the session is exactly where it was.
        in_step: true,
    }
}

/// Sends one line and reads the reply, within `timeout`. Any failure here
/// leaves the session in an unknown state.
async fn send<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Wire<T>,
    timeout: Duration,
    what: &str,
    line: &[u8],
    secrets: &Secrets,
    said: Option<&str>,
) -> Result<Response<String>, SaslError> {
    super::within(timeout, what, client.cmd(line))
        .await
        .map_err(|reason| SaslError {
            reason: secrets.scrub(with_challenge(reason, said)),
            rejected: false,
            in_step: false,
        })
}

/// Judges the server's last word on the exchange.
fn finish(
    what: &str,
    reply: &Response<String>,
    said: Option<&str>,
    secrets: &Secrets,
) -> Result<(), SaslError> {
    if reply.code == 235 {
        // Even after an error challenge: the server has the last word, and it
        // says the session is authenticated.
        return Ok(());
    }
    let (rejected, in_step) = match reply.code {
        // 454 4.7.0 and friends: the server could not check the token now.
        400..=499 => (false, true),
        // 535 5.7.8, 534 5.7.9, 530 5.7.0: the credentials themselves. Other
        // 5xx (504 mechanism unknown, 501 syntax) are not about the token.
        500..=599 => (reply.code == 535 || reply.esc[..2] == [5, 7], true),
        // A positive completion other than 235 ends the command all the same.
        200..=299 => (false, true),
        // Some other intermediate reply: the server waits for input we do not
        // know how to give.
        _ => (false, false),
    };
    let text = if (400..=599).contains(&reply.code) {
        reply_text(reply)
    } else {
        format!("unexpected reply {}", reply_text(reply))
    };
    Err(SaslError {
        reason: secrets.scrub(with_challenge(format!("{what}: {text}"), said)),
        rejected,
        in_step,
    })
}

fn with_challenge(reason: String, said: Option<&str>) -> String {
    match said {
        Some(said) => format!("{reason} ({said})"),
        None => reason,
    }
}

/// What an error challenge said, in one line for the reason. Tolerant: a
/// challenge we cannot decode is reported as such, never an error of its own.
fn describe_challenge(message: &str) -> String {
    // Base64 ignores line breaks; a multiline 334 is joined with "\n".
    let compact: String = message.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return "server sent an empty challenge".into();
    }
    let Ok(bytes) = LENIENT.decode(compact.as_bytes()) else {
        return "server sent an undecodable challenge".into();
    };
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&bytes) {
        // Google's XOAUTH2 sends status as "400"; RFC 7628 uses names such as
        // "invalid_token". scope says which scope a token needs.
        let fields: Vec<String> = ["status", "scope", "schemes"]
            .iter()
            .filter_map(|key| {
                let value = match map.get(*key)? {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some(format!("{key}={}", quoted(&value)))
            })
            .collect();
        return if fields.is_empty() {
            "server sent a JSON challenge without status".into()
        } else {
            format!("server said: {}", fields.join(" "))
        };
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) if !text.trim().is_empty() => {
            format!("server said: {:?}", quoted(text))
        }
        _ => "server sent an unreadable challenge".into(),
    }
}

/// Server-chosen text made safe for a one-line reason.
fn quoted(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED)
        .collect();
    one_line.trim().to_string()
}

/// What must never reach a reason (or a transcript), even when a server
/// echoes it back.
#[derive(Default)]
pub(super) struct Secrets(Vec<String>);

impl Secrets {
    fn new(token: &str, sent: &str) -> Self {
        let mut all = Secrets::default();
        for secret in [token, &STANDARD.encode(token), sent] {
            all.add(secret);
        }
        all
    }

    pub(super) fn add(&mut self, secret: &str) {
        if secret.is_empty() || self.0.iter().any(|s| s == secret) {
            return;
        }
        self.0.push(secret.to_string());
        // Longest first, so a secret that contains another is removed whole.
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub(super) fn scrub(&self, mut text: String) -> String {
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    const USER: &str = "someone@example.com";
    const TOKEN: &str = "ya29.a0AfB_byC-secret-token-value_0123456789";
    const HOST: &str = "smtp.example.com";
    const PORT: u16 = 587;
    const GOOGLE_535: &str = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials x1-20020a.1 - gsmtp\r\n";

    /// A scripted server: for each reply, reads one line from the client, then
    /// sends the reply. It closes the connection after the last one.
    fn server(replies: Vec<String>) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(server_end);
            let mut lines = Vec::new();
            for reply in replies {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    break;
                }
                lines.push(String::from_utf8(line).unwrap());
                reader.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            lines
        });
        (client_end, task)
    }

    async fn run(
        mechanism: Mechanism,
        user: &str,
        token: &str,
        replies: &[&str],
    ) -> (Result<(), SaslError>, Vec<String>) {
        let (stream, task) = server(replies.iter().map(|s| s.to_string()).collect());
        let mut client = Wire::new(stream);
        let result = authenticate(
            &mut client,
            mechanism,
            user,
            token,
            HOST,
            PORT,
            Duration::from_secs(5),
        )
        .await;
        drop(client);
        (result, task.await.unwrap())
    }

    fn challenge(json: &str) -> String {
        format!("334 {}\r\n", STANDARD.encode(json))
    }

    fn auth_line(mechanism: Mechanism, user: &str, token: &str) -> String {
        let initial = match mechanism {
            Mechanism::XOAuth2 => xoauth2_initial(user, token),
            Mechanism::OAuthBearer => oauthbearer_initial(user, token, HOST, PORT),
        };
        format!("AUTH {} {}\r\n", mechanism.name(), STANDARD.encode(initial))
    }

    /// The token, and anything recognisable of the base64 we sent, is absent.
    fn assert_no_secret(reason: &str, mechanism: Mechanism) {
        assert!(!reason.contains(TOKEN), "{reason}");
        assert!(!reason.contains('\r') && !reason.contains('\n'), "{reason}");
        // The token's base64 at each of the three alignments it can have
        // inside a longer payload, without the edge characters that depend on
        // its neighbours.
        for prefix in ["", "a", "ab"] {
            let b64 = STANDARD.encode(format!("{prefix}{TOKEN}"));
            let inner = &b64[4..b64.len() - 4];
            assert!(!reason.contains(inner), "{reason}");
        }
        let sent = auth_line(mechanism, USER, TOKEN);
        let payload = sent.trim_end().rsplit(' ').next().unwrap();
        for window in payload.as_bytes().windows(16) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!reason.contains(window), "{window} in {reason}");
        }
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::XOAuth2.name(), "XOAUTH2");
        assert_eq!(Mechanism::OAuthBearer.name(), "OAUTHBEARER");
    }

    #[test]
    fn xoauth2_initial_bytes() {
        assert_eq!(
            xoauth2_initial("someone@example.com", "abc"),
            b"user=someone@example.com\x01auth=Bearer abc\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_initial_matches_rfc7628_example() {
        // RFC 7628 section 4.1, with ^A written as 0x01.
        assert_eq!(
            oauthbearer_initial(
                "user@example.com",
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
                "server.example.com",
                143
            ),
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_saslname_escaping() {
        let initial = oauthbearer_initial("a,b=c,d", "t", "h", 25);
        assert!(initial.starts_with(b"n,a=a=2Cb=3Dc=2Cd,\x01host=h\x01"));
        assert!(oauthbearer_initial("", "t", "h", 25).starts_with(b"n,,\x01host=h"));
    }

    #[tokio::test]
    async fn xoauth2_success() {
        let (result, lines) =
            run(Mechanism::XOAuth2, USER, TOKEN, &["235 2.7.0 Accepted\r\n"]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(lines, [auth_line(Mechanism::XOAuth2, USER, TOKEN)]);
        let payload = lines[0].trim_end().strip_prefix("AUTH XOAUTH2 ").unwrap();
        assert_eq!(
            STANDARD.decode(payload).unwrap(),
            format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01").as_bytes()
        );
    }

    #[tokio::test]
    async fn oauthbearer_success() {
        let (result, lines) = run(
            Mechanism::OAuthBearer,
            USER,
            TOKEN,
            &["235 2.7.0 Accepted\r\n"],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(lines, [auth_line(Mechanism::OAuthBearer, USER, TOKEN)]);
        let payload = lines[0]
            .trim_end()
            .strip_prefix("AUTH OAUTHBEARER ")
            .unwrap();
        assert_eq!(
            STANDARD.decode(payload).unwrap(),
            format!("n,a={USER},\x01host={HOST}\x01port={PORT}\x01auth=Bearer {TOKEN}\x01\x01")
                .as_bytes()
        );
    }

    #[tokio::test]
    async fn xoauth2_error_challenge() {
        let json = r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
        let (result, lines) = run(
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            &[&challenge(json), GOOGLE_535],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(
            lines,
            [auth_line(Mechanism::XOAuth2, USER, TOKEN), "\r\n".into()]
        );
        assert!(err.rejected && err.in_step, "{err:?}");
        assert!(
            err.reason.starts_with(
                "AUTH XOAUTH2: 535 5.7.8 Username and Password not accepted. For more information, go to"
            ),
            "{}",
            err.reason
        );
        assert!(
            err.reason.ends_with(
                "(server said: status=400 scope=https://mail.google.com/ schemes=Bearer)"
            ),
            "{}",
            err.reason
        );
        assert_no_secret(&err.reason, Mechanism::XOAuth2);
    }

    #[tokio::test]
    async fn oauthbearer_error_challenge() {
        let json = r#"{"status":"invalid_token","scope":"https://mail.google.com/","openid-configuration":"https://accounts.google.com/.well-known/openid-configuration"}"#;
        let (result, lines) = run(
            Mechanism::OAuthBearer,
            USER,
            TOKEN,
            &[&challenge(json), "535 5.7.8 Authentication failed\r\n"],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(
            lines,
            [
                auth_line(Mechanism::OAuthBearer, USER, TOKEN),
                "AQ==\r\n".into()
            ]
        );
        assert!(err.rejected && err.in_step, "{err:?}");
        assert_eq!(
            err.reason,
            "AUTH OAUTHBEARER: 535 5.7.8 Authentication failed \
             (server said: status=invalid_token scope=https://mail.google.com/)"
        );
        assert_no_secret(&err.reason, Mechanism::OAuthBearer);
    }

    #[tokio::test]
    async fn non_json_challenges_are_answered_and_reported() {
        // "Username:" in base64: a server that wants LOGIN-style prompting.
        let (result, lines) = run(
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            &["334 VXNlcm5hbWU6\r\n", "535 5.7.8 no\r\n"],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(lines[1], "\r\n");
        assert_eq!(
            err.reason,
            r#"AUTH XOAUTH2: 535 5.7.8 no (server said: "Username:")"#
        );

        let (result, lines) = run(
            Mechanism::OAuthBearer,
            USER,
            TOKEN,
            &["334 !!not base64!!\r\n", "535 5.7.8 no\r\n"],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(lines[1], "AQ==\r\n");
        assert!(err.rejected && err.in_step);
        assert_eq!(
            err.reason,
            "AUTH OAUTHBEARER: 535 5.7.8 no (server sent an undecodable challenge)"
        );

        // Unpadded base64 of bad JSON.
        let (result, _) = run(
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            &["334 eyJzdGF0dXMiOg\r\n", "535 5.7.8 no\r\n"],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(
            err.reason,
            r#"AUTH XOAUTH2: 535 5.7.8 no (server said: "{\"status\":")"#
        );
    }

    #[tokio::test]
    async fn second_challenge_is_cancelled() {
        let (result, lines) = run(
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            &[
                &challenge(r#"{"status":"400"}"#),
                "334 \r\n",
                "501 5.7.0 Authentication cancelled\r\n",
            ],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(lines[1..], ["\r\n", "*\r\n"]);
        assert!(!err.rejected && err.in_step, "{err:?}");
        assert!(err.reason.contains("501 5.7.0"), "{}", err.reason);
    }

    #[tokio::test]
    async fn temporary_failure_is_not_a_rejection() {
        let (result, _) = run(
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            &["454 4.7.0 Temporary authentication failure\r\n"],
        )
        .await;
        let err = result.unwrap_err();
        assert!(!err.rejected && err.in_step, "{err:?}");
        assert_eq!(
            err.reason,
            "AUTH XOAUTH2: 454 4.7.0 Temporary authentication failure"
        );
    }

    #[tokio::test]
    async fn reply_classes() {
        for (reply, rejected, in_step) in [
            ("535 5.7.8 Bad credentials\r\n", true, true),
            ("535 Bad credentials\r\n", true, true),
            (
                "534 5.7.9 Please log in with your web browser\r\n",
                true,
                true,
            ),
            (
                "504 5.5.4 Unrecognized authentication type\r\n",
                false,
                true,
            ),
            ("501 5.5.2 Syntax error\r\n", false, true),
            ("421 4.7.0 Try again later\r\n", false, true),
            ("250 OK\r\n", false, true),
            ("354 go ahead\r\n", false, false),
        ] {
            let (result, _) = run(Mechanism::OAuthBearer, USER, TOKEN, &[reply]).await;
            let err = result.unwrap_err();
            assert_eq!((err.rejected, err.in_step), (rejected, in_step), "{reply}");
            assert_no_secret(&err.reason, Mechanism::OAuthBearer);
        }
    }

    #[tokio::test]
    async fn connection_closed_is_out_of_step() {
        // The server reads the AUTH line and hangs up without replying.
        let (result, lines) = run(Mechanism::XOAuth2, USER, TOKEN, &[""]).await;
        let err = result.unwrap_err();
        assert_eq!(lines.len(), 1);
        assert!(!err.rejected && !err.in_step, "{err:?}");
        assert!(err.reason.starts_with("AUTH XOAUTH2: "), "{}", err.reason);
        assert_no_secret(&err.reason, Mechanism::XOAuth2);

        // Or after its error challenge.
        let (result, lines) = run(
            Mechanism::OAuthBearer,
            USER,
            TOKEN,
            &[&challenge(r#"{"status":"invalid_token"}"#), ""],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(lines.len(), 2);
        assert!(!err.rejected && !err.in_step, "{err:?}");
        assert!(
            err.reason.ends_with("(server said: status=invalid_token)"),
            "{}",
            err.reason
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (stream, server_end) = tokio::io::duplex(64 * 1024);
        let mut client = Wire::new(stream);
        let result = authenticate(
            &mut client,
            Mechanism::XOAuth2,
            USER,
            TOKEN,
            HOST,
            PORT,
            Duration::from_millis(100),
        )
        .await;
        let err = result.unwrap_err();
        assert!(!err.rejected && !err.in_step, "{err:?}");
        assert!(err.reason.contains("timed out"), "{}", err.reason);
        drop(server_end);
    }

    #[tokio::test]
    async fn echoed_token_is_redacted() {
        let echo = format!(
            "535 5.7.8 token {TOKEN} and line {} refused\r\n",
            auth_line(Mechanism::XOAuth2, USER, TOKEN).trim_end()
        );
        let (result, _) = run(Mechanism::XOAuth2, USER, TOKEN, &[&echo]).await;
        let err = result.unwrap_err();
        assert!(err.rejected);
        assert_eq!(
            err.reason,
            "AUTH XOAUTH2: 535 5.7.8 token [redacted] and line AUTH XOAUTH2 [redacted] refused"
        );
        assert_no_secret(&err.reason, Mechanism::XOAuth2);
    }

    #[tokio::test]
    async fn saslname_escaping_on_the_wire() {
        let user = "dept,mail=ops@example.com";
        let (result, lines) = run(
            Mechanism::OAuthBearer,
            user,
            TOKEN,
            &["235 2.7.0 Accepted\r\n"],
        )
        .await;
        assert!(result.is_ok());
        let payload = lines[0]
            .trim_end()
            .strip_prefix("AUTH OAUTHBEARER ")
            .unwrap();
        let decoded = STANDARD.decode(payload).unwrap();
        assert!(
            decoded.starts_with(b"n,a=dept=2Cmail=3Dops@example.com,\x01host="),
            "{:?}",
            String::from_utf8_lossy(&decoded)
        );
    }

    #[tokio::test]
    async fn large_token_fits_one_line() {
        let token: String = "A1b2-._~+/".repeat(410)[..4096].to_string();
        for mechanism in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
            let (result, lines) = run(mechanism, USER, &token, &["235 2.7.0 OK\r\n"]).await;
            assert!(result.is_ok(), "{result:?}");
            assert_eq!(lines, [auth_line(mechanism, USER, &token)]);
            assert!(lines[0].len() > 5400 && lines[0].len() < 12288);
        }
    }

    #[tokio::test]
    async fn control_characters_are_not_sent() {
        for (user, token) in [
            (USER, "tok\x01en"),
            (USER, "token\n"),
            ("a\x01b", TOKEN),
            (USER, ""),
        ] {
            let (result, lines) = run(Mechanism::XOAuth2, user, token, &[]).await;
            let err = result.unwrap_err();
            assert!(lines.is_empty());
            assert!(!err.rejected && err.in_step, "{err:?}");
            if !token.is_empty() {
                assert!(!err.reason.contains(token), "{}", err.reason);
            }
        }
    }
}
