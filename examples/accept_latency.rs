//! Measures accept latency, the time from the end of DATA (the final `.`) to
//! the relay's `250`, which is how long a submitting program waits on the
//! relay's durability. The benchmark (benches/relay_vs_postfix.py) runs it
//! against Postfix and smarthost in turn:
//!
//!     cargo run --release --example accept_latency -- 127.0.0.1:2525 20 1000 2048
//!
//! Arguments: address, sessions, messages in all, message size in bytes. Each
//! session runs lock-step (no PIPELINING) so every reply is timed on its own.
//! Prints one line: `messages=N seconds=S p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [addr, sessions, messages, size] => {
            match (sessions.parse(), messages.parse(), size.parse()) {
                (Ok(s), Ok(m), Ok(z)) if s > 0 => Some((addr.clone(), s, m, z)),
                _ => None,
            }
        }
        _ => None,
    };
    let Some((addr, sessions, messages, size)) = parsed else {
        eprintln!("usage: accept_latency ADDRESS SESSIONS MESSAGES SIZE");
        return ExitCode::from(64);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("accept_latency: {e}");
            return ExitCode::from(71);
        }
    };
    match runtime.block_on(run(addr, sessions, messages, size)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accept_latency: {e}");
            ExitCode::from(69)
        }
    }
}

async fn run(addr: String, sessions: usize, messages: usize, size: usize) -> Result<(), Error> {
    let body = Arc::new(message(size));
    let left = Arc::new(AtomicUsize::new(messages));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..sessions {
        let (addr, body, left) = (addr.clone(), body.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            session(&addr, n, &body, &left).await
        }));
    }
    let mut samples = Vec::with_capacity(messages);
    for t in tasks {
        samples.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    samples.sort();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        // Nearest rank: the smallest sample with at least p of them at or below.
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1000.0
    };
    println!(
        "messages={} seconds={seconds:.3} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// A plain 7-bit message of `size` bytes with CRLF lines and the final dot.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: <bench@example.com>\r\nTo: <sink@example.net>\r\nSubject: latency\r\n\r\n".to_vec();
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn session(
    addr: &str,
    n: usize,
    body: &[u8],
    left: &AtomicUsize,
) -> Result<Vec<Duration>, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    expect(&mut r, &mut line, 220).await?;
    w.write_all(b"EHLO latency.test\r\n").await?;
    expect(&mut r, &mut line, 250).await?;
    let mut samples = Vec::new();
    // Sessions take messages from a shared count so the total is exact.
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
        .is_ok()
    {
        w.write_all(b"MAIL FROM:<bench@example.com>\r\n").await?;
        expect(&mut r, &mut line, 250).await?;
        w.write_all(format!("RCPT TO:<sink{n}@example.net>\r\n").as_bytes())
            .await?;
        expect(&mut r, &mut line, 250).await?;
        w.write_all(b"DATA\r\n").await?;
        expect(&mut r, &mut line, 354).await?;
        let (head, dot) = body.split_at(body.len() - 3);
        w.write_all(head).await?;
        let t = Instant::now();
        w.write_all(dot).await?;
        expect(&mut r, &mut line, 250).await?;
        samples.push(t.elapsed());
    }
    w.write_all(b"QUIT\r\n").await?;
    Ok(samples)
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    line: &mut String,
    code: u16,
) -> Result<(), Error> {
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            return Err("connection closed".into());
        }
        let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if got != code {
            return Err(format!("expected {code}, got {}", line.trim_end()).into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
