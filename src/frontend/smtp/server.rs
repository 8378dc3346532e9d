//! The accept loop: refuses clients outside the relay networks at the greeting, bounds
//! concurrency in all and per client (past either a client gets 421 4.7.0 and the
//! connection closes), spawns one task per session, and stops on shutdown. Session errors
//! are handled inside the session's task and never reach this loop.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::session::Session;
use super::tls::Acceptor;
use crate::gateway::Gateway;
use crate::idle::Backoff;
use crate::limiter::{Limiter, Refused};
use crate::reply::Reply;

/// Serves SMTP on `listener` until `shutdown` turns true; sessions in flight are told 421.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Arc<Acceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = gateway.snapshot().config.limits.clone();
    let slots = Limiter::new(limits.max_connections, limits.max_connections_per_client);
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(err) => {
                // EMFILE and friends: back off rather than spin or flood the log.
                backoff.failed("SMTP", &err).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let snapshot = gateway.snapshot();
        // Not an open relay, and not a slot-holder either: a client outside the relay
        // networks is answered at the greeting and closed.
        let refusal = if !snapshot
            .config
            .relay_networks
            .iter()
            .any(|n| n.contains(peer.ip()))
        {
            Err(Reply::not_a_client(&snapshot.config.hostname))
        } else {
            slots.acquire(peer.ip()).map_err(|refused| match refused {
                Refused::Total => Reply::too_many_connections(),
                Refused::PerClient => Reply::too_many_from_client(),
            })
        };
        let permit = match refusal {
            Ok(slot) => slot,
            Err(reply) => {
                gateway.metrics.session_refused();
                gateway.metrics.reply(reply.code);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        stream.write_all(reply.to_wire().as_bytes()),
                    )
                    .await;
                    let _ = stream.shutdown().await;
                });
                continue;
            }
        };
        let gateway = gateway.clone();
        let shutdown = shutdown.clone();
        let tls = tls.current();
        tokio::spawn(async move {
            gateway.metrics.session_started();
            Session::new(Box::new(stream), peer, gateway.clone(), tls, shutdown)
                .run()
                .await;
            gateway.metrics.session_ended("closed");
            drop(permit);
        });
    }
    Ok(())
}
