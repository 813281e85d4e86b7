//! Observability end to end: the real daemon with `[metrics]` on an OS-chosen
//! loopback port and `--log-format json`, three messages through a scripted
//! upstream (delivered, deferred by 451, bounced by 550). `/metrics` is parsed
//! with Prometheus's own Python parser and its values checked; `/healthz`
//! answers; every log line is one JSON object, the delivery lines carrying
//! the queue id as a field; `/healthz` turns 503 while the daemon stops.

mod common;
#[path = "common/scripted.rs"]
mod scripted;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{http, metrics_addr, Relay};
use scripted::{reply, standard, Cmd, ScriptedServer};
use serde_json::Value;

/// Debian installs python3-prometheus-client for this interpreter.
const PYTHON: &str = "/usr/bin/python3";
const SENDER: &str = "alice@src.test";

fn config(upstream: u16) -> String {
    format!(
        r#"retry = "F,1h,30m"
[timeouts]
upstream_command = "5s"
upstream_data = "5s"
greeting = "5s"
connect = "5s"
idle = "1s"
[[route]]
name = "up"
host = "127.0.0.1"
port = {upstream}
tls = "none"
[routing]
default = "up"
[metrics]
listen = "127.0.0.1:0"
"#
    )
}

fn message(tag: &str) -> Vec<u8> {
    format!("From: {SENDER}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@src.test>\r\n\r\n{tag}\r\n")
        .into_bytes()
}

