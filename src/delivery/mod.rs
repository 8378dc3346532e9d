//! The next hop: forwards a passed message with its original envelope and bytes, over
//! mail-send's low-level client, reusing idle connections.
//!
//! The one promise here: `send` returns `Ok` only after the next hop answered 250 to the
//! end of data. Everything else is an error that says whether the next hop refused
//! (its reply is mirrored to our client) or could not be reached or finished (451 4.4.1).

mod replies;
mod stream;
mod tls;
mod wire;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_send::SmtpClient;
use smtp_proto::{Response, EXT_DSN, EXT_PIPELINING, EXT_START_TLS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use stream::Stream;
use wire::{mail_command, mirror, queue_id_of, rcpt_command, response_line, write_stuffed};

use crate::config::{TlsMode, Upstream};
use crate::message::own_headers;
use crate::message::spool::Spool;
use crate::reply::Reply;
use crate::tls::TlsError;
use crate::transaction::Envelope;

/// The next hop's answer to a delivered message.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The reply line, e.g. `250 2.0.0 Ok: queued as 4F2C`.
    pub reply: String,
    /// The next hop's queue id when its reply names one.
    pub queue_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    /// The next hop answered with a refusal; mirror it.
    #[error("next hop refused: {0}")]
    Refused(Reply),
    /// Down, timing out, dropping, or not offering required TLS: the client retries.
    #[error("next hop unavailable: {0}")]
    Unavailable(String),
}

impl NextHopError {
    /// What our client is told.
    pub fn reply(&self) -> Reply {
        match self {
            NextHopError::Refused(reply) => reply.clone(),
            NextHopError::Unavailable(detail) => Reply::upstream_unavailable(detail),
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NextHopError::Refused(r) if r.is_transient() => "refused_4xx",
            NextHopError::Refused(_) => "refused_5xx",
            NextHopError::Unavailable(_) => "unavailable",
        }
    }
}

/// What goes out as DATA: our headers, then the spool less the byte ranges in `skip`.
struct Body<'a> {
    prepend: &'a [u8],
    message: &'a Spool,
    skip: &'a [std::ops::Range<u64>],
}

