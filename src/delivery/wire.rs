//! What goes over the wire to the next hop: the envelope commands rebuilt from what the
//! client sent, the dot-stuffed data, and reading its replies back as ours.

use smtp_proto::Response;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use std::ops::Range;

use crate::message::spool::{Spool, CHUNK};
use crate::reply::Reply;
use crate::transaction::{Envelope, Recipient};

/// The next hop's reply as ours; a 421 is not passed on as such, since it would tell our
/// client that *we* are closing.
pub fn mirror(reply: &Response<String>) -> Reply {
    let status = if reply.esc[0] != 0 {
        format!("{}.{}.{}", reply.esc[0], reply.esc[1], reply.esc[2])
    } else if reply.code >= 500 {
        "5.0.0".to_string()
    } else {
        "4.0.0".to_string()
    };
    let code = if reply.code == 421 { 451 } else { reply.code };
    Reply::new(code, &status, format!("next hop said: {}", reply.message))
}

pub fn response_line(reply: &Response<String>) -> String {
    if reply.esc[0] != 0 {
        format!(
            "{} {}.{}.{} {}",
            reply.code, reply.esc[0], reply.esc[1], reply.esc[2], reply.message
        )
    } else {
        format!("{} {}", reply.code, reply.message)
    }
}

/// Postfix and most MTAs say `queued as ID`.
pub fn queue_id_of(message: &str) -> Option<String> {
    let rest = &message[message.find("queued as ")? + "queued as ".len()..];
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

pub fn mail_command(envelope: &Envelope, size: u64, dsn: bool) -> String {
    let p = &envelope.params;
    let mut cmd = format!("MAIL FROM:<{}> SIZE={size}", envelope.sender_str());
    if let Some(body) = p.body {
        cmd.push_str(" BODY=");
        cmd.push_str(body);
    }
    if p.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if dsn {
        if let Some(ret) = p.ret {
            cmd.push_str(" RET=");
            cmd.push_str(ret);
        }
        if let Some(envid) = &p.envid {
            cmd.push_str(" ENVID=");
            cmd.push_str(&xtext(envid));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

pub fn rcpt_command(rcpt: &Recipient, dsn: bool) -> String {
    let mut cmd = format!("RCPT TO:<{}>", rcpt.address());
    if dsn {
        if let Some(notify) = &rcpt.notify {
            cmd.push_str(" NOTIFY=");
            cmd.push_str(notify);
        }
        if let Some(orcpt) = &rcpt.orcpt {
            cmd.push_str(" ORCPT=rfc822;");
            cmd.push_str(&xtext(orcpt));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// RFC 3461 xtext: `+`, `=`, controls and non-ASCII as `+HH`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Writes the message as DATA content: dot-stuffed, without the byte ranges in `skip`
/// (sorted, whole lines), then the end marker. Reads the spool a chunk at a time so a large
/// message is never held whole.
pub async fn write_stuffed(
    stream: &mut (impl AsyncWrite + Unpin),
    prepend: &[u8],
    message: &Spool,
    skip: &[Range<u64>],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8 + prepend.len());
    out.extend_from_slice(prepend);
    let mut at_line_start = prepend.is_empty() || prepend.ends_with(b"\n");
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    let mut last = prepend.last().copied();
    let mut skip = skip.iter().peekable();
    while offset < message.len() {
        let n = message.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "spool shorter than its length",
            ));
        }
        let mut i = 0;
        while i < n {
            let at = offset + i as u64;
            while skip.next_if(|r| r.end <= at).is_some() {}
            let keep_to = match skip.peek() {
                Some(r) if r.start <= at => {
                    i = (r.end - offset).min(n as u64) as usize;
                    continue;
                }
                Some(r) => ((r.start - offset) as usize).min(n),
                None => n,
            };
            stuff_into(&mut out, &buf[i..keep_to], &mut at_line_start);
            if keep_to > i {
                last = Some(buf[keep_to - 1]);
            }
            i = keep_to;
        }
        offset += n as u64;
        if offset < message.len() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    if last.is_some() && last != Some(b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    // The last chunk and the end marker go in one write.
    out.extend_from_slice(b".\r\n");
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Appends `bytes` to `out` with a dot doubled at the start of every line, a line at a time
/// (the next line end found by a vectorised search, not byte by byte).
fn stuff_into(out: &mut Vec<u8>, mut bytes: &[u8], at_line_start: &mut bool) {
    while let Some(&first) = bytes.first() {
        if *at_line_start && first == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', bytes) {
            Some(n) => {
                out.extend_from_slice(&bytes[..=n]);
                bytes = &bytes[n + 1..];
                *at_line_start = true;
            }
            None => {
                out.extend_from_slice(bytes);
                *at_line_start = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::Recipient;

    #[tokio::test]
    async fn skipped_ranges_go_whatever_the_chunking_and_dots_are_still_stuffed() {
        // A spooled message whose header block crosses the first chunk, with an owned
        // field straddling the boundary and one right after it.
        let dir = tempfile::tempdir().unwrap();
        let mut msg = Vec::new();
        while msg.len() < CHUNK - 20 {
            msg.extend_from_slice(b"X-Filler: abcdefghijklmnopqrstuvwxyz\r\n");
        }
        let forged = b"X-Markgate-Marking: NOT PROTECTIVELY\r\n MARKED, across the chunk\r\n";
        let second = b"x-markgate-released: by nobody\r\n";
        let cut = msg.len();
        msg.extend_from_slice(forged);
        msg.extend_from_slice(second);
        let rest = b"Subject: s\r\n\r\n.leading dot\r\nbody";
        msg.extend_from_slice(rest);
        let mut spool = Spool::new(1024, dir.path());
        spool.write(&msg).unwrap();
        let skip = crate::message::own_headers::ranges(&spool).unwrap();
        let end = (cut + forged.len() + second.len()) as u64;
        assert_eq!(
            skip,
            vec![
                cut as u64..(cut + forged.len()) as u64,
                (cut + forged.len()) as u64..end
            ]
        );

        let mut out = Vec::new();
        write_stuffed(&mut out, b"Received: x\r\n", &spool, &skip)
            .await
            .unwrap();
        let mut want = b"Received: x\r\n".to_vec();
        want.extend_from_slice(&msg[..cut]);
        want.extend_from_slice(b"Subject: s\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
        assert_eq!(out, want);
    }

    #[test]
    fn dots_are_stuffed_as_byte_by_byte_whatever_the_cut() {
        let reference = |bytes: &[u8]| {
            let (mut out, mut start) = (Vec::new(), true);
            for &b in bytes {
                if start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                start = b == b'\n';
            }
            out
        };
        let text: &[u8] = b".a\r\n..b\r\nc.d\n.\r\n\n.\n.e.";
        for cut in 0..=text.len() {
            let (mut out, mut start) = (Vec::new(), true);
            stuff_into(&mut out, &text[..cut], &mut start);
            stuff_into(&mut out, &text[cut..], &mut start);
            assert_eq!(out, reference(text), "cut at {cut}");
        }
    }

    #[test]
    fn queue_id_is_read_from_postfix_and_sink_replies() {
        assert_eq!(
            queue_id_of("2.0.0 Ok: queued as 4F2C1A").as_deref(),
            Some("4F2C1A")
        );
        assert_eq!(queue_id_of("Ok"), None);
    }

    #[test]
    fn dsn_parameters_are_rebuilt_only_when_the_next_hop_speaks_dsn() {
        let r = Recipient {
            mailbox: crate::mailbox::Mailbox::lenient("a@b.cjsm.net").unwrap(),
            notify: Some("SUCCESS,FAILURE".into()),
            orcpt: Some("a+x@b".into()),
        };
        assert_eq!(
            rcpt_command(&r, true),
            "RCPT TO:<a@b.cjsm.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@b\r\n"
        );
        assert_eq!(rcpt_command(&r, false), "RCPT TO:<a@b.cjsm.net>\r\n");
    }
}
