//! How a queued message is laid out in the store, record by record, and the
//! bounds that keep every record small.
//!
//! Keys (one sled tree, so that a batch is atomic across them; ids are the
//! store's fixed-width hex ids, so `<id>/` never prefixes another id's keys):
//!
//! | key | value |
//! |---|---|
//! | `m<id>` | [`Meta`]: the envelope without its recipients (JSON) |
//! | `t<id>/<u32 BE>` | one [`Recipient`] (JSON), for messages of two or more |
//! | `b<id>/<u32 BE>` | one body chunk of at most `CHUNK_SIZE` bytes |
//! | `d<id>` | why the message is quarantined (UTF-8 text) |
//! | `e<id>` | a whole envelope as main 951fa14 stored it (read by the upgrade only) |
//! | `h<finished u64 BE><id>` | a finished message's history record |
//! | `r<route>` | a route held for its credentials |
//! | `w<route>\0<due u64 BE><id>` | the due index (see `spool::due`), no value |
//! | `xdue-index-built` | the due index covers every queued message |
//!
//! Why per-recipient records: sled writes a value to a "blob" file, which it
//! never syncs, once the node holding it passes a quarter of a log segment; a
//! leaf holds up to 17 entries. A message is therefore never one record that
//! grows with its recipient list: each recipient is its own small record, every
//! stored text is capped ([`MAX_REPLY`], [`MAX_EVENT`]) and the store refuses
//! any record over [`record_bound`] instead of writing it.

use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, Event, Recipient};

/// A stored reply keeps its code, enhanced code and the start of its text;
/// the whole reply is in the log line of the attempt.
pub const MAX_REPLY: usize = 300;
/// The longest event line kept in a message's attempt history.
pub const MAX_EVENT: usize = 300;
/// The longest login name kept with a message.
pub const MAX_AUTH: usize = 256;
/// The longest relay name (`host[ip]:port`) kept.
const MAX_RELAY: usize = 300;
/// sled's leaves split above 16 entries (sled 0.34.7 `node.rs`).
const LEAF_ENTRIES: usize = 17;

/// The largest key plus value the store writes into a queue whose log segment
/// is `segment_size` bytes: a full leaf of such records stays at a quarter of a
/// segment, the size above which sled moves a node to an unsynced blob file.
pub fn record_bound(segment_size: usize) -> usize {
    segment_size / 4 / LEAF_ENTRIES
}

/// The part of an envelope that is not per recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub sender: String,
    pub route_sender: String,
    /// How many `t` records the message has.
    pub recipients: u32,
    pub arrived: u64,
    pub size: u64,
    pub chunks: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_file: bool,
    pub smtputf8: bool,
    pub eight_bit: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub long_lines: bool,
    pub client: String,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// The recipient of a one-recipient message, kept in this record rather
    /// than in a `t` record: the commonest message (cron, a web form) then
    /// costs one write per change instead of two. Bounded like any record:
    /// one capped recipient and the capped events stay well under the
    /// smallest bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Recipient>,
    /// Where the message is indexed (see `spool::due`): None when held or
    /// finished, and in records written before the index.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::due::lenient"
    )]
    pub due: Option<super::due::Slot>,
    /// The route the message is counted under (see `spool::tally`), and
    /// how many of its recipients are still to deliver: None in records
    /// written before the counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_warned: bool,
    /// RET and ENVID; ENVID is at most 100 characters, so the record stays
    /// bounded.
    #[serde(default, skip_serializing_if = "crate::dsn::MailDsn::is_empty")]
    pub dsn: crate::dsn::MailDsn,
    /// Who logged in to send it; capped like the other texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

impl Meta {
    pub fn of(env: &Envelope, place: &super::due::Place) -> Meta {
        Meta {
            sender: env.sender.clone(),
            route_sender: env.route_sender.clone(),
            recipients: u32::try_from(env.recipients.len()).unwrap_or(u32::MAX),
            arrived: env.arrived,
            size: env.size,
            chunks: env.chunks,
            body_file: env.body_file,
            smtputf8: env.smtputf8,
            eight_bit: env.eight_bit,
            long_lines: env.long_lines,
            client: env.client.clone(),
            held: env.held,
            message_id: env.message_id.clone(),
            events: env
                .events
                .iter()
                .map(|e| Event {
                    at: e.at,
                    text: capped(&e.text, MAX_EVENT),
                })
                .collect(),
            only: match env.recipients.as_slice() {
                [one] => Some(stored_recipient(one)),
                _ => None,
            },
            due: place.slot(),
            route: Some(place.route.clone()),
            pending: Some(env.unfinished().count() as u64),
            delay_warned: env.delay_warned,
            dsn: env.dsn.clone(),
            auth: env.auth.as_deref().map(|a| capped(a, MAX_AUTH)),
        }
    }

