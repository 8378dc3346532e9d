//! The DATA reader: finds the end of the message, removes dot-stuffing and enforces the
//! limits while bytes arrive.
//!
//! It is strict on purpose (SMTP smuggling): only `CRLF . CRLF` ends a message, and a bare
//! CR or bare LF anywhere in the data is a fault. Once a fault is seen nothing more is
//! written to the spool, but the reader keeps scanning for the real end so the session
//! stays in step with the client and can answer with a clear error.

/// Why a message's data was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFault {
    TooBig,
    LineTooLong,
    BareNewline,
}

/// Result of feeding bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the end marker has not been seen.
    NeedMore,
    /// The end marker ended after `consumed` bytes of this input.
    Done { consumed: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Mid,
    /// A CR was read mid-line.
    Cr,
    /// A dot was read at the start of a line.
    Dot,
    /// `.` CR at the start of a line: one LF from the end.
    DotCr,
}

#[derive(Debug)]
pub struct DataReader {
    state: State,
    max_size: u64,
    /// Longest line content, CRLF excluded.
    max_line: usize,
    line_len: usize,
    size: u64,
    fault: Option<DataFault>,
}

impl DataReader {
    /// `max_line` counts the CRLF, as RFC 5321's 1000-octet limit does.
    pub fn new(max_size: u64, max_line: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            max_size,
            max_line: max_line.saturating_sub(2),
            line_len: 0,
            size: 0,
            fault: None,
        }
    }

    /// The first fault seen, if any.
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    /// Message bytes accepted so far (after unstuffing).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feeds wire bytes; message bytes go to `out` (nothing after a fault).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Progress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart if b == b'.' => {
                    self.state = State::Dot;
                    i += 1;
                }
                State::LineStart | State::Mid => {
                    // Fast path: copy the run of ordinary bytes up to the next CR or LF.
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    if run > 0 {
                        self.text(&input[i..i + run], out);
                        i += run;
                        self.state = State::Mid;
                        continue;
                    }
                    self.newline_byte(b, out);
                    i += 1;
                }
                State::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n", out);
                        self.line_len = 0;
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        self.set_fault(DataFault::BareNewline);
                        self.state = State::Mid;
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot: drop it, the rest of the line is text.
                        self.line_len += 1;
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Progress::Done { consumed: i + 1 };
                    }
                    // `.` CR x: a bare CR after a stuffed dot.
                    self.set_fault(DataFault::BareNewline);
                    self.state = State::Mid;
                }
            }
        }
        Progress::NeedMore
    }

    fn newline_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b'\r' {
            self.state = State::Cr;
        } else {
            // A bare LF: never a line end, never forwarded.
            self.set_fault(DataFault::BareNewline);
            self.line_len = 0;
            self.state = State::Mid;
            let _ = out;
        }
    }

    fn text(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.line_len += bytes.len();
        if self.line_len > self.max_line {
            self.set_fault(DataFault::LineTooLong);
        }
        self.emit(bytes, out);
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.fault.is_some() {
            return;
        }
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.set_fault(DataFault::TooBig);
            return;
        }
        out.extend_from_slice(bytes);
    }

    fn set_fault(&mut self, fault: DataFault) {
        self.fault.get_or_insert(fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in chunks of `step` bytes; returns (message, fault, bytes consumed).
    fn run(wire: &[u8], step: usize) -> (Vec<u8>, Option<DataFault>, Option<usize>) {
        let mut r = DataReader::new(1 << 20, 1000);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in wire.chunks(step) {
            if let Progress::Done { consumed } = r.feed(chunk, &mut out) {
                return (out, r.fault(), Some(offset + consumed));
            }
            offset += chunk.len();
        }
        (out, r.fault(), None)
    }

    #[test]
    fn end_marker_and_unstuffing_in_every_chunking() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n";
        for step in 1..=wire.len() {
            let (msg, fault, consumed) = run(wire, step);
            assert_eq!(
                msg, b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n",
                "step {step}"
            );
            assert_eq!(fault, None);
            assert_eq!(consumed, Some(wire.len() - 6), "step {step}");
        }
    }

    #[test]
    fn empty_message_ends_at_once() {
        assert_eq!(run(b".\r\n", 1), (vec![], None, Some(3)));
    }

    #[test]
    fn smuggling_endings_do_not_end_the_message() {
        for ending in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
        ] {
            for step in 1..=ending.len() {
                let (_, fault, consumed) = run(ending, step);
                assert_eq!(fault, Some(DataFault::BareNewline), "{ending:?}");
                assert_eq!(consumed, None, "{ending:?} must not end the data");
            }
            let mut wire = ending.to_vec();
            wire.extend_from_slice(b".\r\n");
            let (_, fault, consumed) = run(&wire, 3);
            assert_eq!(fault, Some(DataFault::BareNewline));
            assert_eq!(consumed, Some(wire.len()));
        }
    }

    /// Found by the `data_reader` fuzz target: a long line fed in small chunks wrote its
    /// first chunks before the fault; the outcome (end and fault) must not depend on that.
    #[test]
    fn chunking_never_changes_where_data_ends_or_whether_it_is_refused() {
        let mut wire = b"S%bbje.\r\nubzeot\r\n\xe0\r\n".to_vec();
        wire.extend(std::iter::repeat_n(0x13u8, 1200));
        wire.extend_from_slice(b"\r\n.\r\n");
        let whole = run(&wire, wire.len());
        for step in 1..8 {
            let chunked = run(&wire, step);
            assert_eq!((chunked.1, chunked.2), (whole.1, whole.2), "step {step}");
        }
        assert_eq!(whole.1, Some(DataFault::LineTooLong));
    }

    #[test]
    fn long_line_and_oversize_are_faults_and_stop_writing() {
        let mut r = DataReader::new(1 << 20, 100);
        let mut out = Vec::new();
        let line = [b'x'; 99];
        r.feed(&line, &mut out);
        assert_eq!(r.fault(), Some(DataFault::LineTooLong));

        let mut r = DataReader::new(10, 1000);
        let mut out = Vec::new();
        let p = r.feed(b"0123456789abc\r\n.\r\n", &mut out);
        assert_eq!(p, Progress::Done { consumed: 18 });
        assert_eq!(r.fault(), Some(DataFault::TooBig));
        assert!(out.len() <= 10);
    }
}
