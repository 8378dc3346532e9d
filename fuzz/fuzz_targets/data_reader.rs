//! The DATA reader: the outcome does not depend on how the bytes are chunked, and a message
//! accepted without a fault contains CR and LF only as CRLF (nothing smuggled).
#![no_main]
use libfuzzer_sys::fuzz_target;
use markgate::frontend::smtp::data::{DataReader, Progress};

fn run(data: &[u8], step: usize) -> (Vec<u8>, Option<usize>, bool) {
    let mut r = DataReader::new(1 << 20, 1000);
    let mut out = Vec::new();
    let mut offset = 0;
    for chunk in data.chunks(step.max(1)) {
        if let Progress::Done { consumed } = r.feed(chunk, &mut out) {
            return (out, Some(offset + consumed), r.fault().is_some());
        }
        offset += chunk.len();
    }
    (out, None, r.fault().is_some())
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let whole = run(data, data.len().max(1));
    let chunked = run(data, step as usize % 7 + 1);
    // Where the message ends and whether it is refused never depend on chunking; the bytes
    // only matter for an accepted message (a refused one's partial spool is dropped).
    assert_eq!((whole.1, whole.2), (chunked.1, chunked.2));
    if !whole.2 {
        assert_eq!(whole.0, chunked.0);
    }
    let (msg, end, fault) = whole;
    if end.is_some() && !fault {
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && msg[i - 1] == b'\r', "bare LF accepted");
            }
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR accepted");
            }
        }
    }
});
