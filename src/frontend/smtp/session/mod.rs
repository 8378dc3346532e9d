//! One SMTP session. It owns the stream (any `AsyncRead + AsyncWrite`, so tests can drive it
//! over a duplex pipe), its state and the transaction in progress.
//!
//! Only `run` touches the socket: it races each read against the idle timeout and shutdown,
//! then pushes the bytes through `ingest`, which handles pipelining and partial reads in one
//! place. Replies are collected and written once the input in hand is used up, so a
//! pipelined batch gets one write (RFC 2920).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

mod end_of_data;
mod verbs;

use super::command;
use super::data::{DataReader, Progress};
use crate::gateway::{Gateway, Snapshot};
use crate::message::Spool;
use crate::reply::Reply;
use crate::transaction::{Envelope, TlsInfo};

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

/// Which limit a read ran into.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Idle,
    Session,
    DataRate,
}

pub struct Session {
    io: Box<dyn Io>,
    gateway: Arc<Gateway>,
    /// STARTTLS as it was offered when the session started (a reload does not change it).
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
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
    /// The session ends here however busy it is (`limits.session_timeout`).
    session_deadline: Instant,
    /// When the current DATA started and how many bytes it has brought, for the minimum
    /// data rate.
    data_started: Option<(Instant, u64)>,
}

impl Session {
    pub fn new(
        io: Box<dyn Io>,
        peer: SocketAddr,
        gateway: Arc<Gateway>,
        tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
    ) -> Session {
        let snapshot = gateway.snapshot();
        Session {
            io,
            tls_acceptor,
            snapshot: snapshot.clone(),
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
            session_deadline: Instant::now() + snapshot.config.limits.session_timeout,
            data_started: None,
            shutdown,
        }
    }

    fn hostname(&self) -> &str {
        &self.snapshot.config.hostname
    }

    fn reply(&mut self, reply: Reply) {
        self.gateway.metrics.reply(reply.code);
        // Written in place (no String per reply); the same bytes as `Reply::to_wire`.
        use std::io::Write;
        let _ = write!(self.out, "{reply}\r\n");
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
            let (wait, ends) = self.read_limit();
            let read = tokio::select! {
                r = tokio::time::timeout(wait, self.io.read(&mut buf)) => r,
                _ = self.shutdown.changed() => {
                    let bye = Reply::shutting_down(self.hostname());
                    self.reply(bye);
                    return self.flush().await;
                }
            };
            match read {
                Err(_) => {
                    let host = self.hostname();
                    let bye = match ends {
                        Limit::Idle => Reply::timeout(host),
                        Limit::Session => Reply::session_too_long(host),
                        Limit::DataRate => Reply::data_too_slow(host),
                    };
                    self.reply(bye);
                    return self.flush().await;
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => {
                    if let Some((_, bytes)) = &mut self.data_started {
                        *bytes += n as u64;
                    }
                    self.input.extend_from_slice(&buf[..n]);
                }
                Ok(Err(err)) => return Err(err),
            }
        }
    }

    /// How long the next read may wait, and which limit ends it: the idle timeout of the
    /// state, the session's deadline, or in DATA the minimum rate (`data_timeout` plus the
    /// bytes so far at `min_data_rate`), whichever comes first.
    fn read_limit(&self) -> (Duration, Limit) {
        let limits = &self.snapshot.config.limits;
        let now = Instant::now();
        let mut limit = match self.state {
            State::Command => (limits.command_timeout, Limit::Idle),
            State::Data(_) => (limits.data_timeout, Limit::Idle),
        };
        let left = self.session_deadline.saturating_duration_since(now);
        if left < limit.0 {
            limit = (left, Limit::Session);
        }
        if let (Some((started, bytes)), State::Data(_), rate @ 1..) =
            (self.data_started, &self.state, limits.min_data_rate)
        {
            let allowed = limits.data_timeout + Duration::from_secs_f64(bytes as f64 / rate as f64);
            let left = (started + allowed).saturating_duration_since(now);
            if left < limit.0 {
                limit = (left, Limit::DataRate);
            }
        }
        limit
    }

    /// Upgrades the stream in place. Anything the client pipelined after STARTTLS was
    /// dropped before this point, so no plaintext byte can be read as if it were encrypted.
    async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.tls_acceptor.clone() else {
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
        let (path, line) = match command::envelope_path(line) {
            None => (String::new(), std::borrow::Cow::Borrowed(line)),
            Some(Ok((path, rebuilt))) => (path, std::borrow::Cow::Owned(rebuilt)),
            Some(Err(reply)) => {
                self.reply(reply);
                return self.error_next();
            }
        };
        match command::parse(&line) {
            Ok(Request::Ehlo { host }) => self.ehlo(&host, true),
            Ok(Request::Helo { host }) => self.ehlo(&host, false),
            Ok(Request::Mail { from }) => self.mail_from(&path, from),
            Ok(Request::Rcpt { to }) => self.rcpt_to(&path, to),
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
}
