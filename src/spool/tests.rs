use super::envelope::Event;
use super::records::*;
use super::store::CHUNK_SIZE;
use super::writes::{put_message, remove_message};
use super::*;

fn envelope(store: &Spool) -> Envelope {
    Envelope {
        id: store.new_id().unwrap(),
        sender: "a@example.com".into(),
        route_sender: "a@example.com".into(),
        recipients: vec![Recipient::new("b@example.net", 0)],
        arrived: 0,
        size: 0,
        chunks: 0,
        smtputf8: false,
        eight_bit: false,
        client: "t".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn roundtrip_large_body_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let body: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    let mut env = envelope(&store);
    store.accept_bytes(&mut env, &[], &body).await.unwrap();
    assert_eq!(env.chunks, 4);
    let back = store.load(&env.id).unwrap().unwrap();
    assert_eq!(back, env);
    assert_eq!(store.body(&back).read_all().await.unwrap(), body);
    // Nothing may go to sled's unsynced blob files.
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);

    let mut back = back;
    store.delete(&mut back, 1).await.unwrap();
    assert!(store.load(&env.id).unwrap().is_none());
    assert_eq!(store.messages().count(), 0);
    assert_eq!(store.history().next().unwrap().outcome, "deleted");
}

/// Space comes back: pushing many times the queue's size through it leaves the
/// files bounded (sled reuses freed segments) rather than growing with traffic.
#[tokio::test]
async fn churn_does_not_grow_disk_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let body = vec![b'x'; 20 * 1024];
    for i in 0..6000 {
        let mut env = envelope(&store);
        let mut c = Changes::new();
        put_message(&mut c, &mut env, &body, &Place::default());
        store.store().apply(c).unwrap();
        let mut c = Changes::new();
        remove_message(&mut c, &env, None);
        store.store().apply(c).unwrap();
        // The daemon commits with every acknowledgement; committing here too
        // makes reclaiming independent of when sled's own flusher gets the
        // CPU (on a loaded machine it may not run at all during the loop).
        if i % 50 == 49 {
            store.commit().await.unwrap();
        }
    }
    store.commit().await.unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // 120 MiB went through; what stays is a handful of 8 MiB segments (how
    // many depends on when sled's background flusher ran, so allow half).
    assert!(on_disk < 64 * 1024 * 1024, "{on_disk} bytes on disk");
    assert_eq!(store.messages().count(), 0);
}

/// A snapshot that sled never finished (a full disk or a crash while it
/// wrote it) must not keep the queue from opening.
#[tokio::test]
async fn an_unfinished_snapshot_does_not_keep_the_queue_closed() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut env = envelope(&store);
        store
            .accept_bytes(&mut env, &[], b"Subject: kept\r\n\r\nhi\r\n")
            .await
            .unwrap();
        env.id
    };
    let partial = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot, cut off by ENOSPC").unwrap();
    let store = Spool::open(dir.path(), 1 << 20).expect("opens despite the partial snapshot");
    assert!(store.load(&id).unwrap().is_some());
    assert!(!partial.exists());
}

#[test]
fn a_full_disk_is_told_by_the_error_kind() {
    let io = |errno| sled::Error::Io(std::io::Error::from_raw_os_error(errno));
    // ENOSPC, EDQUOT; sled's clone keeps only the kind and a text.
    assert!(StoreError::Sled(io(28)).is_disk_full());
    assert!(StoreError::Sync(io(28).clone()).is_disk_full());
    assert!(StoreError::Sync(io(122)).is_disk_full());
    assert!(!StoreError::Sled(io(5)).is_disk_full());
    assert!(!StoreError::Reopened.is_disk_full());
}

