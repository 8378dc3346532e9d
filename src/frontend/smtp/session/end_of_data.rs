//! The end of DATA: refuse a faulty message, or build the [`Transaction`] and hand it to
//! the gateway, whose reply the client gets.

use super::{Session, State};
use crate::frontend::smtp::data::DataFault;
use crate::message::Spool;
use crate::reply::Reply;
use crate::transaction::{Origin, TransactionBuilder};

impl Session {
    /// The end of DATA: hand the transaction to the gateway and send its reply.
    pub(super) async fn end_of_data(&mut self) {
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
        let txn = TransactionBuilder::new(Origin::Smtp)
            .client(
                self.peer.ip().to_string(),
                self.helo.clone().unwrap_or_default(),
            )
            .tls(self.tls.clone())
            .build(
                envelope,
                spool.unwrap_or_else(|| Spool::from_bytes(Vec::new())),
            );
        let reply = match refusal {
            Some(reply) => self.gateway.refuse(&self.snapshot, &txn, reply).await,
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
