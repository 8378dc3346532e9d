//! One SMTP session. It owns the stream (any `AsyncRead + AsyncWrite`, so tests can drive it
//! over a duplex pipe), its state and the transaction in progress.
//!
//! Only `run` touches the socket: it races each read against the idle timeout and shutdown,
//! then pushes the bytes through `ingest`, which handles pipelining and partial reads in one
//! place. Replies are collected and written once the input in hand is used up, so a
//! pipelined batch gets one write (RFC 2920).

use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::{
    Request, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::command;
use super::data::{DataFault, DataReader, Progress};
use super::reply::Reply;
use crate::gateway::{Gateway, Snapshot};
use crate::message::Spool;
use crate::transaction::{ClientInfo, Envelope, MailParams, Recipient, TlsInfo, Transaction};

/// Any byte stream a session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum State {
    Command,
    Data(DataReader),
}

/// What the read loop does after ingesting.
enum Next {
    Read,
    Close,
    StartTls,
}

pub struct Session {
    io: Box<dyn Io>,
    gateway: Arc<Gateway>,
    /// Rules, directory and config as they were when the session started.
    snapshot: Arc<Snapshot>,
    peer: SocketAddr,
    helo: Option<String>,
    tls: Option<TlsInfo>,
    state: State,
    envelope: Option<Envelope>,
    rcpt_attempts: usize,
    spool: Option<Spool>,
    input: Vec<u8>,
    out: Vec<u8>,
    /// Skipping the rest of an over-long command line.
    skipping_line: bool,
    errors: usize,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    pub fn new(
        io: Box<dyn Io>,
        peer: SocketAddr,
        gateway: Arc<Gateway>,
        shutdown: watch::Receiver<bool>,
    ) -> Session {
        Session {
            io,
            snapshot: gateway.snapshot(),
            gateway,
            peer,
            helo: None,
            tls: None,
            state: State::Command,
            envelope: None,
            rcpt_attempts: 0,
            spool: None,
            input: Vec::new(),
            out: Vec::new(),
            skipping_line: false,
            errors: 0,
            shutdown,
        }
    }

    fn hostname(&self) -> &str {
        &self.snapshot.config.hostname
    }

