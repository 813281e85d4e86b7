//! The `directory` route: delivery writes each message into a directory as
//! `<queue id>.<n>.eml` (the exact queued bytes) plus `<queue id>.<n>.json` (the
//! envelope). It serves the quick start and end-to-end tests of the pipeline.
//!
//! Files are written to a temporary name, fsynced, renamed and the directory
//! fsynced, so a reader never sees a half-written message and "sent" means on disk.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::spool::BodyReader;

#[derive(Serialize)]
struct EnvelopeFile<'a> {
    queue_id: &'a str,
    sender: &'a str,
    recipients: &'a [&'a str],
}

/// Writes the message (read from `body` a chunk at a time) and its envelope.
/// The file work runs on tokio's blocking threads, never on a runtime worker.
pub async fn deliver(
    dir: &Path,
    queue_id: &str,
    sender: &str,
    recipients: &[&str],
    mut body: BodyReader,
) -> std::io::Result<String> {
    tokio::fs::create_dir_all(dir).await?;
    let stem = free_stem(dir, queue_id).await;
    let meta = serde_json::to_vec_pretty(&EnvelopeFile {
        queue_id,
        sender,
        recipients,
    })
    .map_err(std::io::Error::other)?;
    let (tmp, mut f) = temporary(dir, &format!("{stem}.json")).await?;
    f.write_all(&meta).await?;
    publish(f, &tmp, dir, &format!("{stem}.json")).await?;
    let (tmp, mut f) = temporary(dir, &format!("{stem}.eml")).await?;
    while let Some(chunk) = body.next().await.map_err(std::io::Error::other)? {
        f.write_all(&chunk).await?;
    }
    publish(f, &tmp, dir, &format!("{stem}.eml")).await?;
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::durable::sync_dir(&owned))
        .await
        .map_err(std::io::Error::other)??;
    Ok(format!(
        "250 written to {}",
        dir.join(format!("{stem}.eml")).display()
    ))
}

/// Recipients delivered in different attempts get different files.
async fn free_stem(dir: &Path, queue_id: &str) -> String {
    let mut n = 0u32;
    loop {
        let stem = format!("{queue_id}.{n}");
        if !tokio::fs::try_exists(dir.join(format!("{stem}.eml")))
            .await
            .unwrap_or(false)
        {
            return stem;
        }
        n += 1;
    }
}

async fn temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, tokio::fs::File)> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let f = tokio::fs::File::create(&tmp).await?;
    Ok((tmp, f))
}

async fn publish(
    mut f: tokio::fs::File,
    tmp: &Path,
    dir: &Path,
    name: &str,
) -> std::io::Result<()> {
    f.flush().await?;
    f.sync_all().await?;
    tokio::fs::rename(tmp, dir.join(name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_message_and_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let body = || BodyReader::from_bytes(b"Subject: s\r\n\r\nbody\r\n".to_vec());
        deliver(&out, "ABC", "a@x", &["b@y"], body()).await.unwrap();
        deliver(&out, "ABC", "a@x", &["c@y"], body()).await.unwrap();
        assert_eq!(
            std::fs::read(out.join("ABC.0.eml")).unwrap(),
            b"Subject: s\r\n\r\nbody\r\n"
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("ABC.1.json")).unwrap()).unwrap();
        assert_eq!(meta["recipients"][0], "c@y");
        assert_eq!(meta["sender"], "a@x");
    }
}
