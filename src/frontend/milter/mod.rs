//! The milter front end: the same policy inside Postfix's own smtpd. It gathers connect,
//! HELO, envelope, headers and body into the same [`Transaction`] the SMTP front end builds,
//! calls the same [`Gateway::process`], and maps the answer to milter replies:
//! reject → SMFIR_REPLYCODE, quarantine → SMFIR_QUARANTINE (Postfix holds it) plus a copy
//! in markgate's own quarantine, pass → accept with the marking header added.
//!
//! Any error or timeout here closes the milter connection; Postfix then applies
//! `milter_default_action`, which must be `tempfail` so nothing leaves unchecked.

use std::sync::Arc;

use async_trait::async_trait;
use miltr_common::actions::{Action as MilterAction, Continue, Replycode};
use miltr_common::commands::{Body, Connect, Header, Helo, Macro, Mail, Recipient as MilterRcpt};
use miltr_common::modifications::headers::{AddHeader, ChangeHeader};
use miltr_common::modifications::quarantine::Quarantine as QuarantineMod;
use miltr_common::modifications::ModificationResponse;
use miltr_common::optneg::{Capability, MacroStage, OptNeg, Protocol};
use miltr_server::Milter;
use tokio::sync::watch;

mod connection;

use crate::gateway::{Gateway, HandOff, Snapshot};
use crate::idle::{Backoff, Idle};
use crate::limiter::{Limiter, Slot};
use crate::mailbox::{Mailbox, Rules};
use crate::message::{own_headers, Spool};
use crate::policy::Action;
use crate::reply::Reply;
use crate::transaction::{ClientInfo, Envelope, Origin, Recipient, TlsInfo, TransactionBuilder};

/// Where the milter listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Inet(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Listen::Unix(path.into()));
        }
        let addr = s.strip_prefix("inet:").unwrap_or(s);
        addr.parse()
            .map(Listen::Inet)
            .map_err(|_| format!("`{s}`: use inet:ADDR:PORT or unix:PATH"))
    }
}

