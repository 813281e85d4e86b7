use super::*;

fn put(store: &Store, key: &[u8], value: &[u8]) {
    let mut c = Changes::new();
    c.insert(key.to_vec(), value.to_vec());
    store.apply(c).unwrap();
}

fn fill(store: &Store, n: u32) {
    for i in 0..n {
        put(store, format!("x{i:08}").as_bytes(), &[b'v'; 4000]);
    }
    store.sync_blocking().unwrap();
}

fn size(store: &Store) -> u64 {
    store.handle().unwrap().db.size_on_disk().unwrap()
}

/// Once most of what it held is gone, the queue is copied and swapped: the
/// files shrink, every live record is still there, and ids go on rising.
#[tokio::test]
async fn a_drained_queue_gives_its_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_released(dir.path());
    fill(&store, 3000);
    let mut gone = Changes::new();
    for i in 0..2990 {
        gone.remove(format!("x{i:08}").into_bytes());
    }
    store.write(gone).await.unwrap();
    let id_before = store.new_id().unwrap();
    let before = size(&store);
    assert!(before > 8 << 20, "{before}");
    let done = store.inner.queue.maybe_compact(1 << 20).unwrap();
    let (was, now) = done.expect("compacted");
    assert_eq!(was, before);
    assert!(now * RATIO < before, "{now} of {before}");
    assert_eq!(store.scan_keys(b"x").count(), 10);
    assert!(store.get(b"x00002999").unwrap().is_some());
    let id_after = store.new_id().unwrap();
    assert!(
        id_after[8..] > id_before[8..],
        "{id_after} after {id_before}"
    );
    // Writes and commits go on, and survive a reopen.
    put(&store, b"y", b"after");
    store.commit().await.unwrap();
    drop(store);
    let store = open_released(dir.path());
    assert_eq!(store.get(b"y").unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(store.scan_keys(b"x").count(), 10);
    assert!(store.new_id().unwrap()[8..] > id_after[8..]);
}

/// A queue still mostly live, or one somebody is reading, is left alone.
#[tokio::test]
async fn a_live_or_busy_queue_is_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_released(dir.path());
    fill(&store, 3000);
    assert_eq!(store.inner.queue.maybe_compact(1 << 20).unwrap(), None);
    let mut gone = Changes::new();
    for i in 0..2990 {
        gone.remove(format!("x{i:08}").into_bytes());
    }
    store.write(gone).await.unwrap();
    let reading = store.scan(b"x");
    assert_eq!(store.inner.queue.compact(size(&store)).unwrap(), None);
    drop(reading);
    assert!(store.inner.queue.maybe_compact(1 << 20).unwrap().is_some());
}

/// A crash after the copy was published finishes the swap at the next
/// open; one before it leaves the old queue and removes the copy.
#[test]
fn an_interrupted_swap_is_finished_or_undone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    {
        let store = open_released(path);
        put(&store, b"kept", b"1");
        store.sync_blocking().unwrap();
        let h = store.handle().unwrap();
        copy_into(&h, &path.join(READY), SEGMENT_SIZE).unwrap();
        copy_into(&h, &path.join(TMP), SEGMENT_SIZE).unwrap();
        drop(h);
        // Written after the copy: lost with the old files, as the swap means.
        put(&store, b"late", b"2");
        store.sync_blocking().unwrap();
    }
    let store = open_released(path);
    assert!(store.get(b"kept").unwrap().is_some());
    assert!(
        store.get(b"late").unwrap().is_none(),
        "the copy is the queue"
    );
    for leftover in [TMP, READY, MOVING] {
        assert!(!path.join(leftover).exists(), "{leftover}");
    }
    drop(store);

    // An unpublished copy: the old queue stays as it is.
    {
        let store = open_released(path);
        let h = store.handle().unwrap();
        copy_into(&h, &path.join(TMP), SEGMENT_SIZE).unwrap();
        drop(h);
        put(&store, b"late", b"3");
        store.sync_blocking().unwrap();
    }
    let store = open_released(path);
    assert_eq!(store.get(b"late").unwrap().as_deref(), Some(&b"3"[..]));
    assert!(!path.join(TMP).exists());
}

/// Opens the queue at `path` once a store dropped before lets go of it.
fn open_released(path: &std::path::Path) -> Store {
    crate::spool::tests::when_released(|| Store::open(path, 1 << 20))
}
