//! The `directory` route: delivery writes each message into a directory as
//! `<queue id>.<n>.eml` (the exact queued bytes) plus `<queue id>.<n>.json` (the
//! envelope). It serves the quick start and end-to-end tests of the pipeline.
//!
//! Files are written to a temporary name, fsynced, renamed and the directory
//! fsynced, so a reader never sees a half-written message and "sent" means on disk.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::spool::BodyReader;

#[derive(Serialize)]
struct EnvelopeFile<'a> {
    queue_id: &'a str,
    sender: &'a str,
    recipients: &'a [&'a str],
}

/// Writes the message (read from `body` a chunk at a time) and its envelope.
pub async fn deliver(
    dir: &Path,
    queue_id: &str,
    sender: &str,
    recipients: &[&str],
    mut body: BodyReader,
) -> std::io::Result<String> {
    fs::create_dir_all(dir)?;
    // Recipients delivered in different attempts get different files.
    let mut n = 0u32;
    let stem = loop {
        let stem = format!("{queue_id}.{n}");
        if !dir.join(format!("{stem}.eml")).exists() {
            break stem;
        }
        n += 1;
    };
    let meta = serde_json::to_vec_pretty(&EnvelopeFile {
        queue_id,
        sender,
        recipients,
    })
    .map_err(std::io::Error::other)?;
    let (tmp, mut f) = temporary(dir, &format!("{stem}.json"))?;
    f.write_all(&meta)?;
    publish(f, &tmp, dir, &format!("{stem}.json"))?;
    let (tmp, mut f) = temporary(dir, &format!("{stem}.eml"))?;
    while let Some(chunk) = body.next().await.map_err(std::io::Error::other)? {
        f.write_all(&chunk)?;
    }
    publish(f, &tmp, dir, &format!("{stem}.eml"))?;
    crate::durable::sync_dir(dir)?;
    Ok(format!(
        "250 written to {}",
        dir.join(format!("{stem}.eml")).display()
    ))
}

fn temporary(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let f = File::create(&tmp)?;
    Ok((tmp, f))
}

fn publish(f: File, tmp: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    f.sync_all()?;
    fs::rename(tmp, dir.join(name))
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
            fs::read(out.join("ABC.0.eml")).unwrap(),
            b"Subject: s\r\n\r\nbody\r\n"
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("ABC.1.json")).unwrap()).unwrap();
        assert_eq!(meta["recipients"][0], "c@y");
        assert_eq!(meta["sender"], "a@x");
    }
}
