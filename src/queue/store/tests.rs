use super::*;
use crate::queue::Recipient;

fn envelope(store: &Store) -> Envelope {
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
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let body: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    let mut env = envelope(&store);
    let mut c = Changes::new();
    c.put_message(&mut env, &body);
    store.write(c).await.unwrap();
    assert_eq!(env.chunks, 4);
    let back = store.envelope(&env.id).unwrap().unwrap();
    assert_eq!(back, env);
    assert_eq!(store.body(&back).unwrap(), body);
    // Nothing may go to sled's unsynced blob files.
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);

    let mut c = Changes::new();
    c.remove_message(&back);
    store.write(c).await.unwrap();
    assert!(store.envelope(&env.id).unwrap().is_none());
    assert_eq!(store.envelopes().count(), 0);
}

/// Space comes back: pushing many times the queue's size through it leaves the
/// files bounded (sled reuses freed segments) rather than growing with traffic.
#[tokio::test]
async fn churn_does_not_grow_disk_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let body = vec![b'x'; 20 * 1024];
    for i in 0..6000 {
        let mut env = envelope(&store);
        let mut c = Changes::new();
        c.put_message(&mut env, &body);
        store.apply(c).unwrap();
        let mut c = Changes::new();
        c.remove_message(&env);
        store.apply(c).unwrap();
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
    assert_eq!(store.envelopes().count(), 0);
}

/// A snapshot that sled never finished (a full disk or a crash while it
/// wrote it) must not keep the queue from opening.
#[tokio::test]
async fn an_unfinished_snapshot_does_not_keep_the_queue_closed() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut env = envelope(&store);
        let mut c = Changes::new();
        c.put_message(&mut env, b"Subject: kept\r\n\r\nhi\r\n");
        store.write(c).await.unwrap();
        env.id
    };
    let partial = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"half a snapshot, cut off by ENOSPC").unwrap();
    let store = Store::open(dir.path(), 1 << 20).expect("opens despite the partial snapshot");
    assert!(store.envelope(&id).unwrap().is_some());
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
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut c = Changes::new();
    for (i, finished) in [300u64, 100, 200, 400].into_iter().enumerate() {
        let mut env = envelope(&store);
        env.id = format!("M{i}");
        c.put_history(&Finished::from_envelope(&env, finished, "delivered"));
    }
    store.write(c).await.unwrap();
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
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.history_len(), 1);
}

#[tokio::test]
async fn ids_are_unique_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        for _ in 0..100 {
            assert!(seen.insert(store.new_id().unwrap()));
        }
        store.commit().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_commits_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut env = envelope(&store);
            let mut c = Changes::new();
            c.put_message(&mut env, b"Subject: x\r\n\r\nhi\r\n");
            store.write(c).await.map(|_| env.id)
        }));
    }
    for t in tasks {
        let id = t.await.unwrap().unwrap();
        assert!(store.envelope(&id).unwrap().is_some());
    }
    assert_eq!(store.envelopes().count(), 50);
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
    assert_eq!(persisted_segment_size(dir.path()), Some(8 << 20));
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&store);
    let mut c = Changes::in_order();
    c.put_message(&mut env, b"Subject: old queue\r\n\r\nhi\r\n");
    store.write(c).await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert!(store.envelope(&env.id).unwrap().is_some());
    assert_eq!(persisted_segment_size(dir.path()), Some(8 << 20));
}

/// A head and a body chunked as one message, at every split point.
#[tokio::test]
async fn message_parts_chunk_like_one_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
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
        let mut c = Changes::in_order();
        c.put_message_parts(&mut env, head, body);
        store.write(c).await.unwrap();
        assert_eq!(env.chunks, 3, "split at {split}");
        assert_eq!(env.size, whole.len() as u64);
        assert_eq!(store.body(&env).unwrap(), whole, "split at {split}");
    }
}

fn chunk_keys(store: &Store) -> usize {
    let h = store.handle().unwrap();
    h.db.scan_prefix(b"b").count()
}

/// A message stored and taken out again in order leaves nothing behind; a
/// store cut short by a crash leaves chunks without an envelope, which the
/// next start removes, and only after a crash (the clean marker says so).
#[tokio::test]
async fn in_order_changes_and_the_orphan_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(CLEAN_MARKER);
    let body = vec![b'x'; 2 * CHUNK_SIZE + 1];
    let (kept, orphan_id) = {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(
            !marker.exists(),
            "the marker is removed while the queue is open"
        );
        let mut gone = envelope(&store);
        let mut c = Changes::in_order();
        c.put_message(&mut gone, &body);
        store.write(c).await.unwrap();
        let mut c = Changes::in_order();
        c.remove_message(&gone);
        store.write(c).await.unwrap();

        let mut kept = envelope(&store);
        let mut c = Changes::in_order();
        c.put_message(&mut kept, &body);
        store.write(c).await.unwrap();

        // What a crash between the chunks and the envelope leaves.
        let orphan_id = store.new_id().unwrap();
        let mut c = Changes::in_order();
        c.insert(chunk_key(&orphan_id, 0), b"cut short".to_vec());
        c.insert(chunk_key(&orphan_id, 1), b"cut short".to_vec());
        store.write(c).await.unwrap();
        assert_eq!(chunk_keys(&store), 5);
        (kept, orphan_id)
    };
    assert!(marker.exists(), "a clean close leaves the marker");

    // A clean start does not sweep (and removes the marker).
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(!marker.exists());
        assert_eq!(chunk_keys(&store), 5);
    }
    // After a crash (no marker) the orphan goes, the queued message stays.
    std::fs::remove_file(&marker).unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(chunk_keys(&store), 3);
    assert!(store.envelope(&orphan_id).unwrap().is_none());
    let back = store.envelope(&kept.id).unwrap().unwrap();
    assert_eq!(store.body(&back).unwrap(), body);
}
