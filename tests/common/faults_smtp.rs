//! Shared by the `fault_smtp_*` scenarios, one SMTP-level fault each: a
//! [`ScriptedServer`] misbehaves at one phase of the conversation, the relay's
//! only route leads to it, and the scenario checks three things: each
//! recipient's state as the running daemon reports it (`smarthost queue find
//! ID --json` over the control socket), the relay's `status=` log lines, and
//! what reached the upstream (commands and transactions); plus the DSN where
//! something bounces.
//!
//! The retry schedule is hours long: deferred mail is tried again only when the
//! scenario says so (`queue flush`), so no assertion races a retry.
//!
//! Include it after the harness and the scripted server:
//!
//! ```ignore
//! mod common;
//! #[path = "common/scripted.rs"]
//! mod scripted;
//! #[path = "common/faults_smtp.rs"]
//! mod faults_smtp;
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{strip_received, wait_for, Client, Relay};
use crate::scripted::{reply, standard, Action, Cmd, ScriptedServer, Transaction};

pub const SENDER: &str = "alice@src.test";

/// How long a scenario waits for what the relay does at once: generous, for a
/// loaded CI machine running tests four at a time.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The timeout of a phase a scenario stalls, so the stall ends soon.
pub const SHORT: &str = "2s";

/// Every other timeout: long enough never to fire by accident.
const NORMAL: &str = "30s";

/// The upstream timeouts a scenario can shorten to [`SHORT`].
pub const TIMEOUTS: [&str; 4] = ["connect", "greeting", "upstream_command", "upstream_data"];

/// A relay whose default route is `server`; `route_extra` goes into the route
/// (`tls = "starttls"`, credentials). Clear text unless it sets `tls`.
pub fn relay(server: &ScriptedServer, route_extra: &str) -> Relay {
    Relay::start(&config(server.port(), route_extra, None))
}

/// As [`relay`], with the timeout named `short` (one of [`TIMEOUTS`]) set to
/// [`SHORT`].
pub fn relay_with_short_timeout(server: &ScriptedServer, route_extra: &str, short: &str) -> Relay {
    assert!(TIMEOUTS.contains(&short), "no timeout {short:?}");
    Relay::start(&config(server.port(), route_extra, Some(short)))
}

fn config(port: u16, route_extra: &str, short: Option<&str>) -> String {
    let tls = if route_extra.contains("tls =") {
        ""
    } else {
        "tls = \"none\"\n"
    };
    let timeouts: String = TIMEOUTS
        .iter()
        .map(|name| {
            let value = if short == Some(*name) { SHORT } else { NORMAL };
            format!("{name} = \"{value}\"\n")
        })
        .collect();
    format!(
        "retry = \"F,4d,1h\"\n[timeouts]\n{timeouts}idle = \"1s\"\n\
         [[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\n{tls}{route_extra}\n\
         [routing]\ndefault = \"up\"\n"
    )
}

