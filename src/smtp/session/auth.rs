//! STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954, 4616) on submission
//! listeners, and what a login allows: relaying, as the senders the identity
//! owns.
//!
//! Nothing about a password reaches a log: a failure is logged with the
//! client's address, the mechanism and the user name only when it is a user
//! the passwd-file knows (a password typed into the user field stays unseen).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Line, Next, Session};
use crate::auth::Verdict;
use crate::config::SubmissionTls;
use crate::intake::Peer;
use crate::smtp::grammar::Command;
use crate::smtp::submission::MAX_FAILURES_PER_CONNECTION;

/// What AUTH got from the client.
enum Credentials {
    Given { user: String, password: Vec<u8> },
    Cancelled,
    Undecodable,
    Ended,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// On a STARTTLS listener before TLS, the refusal of anything but EHLO,
    /// HELO, STARTTLS, NOOP, RSET and QUIT (RFC 3207 4: a server may demand
    /// TLS first, as every submission port should).
    pub(super) fn before_tls(&self, cmd: &Command) -> Option<&'static str> {
        let sub = self.sub.as_ref()?;
        if self.tls || sub.tls != SubmissionTls::StartTls {
            return None;
        }
        match cmd {
            Command::Ehlo(_)
            | Command::Helo(_)
            | Command::StartTls
            | Command::Noop
            | Command::Rset
            | Command::Quit => None,
            _ => Some("Must issue a STARTTLS command first"),
        }
    }

    /// The EHLO lines a submission session adds: STARTTLS before TLS, AUTH
    /// after it (never before: a password is never sent in the clear).
    pub(super) fn auth_extensions(&self) -> &'static str {
        match (&self.sub, self.tls) {
            (Some(_), true) if self.identity.is_none() => "250-AUTH PLAIN LOGIN\r\n",
            (Some(s), false) if s.tls == SubmissionTls::StartTls => "250-STARTTLS\r\n",
            _ => "",
        }
    }

    pub(super) fn starttls(&mut self) -> Next {
        let offered = self
            .sub
            .as_ref()
            .is_some_and(|s| s.tls == SubmissionTls::StartTls)
            && !self.tls;
        if !offered {
            self.send(502, "5.5.1", "STARTTLS not available");
            return Next::Command;
        }
        // CVE-2011-0411: anything pipelined behind STARTTLS was sent in the
        // clear and must not be taken as said over TLS.
        if !self.reader.buffer().is_empty() {
            self.send(554, "5.5.1", "Error: data pipelined after STARTTLS");
            return Next::End;
        }
        self.send(220, "2.0.0", "Ready to start TLS");
        self.upgrade = true;
        Next::End
    }

    pub(super) async fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> std::io::Result<Next> {
        if self.sub.is_none() {
            self.send(502, "5.5.1", "AUTH not available");
            return Ok(Next::Command);
        }
        if let Some((code, enhanced, text)) = self.auth_refused_now() {
            self.send(code, enhanced, text);
            return Ok(Next::Command);
        }
        let creds = match mechanism {
            "PLAIN" => self.plain(initial).await?,
            "LOGIN" => self.login(initial).await?,
            _ => {
                self.send(504, "5.5.4", "Unrecognized authentication type");
                return Ok(Next::Command);
            }
        };
        match creds {
            Credentials::Given { user, password } => self.check(mechanism, user, password).await,
            Credentials::Cancelled => {
                self.send(501, "5.0.0", "Authentication cancelled");
                Ok(Next::Command)
            }
            Credentials::Undecodable => {
                self.send(501, "5.5.2", "Cannot decode response");
                Ok(Next::Command)
            }
            Credentials::Ended => Ok(Next::End),
        }
    }

    /// Why AUTH cannot be given now, if it cannot.
    fn auth_refused_now(&self) -> Option<(u16, &'static str, &'static str)> {
        if !self.tls {
            return Some((
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.identity.is_some() {
            return Some((503, "5.5.1", "Error: already authenticated"));
        }
        if self.tx.is_some() {
            return Some((503, "5.5.1", "Error: MAIL transaction in progress"));
        }
        None
    }

    /// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`; an authzid, if
    /// given, must be the authcid (nobody logs in as someone else).
    async fn plain(&mut self, initial: Option<String>) -> std::io::Result<Credentials> {
        let response = match initial {
            Some(r) => r,
            None => match self.challenge("").await? {
                Some(r) => r,
                None => return Ok(Credentials::Ended),
            },
        };
        let Some(bytes) = decode(&response) else {
            return Ok(cancelled_or_bad(&response));
        };
        let mut parts = bytes.splitn(3, |&b| b == 0);
        let (Some(authz), Some(authc), Some(password)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(Credentials::Undecodable);
        };
        let Ok(user) = String::from_utf8(authc.to_vec()) else {
            return Ok(Credentials::Undecodable);
        };
        if !authz.is_empty() && authz != authc {
            // Refused like a wrong password: the check below never passes.
            return Ok(Credentials::Given {
                user,
                password: Vec::new(),
            });
        }
        Ok(Credentials::Given {
            user,
            password: password.to_vec(),
        })
    }

    /// LOGIN: the user name and the password, each asked for in turn.
    async fn login(&mut self, initial: Option<String>) -> std::io::Result<Credentials> {
        let user = match initial {
            Some(r) => r,
            None => match self.challenge("VXNlcm5hbWU6").await? {
                Some(r) => r,
                None => return Ok(Credentials::Ended),
            },
        };
        let Some(user) = decode(&user) else {
            return Ok(cancelled_or_bad(&user));
        };
        let Ok(user) = String::from_utf8(user) else {
            return Ok(Credentials::Undecodable);
        };
        let Some(password) = self.challenge("UGFzc3dvcmQ6").await? else {
            return Ok(Credentials::Ended);
        };
        match decode(&password) {
            Some(password) => Ok(Credentials::Given { user, password }),
            None => Ok(cancelled_or_bad(&password)),
        }
    }

    /// Sends `334 text` and reads the client's answer line; None when the
    /// session ends meanwhile.
    async fn challenge(&mut self, text: &str) -> std::io::Result<Option<String>> {
        self.out
            .extend_from_slice(format!("334 {text}\r\n").as_bytes());
        self.flush().await?;
        match self.read_line().await? {
            Line::Command(l) => Ok(Some(String::from_utf8_lossy(&l).into_owned())),
            Line::TooLong => Ok(Some(String::new())),
            Line::Eof | Line::Timeout | Line::Stopping => Ok(None),
        }
    }

    async fn check(
        &mut self,
        mechanism: &str,
        user: String,
        password: Vec<u8>,
    ) -> std::io::Result<Next> {
        let Some(sub) = self.sub.clone() else {
            return Ok(Next::End);
        };
        let ip = match &self.peer {
            Peer::Tcp(a) => a.ip(),
            Peer::Local { .. } => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        match sub.verifier.verify(&user, &password).await {
            Verdict::Ok { identity } => {
                sub.throttle.succeeded(ip);
                tracing::info!(
                    "client=[{ip}] sasl_method={mechanism} sasl_username={identity}: authenticated"
                );
                self.identity = Some(identity);
                self.send(235, "2.7.0", "Authentication successful");
                Ok(Next::Command)
            }
            Verdict::Refused => {
                let shown = if sub.verifier.knows(&user).await {
                    user.as_str()
                } else {
                    "(unknown)"
                };
                tracing::warn!(
                    "authentication failed: client=[{ip}] mechanism={mechanism} user={shown}"
                );
                tokio::time::sleep(sub.throttle.failed(ip)).await;
                self.auth_failures += 1;
                if self.auth_failures >= MAX_FAILURES_PER_CONNECTION {
                    self.send(421, "4.7.0", "Error: too many failed authentications");
                    return Ok(Next::End);
                }
                self.send(535, "5.7.8", "Error: authentication failed");
                Ok(Next::Command)
            }
            Verdict::Unavailable(reason) => {
                tracing::error!("authentication unavailable: {reason}");
                self.send(454, "4.7.0", "Temporary authentication failure");
                Ok(Next::Command)
            }
        }
    }

    /// On a submission listener, MAIL needs a login, and the sender must be
    /// one the identity owns (Postfix's `reject_sender_login_mismatch`).
    pub(super) fn sender_allowed(&self, from: &str) -> Result<(), (u16, &'static str, String)> {
        if self.sub.is_none() {
            return Ok(());
        }
        let Some(identity) = &self.identity else {
            return Err((530, "5.7.0", "Authentication required".into()));
        };
        if !self.config.submission.may_send_as(identity, from) {
            return Err((
                553,
                "5.7.1",
                format!("<{from}>: Sender address rejected: not owned by user {identity}"),
            ));
        }
        let limit = self.config.submission.rate.get(identity.as_str());
        match (limit, &self.sub) {
            (Some(&rate), Some(sub)) if !sub.rates.take(identity, rate) => {
                tracing::warn!("rate limit {rate} reached for user {identity}");
                Err((
                    450,
                    "4.7.1",
                    format!(
                        "Error: too many messages from user {identity} ({rate}), try again later"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

fn decode(response: &str) -> Option<Vec<u8>> {
    let r = response.trim();
    if r == "=" {
        return Some(Vec::new());
    }
    STANDARD.decode(r).ok()
}

fn cancelled_or_bad(response: &str) -> Credentials {
    if response.trim() == "*" {
        Credentials::Cancelled
    } else {
        Credentials::Undecodable
    }
}
