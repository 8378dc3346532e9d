//! What both front ends (SMTP and milter) hand to policy: who connected, over what, the
//! envelope and the spooled message. Nothing here knows about a protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::mailbox::Mailbox;
use crate::message::Spool;

/// The connecting client as the front end saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub addr: String,
    pub helo: String,
}

/// The TLS facts of the client connection.
#[derive(Debug, Clone, Serialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// ESMTP parameters of MAIL FROM, kept so the next hop sees them as the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `7BIT`, `8BITMIME` or `BINARYMIME`.
    pub body: Option<&'static str>,
    pub smtputf8: bool,
    /// `FULL` or `HDRS`.
    pub ret: Option<&'static str>,
    pub envid: Option<String>,
}

/// One recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Parsed once; its wire form is what the directory classifies and the next hop reads.
    pub mailbox: Mailbox,
    /// `SUCCESS,FAILURE,DELAY` or `NEVER`, as given.
    pub notify: Option<String>,
    /// The original recipient (ORCPT), decoded.
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn plain(mailbox: Mailbox) -> Recipient {
        Recipient {
            mailbox,
            notify: None,
            orcpt: None,
        }
    }

    /// The wire form of the address.
    pub fn address(&self) -> &str {
        self.mailbox.as_str()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `None` for the null sender `<>`.
    pub sender: Option<Mailbox>,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// The sender's wire form; empty for the null sender.
    pub fn sender_str(&self) -> &str {
        self.sender.as_ref().map(Mailbox::as_str).unwrap_or("")
    }
}

/// One message on its way through markgate.
#[derive(Debug)]
pub struct Transaction {
    /// markgate's queue id: unique per transaction, in every log, record and reply.
    pub id: String,
    pub received: SystemTime,
    pub client: ClientInfo,
    pub tls: Option<TlsInfo>,
    pub envelope: Envelope,
    /// Shared so the classifier can read it on a blocking thread while the session waits.
    pub message: std::sync::Arc<Spool>,
    /// `smtp`, `milter` or `classify`: which front end built it.
    pub front_end: &'static str,
    /// The MTA's own queue id, when it told us (milter macro `i`).
    pub mta_queue_id: Option<String>,
}

/// A queue id: time-ordered and unique within the process (and, with the pid, across
/// instances on one host), 16 upper-case hex digits like Postfix's long ids.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (u64::from(std::process::id()) << 20) ^ n;
    format!("{:011X}{:05X}", micros & 0xFFF_FFFF_FFFF, mix & 0xFFFFF)
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_ids_are_unique() {
        let ids: std::collections::HashSet<_> =
            (0..10_000).map(|_| super::new_queue_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