/// The route lines for AUTH PLAIN with a password, in clear text (loopback
/// only). The password file lives in `dir`, which must outlive the relay.
pub fn password_route(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("password");
    std::fs::write(&file, "s3cret\n").expect("write password file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .expect("password file mode");
    format!(
        "allow_plaintext = true\nauth = \"plain\"\nusername = \"relay@src.test\"\npassword_file = \"{}\"\n",
        file.display()
    )
}

/// EHLO of a server offering AUTH PLAIN and LOGIN.
pub const EHLO_AUTH: &str = "250-scripted.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES";

/// `AUTH PLAIN` with [`password_route`]'s credentials, as sent.
pub const AUTH_PLAIN_LINE: &str = "AUTH PLAIN AHJlbGF5QHNyYy50ZXN0AHMzY3JldA==";

/// What [`healthy`] (and [`standard`]) answer to the final dot.
pub const QUEUED: &str = "250 2.0.0 Ok: queued as SCRIPTED";

/// True for an `AUTH ...` command line.
pub fn is_auth(cmd: &Cmd<'_>) -> bool {
    matches!(cmd, Cmd::Other(l) if l.to_ascii_uppercase().starts_with("AUTH "))
}

/// A well-behaved smarthost that also offers AUTH and takes the credentials.
pub fn healthy(cmd: &Cmd<'_>) -> Action {
    match cmd {
        Cmd::Ehlo(_) => reply(EHLO_AUTH),
        c if is_auth(c) => reply("235 2.7.0 Authentication successful"),
        _ => standard(cmd),
    }
}

/// A CRLF message with dot-leading lines (transparency both ways) and a
/// recognisable header section.
pub fn message(tag: &str) -> Vec<u8> {
    format!(
        "From: Alice <{SENDER}>\r\n\
         To: someone@dst.test\r\n\
         Subject: scripted {tag}\r\n\
         Message-ID: <{tag}@src.test>\r\n\
         X-Test-Tag: {tag}\r\n\
         \r\n\
         Body of {tag}.\r\n\
         .a line that starts with a dot\r\n\
         ..two dots\r\n\
         .\r\n\
         body-marker-{tag}\r\n"
    )
    .into_bytes()
}

/// Submits [`message`]`(tag)` from [`SENDER`]; its queue id and bytes.
pub fn submit(relay: &Relay, rcpts: &[&str], tag: &str) -> (String, Vec<u8>) {
    let msg = message(tag);
    let id = relay.send(SENDER, rcpts, &msg).expect("accepted");
    (id, msg)
}

/// Submits [`message`]`(tag)` with the null reverse-path (as a DSN would be).
pub fn submit_null_sender(relay: &Relay, rcpt: &str, tag: &str) -> String {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd("MAIL FROM:<>", 250);
    c.expect_cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    c.expect_cmd("DATA", 354);
    c.write(&crate::common::dot_stuff(&message(tag)));
    let r = c.read_reply();
    c.expect_cmd("QUIT", 221);
    r.strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {r:?}"))
        .trim()
        .to_string()
}

/// True if `data` is `msg` with our Received header in front.
pub fn is_message(data: Option<&[u8]>, msg: &[u8]) -> bool {
    data.is_some_and(|d| strip_received(d) == msg)
}

// ---------------------------------------------------------------------------
// The log

/// The relay's per-recipient status lines for one message and recipient.
pub fn status_lines(relay: &Relay, id: &str, rcpt: &str) -> Vec<String> {
    let needle = format!("{id}: to=<{rcpt}>");
    relay
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Waits for `n` status lines (see [`status_lines`]) and returns them all.
pub fn wait_status(
    relay: &Relay,
    id: &str,
    rcpt: &str,
    n: usize,
    timeout: Duration,
) -> Vec<String> {
    let needle = format!("{id}: to=<{rcpt}>");
    relay.wait_log(&needle, n, timeout);
    status_lines(relay, id, rcpt)
}

/// Waits for exactly the `n`-th status line of each recipient and returns the
/// last line of each, asserting each has `n` lines.
pub fn attempt_lines(relay: &Relay, id: &str, rcpts: &[&str], n: usize) -> Vec<String> {
    rcpts
        .iter()
        .map(|r| {
            let lines = wait_status(relay, id, r, n, PATIENCE);
            assert_eq!(lines.len(), n, "{r}: {lines:?}\nlog:\n{}", relay.log());
            lines[n - 1].clone()
        })
        .collect()
}

/// Waits for attempt `n` of each of `rcpts` and checks its status line: this
/// `server` as relay, `attempts=n status=<status> (<detail>)`.
pub fn assert_attempt(
    relay: &Relay,
    server: &ScriptedServer,
    id: &str,
    rcpts: &[&str],
    n: usize,
    status: &str,
    detail: &str,
) {
    let expected = format!("{} delay=", relay_field(server));
    let outcome = format!("attempts={n} status={status} ({detail})");
    for line in attempt_lines(relay, id, rcpts, n) {
        assert!(line.contains(&expected), "{line}");
        assert!(line.contains(&outcome), "expected {outcome:?} in {line}");
    }
}

/// The first attempt deferred every one of `rcpts` with `reason`, and the
/// daemon keeps the message, each of them deferred with it as last error.
pub fn assert_deferred(
    relay: &Relay,
    server: &ScriptedServer,
    id: &str,
    rcpts: &[&str],
    reason: &str,
) {
    assert_attempt(relay, server, id, rcpts, 1, "deferred", reason);
    assert_recipients(relay, id, rcpts, "deferred", reason);
}

/// The first attempt bounced every one of `rcpts` with the upstream's `reply`:
/// the message has left the queue as bounced, with one DSN logged for it.
pub fn assert_bounced(
    relay: &Relay,
    server: &ScriptedServer,
    id: &str,
    rcpts: &[&str],
    reply: &str,
) {
    assert_attempt(relay, server, id, rcpts, 1, "bounced", reply);
    wait_removed(relay, id);
    let found = assert_recipients(relay, id, rcpts, "bounced", reply);
    assert_eq!(found.outcome.as_deref(), Some("bounced"), "{found:?}");
    let log = relay.log();
    let dsn = format!("{id}: sender non-delivery notification");
    assert_eq!(log.matches(&dsn).count(), 1, "{log}");
}

/// The `relay=` field of a line about an attempt on `server`.
pub fn relay_field(server: &ScriptedServer) -> String {
    format!("relay=127.0.0.1[127.0.0.1]:{}", server.port())
}

/// Waits until the message has left the queue (delivered or bounced).
pub fn wait_removed(relay: &Relay, id: &str) {
    assert!(
        relay.wait_log(&format!("{id}: removed"), 1, PATIENCE),
        "{id} should be finished; log:\n{}",
        relay.log()
    );
}

// ---------------------------------------------------------------------------
// The queue, as the daemon reports it

/// `smarthost queue --config <relay's config> <args>`: exit code and stdout.
/// Killed after a minute so a hung command fails the test instead of hanging it.
pub fn queue(relay: &Relay, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg("queue")
        .arg("--config")
        .arg(&relay.config_path)
        .args(args)
        .env_remove("SMARTHOST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn smarthost queue");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("smarthost queue {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = reader.join().expect("stdout reader");
    (status.code().unwrap_or(-1), stdout)
}

/// One recipient as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    /// `pending`, `deferred`, `delivered` or `bounced`.
    pub state: String,
    /// The last error of a queued recipient, the final reply of a finished one.
    pub detail: String,
}

/// What `queue find ID --json` says about a message: still queued, or its
/// history record once finished.
#[derive(Debug, Clone)]
pub struct Found {
    pub queued: bool,
    /// For a finished message: `delivered`, `bounced`, `partly bounced`.
    pub outcome: Option<String>,
    pub recipients: Vec<Rcpt>,
}

impl Found {
    /// (address, state) of every recipient, in envelope order.
    pub fn states(&self) -> Vec<(&str, &str)> {
        self.recipients
            .iter()
            .map(|r| (r.address.as_str(), r.state.as_str()))
            .collect()
    }

    pub fn detail(&self, address: &str) -> &str {
        self.recipients
            .iter()
            .find(|r| r.address == address)
            .map_or("", |r| r.detail.as_str())
    }
}

/// The daemon's newest word on message `id`.
pub fn find(relay: &Relay, id: &str) -> Found {
    let (code, out) = queue(relay, &["find", id, "--json"]);
    assert_eq!(code, 0, "queue find {id}: {out}");
    let first = out.lines().next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {out}"));
    let queued = v.get("outcome").is_none();
    let detail_key = if queued { "last_error" } else { "reply" };
    let recipients = v["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {v}"))
        .iter()
        .map(|r| Rcpt {
            address: r["address"].as_str().unwrap_or_default().to_string(),
            state: r["state"].as_str().unwrap_or_default().to_string(),
            detail: r[detail_key].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    Found {
        queued,
        outcome: v["outcome"].as_str().map(str::to_string),
        recipients,
    }
}

/// What the daemon says of `id`: exactly `rcpts`, each in `state` with
/// `detail`; still queued if that state is not final.
pub fn assert_recipients(
    relay: &Relay,
    id: &str,
    rcpts: &[&str],
    state: &str,
    detail: &str,
) -> Found {
    let found = find(relay, id);
    let queued = !matches!(state, "delivered" | "bounced");
    assert_eq!(found.queued, queued, "{found:?}");
    let expected: Vec<(&str, &str)> = rcpts.iter().map(|r| (*r, state)).collect();
    assert_eq!(found.states(), expected, "{found:?}");
    for r in rcpts {
        assert_eq!(found.detail(r), detail, "{found:?}");
    }
    found
}

/// `queue flush ID`: its recipients are tried again now.
pub fn flush(relay: &Relay, id: &str) {
    let (code, out) = queue(relay, &["flush", id]);
    assert_eq!(code, 0, "queue flush {id}: {out}");
}

/// The upstream recovers ([`healthy`] from now on) and the operator flushes
/// the message: `rcpts`, deferred so far, are delivered on attempt `attempt`
/// in one new transaction carrying `msg` intact, and the message leaves the
/// queue. Returns that transaction.
pub fn recover_and_deliver(
    server: &ScriptedServer,
    relay: &Relay,
    id: &str,
    rcpts: &[&str],
    attempt: usize,
    msg: &[u8],
) -> Transaction {
    let before = server.transactions().len();
    server.set_script(|_, cmd| healthy(cmd));
    flush(relay, id);
    assert_attempt(relay, server, id, rcpts, attempt, "sent", QUEUED);
    wait_removed(relay, id);
    let found = find(relay, id);
    assert!(!found.queued, "{found:?}");
    for r in rcpts {
        assert!(found.states().contains(&(r, "delivered")), "{found:?}");
    }
    let txs = server.transactions();
    let retry: Vec<&Transaction> = from_sender(&txs[before..], SENDER);
    assert_eq!(retry.len(), 1, "one retry transaction\n{}", server.dump());
    assert!(retry[0].delivered(), "{}", server.dump());
    assert_eq!(retry[0].rcpt_addresses(), rcpts, "{}", server.dump());
    assert!(
        is_message(retry[0].data.as_deref(), msg),
        "delivered intact"
    );
    retry[0].clone()
}

// ---------------------------------------------------------------------------
// What reached the upstream

/// Transactions with the given reverse-path.
pub fn from_sender<'a>(txs: &'a [Transaction], sender: &str) -> Vec<&'a Transaction> {
    txs.iter().filter(|t| t.from == sender).collect()
}

/// The upstream saw one connection, now closed, carrying exactly `commands`,
/// and no transaction.
pub fn assert_only_commands(server: &ScriptedServer, commands: &[&str]) {
    assert!(wait_connections_closed(server, 1), "{}", server.dump());
    let conns = server.connections();
    assert_eq!(conns.len(), 1, "{}", server.dump());
    assert_eq!(conns[0].commands, commands, "{}", server.dump());
    assert!(server.transactions().is_empty(), "{}", server.dump());
}

/// The first `n` command verbs on connection `conn` (fewer if it had fewer).
pub fn first_verbs(server: &ScriptedServer, conn: usize, n: usize) -> Vec<String> {
    server.connections()[conn]
        .verbs()
        .into_iter()
        .take(n)
        .collect()
}

/// Waits until the upstream has seen `n` connections and all are closed.
pub fn wait_connections_closed(server: &ScriptedServer, n: usize) -> bool {
    wait_for(PATIENCE, || {
        let conns = server.connections();
        conns.len() >= n && conns.iter().all(|c| c.closed)
    })
}

// ---------------------------------------------------------------------------
// DSNs (RFC 3464)

/// RFC 5322 unfolding, for fields the DSN may have folded.
pub fn unfold(s: &str) -> String {
    s.replace("\r\n ", " ").replace("\r\n\t", " ")
}

/// The per-recipient field groups of a DSN's message/delivery-status part,
/// each as field name → value, unfolded.
pub fn dsn_recipient_fields(dsn_text: &str) -> Vec<BTreeMap<String, String>> {
    unfold(dsn_text)
        .split("\r\n\r\n")
        .filter(|block| block.starts_with("Final-Recipient:"))
        .map(|block| {
            block
                .split("\r\n")
                .take_while(|l| !l.starts_with("--"))
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits for the DSNs (null reverse-path transactions accepted by `server`)
/// to number `n`, then returns them.
pub fn wait_dsns(server: &ScriptedServer, n: usize) -> Vec<Transaction> {
    let ok = server.wait_until(PATIENCE, |txs| {
        txs.iter()
            .filter(|t| t.from.is_empty() && t.delivered())
            .count()
            >= n
    });
    assert!(ok, "{n} DSN(s) expected\n{}", server.dump());
    server
        .transactions()
        .into_iter()
        .filter(|t| t.from.is_empty())
        .collect()
}

/// Checks that `dsn` went to [`SENDER`] with a null reverse-path as an RFC 3464
/// report naming exactly `failed` — (recipient, status, the upstream's reply) —
/// each with `Action: failed` and the reply as its `Diagnostic-Code`, and the
/// original header section without the body. Returns the DSN text.
pub fn assert_dsn(dsn: &Transaction, failed: &[(&str, &str, &str)], tag: &str) -> String {
    assert_eq!(dsn.from, "", "a DSN has the null reverse-path");
    assert_eq!(dsn.rcpt_addresses(), [SENDER]);
    let text = unfold(&dsn.text());
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{text}"
    );
    assert!(text.contains("message/delivery-status"), "{text}");
    let headers = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(headers.contains(&format!("To: {SENDER}")), "{text}");
    assert!(headers.contains("Auto-Submitted: auto-replied"), "{text}");
    let groups = dsn_recipient_fields(&text);
    let named: Vec<&str> = groups
        .iter()
        .map(|g| g["Final-Recipient"].as_str())
        .collect();
    let expected: Vec<String> = failed.iter().map(|f| format!("rfc822; {}", f.0)).collect();
    assert_eq!(named, expected, "Final-Recipient fields\n{text}");
    for (g, (_, status, reply)) in groups.iter().zip(failed) {
        assert_eq!(g.get("Action").map(String::as_str), Some("failed"), "{g:?}");
        assert_eq!(g.get("Status").map(String::as_str), Some(*status), "{g:?}");
        assert_eq!(
            g.get("Diagnostic-Code"),
            Some(&format!("smtp; {reply}")),
            "{g:?}"
        );
        assert_eq!(
            g.get("Remote-MTA").map(String::as_str),
            Some("dns; 127.0.0.1"),
            "{g:?}"
        );
    }
    // The original header section comes back, the body does not.
    assert!(text.contains("text/rfc822-headers"), "{text}");
    assert!(
        text.contains(&format!("Message-ID: <{tag}@src.test>")),
        "{text}"
    );
    assert!(!text.contains(&format!("body-marker-{tag}")), "{text}");
    text
}
