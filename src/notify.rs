//! Notices to the sender of a held message (`notify:`): "your message to X was held for
//! review because RULE DESCRIPTION; reference ID", and another when it is released or
//! deleted. Sent through the next hop from the null sender `<>` with
//! `Auto-Submitted: auto-generated` (RFC 3834), as a delivery report is, so no notice is
//! answered, bounced or notified in turn. A notice says only what the templates say, with
//! the envelope, the rule and the reference filled in: never the message's subject or
//! content (a sender may not be the only reader of their mailbox, and the message was held
//! because its content may not travel).
//!
//! Notices go only to senders in `notify.domains` (the organisation's own): a client on
//! the relay networks can name any envelope sender, and a notice to it would carry text of
//! the client's choosing (its recipients' addresses) past the classifier. The recipients
//! named are at most [`RECIPIENTS_NAMED`]; none goes for a message the MTA holds (milter
//! mode: the MTA releases or deletes its own copy).
//!
//! A notice is a courtesy: one that cannot be sent is logged and the hold, release or
//! delete stands. At most [`IN_FLIGHT`] are on their way at once; past it one is dropped
//! and logged rather than queued against the next hop's real mail.

use std::time::SystemTime;

use crate::config::{Config, NoticeTemplate};
use crate::delivery::NextHop;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::store::Meta;
use crate::transaction::{Envelope, Recipient};

/// Recipients a notice names; the rest are counted.
pub const RECIPIENTS_NAMED: usize = 10;
/// Notices on their way at once from the gateway.
pub const IN_FLIGHT: usize = 32;
/// The longest a notice may take to send.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static SENDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IN_FLIGHT);

/// What happened to the held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Held,
    Released,
    Deleted,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Held => "held",
            Event::Released => "released",
            Event::Deleted => "deleted",
        }
    }

    fn template(self, config: &Config) -> &NoticeTemplate {
        match self {
            Event::Held => &config.notify.held,
            Event::Released => &config.notify.released,
            Event::Deleted => &config.notify.deleted,
        }
    }
}

/// The notice for `event` to `meta`'s sender, if notices are on and the message has a
/// sender to tell (not `<>`, not the notices' own address); its envelope and bytes.
pub fn notice(
    config: &Config,
    meta: &Meta,
    description: &str,
    event: Event,
    now: SystemTime,
) -> Option<(Envelope, Vec<u8>)> {
    let from = config.notify.from.as_deref()?;
    if meta.mta_queue_id.is_some() || !meta.sender.is_ascii() {
        return None;
    }
    let to = Mailbox::lenient(&meta.sender)?;
    let domain = meta.sender.rsplit_once('@')?.1;
    let ours = config
        .notify
        .domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain));
    if !ours || meta.sender.eq_ignore_ascii_case(from) {
        return None;
    }
    let mut named: Vec<&str> = meta
        .recipients
        .iter()
        .take(RECIPIENTS_NAMED)
        .map(String::as_str)
        .collect();
    let more = meta.recipients.len().saturating_sub(RECIPIENTS_NAMED);
    let more_text = format!("and {more} more");
    if more > 0 {
        named.push(&more_text);
    }
    let recipients = named.join(", ");
    let template = event.template(config);
    let fill = |text: &str| {
        text.replace("{id}", &meta.id)
            .replace("{time}", &meta.time)
            .replace("{recipients}", &recipients)
            .replace("{rule}", meta.rule.as_deref().unwrap_or("(none)"))
            .replace("{description}", description)
    };
    // Header values stay one line whatever a description holds.
    let one_line = |text: String| text.replace(['\r', '\n'], " ");
    let subject = one_line(fill(&template.subject));
    let body = fill(&template.body);
    let (encoding, body) = if body.is_ascii() {
        ("7bit", wrapped(&body))
    } else {
        ("base64", base64_lines(body.as_bytes()))
    };
    let date = crate::timefmt::rfc5322(now);
    let message = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <notice-{event}-{id}@{host}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}",
        to = to.as_str(),
        subject = encode_if_needed(&subject),
        event = event.name(),
        id = meta.id,
        host = config.hostname,
    );
    let envelope = Envelope {
        sender: None,
        params: Default::default(),
        recipients: vec![Recipient::plain(to)],
    };
    Some((envelope, message.into_bytes()))
}