    pub fn into_envelope(self, id: &str, recipients: Vec<Recipient>) -> Envelope {
        Envelope {
            id: id.to_string(),
            sender: self.sender,
            route_sender: self.route_sender,
            recipients,
            arrived: self.arrived,
            size: self.size,
            chunks: self.chunks,
            body_file: self.body_file,
            smtputf8: self.smtputf8,
            eight_bit: self.eight_bit,
            long_lines: self.long_lines,
            client: self.client,
            held: self.held,
            message_id: self.message_id,
            events: self.events,
            delay_warned: self.delay_warned,
            dsn: self.dsn,
            auth: self.auth,
        }
    }
}

/// A recipient as stored: its texts capped.
pub fn stored_recipient(r: &Recipient) -> Recipient {
    Recipient {
        last_error: r.last_error.as_deref().map(|t| capped(t, MAX_REPLY)),
        relay: r.relay.as_deref().map(|t| capped(t, MAX_RELAY)),
        ..r.clone()
    }
}

/// `text` cut so that its JSON encoding takes at most `max` bytes (quotes,
/// backslashes and control characters count as escaped), on a character
/// boundary, marked with an ellipsis when cut. A reply starts with its code
/// and enhanced code, which a cut from the end keeps.
pub fn capped(text: &str, max: usize) -> String {
    let encoded = |c: char| match c {
        '"' | '\\' => 2,
        c if c.is_control() => 6,
        c => c.len_utf8(),
    };
    if text.chars().map(encoded).sum::<usize>() <= max {
        return text.to_string();
    }
    let budget = max.saturating_sub(3);
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        used += encoded(c);
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push_str("...");
    out
}

pub fn meta_key(id: &str) -> Vec<u8> {
    prefixed(b'm', id.as_bytes())
}

pub fn damage_key(id: &str) -> Vec<u8> {
    prefixed(b'd', id.as_bytes())
}

pub fn legacy_key(id: &str) -> Vec<u8> {
    prefixed(b'e', id.as_bytes())
}

pub fn recipient_key(id: &str, i: u32) -> Vec<u8> {
    numbered(b't', id, i)
}

pub fn chunk_key(id: &str, i: u32) -> Vec<u8> {
    numbered(b'b', id, i)
}

/// `t<id>/` or `b<id>/`: every numbered record of one message.
pub fn numbered_prefix(kind: u8, id: &str) -> Vec<u8> {
    let mut k = prefixed(kind, id.as_bytes());
    k.push(b'/');
    k
}

pub fn route_hold_key(route: &str) -> Vec<u8> {
    prefixed(b'r', route.as_bytes())
}

pub fn prefixed(kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(kind);
    k.extend_from_slice(rest);
    k
}

fn numbered(kind: u8, id: &str, i: u32) -> Vec<u8> {
    let mut k = numbered_prefix(kind, id);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// The id in a `t` or `b` key (`<kind><id>/<u32 BE>`).
pub fn id_of_numbered(key: &[u8]) -> Option<&[u8]> {
    key.len().checked_sub(5).and_then(|end| key.get(1..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_keeps_the_codes_and_a_char_boundary() {
        let reply = format!("451 4.7.0 {}", "é".repeat(400));
        let c = capped(&reply, MAX_REPLY);
        assert!(c.len() <= MAX_REPLY);
        assert!(c.starts_with("451 4.7.0 "));
        assert!(c.ends_with("..."));
        assert_eq!(capped("250 ok", MAX_REPLY), "250 ok");
        // Escapes count: the stored JSON stays within the cap.
        for hostile in ["\"".repeat(400), "\\".repeat(400), "\u{1}".repeat(400)] {
            let c = capped(&hostile, MAX_REPLY);
            let json = serde_json::to_string(&c).unwrap();
            assert!(json.len() <= MAX_REPLY + 2, "{}", json.len());
        }
    }

    #[test]
    fn the_bound_follows_the_segment_size() {
        assert_eq!(record_bound(1 << 20), 15420);
        assert_eq!(record_bound(8 << 20), 123361);
    }

    #[test]
    fn numbered_keys_name_their_message() {
        let k = recipient_key("0123456789ABCD", 7);
        assert_eq!(id_of_numbered(&k), Some(&b"0123456789ABCD"[..]));
        assert!(k.starts_with(&numbered_prefix(b't', "0123456789ABCD")));
    }
}
