//! An in-process SMTP server whose every reply is decided by a script: the
//! upstream "smarthost" for delivery tests.
//!
//! The script is a closure called for each event of each connection (greeting,
//! EHLO, MAIL, each RCPT by index, DATA, the final dot, ...) with a [`Ctx`]
//! saying where the conversation stands; it returns an [`Action`]: a reply, a
//! delayed reply, a reply followed by closing (a 421), dropping the connection
//! (also mid-DATA after N bytes) or never answering. Every connection's command
//! lines (and which socket read brought each, to see pipelined groups) and
//! every transaction (MAIL FROM, RCPTs, the unstuffed message, the reply given
//! after the final dot) are recorded for assertions.
//!
//! Plain text only: the server cannot speak TLS. It listens on 127.0.0.1:0 and
//! stops all its threads when dropped.
//!
//! Include it with `#[path = "common/scripted.rs"] mod scripted;`.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the client just did, as the script sees it.
#[derive(Debug)]
pub enum Cmd<'a> {
    /// A new connection: the greeting is due.
    Greeting,
    Ehlo(&'a str),
    Helo(&'a str),
    StartTls,
    /// The reverse-path without the angle brackets ("" for the null sender).
    Mail(&'a str),
    /// The `index`-th RCPT of the current transaction (0-based, rejected ones included).
    Rcpt {
        index: usize,
        to: &'a str,
    },
    /// The DATA command (only asked when at least one RCPT was accepted, unless
    /// [`ScriptedServer::answer_data_without_recipients`]).
    Data,
    /// The final dot arrived; the message after dot-unstuffing, without the terminator.
    Dot(&'a [u8]),
    Rset,
    Noop,
    Quit,
    /// Any other command line.
    Other(&'a str),
}

/// The server's answer to a [`Cmd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this reply. Multi-line replies are lines separated by `\n` or `\r\n`.
    Reply(String),
    /// Wait, then send the reply.
    DelayedReply(Duration, String),
    /// Send the reply, then close the connection without reading more (a 421).
    ReplyThenClose(String),
    /// Close the connection without replying.
    Drop,
    /// Never reply; the connection stays open until the client closes it or the
    /// server stops. Whatever the client sends meanwhile is read and ignored.
    Stall,
    /// For [`Cmd::Data`]: reply 354, read this many bytes of the message, then
    /// close the connection. Elsewhere the same as [`Action::Drop`].
    DropAfterDataBytes(usize),
}

pub fn reply(text: &str) -> Action {
    Action::Reply(text.to_string())
}

/// Where the conversation stands when the script is asked.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The connection, numbered from 0 in order of acceptance.
    pub conn: usize,
    /// The current transaction's index in [`ScriptedServer::transactions`], once
    /// MAIL was received (and for MAIL itself).
    pub tx: Option<usize>,
    /// Transactions that came before this one on this connection.
    pub tx_on_conn: usize,
    /// The current transaction's reverse-path.
    pub from: Option<String>,
    /// Earlier transactions (on any connection) with the same reverse-path.
    pub earlier_from: usize,
    /// For RCPT: earlier transactions (on any connection) that had this recipient.
    pub earlier_rcpt: usize,
}

/// One MAIL FROM and what followed it.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub conn: usize,
    /// The reverse-path without brackets; "" for the null sender.
    pub from: String,
    /// The MAIL parameters (e.g. `SIZE=123 BODY=8BITMIME`).
    pub params: String,
    /// Every RCPT address in order, with the reply given (None: dropped/stalled).
    pub rcpts: Vec<(String, Option<String>)>,
    /// The reply to DATA.
    pub data_reply: Option<String>,
    /// The message as received (dot-unstuffed, without the terminator), once the
    /// final dot arrived.
    pub data: Option<Vec<u8>>,
    /// The reply given after the final dot (None: dropped, stalled, or not yet).
    pub reply: Option<String>,
    /// The connection ended before this transaction was answered or reset.
    pub aborted: bool,
}

impl Transaction {
    /// Recipients that got a 2xx to RCPT.
    pub fn accepted(&self) -> Vec<String> {
        self.rcpts
            .iter()
            .filter(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with('2')))
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn rcpt_addresses(&self) -> Vec<String> {
        self.rcpts.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The whole message was received and accepted with a 2xx.
    pub fn delivered(&self) -> bool {
        self.data.is_some() && self.reply.as_deref().is_some_and(|r| r.starts_with('2'))
    }

    /// The message was received, the reply not decided yet (e.g. a delayed reply).
    pub fn in_flight(&self) -> bool {
        self.data.is_some() && self.reply.is_none() && !self.aborted
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.data.as_deref().unwrap_or_default()).into_owned()
    }
}

/// One accepted connection.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Every command line (message content excluded), without CRLF.
    pub commands: Vec<String>,
    /// For each command, the number of the socket read that completed it:
    /// commands with the same number arrived together (a pipelined group).
    pub reads: Vec<usize>,
    /// The connection has ended (either side closed it).
    pub closed: bool,
}