/// Text as CRLF lines of at most 78 characters, broken at spaces where a line is longer
/// (a word longer than that stays whole up to SMTP's 998).
fn wrapped(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut current = String::new();
        for word in line.split(' ') {
            if !current.is_empty() && current.len() + 1 + word.len() > 78 {
                out.push_str(&current);
                out.push_str("\r\n");
                current.clear();
            } else if !current.is_empty() {
                current.push(' ');
            }
            let mut word = word;
            while word.len() > 998 {
                let mut cut = 998;
                while !word.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push_str(&word[..cut]);
                out.push_str("\r\n");
                word = &word[cut..];
            }
            current.push_str(word);
        }
        out.push_str(&current);
        out.push_str("\r\n");
    }
    out
}

/// Bytes as base64 in lines of 76.
fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect()
}

/// A header value as RFC 2047 UTF-8 base64 words when it is not plain ASCII.
fn encode_if_needed(value: &str) -> String {
    if value.is_ascii() {
        return value.to_string();
    }
    use base64::Engine;
    // Whole characters per word, at most 45 bytes (60 encoded) each.
    let mut words = Vec::new();
    let mut word = String::new();
    for c in value.chars() {
        if word.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    words.push(word);
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// A notice ready to go: its envelope and bytes, and what it is about (for the log).
pub struct Notice {
    envelope: Envelope,
    message: Vec<u8>,
    id: String,
    event: Event,
}

/// [`notice`] as a [`Notice`] to [`deliver`].
pub fn prepare(config: &Config, meta: &Meta, description: &str, event: Event) -> Option<Notice> {
    let (envelope, message) = notice(config, meta, description, event, SystemTime::now())?;
    Some(Notice {
        envelope,
        message,
        id: meta.id.clone(),
        event,
    })
}

/// Sends a notice through `next_hop` within [`SEND_TIMEOUT`]; logs how it went.
pub async fn deliver(next_hop: &NextHop, notice: Notice) {
    let event = notice.event.name();
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        next_hop.send(&notice.envelope, &[], &Spool::from_bytes(notice.message)),
    )
    .await;
    match sent {
        Ok(Ok(sent)) => {
            tracing::info!(queue_id = %notice.id, event, reply = %sent.reply, "sender notified")
        }
        Ok(Err(err)) => {
            tracing::warn!(queue_id = %notice.id, event, error = %err, "sender notice not sent")
        }
        Err(_) => {
            tracing::warn!(queue_id = %notice.id, event, "sender notice not sent: the next hop took too long")
        }
    }
}

/// Sends a notice in the background (the gateway's holds), if fewer than [`IN_FLIGHT`] are
/// on their way; otherwise drops it and says so.
pub fn spawn(next_hop: std::sync::Arc<NextHop>, notice: Notice) {
    let Ok(permit) = SENDING.try_acquire() else {
        tracing::warn!(queue_id = %notice.id, "sender notice not sent: too many on their way");
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        deliver(&next_hop, notice).await
    });
}