#[tokio::test]
async fn history_is_kept_in_order_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut c = Changes::new();
    for (i, finished) in [300u64, 100, 200, 400].into_iter().enumerate() {
        let mut env = envelope(&store);
        env.id = format!("M{i}");
        put_history(
            &mut c,
            &Finished::from_envelope(&env, finished, "delivered"),
        );
    }
    store.store().write(c).await.unwrap();
    assert_eq!(store.history_len(), 4);
    let order: Vec<u64> = store.history().map(|f| f.finished).collect();
    assert_eq!(order, vec![100, 200, 300, 400]);
    // Older than 250 goes; so does anything beyond the newest 3.
    assert_eq!(store.prune_history(250, 3, false).unwrap(), 2);
    let left: Vec<u64> = store.history().map(|f| f.finished).collect();
    assert_eq!(left, vec![300, 400]);
    assert_eq!(store.history_len(), 2);
    assert_eq!(store.prune_history(0, 1, true).unwrap(), 1);
    assert_eq!(store.history().count(), 1);
    assert_eq!(store.history_len(), 1);
    drop(store);
    // Counted again when the queue opens.
    let store = reopen(dir.path());
    assert_eq!(store.history_len(), 1);
}

#[tokio::test]
async fn ids_are_unique_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let store = Spool::open(dir.path(), 1 << 20).unwrap();
        for _ in 0..100 {
            assert!(seen.insert(store.new_id().unwrap()));
        }
        store.commit().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_commits_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut env = envelope(&store);
            store
                .accept_bytes(&mut env, &[], b"Subject: x\r\n\r\nhi\r\n")
                .await
                .map(|_| env.id)
        }));
    }
    for t in tasks {
        let id = t.await.unwrap().unwrap();
        assert!(store.load(&id).unwrap().is_some());
    }
    assert_eq!(store.messages().count(), 50);
}

/// A queue created with 8 MiB segments (before they became 1 MiB) opens
/// with them, its messages intact.
#[tokio::test]
async fn an_older_segment_size_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(8 << 20)
            .open()
            .unwrap();
        db.flush().unwrap();
    }
    assert_eq!(store::persisted_segment_size(dir.path()), Some(8 << 20));
    let store = when_released(|| Spool::open(dir.path(), 1 << 20));
    let mut env = envelope(&store);
    store
        .accept_bytes(&mut env, &[], b"Subject: old queue\r\n\r\nhi\r\n")
        .await
        .unwrap();
    assert_eq!(store.store().bound(), record_bound(8 << 20));
    drop(store);
    let store = reopen(dir.path());
    assert!(store.load(&env.id).unwrap().is_some());
    assert_eq!(store::persisted_segment_size(dir.path()), Some(8 << 20));
}

/// A head and a body chunked as one message, at every split point.
#[tokio::test]
async fn message_parts_chunk_like_one_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let whole: Vec<u8> = (0..(2 * CHUNK_SIZE + 100))
        .map(|i| (i % 253) as u8)
        .collect();
    for split in [
        0,
        1,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        2 * CHUNK_SIZE + 100,
    ] {
        let (head, body) = whole.split_at(split);
        let mut env = envelope(&store);
        store.accept_bytes(&mut env, head, body).await.unwrap();
        assert_eq!(env.chunks, 3, "split at {split}");
        assert_eq!(env.size, whole.len() as u64);
        assert_eq!(
            store.body(&env).read_all().await.unwrap(),
            whole,
            "split at {split}"
        );
    }
}

fn keys(store: &Spool, prefix: &[u8]) -> usize {
    store.store().scan_keys(prefix).count()
}

/// A message stored and taken out again leaves nothing behind; a store cut
/// short by a crash leaves records without a meta record, which the next start
/// removes, and only after a crash (the clean marker says so).
#[tokio::test]
async fn in_order_changes_and_the_orphan_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("closed-cleanly");
    let body = vec![b'x'; 2 * CHUNK_SIZE + 1];
    let (kept, orphan_id) = {
        let store = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(
            !marker.exists(),
            "the marker is removed while the queue is open"
        );
        let mut gone = envelope(&store);
        store.accept_bytes(&mut gone, &[], &body).await.unwrap();
        store.delete(&mut gone, 5).await.unwrap();

        let mut kept = envelope(&store);
        store.accept_bytes(&mut kept, &[], &body).await.unwrap();

        // What a crash before the meta record leaves.
        let orphan_id = store.new_id().unwrap();
        let mut c = Changes::in_order();
        c.insert(chunk_key(&orphan_id, 0), b"cut short".to_vec());
        c.insert(chunk_key(&orphan_id, 1), b"cut short".to_vec());
        c.insert(recipient_key(&orphan_id, 0), b"{}".to_vec());
        store.store().write(c).await.unwrap();
        assert_eq!(keys(&store, b"b"), 5);
        // The kept message's one recipient is in its meta record; the
        // orphan's record is the only `t` record.
        assert_eq!(keys(&store, b"t"), 1);
        (kept, orphan_id)
    };
    assert!(marker.exists(), "a clean close leaves the marker");

    // A clean start does not sweep (and removes the marker).
    {
        let store = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!marker.exists());
        assert_eq!(keys(&store, b"b"), 5);
    }
    // After a crash (no marker) the sweep the daemon runs once it is
    // ready removes the orphan; the queued message stays.
    std::fs::remove_file(&marker).unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(store.crashed());
    assert_eq!(keys(&store, b"b"), 5, "nothing swept before the start ends");
    assert_eq!(store.sweep_orphans().unwrap(), 3);
    assert_eq!(keys(&store, b"b"), 3);
    assert_eq!(keys(&store, b"t"), 0);
    assert!(store.load(&orphan_id).unwrap().is_none());
    let back = store.load(&kept.id).unwrap().unwrap();
    assert_eq!(store.body(&back).read_all().await.unwrap(), body);
}

