//! Every reply markgate gives, built by named constructors, so the codes and texts can be
//! read and reviewed in one place. Internal errors all become [`Reply::temp_failure`].
//! Neutral: the SMTP front end writes it on the wire, the milter hands its code, enhanced
//! status and text to the MTA, policy builds a rule's reject from it.

use std::fmt;

/// One reply: code, enhanced status and text (single line; multi-line replies are written
/// by the EHLO handler directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `None` where SMTP has none (354, and next-hop replies that carried none).
    pub status: Option<Status>,
    pub text: String,
}

/// An enhanced status code (RFC 3463): `class.subject.detail`, e.g. `5.7.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    /// `2.0.0`, `4.x.x` or `5.x.x` with numbers of at most three digits; `None` otherwise.
    pub fn parse(s: &str) -> Option<Status> {
        let mut parts = s.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        let ok =
            parts.next().is_none() && matches!(class, 2 | 4 | 5) && subject < 1000 && detail < 1000;
        ok.then_some(Status {
            class,
            subject,
            detail,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            None => write!(f, "{} {}", self.code, self.text),
            Some(status) => write!(f, "{} {status} {}", self.code, self.text),
        }
    }
}

impl Reply {
    /// `status` is an enhanced status such as `5.7.1`, or empty for none (an unreadable
    /// one is dropped rather than sent).
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Reply {
        // CR and LF in a reply text would let rule authors (or a mirrored upstream reply)
        // inject extra reply lines; flatten them.
        let mut text: String = text.into();
        if text.contains(char::is_control) {
            text = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
        Reply {
            code,
            status: Status::parse(status),
            text,
        }
    }

    /// The wire form, CRLF terminated.
    pub fn to_wire(&self) -> String {
        format!("{self}\r\n")
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "Sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient OK")
    }
    pub fn queued(queue_id: &str, upstream: &str) -> Reply {
        Reply::new(
            250,
            "2.0.0",
            format!("Ok: queued as {queue_id} (next hop: {upstream})"),
        )
    }
    pub fn quarantined(queue_id: &str) -> Reply {
        Reply::new(250, "2.0.0", format!("Ok: held for review as {queue_id}"))
    }
    pub fn start_data() -> Reply {
        Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
    }
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, "2.0.0", "Ready to start TLS")
    }
    pub fn bye(host: &str) -> Reply {
        Reply::new(221, "2.0.0", format!("{host} closing connection"))
    }
    pub fn vrfy() -> Reply {
        Reply::new(
            252,
            "2.5.2",
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Reply {
        Reply::new(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS",
        )
    }
    pub fn too_many_connections() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections, try again later")
    }
    pub fn too_many_from_client() -> Reply {
        Reply::new(
            421,
            "4.7.0",
            "Too many connections from your address, try again later",
        )
    }
    pub fn not_a_client(host: &str) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!("{host} Access denied: not a client of this gateway"),
        )
    }
    pub fn session_too_long(host: &str) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{host} Error: session time limit exceeded"),
        )
    }
    pub fn data_too_slow(host: &str) -> Reply {
        Reply::new(421, "4.4.2", format!("{host} Error: data rate too low"))
    }
    pub fn timeout(host: &str) -> Reply {
        Reply::new(421, "4.4.2", format!("{host} Error: timeout exceeded"))
    }
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(421, "4.3.2", format!("{host} Service shutting down"))
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing connection")
    }
    pub fn too_many_recipients(max: usize) -> Reply {
        Reply::new(452, "4.5.3", format!("Too many recipients (at most {max})"))
    }
    /// A recipient of another class than the transaction's (`split_recipients`): the
    /// client sends it again in a new transaction (RFC 5321 4.5.3.1.10, RFC 3463 X.5.3).
    pub fn other_class() -> Reply {
        Reply::new(
            452,
            "4.5.3",
            "Recipients of another class go in a separate transaction",
        )
    }
    /// Any internal failure: the sending MTA keeps the message and retries.
    pub fn temp_failure() -> Reply {
        Reply::new(451, "4.3.0", "Local error in processing, try again later")
    }
    pub fn upstream_unavailable(detail: &str) -> Reply {
        Reply::new(
            451,
            "4.4.1",
            format!("Next hop unavailable ({detail}), try again later"),
        )
    }
    pub fn unrecognized() -> Reply {
        Reply::new(500, "5.5.2", "Command not recognized")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }
    pub fn syntax(detail: &str) -> Reply {
        Reply::new(501, "5.5.4", format!("Syntax: {detail}"))
    }
    pub fn not_implemented() -> Reply {
        Reply::new(502, "5.5.1", "Command not implemented")
    }
    pub fn bad_sequence(detail: &str) -> Reply {
        Reply::new(503, "5.5.1", detail.to_string())
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
    }
    pub fn tls_not_available() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available")
    }
    pub fn relay_denied() -> Reply {
        Reply::new(554, "5.7.1", "Relay access denied")
    }
    pub fn message_too_big(max: u64) -> Reply {
        Reply::new(
            552,
            "5.3.4",
            format!("Message size exceeds fixed maximum message size ({max} bytes)"),
        )
    }
    pub fn bad_line_in_data(max: usize) -> Reply {
        Reply::new(
            500,
            "5.5.2",
            format!("Message has a line longer than {max} bytes; refused"),
        )
    }
    pub fn bare_newline() -> Reply {
        Reply::new(
            550,
            "5.5.2",
            "Message contains a bare CR or LF; refused (RFC 5321 section 2.3.8)",
        )
    }
    pub fn unsupported_parameter(param: &str) -> Reply {
        Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
    }
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, "5.5.1", "No valid recipients")
    }
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn control_characters_in_a_text_become_spaces() {
        let r = Reply::new(550, "5.7.1", "no\r\n250 injected\tline\u{85}x");
        assert_eq!(r.to_wire(), "550 5.7.1 no  250 injected line x\r\n");
        let plain = Reply::new(250, "2.0.0", "Ok: queued as ABC (next hop: 250 2.0.0 Ok)");
        assert_eq!(plain.text, "Ok: queued as ABC (next hop: 250 2.0.0 Ok)");
    }
}
