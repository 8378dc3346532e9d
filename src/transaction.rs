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
    /// Which front end (or command) built it.
    pub front_end: Origin,
    /// The MTA's own queue id, when it told us (milter macro `i`).
    pub mta_queue_id: Option<String>,
}

/// Which front end or command built a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Smtp,
    Milter,
    /// A held message sent on by `quarantine release`.
    Release,
    /// `classify` and the rule file's own tests: judged, never sent.
    Classify,
}

impl Origin {
    /// The name records and logs use (`front_end`).
    pub fn name(self) -> &'static str {
        match self {
            Origin::Smtp => "smtp",
            Origin::Milter => "milter",
            Origin::Release => "release",
            Origin::Classify => "classify",
        }
    }
}

/// What a front end knows of a connection before any message: the one way a
/// [`Transaction`] is made, so the two front ends (and release, and `classify`) cannot
/// build it differently. `build` gives each message its queue id and received time.
#[derive(Debug, Clone)]
pub struct TransactionBuilder {
    origin: Origin,
    pub client: ClientInfo,
    pub tls: Option<TlsInfo>,
    pub mta_queue_id: Option<String>,
    received: Option<SystemTime>,
    id: Option<String>,
}

impl TransactionBuilder {
    pub fn new(origin: Origin) -> TransactionBuilder {
        TransactionBuilder {
            origin,
            client: ClientInfo {
                addr: String::new(),
                helo: String::new(),
            },
            tls: None,
            mta_queue_id: None,
            received: None,
            id: None,
        }
    }

    pub fn client(mut self, addr: impl Into<String>, helo: impl Into<String>) -> Self {
        self.client = ClientInfo {
            addr: addr.into(),
            helo: helo.into(),
        };
        self
    }

    pub fn tls(mut self, tls: Option<TlsInfo>) -> Self {
        self.tls = tls;
        self
    }

    pub fn mta_queue_id(mut self, id: Option<String>) -> Self {
        self.mta_queue_id = id;
        self
    }

    /// A message that already has its id and time (a held one, being released).
    pub fn as_received(mut self, id: &str, received: SystemTime) -> Self {
        self.id = Some(id.to_string());
        self.received = Some(received);
        self
    }

    /// The transaction for one message.
    pub fn build(&self, envelope: Envelope, message: Spool) -> Transaction {
        Transaction {
            id: self.id.clone().unwrap_or_else(new_queue_id),
            received: self.received.unwrap_or_else(SystemTime::now),
            client: self.client.clone(),
            tls: self.tls.clone(),
            envelope,
            message: std::sync::Arc::new(message),
            front_end: self.origin,
            mta_queue_id: self.mta_queue_id.clone(),
        }
    }
}

/// A queue id: time-ordered and unique within the process (and, with the pid, across
/// instances on one host), 16 upper-case hex digits like Postfix's long ids.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    static PID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (*PID.get_or_init(|| u64::from(std::process::id())) << 20) ^ n;
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