/// Opens again a queue just dropped: sled's background writers may hold its
/// lock for a moment after the last handle is gone (seen under stress-ng).
pub(super) fn reopen(path: &std::path::Path) -> Spool {
    when_released(|| Spool::open(path, 1 << 20))
}

/// `open`'s queue, once sled's lock on it is released.
pub(super) fn when_released<T>(open: impl Fn() -> Result<T, StoreError>) -> T {
    for _ in 0..200 {
        match open() {
            Ok(s) => return s,
            Err(StoreError::Sled(sled::Error::Io(e))) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the queue stayed locked");
}

fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The case that made sled write unsynced blob files: a message of 1,000
/// recipients, all deferred with 500-byte replies over several attempts.
#[tokio::test]
async fn a_thousand_deferred_recipients_stay_out_of_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&store);
    env.recipients = (0..1000)
        .map(|i| Recipient::new(format!("user{i:04}@example.net"), 0))
        .collect();
    store
        .accept_bytes(&mut env, &[], b"Subject: many\r\n\r\nhi\r\n")
        .await
        .unwrap();
    let all: Vec<usize> = (0..1000).collect();
    for attempt in 1..=5u32 {
        for (i, r) in env.recipients.iter_mut().enumerate() {
            r.state = State::Deferred;
            r.attempts = attempt;
            r.next_attempt = 1000 * u64::from(attempt);
            r.last_error = Some(format!(
                "451 4.7.1 attempt {attempt} recipient {i} {}",
                "x".repeat(500)
            ));
            r.relay = Some("smtp.example.net[192.0.2.1]:587".into());
            env.events.push(Event {
                at: 1,
                text: "y".repeat(600),
            });
        }
        env.events.truncate(envelope::MAX_EVENTS);
        store
            .record(&env, &all, "delivered", &mut [])
            .await
            .unwrap();
    }
    assert_eq!(
        blob_files(dir.path()),
        0,
        "nothing may go to sled's unsynced blob files"
    );
    drop(store);
    let store = reopen(dir.path());
    let back = store.load(&env.id).unwrap().unwrap();
    assert_eq!(back.recipients.len(), 1000);
    for (i, r) in back.recipients.iter().enumerate() {
        assert_eq!(r.address, format!("user{i:04}@example.net"));
        assert_eq!(
            (r.state, r.attempts, r.next_attempt),
            (State::Deferred, 5, 5000)
        );
        let reply = r.last_error.as_deref().unwrap();
        assert!(
            reply.starts_with(&format!("451 4.7.1 attempt 5 recipient {i} ")),
            "{reply}"
        );
        assert!(reply.len() <= MAX_REPLY);
    }
    assert_eq!(blob_files(dir.path()), 0);
}

/// A record over the bound is refused with a typed error, and nothing of
/// its change is written.
#[tokio::test]
async fn an_oversized_record_is_refused_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&store);
    env.client = "c".repeat(20_000);
    let err = store
        .accept_bytes(&mut env, &[], b"hi\r\n")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { bound: 15420, .. }),
        "{err}"
    );
    // The one record a new queue has is the due index's mark.
    assert_eq!(
        store
            .store()
            .scan_keys(b"")
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        [sled::IVec::from(due::BUILT)],
        "nothing of the change was applied"
    );
}

