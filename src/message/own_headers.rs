//! Header fields markgate owns: `X-Markgate-*`. markgate's statement of a message's marking
//! is only worth something downstream if it is the only one, so a sender's own copies
//! (forged, or left by an earlier pass through a gateway) are removed from the top-level
//! header block before the message goes on. Fields in attached messages and the body are
//! the sender's content and stay.

use std::io;
use std::ops::Range;

use super::skeleton::HEADER_MAX;
use super::Spool;

const PREFIX: &[u8] = b"x-markgate-";

/// Whether a header field name is one markgate owns.
pub fn is_owned(name: &[u8]) -> bool {
    name.get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// The byte ranges of `spool` holding owned fields (each with its folded lines), in order.
/// Only the first [`HEADER_MAX`] bytes are searched: a longer header block is held as
/// unclassifiable before it could be forwarded.
pub fn ranges(spool: &Spool) -> io::Result<Vec<Range<u64>>> {
    if let Some(bytes) = spool.as_bytes() {
        return Ok(ranges_in(bytes));
    }
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while (head.len() as u64) < spool.len() && head.len() < HEADER_MAX {
        let n = spool.read_at(&mut buf, head.len() as u64)?;
        if n == 0 {
            break;
        }
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(ranges_in(&head))
}

/// [`ranges`] over the start of a message held in memory.
fn ranges_in(head: &[u8]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut owned_from: Option<usize> = None;
    let mut pos = 0;
    while pos < head.len() {
        let end = head[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |i| pos + i + 1);
        let line = &head[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line[0], b' ' | b'\t');
        if !continuation {
            if let Some(start) = owned_from.take() {
                out.push(start as u64..pos as u64);
            }
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if is_owned(name.trim_ascii_end()) && line.contains(&b':') {
                owned_from = Some(pos);
            }
        }
        pos = end;
    }
    if let Some(start) = owned_from {
        out.push(start as u64..pos as u64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(msg: &str) -> String {
        let bytes = msg.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        for r in ranges_in(bytes) {
            out.extend_from_slice(&bytes[at..r.start as usize]);
            at = r.end as usize;
        }
        out.extend_from_slice(&bytes[at..]);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn owned_fields_go_with_their_folded_lines_and_nothing_else_moves() {
        let msg = "From: a@x\r\nX-Markgate-Marking: NOT PROTECTIVELY\r\n  MARKED\r\nSubject: s\r\n\
                   x-markgate-released: by me\r\nX-Markgater: kept\r\n\r\n\
                   X-Markgate-Marking: in the body\r\n";
        assert_eq!(
            strip(msg),
            "From: a@x\r\nSubject: s\r\nX-Markgater: kept\r\n\r\nX-Markgate-Marking: in the body\r\n"
        );
    }

    #[test]
    fn an_owned_field_last_in_a_message_without_a_body_is_removed() {
        assert_eq!(
            strip("Subject: s\r\nX-MARKGATE-MARKING : OFFICIAL\r\n"),
            "Subject: s\r\n"
        );
        assert_eq!(strip("X-Markgate-Marking: x"), "");
        assert_eq!(strip(""), "");
    }

    proptest::proptest! {
        /// Whatever the bytes: ranges are in order, apart, inside the message, and each
        /// spans whole lines of one owned field.
        #[test]
        fn ranges_are_whole_owned_lines_in_order(pieces in proptest::collection::vec(
            proptest::sample::select(&[
                "X-Markgate-Marking: a\r\n", "x-markgate-x:c\n", "X-MARKGATE-", " folded\r\n",
                "\tf\r\n", "Subject: b\r\n", "\r\n", "\n", "body", ":", "\r",
            ][..]), 0..40)) {
            let msg = pieces.concat().into_bytes();
            let ranges = ranges_in(&msg);
            let mut at = 0;
            for r in &ranges {
                let (start, end) = (r.start as usize, r.end as usize);
                proptest::prop_assert!(at <= start && start < end && end <= msg.len());
                proptest::prop_assert!(start == 0 || msg[start - 1] == b'\n');
                proptest::prop_assert!(end == msg.len() || msg[end - 1] == b'\n');
                proptest::prop_assert!(is_owned(&msg[start..end]));
                at = end;
            }
        }
    }

    #[test]
    fn a_spooled_message_gives_the_same_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut msg = String::from("Subject: s\r\nX-Markgate-Marking: forged\r\n\r\n");
        msg.push_str(&"body line\r\n".repeat(20_000));
        let mut spool = Spool::new(1024, dir.path());
        spool.write(msg.as_bytes()).unwrap();
        assert!(spool.is_spooled());
        assert_eq!(ranges(&spool).unwrap(), ranges_in(msg.as_bytes()));
        assert_eq!(ranges(&spool).unwrap(), vec![12..40]);
    }
}
