use super::*;
use crate::config::SyslogSettings;
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` with only the syslog layer installed and returns what the
/// socket received.
fn datagrams(f: impl FnOnce()) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let settings = SyslogSettings {
        socket: path,
        name: "smarthost".into(),
    };
    let layer = Syslog::open(&settings).unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = listener.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

fn tag(program: &str) -> String {
    format!("smarthost/{program}[{}]: ", std::process::id())
}

#[test]
fn a_delivery_line_is_postfix_shaped() {
    let got = datagrams(|| {
        tracing::info!(
            target: "smarthost::delivery",
            id = "0A1B",
            to = "a@example.net",
            relay = "mx[192.0.2.1]:587",
            delay = 3u64,
            route = "up",
            attempts = 1u32,
            status = "sent",
            detail = "250 2.0.0 Ok: queued as X"
        );
        tracing::info!(target: "smarthost::delivery", id = "0A1B", to = "b@x.example", relay = "none", delay = 0u64, status = "deferred", detail = "cannot resolve x");
    });
    assert_eq!(
        got,
        vec![
            format!("<22>{}0A1B: to=<a@example.net>, relay=mx[192.0.2.1]:587, delay=3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)", tag("smtp")),
            format!("<22>{}0A1B: to=<b@x.example>, relay=none, delay=0, dsn=4.0.0, status=deferred (cannot resolve x)", tag("smtp")),
        ]
    );
}

#[test]
fn a_received_message_is_logged_as_smtpd_cleanup_and_qmgr() {
    let got = datagrams(|| {
        let mid = Some("<m@x>");
        tracing::info!(target: "smarthost::intake", id = "C1", from = "s@example.com", size = 376u64, nrcpt = 2usize, client = "web [127.0.0.1]", "message-id" = mid);
        tracing::info!(target: "smarthost::intake", id = "C2", from = "", size = 10u64, nrcpt = 1usize, client = "local uid=0", "message-id" = None::<&str>);
    });
    assert_eq!(
        got,
        vec![
            format!("<22>{}C1: client=web[127.0.0.1]", tag("smtpd")),
            format!("<22>{}C1: message-id=<m@x>", tag("cleanup")),
            format!(
                "<22>{}C1: from=<s@example.com>, size=376, nrcpt=2 (queue active)",
                tag("qmgr")
            ),
            format!("<22>{}C2: uid=0 from=<>", tag("pickup")),
            format!(
                "<22>{}C2: from=<>, size=10, nrcpt=1 (queue active)",
                tag("qmgr")
            ),
        ]
    );
}

#[test]
fn other_events_keep_their_text_with_a_postfix_severity() {
    let got = datagrams(|| {
        tracing::info!(target: "smarthost::delivery", id = "C1", "removed");
        tracing::warn!(target: "smarthost::dropdir", "drop directory: gone");
        tracing::error!(target: "smarthost::daemon", "cannot read queue: x\ny");
        tracing::info!(target: "smarthost::delivery::notices", id = "C1", "sender non-delivery notification: N1");
    });
    assert_eq!(
        got,
        vec![
            format!("<22>{}C1: removed", tag("qmgr")),
            format!("<20>{}warning: drop directory: gone", tag("pickup")),
            format!("<19>{}error: cannot read queue: x\\ny", tag("master")),
            format!(
                "<22>{}C1: sender non-delivery notification: N1",
                tag("bounce")
            ),
        ]
    );
}

#[test]
fn the_dsn_comes_from_the_reply_when_it_has_one() {
    assert_eq!(dsn("bounced", "550 5.1.1 <x>: unknown"), "5.1.1");
    assert_eq!(dsn("bounced", "554 Transaction failed"), "5.0.0");
    assert_eq!(dsn("deferred", "451 4.7.1 later"), "4.7.1");
    assert_eq!(dsn("sent", "250 ok"), "2.0.0");
}

#[test]
fn long_lines_are_cut_at_a_character() {
    assert_eq!(truncated("aé", 2), "a");
    assert_eq!(truncated("abc", 5), "abc");
}