/// Why a milter callback failed; any of them ends the connection (Postfix tempfails).
/// Each says whose fault it is: the MTA's (a command out of order, which Postfix never
/// sends but anyone reaching the port can) or ours (the spool).
#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("milter client error: {0} out of order")]
    OutOfOrder(&'static str),
    #[error("milter client error: end of message without MAIL and RCPT")]
    NoEnvelope,
    #[error("internal error: spool write failed: {0}")]
    Spool(#[source] std::io::Error),
}

/// One milter connection's state: a new one per connection.
struct Session {
    gateway: Arc<Gateway>,
    snapshot: Arc<Snapshot>,
    client: ClientInfo,
    tls: Option<TlsInfo>,
    mta_queue_id: Option<String>,
    envelope: Option<Envelope>,
    spool: Option<Spool>,
    /// The header block is written to the spool when the body starts.
    in_body: bool,
    /// Names of the sender's `X-Markgate-*` fields, in order: deleted before ours are added.
    owned: Vec<String>,
    limit_hit: bool,
}

impl Session {
    fn new(gateway: Arc<Gateway>) -> Session {
        Session {
            snapshot: gateway.snapshot(),
            gateway,
            client: ClientInfo {
                addr: String::new(),
                helo: String::new(),
            },
            tls: None,
            mta_queue_id: None,
            envelope: None,
            spool: None,
            in_body: false,
            owned: Vec::new(),
            limit_hit: false,
        }
    }

    /// Forgets the client (address, HELO, TLS facts) and its transaction.
    fn new_client(&mut self) {
        self.reset();
        self.client = ClientInfo {
            addr: String::new(),
            helo: String::new(),
        };
        self.tls = None;
    }

    fn reset(&mut self) {
        self.envelope = None;
        self.spool = None;
        self.in_body = false;
        self.owned.clear();
        self.limit_hit = false;
        self.mta_queue_id = None;
    }

    /// The same checks as the SMTP front end, SMTPUTF8 as the client gave it in MAIL
    /// (Postfix's default `strict_smtputf8 = no` does not check it for us).
    fn address_rules(&self) -> Rules {
        Rules {
            strict: self.snapshot.config.strict_addresses,
            smtputf8: self.envelope.as_ref().is_some_and(|e| e.params.smtputf8),
        }
    }

    fn spool(&mut self) -> &mut Spool {
        // Called for every header and body chunk: the spool is made once per message.
        let (gateway, threshold) = (&self.gateway, self.snapshot.config.limits.spool_threshold);
        self.spool
            .get_or_insert_with(|| Spool::new(threshold, gateway.store.spool_dir()))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), MilterError> {
        let max = self.snapshot.config.limits.max_message_size;
        let spool = self.spool();
        let room = max.saturating_sub(spool.len());
        let (bytes, over) = if bytes.len() as u64 > room {
            // Kept up to the limit, as the SMTP front end's DATA reader keeps it, so both
            // track the same size for the refusal.
            (&bytes[..room as usize], true)
        } else {
            (bytes, false)
        };
        let written = spool.write(bytes).map_err(MilterError::Spool);
        self.limit_hit |= over;
        written
    }
}

/// Postfix hands the envelope in angle brackets; accept a bare one too.
fn bracketed(addr: &str) -> String {
    let addr = addr.trim();
    if addr.starts_with('<') {
        addr.to_string()
    } else {
        format!("<{addr}>")
    }
}

fn reply_code(reply: &Reply) -> MilterAction {
    // RCode takes digit values, not ASCII.
    let c = reply.code;
    let rcode = [(c / 100 % 10) as u8, (c / 10 % 10) as u8, (c % 10) as u8];
    let text = reply.text.replace('%', "%%");
    match reply.status {
        Some(x) => Replycode::new(rcode, [u16::from(x.class), x.subject, x.detail], &text).into(),
        None => Replycode::without_xcode(rcode, &text).into(),
    }
}

#[async_trait]
impl Milter for Session {
    type Error = MilterError;

    async fn option_negotiation(
        &mut self,
        theirs: OptNeg,
    ) -> Result<OptNeg, miltr_server::Error<Self::Error>> {
        // Everything but unknown commands: body banners matter, so no NO_BODY. No reply to
        // the stages whose answer is always "continue", where the MTA offers that.
        let mut ours = OptNeg {
            capabilities: Capability::SMFIF_ADDHDRS
                | Capability::SMFIF_CHGHDRS
                | Capability::SMFIF_QUARANTINE,
            protocol: Protocol::NO_UNKNOWN
                | Protocol::SMFIP_HDR_LEADSPC
                | (connection::NO_REPLY & theirs.protocol),
            ..OptNeg::default()
        };
        ours.macro_stages.with_stage(
            MacroStage::MailFrom,
            &[
                "{auth_authen}",
                "{tls_version}",
                "{cipher}",
                "{client_addr}",
            ],
        );
        ours.macro_stages.with_stage(MacroStage::EndOfBody, &["i"]);
        Ok(ours)
    }

    async fn macro_(&mut self, macro_: Macro) -> Result<(), Self::Error> {
        let mut version = None;
        let mut cipher = None;
        for (name, value) in macro_.macros() {
            let value = String::from_utf8_lossy(value).to_string();
            match name {
                b"i" => self.mta_queue_id = Some(value),
                b"{tls_version}" if !value.is_empty() => version = Some(value),
                b"{cipher}" if !value.is_empty() => cipher = Some(value),
                b"{client_addr}" if !value.is_empty() => self.client.addr = value,
                _ => {}
            }
        }
        if let Some(version) = version {
            self.tls = Some(TlsInfo {
                version,
                cipher: cipher.unwrap_or_default(),
            });
        }
        Ok(())
    }

    async fn connect(&mut self, connect: Connect) -> Result<MilterAction, Self::Error> {
        // A new client: nothing of the previous one (TLS facts, HELO) carries over.
        self.new_client();
        self.client.addr = connect.address().to_string();
        Ok(Continue.into())
    }

    async fn helo(&mut self, helo: Helo) -> Result<MilterAction, Self::Error> {
        self.client.helo = helo.helo().to_string();
        Ok(Continue.into())
    }

    async fn mail(&mut self, mail: Mail) -> Result<MilterAction, Self::Error> {
        self.reset();
        // A new transaction takes the rules as they are now.
        self.snapshot = self.gateway.snapshot();
        let smtputf8 = mail
            .esmtp_args()
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case("SMTPUTF8"));
        let rules = Rules {
            smtputf8,
            ..self.address_rules()
        };
        let sender = match Mailbox::parse_path(&bracketed(&mail.sender()), rules) {
            Ok(sender) => sender,
            Err(err) => {
                return Ok(reply_code(&Reply::new(
                    err.code(),
                    "5.1.7",
                    format!("Sender {err}"),
                )))
            }
        };
        self.envelope = Some(Envelope {
            sender,
            params: crate::transaction::MailParams {
                smtputf8,
                ..Default::default()
            },
            ..Envelope::default()
        });
        Ok(Continue.into())
    }

    async fn rcpt(&mut self, rcpt: MilterRcpt) -> Result<MilterAction, Self::Error> {
        let mailbox = match Mailbox::parse_path(&bracketed(&rcpt.recipient()), self.address_rules())
        {
            Ok(Some(mailbox)) => mailbox,
            Ok(None) => return Ok(reply_code(&Reply::new(501, "5.1.3", "Bad recipient"))),
            Err(err) => {
                return Ok(reply_code(&Reply::new(
                    err.code(),
                    "5.1.3",
                    format!("Recipient {err}"),
                )))
            }
        };
        let max = self.snapshot.config.limits.max_recipients;
        let Some(envelope) = &mut self.envelope else {
            return Err(MilterError::OutOfOrder("RCPT before MAIL"));
        };
        if envelope.recipients.len() >= max {
            return Ok(reply_code(&Reply::too_many_recipients(max)));
        }
        let first = envelope.recipients.first().map(|r| r.address());
        if let Err(reply) = self.snapshot.admit_recipient(first, mailbox.as_str()) {
            self.gateway.metrics.recipient_split();
            return Ok(reply_code(&reply));
        }
        envelope.recipients.push(Recipient::plain(mailbox));
        Ok(Continue.into())
    }

    async fn header(&mut self, header: Header) -> Result<MilterAction, Self::Error> {
        // Out of order: a header with no MAIL, or after the end of headers (it would be
        // read as body, so a SECRET subject sent so would classify as unmarked).
        if self.envelope.is_none() || self.in_body {
            return Err(MilterError::OutOfOrder("header"));
        }
        // With SMFIP_HDR_LEADSPC the value keeps its leading space, so the bytes are the
        // header as the client sent it (bar folding, which Postfix sends as CRLF + WSP).
        let line = format!(
            "{}:{}\r\n",
            header.name(),
            header
                .value()
                .replace("\n", "\r\n")
                .replace("\r\r\n", "\r\n")
        );
        self.write(line.as_bytes())?;
        // Past the size limit nothing more is kept, not even the names (a client could
        // otherwise stream names without end).
        if !self.limit_hit && own_headers::is_owned(header.name().as_bytes()) {
            self.owned.push(header.name().to_string());
        }
        Ok(Continue.into())
    }

    async fn end_of_header(&mut self) -> Result<MilterAction, Self::Error> {
        if self.envelope.is_none() || self.in_body {
            return Err(MilterError::OutOfOrder("end of headers"));
        }
        self.write(b"\r\n")?;
        self.in_body = true;
        Ok(Continue.into())
    }

    async fn body(&mut self, body: Body) -> Result<MilterAction, Self::Error> {
        if self.envelope.is_none() || !self.in_body {
            return Err(MilterError::OutOfOrder("body"));
        }
        self.write(body.as_bytes())?;
        Ok(Continue.into())
    }

    async fn end_of_body(&mut self) -> Result<ModificationResponse, Self::Error> {
        // A message with no MAIL or no recipient is not one to judge (an empty envelope
        // must never pass): the connection ends and the MTA applies its default action.
        let Some(envelope) = self.envelope.take().filter(|e| !e.recipients.is_empty()) else {
            self.reset();
            return Err(MilterError::NoEnvelope);
        };
        let spool = self
            .spool
            .take()
            .unwrap_or_else(|| Spool::from_bytes(Vec::new()));
        let too_big = self.limit_hit;
        let txn = TransactionBuilder::new(Origin::Milter)
            .client(self.client.addr.clone(), self.client.helo.clone())
            .tls(self.tls.clone())
            .mta_queue_id(self.mta_queue_id.clone())
            .build(envelope, spool);
        if too_big {
            // Refused before it could be judged, and tracked as every refusal is.
            let max = self.snapshot.config.limits.max_message_size;
            let reply = self
                .gateway
                .refuse(&self.snapshot, &txn, Reply::message_too_big(max))
                .await;
            self.reset();
            return Ok(ModificationResponse::builder().build(reply_code(&reply)));
        }
        let processed = self
            .gateway
            .process(&self.snapshot, txn, HandOff::Mta)
            .await;
        let owned = std::mem::take(&mut self.owned);
        self.reset();
        if !processed.reply.is_positive() {
            return Ok(ModificationResponse::builder().build(reply_code(&processed.reply)));
        }
        let mut response = ModificationResponse::builder();
        for change in delete_owned(&owned) {
            response.push(change);
        }
        for (name, value) in &processed.headers {
            response.push(AddHeader::new(
                name.as_bytes(),
                format!(" {value}").as_bytes(),
            ));
        }
        if processed.action == Action::Quarantine {
            let reason = format!(
                "markgate: held by rule {}",
                processed.rule.as_deref().unwrap_or("unclassifiable")
            );
            response.push(QuarantineMod::new(reason.as_bytes()));
        }
        Ok(response.contin())
    }

    async fn abort(&mut self) -> Result<(), Self::Error> {
        self.reset();
        Ok(())
    }

    async fn quit_nc(&mut self) -> Result<(), Self::Error> {
        // The MTA reuses the connection for another client.
        self.new_client();
        Ok(())
    }
}

