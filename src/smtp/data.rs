//! Streaming receiver for the DATA phase (RFC 5321 4.1.1.4, 4.5.2).
//!
//! Framing is deliberately strict: every CR must be followed by LF and every
//! LF preceded by CR. Receivers that accept a bare LF or CR as a line ending
//! disagree with other MTAs about where a message ends, which is exactly
//! what SMTP smuggling exploits, so any such byte aborts the transfer instead
//! of being guessed at.

/// Limits for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unstuffed bytes kept, CRLFs included.
    pub max_size: usize,
    /// Octets per line as received (before unstuffing), excluding CRLF.
    pub max_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("message size exceeds fixed maximum message size")]
    TooLarge,
    #[error("message has a line longer than the maximum line length")]
    LineTooLong,
    #[error("message contains NUL bytes")]
    Nul,
    #[error("bare CR or LF in message data")]
    BareLineEnding,
}

impl DataError {
    /// (code, enhanced status, text). After `BareLineEnding` the session must
    /// close the connection: the client's idea of the framing is unknowable.
    pub fn reply(&self) -> (u16, &'static str, &'static str) {
        match self {
            Self::TooLarge => (
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            Self::LineTooLong => (554, "5.6.0", "Message has a line longer than allowed"),
            Self::Nul => (554, "5.6.0", "Message contains NUL bytes"),
            Self::BareLineEnding => (
                521,
                "5.5.2",
                "Bare CR or LF in message data; lines must end with CRLF",
            ),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// All input consumed, the terminator not yet seen.
    NeedMore,
    /// The terminator ended at input[..consumed]; bytes after it belong to the next command (pipelining).
    Done { consumed: usize },
    /// A bare CR or bare LF was seen: framing is ambiguous (SMTP smuggling),
    /// the session must reply DataError::BareLineEnding and close the connection
    /// without reading further.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Receiving,
    Done,
    Aborted,
}

#[derive(Debug)]
pub struct DataReceiver {
    limits: Limits,
    /// Unstuffed bytes the caller has not taken yet.
    buf: Vec<u8>,
    /// Unstuffed bytes kept in all, taken or not.
    kept: usize,
    error: Option<DataError>,
    phase: Phase,
    /// The DATA line's own CRLF counts as the line before the first one.
    at_line_start: bool,
    /// The current line so far is exactly "." (a candidate terminator).
    dot_only: bool,
    /// A CR ended the previous chunk or byte; only LF may follow.
    pending_cr: bool,
    line_len: usize,
}

impl DataReceiver {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            kept: 0,
            error: None,
            phase: Phase::Receiving,
            at_line_start: true,
            dot_only: false,
            pending_cr: false,
            line_len: 0,
        }
    }

    /// Feeding after `Done` consumes nothing; after `Abort` it keeps aborting.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        match self.phase {
            Phase::Done => return Feed::Done { consumed: 0 },
            Phase::Aborted => return Feed::Abort,
            Phase::Receiving => {}
        }
        let mut rest = input;
        while let Some((&first, tail)) = rest.split_first() {
            if self.pending_cr {
                if first != b'\n' {
                    return self.abort();
                }
                rest = tail;
                self.pending_cr = false;
                if self.dot_only {
                    self.phase = Phase::Done;
                    return Feed::Done {
                        consumed: input.len() - rest.len(),
                    };
                }
                self.store(b"\r\n");
                self.at_line_start = true;
                self.line_len = 0;
                continue;
            }
            if self.at_line_start {
                self.at_line_start = false;
                self.dot_only = first == b'.';
                if self.dot_only {
                    // Either dot-stuffing or the terminator: the dot is never kept.
                    rest = tail;
                    self.grow_line(1);
                    continue;
                }
            }
            let run = find_special(rest).unwrap_or(rest.len());
            if let Some((text, after)) = rest.split_at_checked(run).filter(|_| run > 0) {
                self.dot_only = false;
                // The limit this run crosses first, byte by byte, is the error,
                // however the client's bytes were split into reads.
                let line_room = self.limits.max_line.saturating_sub(self.line_len);
                let size_room = self.limits.max_size.saturating_sub(self.kept);
                if size_room < line_room {
                    self.store(text);
                    self.grow_line(run);
                } else {
                    self.grow_line(run);
                    self.store(text);
                }
                rest = after;
                continue;
            }
            rest = tail;
            match first {
                b'\r' => self.pending_cr = true,
                b'\n' => return self.abort(),
                _ => {
                    self.dot_only = false;
                    self.grow_line(1);
                    self.fail(DataError::Nul);
                }
            }
        }
        Feed::NeedMore
    }

    /// The unstuffed bytes received since the last [`DataReceiver::taken`]:
    /// the caller stores them as they come, so a message is never held whole.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The caller has stored [`DataReceiver::pending`].
    pub fn taken(&mut self) {
        self.buf.clear();
    }

    /// After Feed::Done: the rest of the message (what was not taken), or
    /// the first error seen. Called before
    /// the terminator was seen it reports `BareLineEnding`, because a message
    /// whose end was never framed must not be accepted either.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match (self.phase, self.error) {
            (Phase::Done, None) => Ok(self.buf),
            (Phase::Done, Some(e)) => Err(e),
            _ => Err(DataError::BareLineEnding),
        }
    }

    /// Whether the message is refused already (it is then read to its end
    /// and nothing of it kept).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Bytes kept so far; 0 once an error has dropped the message.
    pub fn received(&self) -> usize {
        if self.error.is_some() {
            0
        } else {
            self.kept
        }
    }

    fn abort(&mut self) -> Feed {
        self.phase = Phase::Aborted;
        self.error = Some(DataError::BareLineEnding);
        self.buf = Vec::new();
        Feed::Abort
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
            // Drop rather than clear: the point is to give the memory back.
            self.buf = Vec::new();
        }
    }

    fn grow_line(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len > self.limits.max_line {
            self.fail(DataError::LineTooLong);
        }
    }

    fn store(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.kept.saturating_add(bytes.len()) > self.limits.max_size {
            self.fail(DataError::TooLarge);
        } else {
            self.kept += bytes.len();
            self.buf.extend_from_slice(bytes);
        }
    }
}