    fn reply(&mut self, reply: Reply) {
        self.gateway.metrics.reply(reply.code);
        self.out.extend_from_slice(reply.to_wire().as_bytes());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Runs the session to its end; errors are logged here and never reach the accept loop.
    pub async fn run(mut self) {
        let greeting = Reply::new(220, "", format!("{} ESMTP markgate", self.hostname()));
        self.reply(greeting);
        if let Err(err) = self.serve().await {
            tracing::debug!(peer = %self.peer, error = %err, "session ended with an I/O error");
        }
        let _ = self.io.shutdown().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.ingest().await {
                Next::Read => {}
                Next::Close => return self.flush().await,
                Next::StartTls => {
                    self.flush().await?;
                    if !self.start_tls().await {
                        return Ok(());
                    }
                    continue;
                }
            }
            self.flush().await?;
            let limits = &self.snapshot.config.limits;
            let idle = match self.state {
                State::Command => limits.command_timeout,
                State::Data(_) => limits.data_timeout,
            };
            let read = tokio::select! {
                r = tokio::time::timeout(idle, self.io.read(&mut buf)) => r,
                _ = self.shutdown.changed() => {
                    let bye = Reply::shutting_down(self.hostname());
                    self.reply(bye);
                    return self.flush().await;
                }
            };
            match read {
                Err(_) => {
                    let bye = Reply::timeout(self.hostname());
                    self.reply(bye);
                    return self.flush().await;
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => self.input.extend_from_slice(&buf[..n]),
                Ok(Err(err)) => return Err(err),
            }
        }
    }

    /// Upgrades the stream in place. Anything the client pipelined after STARTTLS was
    /// dropped before this point, so no plaintext byte can be read as if it were encrypted.
    async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.gateway.tls_acceptor.clone() else {
            return false;
        };
        // A closed pipe stands in for the stream while it is being upgraded.
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let handshake = tokio::time::timeout(
            self.snapshot.config.limits.command_timeout,
            acceptor.accept(plain),
        )
        .await;
        match handshake {
            Ok(Ok(stream)) => {
                let (_, conn) = stream.get_ref();
                self.tls = Some(TlsInfo {
                    version: conn
                        .protocol_version()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default(),
                    cipher: conn
                        .negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite()))
                        .unwrap_or_default(),
                });
                self.io = Box::new(stream);
                // RFC 3207: forget everything learnt before the handshake.
                self.helo = None;
                self.reset_transaction();
                true
            }
            Ok(Err(err)) => {
                tracing::info!(peer = %self.peer, error = %err, "TLS handshake failed");
                false
            }
            Err(_) => false,
        }
    }

    /// Pushes the buffered input through the state machine.
    async fn ingest(&mut self) -> Next {
        let mut start = 0;
        let next = loop {
            if start >= self.input.len() {
                break Next::Read;
            }
            match &mut self.state {
                State::Data(reader) => {
                    let mut bytes = Vec::new();
                    let progress = reader.feed(&self.input[start..], &mut bytes);
                    if let Some(spool) = &mut self.spool {
                        if let Err(err) = spool.write(&bytes) {
                            tracing::error!(error = %err, "spool write failed");
                            self.spool = None;
                        }
                    }
                    match progress {
                        Progress::NeedMore => start = self.input.len(),
                        Progress::Done { consumed } => {
                            start += consumed;
                            // Replies queued so far go out before the (possibly slow) decision.
                            self.end_of_data().await;
                        }
                    }
                }
                State::Command => {
                    let rest = &self.input[start..];
                    let max = self.snapshot.config.limits.max_command_length;
                    let Some(pos) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > max {
                            // Drop what we have and the rest of the line when it comes.
                            start = self.input.len();
                            if !self.skipping_line {
                                self.skipping_line = true;
                                self.reply(Reply::line_too_long());
                                if self.count_error() {
                                    break Next::Close;
                                }
                            }
                        }
                        break Next::Read;
                    };
                    let line = rest[..=pos].to_vec();
                    start += pos + 1;
                    if std::mem::take(&mut self.skipping_line) {
                        continue;
                    }
                    if line.len() > max {
                        self.reply(Reply::line_too_long());
                        if self.count_error() {
                            break Next::Close;
                        }
                        continue;
                    }
                    match self.command(&line) {
                        Next::Read => {}
                        Next::Close => break Next::Close,
                        Next::StartTls => {
                            start = self.input.len();
                            break Next::StartTls;
                        }
                    }
                }
            }
        };
        self.input.drain(..start.min(self.input.len()));
        if matches!(next, Next::StartTls) {
            self.input.clear();
        }
        next
    }

    /// Counts a client error; true when the session should close.
    fn count_error(&mut self) -> bool {
        self.errors += 1;
        if self.errors >= self.snapshot.config.limits.max_errors {
            self.reply(Reply::too_many_errors());
            return true;
        }
        false
    }

    fn command(&mut self, line: &[u8]) -> Next {
        match command::parse(line) {
            Ok(Request::Ehlo { host }) => self.ehlo(&host, true),
            Ok(Request::Helo { host }) => self.ehlo(&host, false),
            Ok(Request::Mail { from }) => self.mail_from(from),
            Ok(Request::Rcpt { to }) => self.rcpt_to(to),
            Ok(Request::Data) => self.data(),
            Ok(Request::Rset) => {
                self.reset_transaction();
                self.reply(Reply::ok());
                Next::Read
            }
            Ok(Request::Noop { .. }) => {
                self.reply(Reply::ok());
                Next::Read
            }
            Ok(Request::Quit) => {
                let bye = Reply::bye(self.hostname());
                self.reply(bye);
                Next::Close
            }
            Ok(Request::Help { .. }) => {
                self.reply(Reply::help());
                Next::Read
            }
            Ok(Request::Vrfy { .. }) => {
                self.reply(Reply::vrfy());
                Next::Read
            }
            Ok(Request::StartTls) => self.starttls(),
            Ok(_) => {
                self.reply(Reply::not_implemented());
                self.error_next()
            }
            Err(reply) => {
                self.reply(reply);
                self.error_next()
            }
        }
    }

    fn error_next(&mut self) -> Next {
        if self.count_error() {
            Next::Close
        } else {
            Next::Read
        }
    }

    fn reset_transaction(&mut self) {
        self.envelope = None;
        self.rcpt_attempts = 0;
        self.spool = None;
    }

    fn ehlo(&mut self, host: &str, extended: bool) -> Next {
        if host.is_empty() {
            self.reply(Reply::syntax("EHLO hostname"));
            return self.error_next();
        }
        self.reset_transaction();
        self.helo = Some(host.to_string());
        let name = self.hostname().to_string();
        if !extended {
            self.reply(Reply::new(250, "", name));
            return Next::Read;
        }
        let limits = &self.snapshot.config.limits;
        let mut lines = vec![
            format!("{name} Hello {host} [{}]", self.peer.ip()),
            "PIPELINING".to_string(),
            format!("SIZE {}", limits.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "DSN".to_string(),
        ];
        if self.gateway.tls_acceptor.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".to_string());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
        self.gateway.metrics.reply(250);
        Next::Read
    }

    fn starttls(&mut self) -> Next {
        if self.gateway.tls_acceptor.is_none() {
            self.reply(Reply::tls_not_available());
            return Next::Read;
        }
        if self.tls.is_some() {
            self.reply(Reply::bad_sequence("Error: TLS already active"));
            return self.error_next();
        }
        self.reply(Reply::ready_for_tls());
        Next::StartTls
    }

    fn mail_from(&mut self, from: smtp_proto::MailFrom<std::borrow::Cow<'_, str>>) -> Next {
        let config = &self.snapshot.config;
        let reply = if self.helo.is_none() {
            Some(Reply::bad_sequence("Error: send HELO/EHLO first"))
        } else if config.require_tls && self.tls.is_none() {
            Some(Reply::tls_required())
        } else if self.envelope.is_some() {
            Some(Reply::bad_sequence("Error: nested MAIL command"))
        } else if from.size as u64 > config.limits.max_message_size {
            Some(Reply::message_too_big(config.limits.max_message_size))
        } else {
            None
        };
        if let Some(reply) = reply {
            self.reply(reply);
            return self.error_next();
        }
        let body = if from.flags & MAIL_BODY_BINARYMIME != 0 {
            Some("BINARYMIME")
        } else if from.flags & MAIL_BODY_8BITMIME != 0 {
            Some("8BITMIME")
        } else if from.flags & MAIL_BODY_7BIT != 0 {
            Some("7BIT")
        } else {
            None
        };
        if body == Some("BINARYMIME") {
            // BINARYMIME needs CHUNKING, which markgate does not offer.
            self.reply(Reply::unsupported_parameter("BODY=BINARYMIME"));
            return self.error_next();
        }
        let ret = if from.flags & MAIL_RET_FULL != 0 {
            Some("FULL")
        } else if from.flags & MAIL_RET_HDRS != 0 {
            Some("HDRS")
        } else {
            None
        };
        self.envelope = Some(Envelope {
            sender: from.address.to_string(),
            params: MailParams {
                body,
                smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
                ret,
                envid: from.env_id.map(|e| e.to_string()),
            },
            recipients: Vec::new(),
        });
        self.reply(Reply::sender_ok());
        Next::Read
    }

    fn rcpt_to(&mut self, to: smtp_proto::RcptTo<std::borrow::Cow<'_, str>>) -> Next {
        let max = self.snapshot.config.limits.max_recipients;
        let relay_ok = self.relay_allowed();
        let Some(envelope) = &mut self.envelope else {
            self.reply(Reply::bad_sequence("Error: need MAIL command"));
            return self.error_next();
        };
        self.rcpt_attempts += 1;
        if !relay_ok {
            self.reply(Reply::relay_denied());
            return self.error_next();
        }
        if to.address.is_empty() || !to.address.contains('@') {
            self.reply(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
            return self.error_next();
        }
        if envelope.recipients.len() >= max {
            self.reply(Reply::too_many_recipients(max));
            return Next::Read;
        }
        let notify = command::notify_param(to.flags);
        envelope.recipients.push(Recipient {
            address: to.address.to_string(),
            notify,
            orcpt: to.orcpt.map(|o| o.to_string()),
        });
        self.reply(Reply::recipient_ok());
        Next::Read
    }

    /// Not an open relay: only configured client networks may send through markgate.
    fn relay_allowed(&self) -> bool {
        let ip = self.peer.ip();
        self.snapshot
            .config
            .relay_networks
            .iter()
            .any(|net| net.contains(ip))
    }

    fn data(&mut self) -> Next {
        let reply = match &self.envelope {
            None => Some(Reply::bad_sequence("Error: need MAIL command")),
            Some(e) if e.recipients.is_empty() && self.rcpt_attempts > 0 => {
                Some(Reply::no_valid_recipients())
            }
            Some(e) if e.recipients.is_empty() => {
                Some(Reply::bad_sequence("Error: need RCPT command"))
            }
            Some(_) => None,
        };
        if let Some(reply) = reply {
            self.reply(reply);
            return self.error_next();
        }
        let limits = &self.snapshot.config.limits;
        self.state = State::Data(DataReader::new(
            limits.max_message_size,
            limits.max_line_length,
        ));
        self.spool = Some(Spool::new(
            limits.spool_threshold,
            &self.snapshot.config.state_dir.join("spool"),
        ));
        self.reply(Reply::start_data());
        Next::Read
    }

    /// The end of DATA: hand the transaction to the gateway and send its reply.
    async fn end_of_data(&mut self) {
        let State::Data(reader) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        let envelope = self.envelope.take().unwrap_or_default();
        let spool = self.spool.take();
        self.rcpt_attempts = 0;
        let limits = &self.snapshot.config.limits;
        let refusal = match reader.fault() {
            Some(DataFault::TooBig) => Some(Reply::message_too_big(limits.max_message_size)),
            Some(DataFault::LineTooLong) => Some(Reply::bad_line_in_data(limits.max_line_length)),
            Some(DataFault::BareNewline) => Some(Reply::bare_newline()),
            None if spool.is_none() => Some(Reply::temp_failure()),
            None => None,
        };
        let txn = Transaction {
            id: crate::transaction::new_queue_id(),
            received: std::time::SystemTime::now(),
            client: ClientInfo {
                addr: self.peer.ip().to_string(),
                helo: self.helo.clone().unwrap_or_default(),
            },
            tls: self.tls.clone(),
            envelope,
            message: std::sync::Arc::new(spool.unwrap_or_else(|| Spool::from_bytes(Vec::new()))),
            front_end: "smtp",
            mta_queue_id: None,
        };
        let reply = match refusal {
            Some(reply) => self.gateway.refuse(&self.snapshot, &txn, reply),
            None => {
                // Let the client see any replies still queued before the decision runs.
                if let Err(err) = self.flush().await {
                    tracing::debug!(error = %err, "flush before decision failed");
                }
                self.gateway
                    .process(&self.snapshot, txn, crate::gateway::HandOff::NextHop)
                    .await
                    .reply
            }
        };
        self.reply(reply);
    }
}
