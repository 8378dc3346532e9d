//! The command handlers, one per SMTP verb: each checks the session state, answers, and
//! moves the transaction on. None of them touches the socket.

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8,
};

use super::{Next, Session, State};
use crate::frontend::smtp::command;
use crate::frontend::smtp::data::DataReader;
use crate::mailbox::{Mailbox, Rules};
use crate::message::Spool;
use crate::reply::Reply;
use crate::transaction::{Envelope, MailParams, Recipient};

impl Session {
    pub(super) fn ehlo(&mut self, host: &str, extended: bool) -> Next {
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
        if self.tls_acceptor.is_some() && self.tls.is_none() {
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

    pub(super) fn starttls(&mut self) -> Next {
        if self.tls_acceptor.is_none() {
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

    pub(super) fn mail_from(
        &mut self,
        path: &str,
        from: smtp_proto::MailFrom<std::borrow::Cow<'_, str>>,
    ) -> Next {
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
        let rules = Rules {
            strict: config.strict_addresses,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        };
        let sender = match Mailbox::parse_path(path, rules) {
            Ok(sender) => sender,
            Err(err) => {
                self.reply(Reply::new(err.code(), "5.1.7", format!("Sender {err}")));
                return self.error_next();
            }
        };
        self.envelope = Some(Envelope {
            sender,
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

    pub(super) fn rcpt_to(
        &mut self,
        path: &str,
        to: smtp_proto::RcptTo<std::borrow::Cow<'_, str>>,
    ) -> Next {
        let max = self.snapshot.config.limits.max_recipients;
        let strict = self.snapshot.config.strict_addresses;
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
        let rules = Rules {
            strict,
            smtputf8: envelope.params.smtputf8,
        };
        let mailbox = match Mailbox::parse_path(path, rules) {
            Ok(Some(mailbox)) => mailbox,
            Ok(None) => {
                self.reply(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
                return self.error_next();
            }
            Err(err) => {
                self.reply(Reply::new(err.code(), "5.1.3", format!("Recipient {err}")));
                return self.error_next();
            }
        };
        if envelope.recipients.len() >= max {
            self.reply(Reply::too_many_recipients(max));
            return Next::Read;
        }
        let first = envelope.recipients.first().map(|r| r.address());
        if let Err(reply) = self.snapshot.admit_recipient(first, mailbox.as_str()) {
            self.gateway.metrics.recipient_split();
            self.reply(reply);
            return Next::Read;
        }
        let notify = command::notify_param(to.flags);
        envelope.recipients.push(Recipient {
            mailbox,
            notify,
            orcpt: to.orcpt.map(|o| o.to_string()),
        });
        self.reply(Reply::recipient_ok());
        Next::Read
    }

    /// Not an open relay: only configured client networks may send through markgate.
    pub(super) fn relay_allowed(&self) -> bool {
        let ip = self.peer.ip();
        self.snapshot
            .config
            .relay_networks
            .iter()
            .any(|net| net.contains(ip))
    }

    pub(super) fn data(&mut self) -> Next {
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
        self.data_started = Some((std::time::Instant::now(), 0));
        self.state = State::Data(DataReader::new(
            limits.max_message_size,
            limits.max_line_length,
        ));
        self.spool = Some(Spool::new(
            limits.spool_threshold,
            self.gateway.store.spool_dir(),
        ));
        self.reply(Reply::start_data());
        Next::Read
    }
}
