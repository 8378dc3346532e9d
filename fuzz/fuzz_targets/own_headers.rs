//! The sender's `X-Markgate-*` fields that markgate removes: on any bytes, the ranges are
//! whole lines of owned fields, in order and apart, and removing them leaves no owned field
//! in the header block (so no removal can uncover or create one).
#![no_main]
use libfuzzer_sys::fuzz_target;
use markgate::message::{own_headers, Spool};

fuzz_target!(|data: &[u8]| {
    let ranges = own_headers::ranges(&Spool::from_bytes(data.to_vec())).expect("in memory");
    let mut stripped = Vec::with_capacity(data.len());
    let mut at = 0;
    for r in &ranges {
        let (start, end) = (r.start as usize, r.end as usize);
        assert!(at <= start && start < end && end <= data.len());
        assert!(start == 0 || data[start - 1] == b'\n');
        assert!(end == data.len() || data[end - 1] == b'\n');
        assert!(own_headers::is_owned(&data[start..end]));
        stripped.extend_from_slice(&data[at..start]);
        at = end;
    }
    stripped.extend_from_slice(&data[at..]);
    let again = own_headers::ranges(&Spool::from_bytes(stripped)).expect("in memory");
    assert!(again.is_empty(), "{again:?} left after stripping {ranges:?}");
});