/// Index of the first CR, LF or NUL: this scan is nearly the whole cost of
/// receiving, and a per-byte loop halves throughput.
fn find_special(hay: &[u8]) -> Option<usize> {
    memchr::memchr3(b'\r', b'\n', 0, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Limits = limits(1 << 20, 998);

    const fn limits(max_size: usize, max_line: usize) -> Limits {
        Limits { max_size, max_line }
    }

    fn done(consumed: usize) -> Feed {
        Feed::Done { consumed }
    }

    /// Feeds `chunks` in order; returns the result of the last feed and the receiver.
    fn run(limits: Limits, chunks: &[&[u8]]) -> (Feed, DataReceiver) {
        let mut rx = DataReceiver::new(limits);
        let mut last = Feed::NeedMore;
        for c in chunks {
            last = rx.feed(c);
            if last != Feed::NeedMore {
                break;
            }
        }
        (last, rx)
    }

    fn whole(input: &[u8]) -> (Feed, Result<Vec<u8>, DataError>) {
        let (f, rx) = run(BIG, &[input]);
        (f, rx.finish())
    }

    #[test]
    fn basic_and_unstuffing() {
        assert_eq!(whole(b".\r\n"), (done(3), Ok(vec![])));
        assert_eq!(whole(b"a\r\n.\r\n"), (done(6), Ok(b"a\r\n".to_vec())));
        let msg = b"Subject: x\r\n\r\n..x\r\n..\r\n...\r\nend.\r\n.\r\n";
        let want = b"Subject: x\r\n\r\n.x\r\n.\r\n..\r\nend.\r\n".to_vec();
        assert_eq!(whole(msg), (done(msg.len()), Ok(want)));
        // ". " and ".x" are not terminators, they are stuffed lines.
        assert_eq!(whole(b". \r\n.x\r\n.\r\n").1, Ok(b" \r\nx\r\n".to_vec()));
    }

    #[test]
    fn pipelined_bytes_are_not_consumed() {
        let input = b"hi\r\n.\r\nQUIT\r\n";
        let (f, rx) = run(BIG, &[input]);
        assert_eq!(f, Feed::Done { consumed: 7 });
        assert_eq!(rx.finish(), Ok(b"hi\r\n".to_vec()));
        let (f, _) = run(BIG, &[b"hi\r\n.", b"\r\nRSET\r\n"]);
        assert_eq!(f, Feed::Done { consumed: 2 });
    }

    #[test]
    fn every_split_of_the_terminator() {
        let input: &[u8] = b"a\r\n..b\r\n\r\n.\r\nMAIL";
        let want = b"a\r\n.b\r\n\r\n".to_vec();
        let end = input.len() - 4;
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let mut rx = DataReceiver::new(BIG);
            let mut f = rx.feed(a);
            if f == Feed::NeedMore {
                f = rx.feed(b);
                assert_eq!(f, done(end - cut), "cut {cut}");
            } else {
                assert_eq!(f, Feed::Done { consumed: end }, "cut {cut}");
            }
            assert_eq!(rx.finish(), Ok(want.clone()), "cut {cut}");
        }
        let mut rx = DataReceiver::new(BIG);
        for (i, byte) in input.iter().enumerate() {
            match rx.feed(std::slice::from_ref(byte)) {
                Feed::NeedMore => assert!(i + 1 < end),
                f => {
                    assert_eq!((i + 1, f), (end, Feed::Done { consumed: 1 }));
                    break;
                }
            }
        }
        assert_eq!(rx.finish(), Ok(want));
    }

    #[test]
    fn smuggling_probes_abort() {
        let probes: &[&[u8]] = &[
            b"a\n.\nMAIL",
            b"a\r.\rMAIL",
            b"a\r\n.\nMAIL",
            b"a\n.\r\nMAIL",
            b"\n.\r\n",
            b"a\r\n.\rMAIL",
            b"a\r\n.\r\r\n",
            b"a\rb\r\n.\r\n",
            b"a\nb\r\n.\r\n",
            b"\r\r\n.\r\n",
        ];
        for p in probes {
            let aborted = (Feed::Abort, Err(DataError::BareLineEnding));
            assert_eq!(whole(p), aborted, "{p:?}");
            // Whatever the chunking, no probe may end the message early.
            for cut in 0..=p.len() {
                let (a, b) = p.split_at(cut);
                assert_eq!(run(BIG, &[a, b]).0, Feed::Abort, "{p:?} cut {cut}");
            }
        }
        let mut rx = DataReceiver::new(BIG);
        assert_eq!(rx.feed(b"x\n"), Feed::Abort);
        assert_eq!(rx.feed(b".\r\n"), Feed::Abort);
        // A NUL in front of the dot makes it an ordinary line, not an end.
        let (f, rx) = run(BIG, &[b"a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n"]);
        assert_eq!(f, Feed::NeedMore);
        assert_eq!(rx.finish(), Err(DataError::BareLineEnding));
        let (f, rx) = run(BIG, &[b"a\r\n\x00.\r\n", b".\r\n"]);
        assert_eq!(f, Feed::Done { consumed: 3 });
        assert_eq!(rx.finish(), Err(DataError::Nul));
    }

    #[test]
    fn cr_at_chunk_end_then_lf() {
        let (f, rx) = run(BIG, &[b"a\r", b"\nb\r", b"\n.\r", b"\n"]);
        assert_eq!(f, Feed::Done { consumed: 1 });
        assert_eq!(rx.finish(), Ok(b"a\r\nb\r\n".to_vec()));
        assert_eq!(run(BIG, &[b"a\r", b"b"]).0, Feed::Abort);
        assert_eq!(run(BIG, &[b"a\r", b"\r"]).0, Feed::Abort);
    }

    #[test]
    fn size_limit_boundary() {
        // "abc\r\n" is 5 kept bytes; the stuffing dot does not count.
        let lim = |max_size| limits(max_size, 998);
        let (f, rx) = run(lim(5), &[b".abc\r\n.\r\n"]);
        assert_eq!(f, Feed::Done { consumed: 9 });
        assert_eq!(rx.finish(), Ok(b"abc\r\n".to_vec()));
        let (f, rx) = run(lim(4), &[b"abc\r\n", b"more\r\n", b".\r\n"]);
        assert_eq!(f, Feed::Done { consumed: 3 });
        assert_eq!(rx.received(), 0);
        assert_eq!(rx.finish(), Err(DataError::TooLarge));
        assert_eq!(run(lim(0), &[b".\r\n"]).1.finish(), Ok(vec![]));
    }

    #[test]
    fn line_limit_boundary() {
        let lim = limits(1 << 20, 4);
        let result = |input: &[u8]| run(lim, &[input]).1.finish();
        assert_eq!(result(b"abcd\r\n.\r\n"), Ok(b"abcd\r\n".to_vec()));
        assert_eq!(result(b"..ab\r\n.\r\n"), Ok(b".ab\r\n".to_vec()));
        // Measured before unstuffing: "..abc" is five octets on the wire.
        assert_eq!(result(b"..abc\r\n.\r\n"), Err(DataError::LineTooLong));
        assert_eq!(result(b"abcde\r\n.\r\n"), Err(DataError::LineTooLong));
        let (f, rx) = run(lim, &[b"ab", b"cde\r\nx\r\n", b".\r\n"]);
        assert_eq!(f, Feed::Done { consumed: 3 });
        assert_eq!(rx.finish(), Err(DataError::LineTooLong));
        // Errors do not change framing: bare line endings still abort.
        assert_eq!(run(lim, &[b"abcdefgh\r\nx\ny"]).0, Feed::Abort);
    }

    #[test]
    fn first_limit_crossed_wins_whatever_the_reads() {
        // 4 bytes of room in the message, 8 in the line: the size goes first.
        let lim = limits(4, 8);
        let input: &[u8] = b"abcdefghijk\r\n.\r\n";
        for cut in 0..input.len() {
            let (a, b) = input.split_at(cut);
            let (f, rx) = run(lim, &[a, b]);
            assert!(matches!(f, Feed::Done { .. }), "cut {cut}");
            assert_eq!(rx.finish(), Err(DataError::TooLarge), "cut {cut}");
        }
        let result = |input: &[u8]| run(limits(8, 4), &[input]).1.finish();
        assert_eq!(result(b"abcdefghijk\r\n.\r\n"), Err(DataError::LineTooLong));
        // The same byte crosses both: the line limit is checked first.
        assert_eq!(
            result(b"abcde\r\n.\r\n").unwrap_err(),
            DataError::LineTooLong
        );
        assert_eq!(
            run(limits(4, 4), &[b"abcde\r\n.\r\n"]).1.finish(),
            Err(DataError::LineTooLong)
        );
    }

    #[test]
    fn nul_is_an_error_but_framing_continues() {
        let (f, rx) = run(BIG, &[b"a\x00b\r\n.x\r\n.\r\nQUIT"]);
        assert_eq!(f, Feed::Done { consumed: 12 });
        assert_eq!(rx.finish(), Err(DataError::Nul));
        // First error wins.
        let result = |input: &[u8]| run(limits(1 << 20, 2), &[input]).1.finish();
        assert_eq!(result(b"\x00abc\r\n.\r\n"), Err(DataError::Nul));
        assert_eq!(result(b"abc\x00\r\n.\r\n"), Err(DataError::LineTooLong));
    }

    #[test]
    fn finish_before_done_and_feed_after() {
        let unfinished = run(BIG, &[b"abc\r\n"]).1.finish();
        assert_eq!(unfinished, Err(DataError::BareLineEnding));
        let mut rx = DataReceiver::new(BIG);
        assert_eq!(rx.feed(b".\r\n"), Feed::Done { consumed: 3 });
        assert_eq!(rx.feed(b"more"), Feed::Done { consumed: 0 });
        assert_eq!(rx.feed(b""), Feed::Done { consumed: 0 });
        assert_eq!(DataReceiver::new(BIG).feed(b""), Feed::NeedMore);
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n.max(1)) as usize
        }
    }

    #[test]
    fn find_special_matches_naive() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..64 {
            for _ in 0..50 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| match rng.below(10) {
                        0 => [0x0d, 0x0a, 0, 0x8d, 0x0c, 0xff, 0x01, 0x8a][rng.below(8)],
                        _ => b'z',
                    })
                    .collect();
                let naive = hay.iter().position(|&b| matches!(b, b'\r' | b'\n' | 0));
                assert_eq!(find_special(&hay), naive, "{hay:?}");
            }
        }
    }

    /// Dot-stuffed random CRLF messages come back intact whatever the
    /// chunking; the same with one bare CR or LF inserted must abort.
    #[test]
    fn random_messages_round_trip() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..1000 {
            let mut message = Vec::new();
            for _ in 0..rng.below(30) {
                let mut line = Vec::new();
                if rng.below(3) == 0 {
                    line.extend(std::iter::repeat_n(b'.', 1 + rng.below(3)));
                }
                for _ in 0..rng.below(120) {
                    // Any byte but CR, LF and NUL, biased towards dots.
                    let b = [b'.', rng.next() as u8][rng.below(4).min(1)];
                    line.push(if matches!(b, b'\r' | b'\n' | 0) {
                        b'x'
                    } else {
                        b
                    });
                }
                message.extend_from_slice(&line);
                message.extend_from_slice(b"\r\n");
            }
            let mut wire = Vec::new();
            for line in message.split_inclusive(|&b| b == b'\n') {
                if line.first() == Some(&b'.') {
                    wire.push(b'.');
                }
                wire.extend_from_slice(line);
            }
            wire.extend_from_slice(b".\r\nNEXT");
            let corrupt = round % 2 == 1;
            if corrupt {
                // Anywhere before the terminator's CR, so it cannot pair up
                // with the terminator itself.
                let at = rng.below(wire.len() as u64 - 6);
                wire.insert(at, [b'\r', b'\n'][rng.below(2)]);
            }
            let end = wire.len() - 4;
            let mut rx = DataReceiver::new(BIG);
            let mut pos = 0;
            loop {
                let max = if rng.below(2) == 0 { 4 } else { 200 };
                let n = 1 + rng.below(max);
                let chunk = wire.get(pos..(pos + n).min(wire.len())).unwrap_or_default();
                match rx.feed(chunk) {
                    Feed::NeedMore => pos += chunk.len(),
                    Feed::Done { consumed } => {
                        assert!(!corrupt, "ended despite a bare line ending: {wire:?}");
                        assert_eq!(pos + consumed, end);
                        break;
                    }
                    Feed::Abort => {
                        assert!(corrupt, "aborted on {wire:?}");
                        break;
                    }
                }
                assert!(pos < end, "no terminator found");
            }
            let want = if corrupt {
                Err(DataError::BareLineEnding)
            } else {
                Ok(message)
            };
            assert_eq!(rx.finish(), want);
        }
    }
}