impl Connection {
    /// The command verbs, upper-cased: ["EHLO", "MAIL", "RCPT", "DATA", "RSET", ...].
    pub fn verbs(&self) -> Vec<String> {
        self.commands
            .iter()
            .map(|c| c.split(' ').next().unwrap_or_default().to_ascii_uppercase())
            .collect()
    }

    /// The command verbs grouped by the socket read they arrived in:
    /// `[["EHLO"], ["MAIL", "RCPT", "DATA"], ...]` for a pipelining client.
    pub fn batches(&self) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut last = None;
        for (verb, read) in self.verbs().into_iter().zip(&self.reads) {
            match out.last_mut() {
                Some(batch) if last == Some(read) => batch.push(verb),
                _ => out.push(vec![verb]),
            }
            last = Some(read);
        }
        out
    }
}

type Script = Arc<dyn Fn(&Ctx, &Cmd<'_>) -> Action + Send + Sync>;

#[derive(Default)]
struct State {
    conns: Vec<Connection>,
    txs: Vec<Transaction>,
}

struct Shared {
    stop: AtomicBool,
    /// Ask the script about DATA even when no RCPT was accepted.
    data_without_rcpts: AtomicBool,
    script: Mutex<Script>,
    state: Mutex<State>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

pub struct ScriptedServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

/// The replies of a well-behaved server without STARTTLS: accepts everything.
pub fn standard(cmd: &Cmd<'_>) -> Action {
    match cmd {
        Cmd::Greeting => reply("220 scripted.test ESMTP ready"),
        Cmd::Ehlo(_) => reply(
            "250-scripted.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES",
        ),
        Cmd::Helo(_) => reply("250 scripted.test"),
        Cmd::StartTls => reply("454 4.7.0 TLS not available"),
        Cmd::Mail(_) => reply("250 2.1.0 Ok"),
        Cmd::Rcpt { .. } => reply("250 2.1.5 Ok"),
        Cmd::Data => reply("354 End data with <CR><LF>.<CR><LF>"),
        Cmd::Dot(_) => reply("250 2.0.0 Ok: queued as SCRIPTED"),
        Cmd::Rset | Cmd::Noop => reply("250 2.0.0 Ok"),
        Cmd::Quit => reply("221 2.0.0 Bye"),
        Cmd::Other(_) => reply("502 5.5.2 Error: command not recognized"),
    }
}

impl ScriptedServer {
    /// Starts the server on 127.0.0.1 (a free port) with `script`.
    pub fn start(script: impl Fn(&Ctx, &Cmd<'_>) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            data_without_rcpts: AtomicBool::new(false),
            script: Mutex::new(Arc::new(script)),
            state: Mutex::new(State::default()),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("scripted-accept".into())
            .spawn(move || accept_loop(s, listener))
            .expect("spawn acceptor");
        ScriptedServer {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// A server that accepts everything ([`standard`]).
    pub fn accepting() -> Self {
        Self::start(|_, cmd| standard(cmd))
    }

    /// Replaces the script; connections already open use the new one from their
    /// next command on.
    pub fn set_script(&self, script: impl Fn(&Ctx, &Cmd<'_>) -> Action + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(script);
    }

    /// From now on DATA goes to the script even when no RCPT was accepted,
    /// as RFC 2920 3.1 warns a pipelining client some servers do (by default
    /// the server refuses it with 554 itself).
    pub fn answer_data_without_recipients(&self) {
        self.shared.data_without_rcpts.store(true, Ordering::SeqCst);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn transactions(&self) -> Vec<Transaction> {
        self.shared.state().txs.clone()
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.shared.state().conns.clone()
    }

    /// Transactions whose message was received and accepted.
    pub fn delivered(&self) -> Vec<Transaction> {
        self.shared
            .state()
            .txs
            .iter()
            .filter(|t| t.delivered())
            .cloned()
            .collect()
    }

    /// Messages received whose reply is still being decided or delayed.
    pub fn in_flight(&self) -> usize {
        self.shared
            .state()
            .txs
            .iter()
            .filter(|t| t.in_flight())
            .count()
    }

    /// Waits until `f` holds for the recorded transactions; false on timeout.
    pub fn wait_until(&self, timeout: Duration, f: impl Fn(&[Transaction]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if f(&self.shared.state().txs) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until connection `conn` has carried at least `n` commands (or has
    /// ended), then returns its verbs.
    pub fn wait_verbs(&self, conn: usize, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(c) = self.shared.state().conns.get(conn) {
                if c.commands.len() >= n || c.closed || Instant::now() >= end {
                    return c.verbs();
                }
            }
            if Instant::now() >= end {
                return Vec::new();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A readable dump of everything recorded, for assertion messages.
    pub fn dump(&self) -> String {
        let st = self.shared.state();
        let mut out = String::new();
        for (i, c) in st.conns.iter().enumerate() {
            out.push_str(&format!(
                "conn {i} (closed={}): {:?}\n",
                c.closed, c.commands
            ));
        }
        for (i, t) in st.txs.iter().enumerate() {
            out.push_str(&format!(
                "tx {i}: conn={} from=<{}> rcpts={:?} data={} reply={:?} aborted={}\n",
                t.conn,
                t.from,
                t.rcpts,
                t.data.as_ref().map_or(-1, |d| d.len() as i64),
                t.reply,
                t.aborted
            ));
        }
        out
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // The acceptor is gone, so no handle is added after this.
        let handles: Vec<JoinHandle<()>> = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let conn = {
                    let mut st = shared.state();
                    st.conns.push(Connection::default());
                    st.conns.len() - 1
                };
                let s = shared.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("scripted-conn-{conn}"))
                    .spawn(move || {
                        let open = session(&s, stream, conn);
                        let mut st = s.state();
                        st.conns[conn].closed = true;
                        if let Some(i) = open {
                            st.txs[i].aborted = true;
                        }
                    })
                    .expect("spawn connection thread");
                shared
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(handle);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The socket with a read buffer; every blocking read wakes up regularly to look
/// at the stop flag.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Socket reads that returned data so far.
    reads: usize,
}

impl Wire {
    /// Reads more bytes into the buffer; false on EOF, error or stop.
    fn fill(&mut self, shared: &Shared) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if shared.stopped() {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.reads += 1;
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
    }

    /// The next line including its LF.
    fn line(&mut self, shared: &Shared) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            if !self.fill(shared) {
                return None;
            }
        }
    }

    /// Reads and discards `n` bytes (or until the peer closes).
    fn skip(&mut self, shared: &Shared, n: usize) {
        while self.buf.len() < n {
            if !self.fill(shared) {
                return;
            }
        }
        self.buf.drain(..n);
    }

    /// Reads and ignores everything until the peer closes or the server stops.
    fn stall(&mut self, shared: &Shared) {
        while self.fill(shared) {
            self.buf.clear();
        }
    }

    fn send(&mut self, text: &str) -> bool {
        let mut wire = String::new();
        for line in text.trim_end_matches(['\r', '\n']).split('\n') {
            wire.push_str(line.trim_end_matches('\r'));
            wire.push_str("\r\n");
        }
        self.stream
            .write_all(wire.as_bytes())
            .and_then(|_| self.stream.flush())
            .is_ok()
    }

    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// What became of an action.
enum Done {
    /// Replied with this text; the session goes on.
    Replied(String),
    /// The connection is over (dropped, stalled until the peer left, write failed).
    Closed,
}

/// Performs `action`. `decided` gets the reply text once it is due, before it is
/// written (so a reply the peer never read still counts as given).
fn perform(shared: &Shared, wire: &mut Wire, action: Action, decided: impl FnOnce(&str)) -> Done {
    match action {
        Action::Reply(text) => {
            decided(&text);
            if wire.send(&text) {
                Done::Replied(text)
            } else {
                Done::Closed
            }
        }
        Action::DelayedReply(d, text) => {
            let end = Instant::now() + d;
            while Instant::now() < end {
                if shared.stopped() {
                    return Done::Closed;
                }
                std::thread::sleep(Duration::from_millis(5).min(end - Instant::now()));
            }
            decided(&text);
            if wire.send(&text) {
                Done::Replied(text)
            } else {
                Done::Closed
            }
        }
        Action::ReplyThenClose(text) => {
            decided(&text);
            let _ = wire.send(&text);
            wire.close();
            Done::Closed
        }
        Action::Drop | Action::DropAfterDataBytes(_) => {
            wire.close();
            Done::Closed
        }
        Action::Stall => {
            wire.stall(shared);
            wire.close();
            Done::Closed
        }
    }
}

/// Runs one connection; returns the transaction still open when it ended.
fn session(shared: &Shared, stream: TcpStream, conn: usize) -> Option<usize> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut conversation = Conversation {
        shared,
        wire: Wire {
            stream,
            buf: Vec::new(),
            reads: 0,
        },
        conn,
        tx: None,
        tx_on_conn: 0,
    };
    let _ = conversation.converse();
    conversation.tx
}

/// One connection's side of the dialogue. Its methods return None when the
/// connection is over.
struct Conversation<'a> {
    shared: &'a Shared,
    wire: Wire,
    conn: usize,
    /// The open transaction (an index into the recorded transactions).
    tx: Option<usize>,
    /// Transactions this connection finished (or had refused) so far.
    tx_on_conn: usize,
}

impl Conversation<'_> {
    /// The command loop.
    fn converse(&mut self) -> Option<()> {
        self.answer(&Cmd::Greeting)?;
        loop {
            let raw = self.wire.line(self.shared)?;
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            {
                let mut st = self.shared.state();
                st.conns[self.conn].commands.push(line.clone());
                st.conns[self.conn].reads.push(self.wire.reads);
            }
            self.command(&line)?;
        }
    }

    fn command(&mut self, line: &str) -> Option<()> {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let upper = line.to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                self.end_tx();
                let cmd = if verb == "EHLO" {
                    Cmd::Ehlo(&arg)
                } else {
                    Cmd::Helo(&arg)
                };
                self.answer(&cmd)?;
            }
            "STARTTLS" => {
                self.answer(&Cmd::StartTls)?;
            }
            "MAIL" if upper.starts_with("MAIL FROM:") => self.mail(line)?,
            "RCPT" if upper.starts_with("RCPT TO:") => self.rcpt(line)?,
            "DATA" => self.data()?,
            "RSET" => {
                self.end_tx();
                self.answer(&Cmd::Rset)?;
            }
            "NOOP" => {
                self.answer(&Cmd::Noop)?;
            }
            "QUIT" => {
                let _ = self.answer(&Cmd::Quit);
                self.wire.close();
                return None;
            }
            _ => {
                self.answer(&Cmd::Other(line))?;
            }
        }
        Some(())
    }

    /// Closes the open transaction, if any, counting it as this connection's.
    fn end_tx(&mut self) {
        if self.tx.take().is_some() {
            self.tx_on_conn += 1;
        }
    }

    fn ctx(&self, rcpt: Option<&str>) -> Ctx {
        let st = self.shared.state();
        let from = self.tx.map(|i| st.txs[i].from.clone());
        let before = self.tx.unwrap_or(st.txs.len());
        let earlier = &st.txs[..before];
        Ctx {
            conn: self.conn,
            tx: self.tx,
            tx_on_conn: self.tx_on_conn,
            earlier_from: from
                .as_ref()
                .map_or(0, |f| earlier.iter().filter(|t| &t.from == f).count()),
            earlier_rcpt: rcpt.map_or(0, |r| {
                earlier
                    .iter()
                    .filter(|t| t.rcpts.iter().any(|(a, _)| a == r))
                    .count()
            }),
            from,
        }
    }

    fn ask(&self, cmd: &Cmd<'_>) -> Action {
        let c = self.ctx(None);
        (self.shared.script())(&c, cmd)
    }

    /// Performs the script's answer to `cmd`.
    fn answer(&mut self, cmd: &Cmd<'_>) -> Option<String> {
        let c = self.ctx(None);
        self.answer_in(c, cmd)
    }

    fn answer_in(&mut self, c: Ctx, cmd: &Cmd<'_>) -> Option<String> {
        let action = (self.shared.script())(&c, cmd);
        match perform(self.shared, &mut self.wire, action, |_| {}) {
            Done::Replied(r) => Some(r),
            Done::Closed => None,
        }
    }

    /// Answers without asking the script, as a server answers a command out
    /// of sequence.
    fn refuse(&mut self, reply: &str) -> Option<()> {
        self.wire.send(reply).then_some(())
    }

    fn mail(&mut self, line: &str) -> Option<()> {
        if self.tx.is_some() {
            return self.refuse("503 5.5.1 Error: nested MAIL command");
        }
        let (path, params) = split_path(line["MAIL FROM:".len()..].trim_start());
        let index = {
            let mut st = self.shared.state();
            st.txs.push(Transaction {
                conn: self.conn,
                from: path.clone(),
                params,
                ..Transaction::default()
            });
            st.txs.len() - 1
        };
        self.tx = Some(index);
        let r = self.answer(&Cmd::Mail(&path))?;
        if !r.starts_with('2') {
            // Refused: no transaction was opened.
            self.end_tx();
        }
        Some(())
    }

    fn rcpt(&mut self, line: &str) -> Option<()> {
        let Some(i) = self.tx else {
            return self.refuse("503 5.5.1 Error: need MAIL command");
        };
        let (to, _) = split_path(line["RCPT TO:".len()..].trim_start());
        let index = {
            let mut st = self.shared.state();
            st.txs[i].rcpts.push((to.clone(), None));
            st.txs[i].rcpts.len() - 1
        };
        let cmd = Cmd::Rcpt { index, to: &to };
        let c = self.ctx(Some(&to));
        let r = self.answer_in(c, &cmd)?;
        self.shared.state().txs[i].rcpts[index].1 = Some(r);
        Some(())
    }

    fn data(&mut self) -> Option<()> {
        let shared = self.shared;
        let Some(i) = self.tx else {
            return self.refuse("503 5.5.1 Error: need RCPT command");
        };
        if shared.state().txs[i].accepted().is_empty()
            && !shared.data_without_rcpts.load(Ordering::SeqCst)
        {
            return self.refuse("554 5.5.1 Error: no valid recipients");
        }
        let action = self.ask(&Cmd::Data);
        if let Action::DropAfterDataBytes(n) = action {
            shared.state().txs[i].data_reply = Some("354 go ahead".into());
            if self.wire.send("354 go ahead") {
                self.wire.skip(shared, n);
            }
            self.wire.close();
            return None;
        }
        let r = match perform(shared, &mut self.wire, action, |_| {}) {
            Done::Replied(r) => r,
            Done::Closed => return None,
        };
        shared.state().txs[i].data_reply = Some(r.clone());
        if !r.starts_with("354") {
            self.end_tx();
            return Some(());
        }
        self.message(i)
    }

    /// Reads transaction `i`'s message and answers its dot.
    fn message(&mut self, i: usize) -> Option<()> {
        let shared = self.shared;
        let message = read_message(shared, &mut self.wire)?;
        shared.state().txs[i].data = Some(message.clone());
        let action = self.ask(&Cmd::Dot(&message));
        let decided = |r: &str| shared.state().txs[i].reply = Some(r.to_string());
        let done = perform(shared, &mut self.wire, action, decided);
        self.end_tx();
        if let Done::Closed = done {
            // Answered or not, the transaction is over; unanswered means aborted.
            let mut st = shared.state();
            st.txs[i].aborted = st.txs[i].reply.is_none();
            return None;
        }
        Some(())
    }
}

/// `<path> params` → (path without brackets, params).
fn split_path(s: &str) -> (String, String) {
    if let Some(rest) = s.strip_prefix('<') {
        if let Some(end) = rest.find('>') {
            return (rest[..end].to_string(), rest[end + 1..].trim().to_string());
        }
    }
    match s.split_once(' ') {
        Some((p, rest)) => (p.to_string(), rest.trim().to_string()),
        None => (s.to_string(), String::new()),
    }
}

/// Reads message lines until the CRLF.CRLF terminator, undoing dot-stuffing.
/// None if the connection ended first.
fn read_message(shared: &Shared, wire: &mut Wire) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let line = wire.line(shared)?;
        if line == b".\r\n" {
            return Some(message);
        }
        match line.strip_prefix(b".") {
            Some(rest) => message.extend_from_slice(rest),
            None => message.extend_from_slice(&line),
        }
    }
}
