//! Reading one command line: the checks markgate adds before `smtp-proto` parses it, and
//! what each parse error is answered with. Pure functions, so the fuzz target and the
//! session read commands the same way.

use std::borrow::Cow;

use smtp_proto::{
    Request, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

use super::reply::Reply;

/// Parses one command line (CRLF or LF ended) or says what to answer.
pub fn parse(line: &[u8]) -> Result<Request<Cow<'_, str>>, Reply> {
    // NUL and other controls have no business in a command (and would reach logs).
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Reply::syntax("control characters in command"));
    }
    Request::parse(&mut line.iter()).map_err(|err| parse_error_reply(&err))
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
        assert_eq!(
            notify_param(RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_DELAY).as_deref(),
            Some("SUCCESS,DELAY")
        );
    }
}