/// Deletions (an empty value) of the sender's `X-Markgate-*` fields. The MTA counts each
/// name's fields case-insensitively from 1; the last go first so no deletion moves the index
/// of one still to come.
fn delete_owned(names: &[String]) -> Vec<ChangeHeader> {
    // Each field's index among those of its name, counted in one pass (a message can
    // carry hundreds of thousands of such fields).
    let mut seen: std::collections::HashMap<String, u32> = Default::default();
    let indexed: Vec<(u32, &String)> = names
        .iter()
        .map(|name| {
            let n = seen.entry(name.to_ascii_lowercase()).or_insert(0);
            *n += 1;
            (*n, name)
        })
        .collect();
    indexed
        .into_iter()
        .rev()
        .map(|(index, name)| ChangeHeader::new(index, name.as_bytes(), b""))
        .collect()
}

/// A bound milter listener: bound before anything is spawned, so a bad address is an
/// error at start-up, not a silent task failure.
pub enum Bound {
    Inet(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Bound {
    /// Where it listens, for the start-up log (`inet:ADDR:PORT` or `unix:PATH`).
    pub fn local_addr(&self) -> Option<String> {
        match self {
            Bound::Inet(l) => l.local_addr().ok().map(|a| format!("inet:{a}")),
            Bound::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display()))),
        }
    }
}