async fn queued(store: &Spool, body: &[u8]) -> Envelope {
    let mut env = envelope(store);
    env.recipients.push(Recipient::new("c@example.net", 0));
    store.accept_bytes(&mut env, &[], body).await.unwrap();
    env
}

fn is_damaged(r: Result<Option<Envelope>, StoreError>, what: &str) {
    match r {
        Err(StoreError::Damaged { reason, .. }) => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected damage about {what:?}, got {other:?}"),
    }
}

/// Each way a message can be damaged: found, listed with its reason, the
/// rest of the queue unaffected, and removable by id.
#[tokio::test]
async fn damaged_messages_are_quarantined_listed_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let good = queued(&store, b"fine\r\n").await;
    let bad_meta = queued(&store, b"x\r\n").await;
    let lost_rcpt = queued(&store, b"x\r\n").await;
    let bad_rcpt = queued(&store, b"x\r\n").await;
    let lost_body = queued(&store, b"x\r\n").await;
    let mut c = Changes::new();
    c.insert(meta_key(&bad_meta.id), b"{not json".to_vec());
    c.remove(recipient_key(&lost_rcpt.id, 1));
    c.insert(recipient_key(&bad_rcpt.id, 0), b"\xff".to_vec());
    c.remove(chunk_key(&lost_body.id, 0));
    store.store().write(c).await.unwrap();

    is_damaged(store.load(&bad_meta.id), "envelope does not decode");
    is_damaged(
        store.load(&lost_rcpt.id),
        "1 of its 2 recipient records are missing",
    );
    is_damaged(
        store.load(&bad_rcpt.id),
        "recipient record 0 does not decode",
    );
    let env = store.load(&lost_body.id).unwrap().unwrap();
    is_damaged(
        store.check_body(&env).map(|_| None),
        "body part 0 of 1 is missing",
    );
    // Delivery marks the last one; from then on it is damaged for everyone.
    store
        .quarantine(&lost_body.id, "body part 0 of 1 is missing")
        .await
        .unwrap();
    is_damaged(store.load(&lost_body.id), "body part 0 of 1 is missing");

    let listed: Vec<Result<Envelope, StoreError>> = store.messages().collect();
    assert_eq!(listed.len(), 5);
    let damaged = listed
        .iter()
        .filter(|m| matches!(m, Err(StoreError::Damaged { .. })))
        .count();
    assert_eq!(damaged, 4);
    assert!(listed.iter().any(|m| matches!(m, Ok(e) if e.id == good.id)));

    for id in [&bad_meta.id, &lost_rcpt.id, &bad_rcpt.id, &lost_body.id] {
        assert!(store.discard(id).await.unwrap(), "{id}");
        assert!(store.load(id).unwrap().is_none());
    }
    assert!(!store.discard("00000000000000").await.unwrap());
    assert_eq!(store.messages().count(), 1);
    // Only the good message's records are left.
    assert_eq!(keys(&store, b"t"), 2);
    assert_eq!(keys(&store, b"b"), 1);
    assert_eq!(keys(&store, b"d"), 0);
}

/// A queue written by main 951fa14: whole envelopes under `e<id>`, one of
/// them unreadable. The first open converts the rest, the unreadable one is
/// quarantined, and a second open finds nothing left to convert.
#[tokio::test]
async fn whole_envelope_records_are_converted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    {
        let store = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut c = Changes::new();
        for n in 0..3 {
            let mut env = envelope(&store);
            env.recipients = (0..50)
                .map(|i| Recipient::new(format!("r{i}@example.net"), 7))
                .collect();
            env.recipients[3].state = State::Delivered;
            env.recipients[4].last_error = Some(format!("451 {}", "z".repeat(2000)));
            env.event(1, format!("received {n}"));
            env.chunks = 1;
            env.size = 4;
            c.insert(legacy_key(&env.id), serde_json::to_vec(&env).unwrap());
            c.insert(chunk_key(&env.id, 0), b"hi\r\n".to_vec());
            old.push(env);
        }
        c.insert(legacy_key("0000000000BAD0"), b"{\"id\":".to_vec());
        store.store().write(c).await.unwrap();
    }
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        keys(&store, b"e"),
        1,
        "only the unreadable one stays in the old form"
    );
    for env in &old {
        let back = store.load(&env.id).unwrap().unwrap();
        assert_eq!(back.recipients.len(), 50);
        assert_eq!(back.recipients[3].state, State::Delivered);
        assert!(back.recipients[4].last_error.as_ref().unwrap().len() <= MAX_REPLY);
        assert_eq!(back.events, env.events);
        assert_eq!(store.body(&back).read_all().await.unwrap(), b"hi\r\n");
    }
    is_damaged(store.load("0000000000BAD0"), "old form");
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.messages().count(), 4);
    assert!(store.discard("0000000000BAD0").await.unwrap());
    assert_eq!(keys(&store, b"e"), 0);
}