/// The log, one JSON object per line.
fn json_lines(relay: &Relay) -> Vec<Value> {
    relay
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

fn with_status(lines: &[Value], status: &str) -> usize {
    lines.iter().filter(|l| l["status"] == status).count()
}

/// `text` through prometheus_client's parser: (family name, type, sample
/// name, labels, value) per sample.
fn parse_with_prometheus_client(dir: &Path, text: &str) -> Vec<Value> {
    assert!(
        Command::new(PYTHON)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        "{PYTHON} cannot import prometheus_client; install it: apt-get install python3-prometheus-client"
    );
    let file = dir.join("scrape.txt");
    std::fs::write(&file, text).expect("write scrape");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("parser output")
}

#[test]
fn metrics_parse_and_count_deliveries_deferrals_and_bounces() {
    let server = ScriptedServer::start(|_, cmd| match cmd {
        Cmd::Rcpt { to, .. } if *to == "later@dst.test" => {
            reply("451 4.7.1 <later@dst.test>: try again later")
        }
        Cmd::Rcpt { to, .. } if *to == "bad@dst.test" => {
            reply("550 5.1.1 <bad@dst.test>: User unknown")
        }
        _ => standard(cmd),
    });
    let relay = Relay::start_with_args(&config(server.port()), &["--log-format", "json"]);
    let addr = metrics_addr(&relay);

    let mut ids = Vec::new();
    for rcpt in ["ok@dst.test", "later@dst.test", "bad@dst.test"] {
        ids.push(
            relay
                .send(SENDER, &[rcpt], &message(rcpt))
                .expect("accepted"),
        );
    }
    // ok and the bounce notification delivered, later deferred, bad bounced.
    let settled = common::wait_for(Duration::from_secs(20), || {
        let lines = json_lines(&relay);
        with_status(&lines, "sent") == 2
            && with_status(&lines, "deferred") == 1
            && with_status(&lines, "bounced") == 1
    });
    assert!(settled, "log:\n{}\n{}", relay.log(), server.dump());

    let scraped = scrape(addr, relay.dir.path());
    assert_counts(&scraped);
    assert_http_answers(addr);
    assert_json_log(&relay, &ids);
}

/// `/metrics`, parsed: each sample's value by `name{label=value,...}`, each
/// family's type by name, and the exposition text.
struct Scrape {
    values: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

/// GETs `/metrics` (Prometheus's text format, version 0.0.4) and parses it
/// with prometheus_client, in `dir`.
fn scrape(addr: std::net::SocketAddr, dir: &Path) -> Scrape {
    let (status, head, text) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_with_prometheus_client(dir, &text);
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for s in &samples {
        let labels = s[3]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let key = format!("{}{{{labels}}}", s[2].as_str().unwrap_or_default());
        values.insert(key, s[4].as_f64().unwrap_or(f64::NAN));
        types.insert(
            s[0].as_str().unwrap_or_default().to_string(),
            s[1].as_str().unwrap_or_default().to_string(),
        );
    }
    Scrape {
        values,
        types,
        text,
    }
}

/// The counters, gauges and histogram after one delivery, one deferral and one
/// bounce (whose notification was delivered).
fn assert_counts(scraped: &Scrape) {
    let Scrape {
        values,
        types,
        text,
    } = scraped;
    let get = |k: &str| {
        *values
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in the parsed exposition:\n{text}"))
    };
    assert_eq!(get("smarthost_up{}"), 1.0);
    assert_eq!(get("smarthost_messages_accepted_total{route=up}"), 3.0);
    assert_eq!(get("smarthost_recipients_accepted_total{route=up}"), 3.0);
    // The message to ok@ and the non-delivery notification to the sender.
    assert_eq!(get("smarthost_recipients_delivered_total{route=up}"), 2.0);
    assert_eq!(get("smarthost_recipients_deferred_total{route=up}"), 1.0);
    assert_eq!(get("smarthost_recipients_bounced_total{route=up}"), 1.0);
    assert_eq!(get("smarthost_notifications_created_total{}"), 1.0);
    assert_eq!(
        get("smarthost_messages_finished_total{result=delivered,route=up}"),
        2.0
    );
    assert_eq!(
        get("smarthost_messages_finished_total{result=bounced,route=up}"),
        1.0
    );
    assert_eq!(
        get("smarthost_delivery_latency_seconds_count{route=up}"),
        2.0
    );
    assert_eq!(
        get("smarthost_delivery_latency_seconds_bucket{le=+Inf,route=up}"),
        2.0
    );
    assert_eq!(
        get("smarthost_delivery_latency_seconds_bucket{le=86400,route=up}"),
        2.0
    );
    let sum = get("smarthost_delivery_latency_seconds_sum{route=up}");
    assert!((0.0..60.0).contains(&sum), "latency sum {sum}");
    // The deferred message is all that is left.
    assert_eq!(get("smarthost_queue_messages{}"), 1.0);
    assert_eq!(get("smarthost_queue_recipients{}"), 1.0);
    let age = get("smarthost_queue_oldest_message_age_seconds{}");
    assert!((0.0..120.0).contains(&age), "oldest age {age}");
    assert_eq!(get("smarthost_route_held{route=up}"), 0.0);
    assert!(get("smarthost_start_time_seconds{}") > 1.6e9);
    assert_eq!(types["smarthost_messages_accepted"], "counter");
    assert_eq!(types["smarthost_queue_messages"], "gauge");
    assert_eq!(types["smarthost_delivery_latency_seconds"], "histogram");
}

/// HEAD, `/healthz`, and what is not served.
fn assert_http_answers(addr: std::net::SocketAddr) {
    // HEAD: the same head, no body.
    let (status, head, body) = http(addr, "HEAD", "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("content-length: "), "{head}");
    assert!(body.is_empty(), "{body:?}");

    let (status, _, body) = http(addr, "GET", "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(http(addr, "GET", "/").0, 404);
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
}

/// Every line is JSON; delivery lines carry the queue id and the route, and
/// each of `ids` (to ok@, later@, bad@) has its acceptance and delivery line.
fn assert_json_log(relay: &Relay, ids: &[String]) {
    let lines = json_lines(relay);
    let deliveries: Vec<&Value> = lines.iter().filter(|l| l.get("status").is_some()).collect();
    assert_eq!(deliveries.len(), 4, "{}", relay.log());
    for d in &deliveries {
        assert_eq!(d["route"], "up", "{d}");
        assert!(d["id"].as_str().is_some_and(|id| !id.is_empty()), "{d}");
        assert!(d["relay"].as_str().is_some(), "{d}");
        assert!(d["delay"].as_u64().is_some(), "{d}");
    }
    for (id, rcpt, status) in [
        (&ids[0], "ok@dst.test", "sent"),
        (&ids[1], "later@dst.test", "deferred"),
        (&ids[2], "bad@dst.test", "bounced"),
    ] {
        assert!(
            deliveries
                .iter()
                .any(|d| d["id"] == id.as_str() && d["to"] == rcpt && d["status"] == status),
            "no {status} line for {id}:\n{}",
            relay.log()
        );
        assert!(
            lines
                .iter()
                .any(|l| l["id"] == id.as_str() && l["from"] == SENDER && l["nrcpt"] == 1),
            "no acceptance line for {id}:\n{}",
            relay.log()
        );
    }
}

#[test]
fn non_loopback_metrics_listener_is_refused_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("smarthost.toml");
    std::fs::write(
        &path,
        "[[route]]\nname = \"c\"\ntype = \"directory\"\npath = \"out\"\n[routing]\ndefault = \"c\"\n[metrics]\nlisten = \"0.0.0.0:9325\"\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":8: metrics.listen 0.0.0.0:9325 is not a loopback address"),
        "{err}"
    );
}

/// While the daemon finishes open transactions after SIGTERM, `/healthz`
/// says it is stopping (a load balancer or monitor stops sending it work).
#[test]
fn healthz_says_stopping_during_a_graceful_stop() {
    let mut relay = Relay::start(
        "[[route]]\nname = \"c\"\ntype = \"directory\"\npath = \"{dir}/out\"\n[routing]\ndefault = \"c\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let addr = metrics_addr(&relay);
    assert_eq!(http(addr, "GET", "/healthz").0, 200);

    // A transaction in DATA keeps the daemon stopping rather than stopped.
    let mut busy = common::Client::connect(relay.addr());
    busy.expect(220);
    busy.expect_cmd("EHLO busy.test", 250);
    busy.expect_cmd("MAIL FROM:<app@example.com>", 250);
    busy.expect_cmd("RCPT TO:<to@example.net>", 250);
    busy.expect_cmd("DATA", 354);
    busy.write(b"Subject: in flight\r\n\r\n");
    relay.signal("TERM");
    assert!(relay.wait_log("stopping", 1, Duration::from_secs(10)));
    let (status, _, body) = http(addr, "GET", "/healthz");
    assert_eq!((status, body.as_str()), (503, "unavailable: stopping\n"));

    busy.write(b"done\r\n.\r\n");
    assert!(busy.read_reply().starts_with("250 "));
    let exit = relay.wait_exit(Duration::from_secs(25)).expect("exited");
    assert!(exit.success(), "{exit:?}");
}
