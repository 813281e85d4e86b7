//! A steady stream of submissions for the crash tests: submitter threads that
//! send messages with unique tokens over short-lived connections and record
//! every acknowledgement, a client that never panics (the relay may be killed
//! under it at any byte), and a seeded random number generator.
//!
//! Include it with `#[path = "common/stream.rs"] mod stream;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::common::dot_stuff;

/// xorshift64*: deterministic, no crates.
pub struct Rng(pub u64);

impl Rng {
    /// A seed from `var` if set (decimal or 0x-hex), else from the clock.
    pub fn seed_from_env(var: &str) -> u64 {
        let parsed = std::env::var(var).ok().and_then(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        });
        parsed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        }) | 1
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One message to submit.
pub struct Submission {
    pub from: String,
    pub rcpts: Vec<String>,
    /// CRLF lines, not yet dot-stuffed.
    pub message: String,
}

/// A submission client that never panics: any failure ends the connection.
pub struct Submit {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Submit {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Submit> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        // While the relay is down, a connect to its (ephemeral-range) port can
        // connect to itself and would then hold the port the relay must rebind.
        if s.local_addr()? == addr {
            return Err(std::io::Error::other("connected to itself"));
        }
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let writer = s.try_clone()?;
        let mut c = Submit {
            reader: BufReader::new(s),
            writer,
        };
        c.expect("", "220")?;
        c.expect("EHLO submitter.test\r\n", "250")?;
        Ok(c)
    }

    fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let last = line.as_bytes().get(3) != Some(&b'-');
            all.push_str(line.trim_end());
            if last {
                return Ok(all);
            }
            all.push('\n');
        }
    }

    fn expect(&mut self, line: &str, code: &str) -> std::io::Result<String> {
        if !line.is_empty() {
            self.writer.write_all(line.as_bytes())?;
        }
        let r = self.reply()?;
        if r.starts_with(code) {
            Ok(r)
        } else {
            Err(std::io::Error::other(format!("{line:?}: {r}")))
        }
    }

    /// One message; Ok(final reply) once the server answered the final dot.
    pub fn send(&mut self, s: &Submission) -> std::io::Result<String> {
        self.expect(&format!("MAIL FROM:<{}>\r\n", s.from), "250")?;
        for r in &s.rcpts {
            self.expect(&format!("RCPT TO:<{r}>\r\n"), "250")?;
        }
        self.expect("DATA\r\n", "354")?;
        self.writer.write_all(&dot_stuff(s.message.as_bytes()))?;
        self.reply()
    }

    pub fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
    }
}

#[derive(Default)]
pub struct Record {
    /// token → queue id, for every 250.
    pub acked: BTreeMap<String, String>,
    /// Explicit refusals of the final dot (should not happen).
    pub refused: Vec<(String, String)>,
    /// Submissions cut off before a reply (may or may not arrive).
    pub unknown: usize,
}

/// What a submitter sends for a token (`tok-<thread>-<seq>`).
pub type Plan = Arc<dyn Fn(&str) -> Submission + Send + Sync>;

pub struct Submitters {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    threads: Vec<JoinHandle<()>>,
}

impl Submitters {
    /// `n` threads, each sending a few messages a connection, then a fresh one.
    pub fn start(addr: SocketAddr, n: usize, plan: Plan) -> Submitters {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let threads = (0..n)
            .map(|t| {
                let (stop, paused) = (stop.clone(), paused.clone());
                let (record, plan) = (record.clone(), plan.clone());
                std::thread::spawn(move || submitter(t, addr, [&stop, &paused], &record, &*plan))
            })
            .collect();
        Submitters {
            stop,
            paused,
            record,
            threads,
        }
    }

    /// Holds the stream back (between messages) while `on`, e.g. to keep a
    /// backlog bounded in a long run.
    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
    }

    pub fn acked(&self) -> usize {
        self.record.lock().unwrap().acked.len()
    }

    pub fn finish(mut self) -> Record {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("submitter panicked");
        }
        std::mem::take(&mut *self.record.lock().unwrap())
    }
}

impl Drop for Submitters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn submitter(
    t: usize,
    addr: SocketAddr,
    [stop, paused]: [&AtomicBool; 2],
    record: &Mutex<Record>,
    plan: &(dyn Fn(&str) -> Submission + Send + Sync),
) {
    let mut seq = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let mut c = match Submit::connect(addr) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        // A few messages per connection, then a fresh one: both paths get killed.
        for _ in 0..5 {
            while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let token = format!("tok-{t}-{seq}");
            seq += 1;
            match c.send(&plan(&token)) {
                Ok(r) => match r.strip_prefix("250 2.0.0 Ok: queued as ") {
                    Some(id) => {
                        record
                            .lock()
                            .unwrap()
                            .acked
                            .insert(token, id.trim().to_string());
                    }
                    None => record.lock().unwrap().refused.push((token, r)),
                },
                Err(_) => {
                    record.lock().unwrap().unknown += 1;
                    break;
                }
            }
        }
        c.quit();
    }
}
