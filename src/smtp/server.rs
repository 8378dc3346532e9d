//! The accept loop: bounds concurrency (past the limit a client gets 421 4.7.0 and the
//! connection closes), spawns one task per session, and stops on shutdown. Session errors
//! are handled inside the session's task and never reach this loop.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::reply::Reply;
use super::session::Session;
use crate::gateway::Gateway;

/// Serves SMTP on `listener` until `shutdown` turns true; sessions in flight are told 421.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limit = gateway.snapshot().config.limits.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            gateway.metrics.session_refused();
            gateway.metrics.reply(421);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(Reply::too_many_connections().to_wire().as_bytes())
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let gateway = gateway.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            gateway.metrics.session_started();
            Session::new(Box::new(stream), peer, gateway.clone(), shutdown)
                .run()
                .await;
            gateway.metrics.session_ended("closed");
            drop(permit);
        });
    }
    Ok(())
}
