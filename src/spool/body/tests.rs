use super::super::{Envelope, Recipient, Spool, StoreError};
use super::*;

fn envelope(spool: &Spool) -> Envelope {
    Envelope {
        id: spool.new_id().unwrap(),
        sender: "a@example.com".into(),
        route_sender: "a@example.com".into(),
        recipients: vec![Recipient::new("b@example.net", 0)],
        client: "t".into(),
        ..Default::default()
    }
}

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"abcdefghij\r\n"[i % 12]).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Written in pieces of every size around the buffers, a large body lands
/// in its file whole and reads back the same, a chunk at a time.
#[tokio::test]
async fn a_large_body_goes_to_its_own_file_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let body = big(3 * INLINE_MAX + 12_345);
    let mut env = envelope(&spool);
    let mut writer = spool.body_writer(&env.id);
    for piece in body.chunks(7_777) {
        writer.write(piece).await.unwrap();
    }
    assert!(writer.in_file());
    spool.accept(&mut env, writer).await.unwrap();
    assert!(env.body_file);
    assert_eq!((env.size, env.chunks), (body.len() as u64, 0));
    assert_eq!(files(dir.path()), [env.id.clone()]);
    let back = spool.load(&env.id).unwrap().unwrap();
    assert_eq!(back, env);
    spool.check_body(&back).unwrap();
    let mut reader = spool.body(&back);
    let mut read = Vec::new();
    while let Some(chunk) = reader.next().await.unwrap() {
        assert!(chunk.len() <= FILE_READ);
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, body);
    assert!(
        reader.next().await.unwrap().is_none(),
        "the end stays the end"
    );
    assert!(spool.disk_size() >= body.len() as u64);
}

/// Up to the inline bound a body stays in the records; one byte more and
/// it is a file.
#[tokio::test]
async fn the_inline_bound_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut small = envelope(&spool);
    spool
        .accept_bytes(&mut small, &[], &big(INLINE_MAX))
        .await
        .unwrap();
    assert!(!small.body_file);
    let mut large = envelope(&spool);
    spool
        .accept_bytes(&mut large, &[], &big(INLINE_MAX + 1))
        .await
        .unwrap();
    assert!(large.body_file);
    assert_eq!(files(dir.path()), [large.id.clone()]);
}

/// Delivered, deleted or bounced, a message takes its file with it.
#[tokio::test]
async fn a_finished_message_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool);
    spool
        .accept_bytes(&mut env, &[], &big(INLINE_MAX * 2))
        .await
        .unwrap();
    let mut deleted = envelope(&spool);
    spool
        .accept_bytes(&mut deleted, &[], &big(INLINE_MAX * 2))
        .await
        .unwrap();
    assert_eq!(files(dir.path()).len(), 2);
    env.recipients[0].state = super::super::State::Delivered;
    spool
        .record(&env, &[0], "delivered", &mut [])
        .await
        .unwrap();
    spool.delete(&mut deleted, 1).await.unwrap();
    assert!(files(dir.path()).is_empty());
    assert_eq!(spool.disk_size(), spool.store().disk_size());
}

/// A body never accepted leaves nothing: dropped by its session, or left
/// by a crash and swept at the next start.
#[tokio::test]
async fn partial_bodies_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let kept_id;
    {
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let env = envelope(&spool);
        let mut writer = spool.body_writer(&env.id);
        writer.write(&big(INLINE_MAX + 1)).await.unwrap();
        assert!(files(dir.path()).is_empty(), "still in memory");
        writer.write(&big(FILE_WRITE)).await.unwrap();
        assert_eq!(files(dir.path()).len(), 1);
        drop(writer);
        assert!(files(dir.path()).is_empty());

        let mut kept = envelope(&spool);
        spool
            .accept_bytes(&mut kept, &[], &big(INLINE_MAX + 1))
            .await
            .unwrap();
        kept_id = kept.id;
        let crashed = envelope(&spool);
        let mut writer = spool.body_writer(&crashed.id);
        writer.write(&big(FILE_WRITE)).await.unwrap();
        // A crash: the writer never runs its drop.
        std::mem::forget(writer);
        assert_eq!(files(dir.path()).len(), 2);
    }
    let spool = super::super::tests::reopen(dir.path());
    assert_eq!(files(dir.path()), std::slice::from_ref(&kept_id));
    let env = spool.load(&kept_id).unwrap().unwrap();
    assert_eq!(
        spool.body(&env).read_all().await.unwrap().len(),
        INLINE_MAX + 1
    );
}

/// A missing or cut body file makes the message damaged before anything
/// is read from it.
#[tokio::test]
async fn a_missing_or_short_file_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool);
    spool
        .accept_bytes(&mut env, &[], &big(INLINE_MAX + 100))
        .await
        .unwrap();
    let path = dir.path().join(DIR).join(&env.id);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    let short = spool.check_body(&env).unwrap_err();
    assert!(matches!(short, StoreError::Damaged { .. }), "{short}");
    assert!(spool.body(&env).read_all().await.is_err());
    std::fs::remove_file(&path).unwrap();
    let gone = spool.check_body(&env).unwrap_err();
    assert!(gone.to_string().contains("body file is missing"), "{gone}");
}

/// A body file that grew is damage for the check; a reader already going
/// sends the recorded bytes and no more.
#[tokio::test]
async fn a_grown_file_is_damage_and_reads_stop_at_the_recorded_size() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool);
    let body = big(2 * FILE_READ);
    spool.accept_bytes(&mut env, &[], &body).await.unwrap();
    let mut reader = spool.body(&env);
    let first = reader.next().await.unwrap().unwrap();
    let path = dir.path().join(DIR).join(&env.id);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"trailing").unwrap();
    let grown = spool.check_body(&env).unwrap_err();
    assert!(matches!(grown, StoreError::Damaged { .. }), "{grown}");
    let second = reader.next().await.unwrap().unwrap();
    assert_eq!([first, second].concat(), body);
    assert!(reader.next().await.unwrap().is_none());
}

/// The header section is read without reading the rest.
#[tokio::test]
async fn the_header_section_is_read_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool);
    let mut message = b"Subject: big\r\nX-A: 1\r\n\r\n".to_vec();
    message.extend_from_slice(&big(INLINE_MAX * 4));
    spool
        .accept_bytes(&mut env, b"Received: x\r\n", &message)
        .await
        .unwrap();
    let head = spool.body(&env).header_section().await.unwrap();
    assert_eq!(head, b"Received: x\r\nSubject: big\r\nX-A: 1\r\n");
}

/// The sweep while running: a body being written stays, one nobody owns
/// (a failed commit, a cancelled spill) goes.
#[tokio::test]
async fn the_running_sweep_spares_bodies_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let env = envelope(&spool);
    let mut writer = spool.body_writer(&env.id);
    writer.write(&big(FILE_WRITE)).await.unwrap();
    std::fs::write(dir.path().join(DIR).join("0000000000ABCD"), b"orphan").unwrap();
    spool.sweep_bodies().unwrap();
    assert_eq!(files(dir.path()), std::slice::from_ref(&env.id));
    drop(writer);
    assert!(files(dir.path()).is_empty());
}
