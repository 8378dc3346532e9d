//! A stream that ends itself when it has been idle too long: no byte read or written for the
//! limit. Why: a peer that connects and stops (a milter connection left open, `GET /metr`
//! and nothing more) would otherwise hold a file descriptor and its memory for ever, and
//! enough of them starve every listener of the process. Used by the milter and the metrics
//! listener; the SMTP session times its own reads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limiter::Slot;

pub struct Idle<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
    /// The connection's place in a limiter, freed when the stream is dropped.
    _slot: Option<Slot>,
}

impl<S> Idle<S> {
    pub fn new(inner: S, limit: Duration, slot: Option<Slot>) -> Idle<S> {
        Idle {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            _slot: slot,
        }
    }

    fn progress(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.limit);
    }

    /// `Pending` from the inner stream: an error once the limit has passed.
    fn pending_or_expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending_or_expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending_or_expired(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.pending_or_expired(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accept-loop back-off: after a failed accept (EMFILE, ENFILE) wait 50 ms, doubling to a
/// second, and log only when the wait grows, so a descriptor shortage is not also a flood
/// of log lines.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub async fn failed(&mut self, what: &str, err: &std::io::Error) {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(50u64 << self.failures.min(5).saturating_sub(1))
            .min(Duration::from_secs(1));
        if self.failures.is_power_of_two() {
            tracing::warn!(error = %err, failures = self.failures, "{what} accept failed; backing off");
        }
        tokio::time::sleep(wait).await;
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}