/// Binds the milter listener. A Unix socket is created under umask 0177 (so no moment
/// exists when others could connect), then opened to its group: mode 0660, and the group
/// `group` when given (Postfix's).
pub async fn bind(listen: &Listen, group: Option<&str>) -> std::io::Result<Bound> {
    match listen {
        Listen::Inet(addr) => Ok(Bound::Inet(tokio::net::TcpListener::bind(addr).await?)),
        Listen::Unix(path) => {
            // A stale socket from an earlier run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                std::fs::remove_file(path)?;
            }
            let gid = match group {
                Some(name) => Some(group_id(name).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("milter_socket_group: no group named `{name}`"),
                    )
                })?),
                None => None,
            };
            // At start-up, before anything else creates files: the umask is process-wide.
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
            let bound = tokio::net::UnixListener::bind(path);
            rustix::process::umask(old);
            let listener = bound?;
            if let Some(gid) = gid {
                rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))?;
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            Ok(Bound::Unix(listener))
        }
    }
}

/// The id of a group from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// Serves milter connections until `shutdown` turns true. Connections are bounded by the
/// same limiter as SMTP (`limits.max_connections`; the MTA is the one client, so no
/// per-client share): past it a connection is closed at once and Postfix applies its
/// `milter_default_action`.
pub async fn serve(
    bound: Bound,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let max = gateway.snapshot().config.limits.max_connections;
    let slots = Limiter::new(max, max);
    let mut backoff = Backoff::default();
    loop {
        // accept() is cancel-safe, so racing it against shutdown loses no connection.
        let accepted = tokio::select! {
            a = accept_and_spawn(&bound, &gateway, &slots) => a,
            _ = shutdown.changed() => return Ok(()),
        };
        match accepted {
            Ok(()) => backoff.succeeded(),
            Err(err) => backoff.failed("milter", &err).await,
        }
    }
}

