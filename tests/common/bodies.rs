//! Shared by the big-message tests: a message of a given size, an SMTP session
//! opened up to the message, and what a relay keeps of bodies on disk: a body
//! over 64 KiB is written to `<queue>/bodies/<QUEUEID>` while DATA arrives.
//! The relay's only route is [`crate::common::CAPTURE_ROUTE`].
//!
//! Include it with `#[path = "common/bodies.rs"] mod bodies;` beside
//! `mod common;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{captured, strip_received, wait_for, Client, Relay};

pub const FROM: &str = "big@src.test";
pub const TO: &str = "sink@dst.test";

/// A CRLF message of at least `size` bytes, ~76-octet lines, no dot lines.
pub fn message(token: &str, size: u64) -> Vec<u8> {
    let mut m = format!(
        "From: {FROM}\r\nTo: {TO}\r\nSubject: big {token}\r\nMessage-ID: <{token}@big.test>\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0u64;
    while (m.len() as u64) < size {
        m.extend_from_slice(
            format!("{token} line {n:08} ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n")
                .as_bytes(),
        );
        n += 1;
    }
    m
}

/// A session from [`FROM`] to [`TO`] that has had its 354 and is ready for
/// the message.
pub fn open_data(relay: &Relay) -> Client {
    let mut c = Client::connect(relay.addr());
    c.expect(220);
    c.expect_cmd("EHLO client.test", 250);
    c.expect_cmd(&format!("MAIL FROM:<{FROM}>"), 250);
    c.expect_cmd(&format!("RCPT TO:<{TO}>"), 250);
    c.expect_cmd("DATA", 354);
    c
}

/// `<queue>/bodies`.
pub fn bodies(relay: &Relay) -> PathBuf {
    relay.path("queue/bodies")
}

/// The names of the files in `bodies/` (none if it does not exist).
pub fn body_files(relay: &Relay) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(bodies(relay)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Nothing in `bodies/` and nothing in `queue list`.
#[track_caller]
pub fn assert_nothing_left(relay: &Relay) {
    assert_eq!(body_files(relay), Vec::<String>::new(), "left in bodies/");
    let queue = relay
        .queue_json()
        .unwrap_or_else(|e| panic!("queue list: {e}"));
    assert!(queue.is_empty(), "queued: {queue:?}");
}

/// Once everything is delivered: `bodies/` empties (a delivered message's
/// body file goes with it) within 10 s.
#[track_caller]
pub fn assert_bodies_gone(relay: &Relay) {
    let gone = wait_for(Duration::from_secs(10), || body_files(relay).is_empty());
    assert!(gone, "bodies/ after delivery: {:?}", body_files(relay));
}

/// Waits until `id` is in the capture directory; its bytes without our
/// Received header.
pub fn wait_captured(relay: &Relay, id: &str) -> Vec<u8> {
    let out = relay.path("out");
    let mut found = None;
    let ok = wait_for(Duration::from_secs(30), || {
        found = captured(&out)
            .into_iter()
            .find(|(meta, _)| meta["queue_id"] == id)
            .map(|(_, body)| body);
        found.is_some()
    });
    assert!(ok, "{id} not delivered; log:\n{}", relay.log());
    strip_received(&found.unwrap_or_default()).to_vec()
}