/// The notice for `event` from synchronous code (the CLI's and the console's delete),
/// through a next hop of its own.
pub fn send_blocking(config: &Config, meta: &Meta, description: &str, event: Event) {
    let Some(notice) = prepare(config, meta, description, event) else {
        return;
    };
    crate::tls::install_provider();
    let next_hop = match NextHop::new(&config.upstream, &config.hostname) {
        Ok(n) => n,
        Err(err) => {
            tracing::warn!(queue_id = %meta.id, error = %err, "sender notice not sent");
            return;
        }
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(deliver(&next_hop, notice)),
        Err(err) => tracing::warn!(queue_id = %meta.id, error = %err, "sender notice not sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(sender: &str) -> Meta {
        serde_json::from_value(serde_json::json!({
            "id": "105E3A1C2B400000", "time": "2026-12-02T09:00:00Z",
            "client": {"addr": "127.0.0.1", "helo": "mta"}, "sender": sender,
            "recipients": ["friend@example.com"], "subject": "Case 42 <secret>",
            "rule": "unmarked-to-external", "reason": "", "level": "UNMARKED",
            "marking": {"level": "UNMARKED", "evidence": []}, "size": 10, "sha256": ""
        }))
        .expect("a held message's metadata")
    }

    #[test]
    fn a_notice_says_what_the_template_says_and_nothing_of_the_message() {
        let mut config = Config::default();
        assert!(
            notice(
                &config,
                &meta("jane@police.cjsm.net"),
                "d",
                Event::Held,
                SystemTime::now()
            )
            .is_none(),
            "off by default"
        );
        config.notify.from = Some("security@police.cjsm.net".into());
        config.notify.domains = vec!["police.cjsm.net".into()];
        let (envelope, bytes) = notice(
            &config,
            &meta("jane@police.cjsm.net"),
            "Unmarked mail must be protected.",
            Event::Held,
            SystemTime::now(),
        )
        .unwrap();
        assert!(envelope.sender.is_none(), "from <>");
        assert_eq!(envelope.recipients[0].address(), "jane@police.cjsm.net");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("To: jane@police.cjsm.net\r\n"), "{text}");
        assert!(
            text.contains("Auto-Submitted: auto-generated\r\n"),
            "{text}"
        );
        assert!(text.contains("to friend@example.com was held"), "{text}");
        assert!(
            text.contains("because: Unmarked mail must be protected."),
            "{text}"
        );
        assert!(text.contains("Reference: 105E3A1C2B400000"), "{text}");
        assert!(!text.contains("Case 42"), "never the subject: {text}");
        // No notice to <>, nor to the notices' own address.
        assert!(notice(&config, &meta(""), "d", Event::Held, SystemTime::now()).is_none());
        assert!(notice(
            &config,
            &meta("Security@police.cjsm.net"),
            "d",
            Event::Held,
            SystemTime::now()
        )
        .is_none());
        // Only the organisation's own senders are told: a client can name any sender.
        assert!(notice(
            &config,
            &meta("drop@gmail.example"),
            "d",
            Event::Held,
            SystemTime::now()
        )
        .is_none());
        // At most ten recipients are named, and lines stay short.
        let mut many = meta("jane@police.cjsm.net");
        many.recipients = (0..1000)
            .map(|n| format!("{}{n}@example.com", "x".repeat(60)))
            .collect();
        let (_, bytes) = notice(&config, &many, "d", Event::Held, SystemTime::now()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.replace("\r\n", " ").contains("and 990 more"), "{text}");
        assert!(text.len() < 3000, "{}", text.len());
        assert!(text.split("\r\n").all(|l| l.len() <= 998), "{text}");
        // None for a message the MTA holds.
        let mut milter = meta("jane@police.cjsm.net");
        milter.mta_queue_id = Some("4F2C".into());
        assert!(notice(&config, &milter, "d", Event::Held, SystemTime::now()).is_none());
        // A non-ASCII subject is encoded; a description cannot start a header.
        config.notify.held.subject = "Nachricht zurückgehalten: {description}".into();
        let (_, bytes) = notice(
            &config,
            &meta("jane@police.cjsm.net"),
            "a\r\nBcc: x@y",
            Event::Held,
            SystemTime::now(),
        )
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Subject: =?UTF-8?B?"), "{text}");
        let headers = text.split("\r\n\r\n").next().unwrap();
        assert!(!headers.contains("\r\nBcc:"), "{text}");
    }
}
