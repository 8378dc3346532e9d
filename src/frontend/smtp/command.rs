//! Reading one command line: the checks markgate adds before `smtp-proto` parses it, and
//! what each parse error is answered with. Pure functions, so the fuzz target and the
//! session read commands the same way.

use std::borrow::Cow;

use smtp_proto::{
    Request, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

use crate::reply::Reply;

/// Parses one command line (CRLF or LF ended) or says what to answer.
pub fn parse(line: &[u8]) -> Result<Request<Cow<'_, str>>, Reply> {
    no_controls(line)?;
    Request::parse(&mut line.iter()).map_err(|err| parse_error_reply(&err))
}

/// NUL and other controls have no business in a command (and would reach logs).
fn no_controls(line: &[u8]) -> Result<(), Reply> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Reply::syntax("control characters in command"));
    }
    Ok(())
}

/// For MAIL and RCPT: the path exactly as the client wrote it (quotes respected), and the
/// same command with a placeholder path, from which `smtp-proto` reads only the parameters.
/// markgate's own parser ([`crate::mailbox`]) decides the address; `smtp-proto` never does,
/// so the two cannot disagree about where the address ends. `None` for other verbs.
pub fn envelope_path(line: &[u8]) -> Option<Result<(String, Vec<u8>), Reply>> {
    let (prefix, placeholder, status) = if starts_with_ci(line, b"MAIL FROM:") {
        (10, &b"MAIL FROM:<>"[..], "5.1.7")
    } else if starts_with_ci(line, b"RCPT TO:") {
        (8, &b"RCPT TO:<p@placeholder.invalid>"[..], "5.1.3")
    } else {
        return None;
    };
    let bad = |what: &str| {
        Err(Reply::new(
            501,
            status,
            format!("Bad address syntax: {what}"),
        ))
    };
    if let Err(reply) = no_controls(line) {
        return Some(Err(reply));
    }
    let Ok(rest) = std::str::from_utf8(&line[prefix..]) else {
        return Some(bad("not UTF-8"));
    };
    let Some((path, params)) = crate::mailbox::split_path(rest) else {
        return Some(bad("the address goes in angle brackets"));
    };
    let mut rebuilt = placeholder.to_vec();
    rebuilt.extend_from_slice(params.as_bytes());
    Some(Ok((path.to_string(), rebuilt)))
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

pub fn notify_param(flags: u64) -> Option<String> {
    if flags & RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let parts: Vec<&str> = [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| *n)
    .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

fn parse_error_reply(err: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match err {
        E::UnknownCommand => Reply::unrecognized(),
        E::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::syntax(syntax),
        E::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            let shown: String = param.chars().filter(|c| !c.is_control()).take(64).collect();
            Reply::unsupported_parameter(&shown)
        }
        _ => Reply::syntax("command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_get_their_replies() {
        assert!(matches!(
            parse(b"EHLO a.test\r\n"),
            Ok(Request::Ehlo { .. })
        ));
        assert_eq!(parse(b"MAIL FROM:<a\0b@x>\r\n").unwrap_err().code, 501);
        assert_eq!(parse(b"XYZZY\r\n").unwrap_err().code, 500);
        assert_eq!(parse(b"MAIL FROM:<a@b> FOO=1\r\n").unwrap_err().code, 555);
        let (path, rest) =
            envelope_path(b"rcpt to:<\"x@g> ORCPT=rfc822;a\"@f.cjsm.net> NOTIFY=NEVER\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(path, "<\"x@g> ORCPT=rfc822;a\"@f.cjsm.net>");
        assert_eq!(rest, b"RCPT TO:<p@placeholder.invalid> NOTIFY=NEVER\r\n");
        assert!(envelope_path(b"DATA\r\n").is_none());
        assert_eq!(
            notify_param(RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_DELAY).as_deref(),
            Some("SUCCESS,DELAY")
        );
    }
}