async fn accept_and_spawn(
    bound: &Bound,
    gateway: &Arc<Gateway>,
    slots: &Arc<Limiter>,
) -> std::io::Result<()> {
    let slot = |gateway: &Gateway| match slots.acquire_any() {
        Ok(slot) => Some(slot),
        Err(_) => {
            gateway.metrics.session_refused();
            tracing::warn!("milter connection refused: max_connections reached");
            None
        }
    };
    match bound {
        Bound::Inet(l) => {
            let stream = l.accept().await?.0;
            if let Some(slot) = slot(gateway) {
                spawn(stream, gateway.clone(), slot);
            }
        }
        Bound::Unix(l) => {
            let stream = l.accept().await?.0;
            if let Some(slot) = slot(gateway) {
                spawn(stream, gateway.clone(), slot);
            }
        }
    }
    Ok(())
}

fn spawn<S>(stream: S, gateway: Arc<Gateway>, slot: Slot)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Closed when idle past `limits.milter_idle_timeout`; the slot goes with the stream.
    let idle = gateway.snapshot().config.limits.milter_idle_timeout;
    let stream = Idle::new(stream, idle, Some(slot));
    tokio::spawn(async move {
        let mut session = Session::new(gateway);
        // Postfix times the conversation out on its side (milter_*_timeout) and tempfails.
        if let Err(err) = connection::handle(stream, &mut session).await {
            tracing::info!(error = %err, "milter connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn owned_fields_are_deleted_last_first_with_their_index_among_their_name() {
        let names: Vec<String> = [
            "X-Markgate-A",
            "x-markgate-b",
            "X-MARKGATE-A",
            "X-Markgate-B",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got: Vec<(u32, String)> = super::delete_owned(&names)
            .iter()
            .map(|c| (c.index(), c.name().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "X-Markgate-B".to_string()),
                (2, "X-MARKGATE-A".to_string()),
                (1, "x-markgate-b".to_string()),
                (1, "X-Markgate-A".to_string()),
            ]
        );
    }
}
