//! Reading the next hop's replies in step. mail-send's reader drops whatever follows a reply
//! in the same read, so a reply that came early (a `250` before the data was sent) or
//! unasked (a stray line on an idle pooled connection) was either lost or taken as the
//! answer to the next command. Here what follows a reply is kept, and the transaction asks
//! whether anything is waiting before it relies on the next reply: if so, the next hop is
//! out of step, the transaction fails (451) and the connection is dropped.

use std::future::Future;

use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Connection;

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Connection {
    /// Reads one reply, keeping any bytes that follow it.
    pub(super) async fn read_reply(&mut self) -> std::io::Result<Response<String>> {
        let mut parser = ResponseReceiver::default();
        loop {
            if !self.pending.is_empty() {
                let mut iter = self.pending.iter();
                match parser.parse(&mut iter) {
                    Ok(reply) => {
                        self.pending = iter.as_slice().to_vec();
                        return Ok(reply);
                    }
                    // The parser keeps what it has read so far.
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => self.pending.clear(),
                    Err(_) => return Err(broken("unparseable reply")),
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.client.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads `n` replies (a pipelined batch).
    pub(super) async fn read_replies(
        &mut self,
        n: usize,
    ) -> std::io::Result<Vec<Response<String>>> {
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    /// Sends one command and reads its reply.
    pub(super) async fn command(&mut self, line: &[u8]) -> std::io::Result<Response<String>> {
        self.client.stream.write_all(line).await?;
        self.client.stream.flush().await?;
        self.read_reply().await
    }

    /// True when the next hop has said something nobody asked for (or hung up): bytes left
    /// after the last reply, or bytes already waiting on the socket.
    pub(super) async fn unasked(&mut self) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        let mut buf = [0u8; 512];
        // The read polled exactly once: ready data (or EOF) is unasked; nothing waiting is
        // the normal case. Reads are cancel-safe, so nothing is lost. (Not a zero timeout:
        // tokio's timer fires on its next millisecond tick, which cost every message three
        // of them.)
        let mut read = std::pin::pin!(self.client.stream.read(&mut buf));
        // Unconstrained: tokio's cooperative budget could otherwise answer Pending for
        // bytes that are there.
        let polled = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(read.as_mut().poll(cx))
        }))
        .await;
        match polled {
            std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => true,
            std::task::Poll::Ready(Ok(n)) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            std::task::Poll::Pending => false,
        }
    }
}