/// Salvage copies a queue's records into a new directory that opens as a
/// queue with the same messages.
#[tokio::test]
async fn salvage_copies_every_readable_record() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("q");
    let to = dir.path().join("fresh");
    let ids: Vec<String> = {
        let store = Spool::open(&from, 1 << 20).unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(queued(&store, &vec![b'a'; 3 * CHUNK_SIZE]).await.id);
        }
        ids
    };
    let s = salvage::salvage(&from, &to).unwrap();
    assert_eq!((s.messages, s.damaged, s.too_large), (5, 0, 0));
    assert!(matches!(
        salvage::salvage(&from, &to),
        Err(salvage::SalvageError::TargetExists(_))
    ));
    let store = Spool::open(&to, 1 << 20).unwrap();
    for id in &ids {
        let env = store.load(id).unwrap().unwrap();
        assert_eq!(
            store.body(&env).read_all().await.unwrap(),
            vec![b'a'; 3 * CHUNK_SIZE]
        );
    }
}

/// A one-recipient message is one meta record and its body: recorded and
/// taken out without `t` records; two recipients get one record each.
#[tokio::test]
async fn one_recipient_lives_in_the_meta_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut one = envelope(&store);
    store.accept_bytes(&mut one, &[], b"hi\r\n").await.unwrap();
    assert_eq!(keys(&store, b"t"), 0);
    one.recipients[0].state = State::Deferred;
    one.recipients[0].last_error = Some(format!("451 4.3.0 {}", "\"".repeat(2000)));
    store
        .record(&one, &[0], "delivered", &mut [])
        .await
        .unwrap();
    let back = store.load(&one.id).unwrap().unwrap();
    assert_eq!(back.recipients.len(), 1);
    assert_eq!(back.recipients[0].state, State::Deferred);
    assert!(back.recipients[0]
        .last_error
        .as_ref()
        .unwrap()
        .starts_with("451 4.3.0 "));
    let two = queued(&store, b"x\r\n").await;
    assert_eq!(keys(&store, b"t"), 2);
    let mut one = back;
    one.recipients[0].state = State::Delivered;
    store
        .record(&one, &[0], "delivered", &mut [])
        .await
        .unwrap();
    assert!(store.load(&one.id).unwrap().is_none());
    assert_eq!(keys(&store, b"m"), 1);
    assert!(store.load(&two.id).unwrap().is_some());
}

/// A listing that reads a message as it leaves the queue (its meta record
/// read, then some of its recipient records gone) skips it: it is not
/// damaged. One whose meta record is still there with records missing is.
#[tokio::test]
async fn a_message_leaving_while_read_is_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool);
    env.recipients = (0..3)
        .map(|i| Recipient::new(format!("r{i}@example.net"), 100))
        .collect();
    spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    let meta = spool.store().get(&meta_key(&env.id)).unwrap().unwrap();
    let mut c = Changes::new();
    c.remove(recipient_key(&env.id, 1));
    spool.store().apply(c).unwrap();
    assert!(matches!(
        spool.assemble(&env.id, &meta),
        Err(StoreError::Damaged { .. })
    ));
    let mut c = Changes::new();
    c.remove(meta_key(&env.id));
    spool.store().apply(c).unwrap();
    assert!(spool.assemble(&env.id, &meta).unwrap().is_none());
}