impl Body<'_> {
    /// The size announced with SIZE= (before dot-stuffing, as RFC 1870 counts it).
    fn len(&self) -> u64 {
        let skipped: u64 = self.skip.iter().map(|r| r.end - r.start).sum();
        self.message.len() + self.prepend.len() as u64 - skipped
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> NextHopError {
    NextHopError::Unavailable(format!("{what}: {err}"))
}

struct Connection {
    client: SmtpClient<Stream>,
    /// Bytes read after the last reply (see `replies`).
    pending: Vec<u8>,
    dsn: bool,
    pipelining: bool,
    idle_since: Instant,
}

/// The configured next hop and its idle connections.
pub struct NextHop {
    cfg: Upstream,
    helo: String,
    connector: Option<TlsConnector>,
    tls_name: String,
    idle: Mutex<Vec<Connection>>,
}

impl NextHop {
    pub fn new(cfg: &Upstream, helo: &str) -> Result<NextHop, TlsError> {
        let connector = tls::connector(cfg.tls, cfg.ca_file.as_deref())?;
        let host = cfg
            .address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(&cfg.address);
        Ok(NextHop {
            tls_name: cfg.tls_name.clone().unwrap_or_else(|| host.to_string()),
            cfg: cfg.clone(),
            helo: helo.to_string(),
            connector,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    /// Forwards the message: `prepend` (our added headers) then the spool, dot-stuffed, less
    /// any `X-Markgate-*` fields of the sender's (see `message::own_headers`): every path
    /// out goes through here, so none can forward a forged one.
    pub async fn send(
        &self,
        envelope: &Envelope,
        prepend: &[u8],
        message: &Spool,
    ) -> Result<Delivered, NextHopError> {
        let skip = own_headers::ranges(message).map_err(|e| unavailable("reading the spool", e))?;
        let body = Body {
            prepend,
            message,
            skip: &skip,
        };
        let (mut conn, reused) = self.checkout().await?;
        let mut result = self.transact(&mut conn, envelope, &body).await;
        if reused
            && matches!(
                result,
                Err(Failure::BeforeData(NextHopError::Unavailable(_)))
            )
        {
            // An idle connection the next hop had closed: nothing was sent, so a fresh
            // connection may try again.
            conn = self.connect().await?;
            result = self.transact(&mut conn, envelope, &body).await;
        }
        match result {
            Ok(delivered) => {
                self.checkin(conn);
                Ok(delivered)
            }
            Err(Failure::BeforeData(NextHopError::Refused(reply))) => {
                // The session is still in step after a refused envelope: reset and keep it.
                let reset = tokio::time::timeout(self.cfg.timeout, conn.command(b"RSET\r\n")).await;
                if matches!(reset, Ok(Ok(ref r)) if r.code == 250) && !conn.unasked().await {
                    self.checkin(conn);
                }
                Err(NextHopError::Refused(reply))
            }
            Err(Failure::AfterData(NextHopError::Refused(reply))) => {
                // A refusal at the final dot leaves the session ready for the next MAIL.
                if !conn.unasked().await {
                    self.checkin(conn);
                }
                Err(NextHopError::Refused(reply))
            }
            // Anything else: the connection's state is unknown; drop it.
            Err(Failure::BeforeData(err) | Failure::AfterData(err) | Failure::Abandon(err)) => {
                Err(err)
            }
        }
    }

    /// Checks that the next hop answers with a greeting (readiness probes, `check`).
    pub async fn probe(&self) -> Result<(), NextHopError> {
        let conn = self.connect().await?;
        let _ = conn.client.quit().await;
        Ok(())
    }

    /// An idle connection (true: reused) or a new one. A reused connection needs no RSET:
    /// each was returned after a completed transaction or a reset, so it is ready for MAIL
    /// (RFC 5321 4.1.4), and a dead one is caught by `send`'s retry.
    async fn checkout(&self) -> Result<(Connection, bool), NextHopError> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()
            };
            match candidate {
                None => return Ok((self.connect().await?, false)),
                Some(mut conn) if conn.idle_since.elapsed() <= self.cfg.idle_timeout => {
                    // A line the next hop sent while the connection sat idle (a 421, a
                    // stray reply) would be read as the answer to our MAIL: drop it.
                    if conn.unasked().await {
                        continue;
                    }
                    return Ok((conn, true));
                }
                Some(_) => continue,
            }
        }
    }

    fn checkin(&self, mut conn: Connection) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.cfg.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Connection, NextHopError> {
        let timeout = self.cfg.timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&self.cfg.address))
            .await
            .map_err(|_| unavailable("connect", "timed out"))?
            .map_err(|e| unavailable("connect", e))?;
        let _ = tcp.set_nodelay(true);
        let mut client = SmtpClient {
            stream: Stream::Plain(tcp),
            timeout,
        };
        let greeting = timed(timeout, client.read()).await?;
        if greeting.code != 220 {
            return Err(NextHopError::Unavailable(format!(
                "greeting {}",
                response_line(&greeting)
            )));
        }
        let mut ehlo = client
            .ehlo(&self.helo)
            .await
            .map_err(|e| unavailable("EHLO", e))?;
        let offers_tls = ehlo.has_capability(EXT_START_TLS);
        let mut client = match (&self.connector, offers_tls) {
            (Some(connector), true) => {
                let reply = client
                    .cmd(b"STARTTLS\r\n")
                    .await
                    .map_err(|e| unavailable("STARTTLS", e))?;
                if reply.code != 220 {
                    if self.cfg.tls == TlsMode::Required {
                        return Err(NextHopError::Unavailable(format!(
                            "STARTTLS refused: {}",
                            response_line(&reply)
                        )));
                    }
                    client
                } else {
                    let Stream::Plain(tcp) = client.stream else {
                        return Err(NextHopError::Unavailable("TLS twice".into()));
                    };
                    let name = rustls::pki_types::ServerName::try_from(self.tls_name.clone())
                        .map_err(|e| unavailable("TLS name", e))?;
                    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| unavailable("TLS handshake", "timed out"))?
                        .map_err(|e| unavailable("TLS handshake", e))?;
                    let mut client = SmtpClient {
                        stream: Stream::Tls(Box::new(tls)),
                        timeout,
                    };
                    ehlo = client
                        .ehlo(&self.helo)
                        .await
                        .map_err(|e| unavailable("EHLO after STARTTLS", e))?;
                    client
                }
            }
            _ if self.cfg.tls == TlsMode::Required => {
                // Never fall back to plaintext when TLS is required.
                let _ = client.quit().await;
                return Err(NextHopError::Unavailable(
                    "next hop does not offer STARTTLS and TLS is required".into(),
                ));
            }
            _ => client,
        };
        let _ = &mut client;
        Ok(Connection {
            pending: Vec::new(),
            dsn: ehlo.has_capability(EXT_DSN),
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            client,
            idle_since: Instant::now(),
        })
    }

    async fn transact(
        &self,
        conn: &mut Connection,
        envelope: &Envelope,
        body: &Body<'_>,
    ) -> Result<Delivered, Failure> {
        let size = body.len();
        let mut commands = vec![mail_command(envelope, size, conn.dsn)];
        commands.extend(
            envelope
                .recipients
                .iter()
                .map(|r| rcpt_command(r, conn.dsn)),
        );
        let before = Failure::BeforeData;
        let (envelope_replies, data_reply) = if conn.pipelining {
            // MAIL, every RCPT and DATA in one write (RFC 2920), their replies in one read.
            commands.push("DATA\r\n".to_string());
            let batch = commands.concat();
            let n = commands.len();
            tokio::time::timeout(self.cfg.timeout, async {
                conn.client.stream.write_all(batch.as_bytes()).await?;
                conn.client.stream.flush().await?;
                conn.read_replies(n).await
            })
            .await
            .map_err(|_| before(unavailable("envelope", "timed out")))?
            .map_err(|e| before(unavailable("envelope", e)))
            .map(|mut replies| {
                let data = replies.pop();
                (replies, data)
            })?
        } else {
            let mut replies = Vec::with_capacity(commands.len() + 1);
            for command in &commands {
                let reply =
                    tokio::time::timeout(self.cfg.timeout, conn.command(command.as_bytes()))
                        .await
                        .map_err(|_| before(unavailable("envelope", "timed out")))?
                        .map_err(|e| before(unavailable("envelope", e)))?;
                let refused = reply.code >= 400;
                replies.push(reply);
                if refused {
                    break;
                }
            }
            let data = if replies.iter().all(|r| r.code < 400) {
                let data = tokio::time::timeout(self.cfg.timeout, conn.command(b"DATA\r\n"))
                    .await
                    .map_err(|_| before(unavailable("DATA", "timed out")))?
                    .map_err(|e| before(unavailable("DATA", e)))?;
                Some(data)
            } else {
                None
            };
            (replies, data)
        };
        // One refused recipient refuses the whole message: splitting it would report
        // delivery to our client for recipients that never got it. Prefer a 4xx, so the
        // sender retries, over a 5xx, which bounces.
        let refusal = envelope_replies
            .iter()
            .filter(|r| r.code >= 400)
            .min_by_key(|r| r.code);
        if let Some(reply) = refusal {
            let err = NextHopError::Refused(mirror(reply));
            // If DATA was accepted anyway, the only safe way out is to hang up: sending
            // anything now would deliver to the recipients that were accepted.
            return Err(if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                Failure::Abandon(err)
            } else {
                Failure::BeforeData(err)
            });
        }
        match &data_reply {
            Some(r) if r.code == 354 => {}
            Some(r) => return Err(before(refused_or_unavailable(r))),
            None => return Err(before(unavailable("DATA", "no reply"))),
        }
        // A reply before the data went out (a 250 that came with the 354) is not an answer
        // to the data: the next hop is out of step, so nothing it says can be trusted.
        if conn.unasked().await {
            return Err(Failure::Abandon(unavailable(
                "next hop",
                "replied before the data was sent",
            )));
        }
        let after = Failure::AfterData;
        let data_timeout = self.cfg.data_timeout;
        let (mut reader, mut writer) = tokio::io::split(&mut conn.client.stream);
        let mut early = [0u8; 1];
        let sent = tokio::time::timeout(data_timeout, async {
            tokio::select! {
                // Reads are cancel-safe: if the data finishes first, nothing is lost.
                biased;
                written = write_stuffed(&mut writer, body.prepend, body.message, body.skip) => {
                    written.map_err(|e| after(unavailable("sending data", e)))
                }
                _ = reader.read(&mut early) => Err(Failure::Abandon(unavailable(
                    "next hop",
                    "replied while the data was being sent",
                ))),
            }
        })
        .await
        .map_err(|_| after(unavailable("sending data", "timed out")))?;
        sent?;
        let reply = tokio::time::timeout(data_timeout, conn.read_reply())
            .await
            .map_err(|_| after(unavailable("reply", "timed out")))?
            .map_err(|e| after(unavailable("reply", e)))?;
        if reply.code / 100 != 2 {
            return Err(after(refused_or_unavailable(&reply)));
        }
        // More than one answer to the data: out of step. Fail closed (the sender retries)
        // rather than trust either line.
        if conn.unasked().await {
            return Err(Failure::Abandon(unavailable(
                "next hop",
                "sent more than one reply to the data",
            )));
        }
        let line = response_line(&reply);
        Ok(Delivered {
            queue_id: queue_id_of(&reply.message),
            reply: line,
        })
    }
}

/// Where a transaction with the next hop failed, which decides what happens to the
/// connection (and whether a retry on a fresh one is safe).
enum Failure {
    /// Before any message byte was sent.
    BeforeData(NextHopError),
    /// After the data went out (the final reply, or a failure while sending).
    AfterData(NextHopError),
    /// DATA was accepted but the transaction must not go on: hang up.
    Abandon(NextHopError),
}

async fn timed<F>(limit: Duration, f: F) -> Result<Response<String>, NextHopError>
where
    F: std::future::Future<Output = mail_send::Result<Response<String>>>,
{
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| unavailable("reply", "timed out"))?
        .map_err(|e| unavailable("reply", e))
}

fn refused_or_unavailable(reply: &Response<String>) -> NextHopError {
    if (400..600).contains(&reply.code) {
        NextHopError::Refused(mirror(reply))
    } else {
        NextHopError::Unavailable(format!("unexpected reply {}", response_line(reply)))
    }
}
