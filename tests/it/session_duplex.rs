//! The SMTP session driven over an in-memory pipe (`tokio::io::duplex`), with the gateway
//! built in-process: per-verb behaviour without a socket, a child process or a port.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use markgate::config::Config;
use markgate::frontend::smtp::session::Session;
use markgate::store::Store;

/// A session on one end of a pipe; the test holds the other.
struct Driven {
    client: DuplexStream,
    config: Config,
    _state: tempfile::TempDir,
    session: tokio::task::JoinHandle<()>,
}

impl Driven {
    fn start() -> Driven {
        let state = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: state.path().join("state"),
            hostname: "markgate.test".into(),
            ..Config::default()
        };
        let running =
            markgate::runtime::build(&config, Arc::new(markgate::metrics::Metrics::new()))
                .expect("gateway");
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let peer = "127.0.0.1:40000".parse().unwrap();
        let session = Session::new(Box::new(server), peer, running.gateway, None, shutdown);
        let session = tokio::spawn(async move {
            session.run().await;
            drop(_stop);
        });
        Driven {
            client,
            config,
            _state: state,
            session,
        }
    }

    /// Reads until a final reply line (`NNN text`) has arrived; returns all lines read.
    async fn reply(&mut self) -> String {
        let mut got = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if self.client.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            got.push(byte[0]);
            if got.ends_with(b"\r\n") {
                let text = String::from_utf8_lossy(&got).to_string();
                let last = text
                    .trim_end()
                    .rsplit("\r\n")
                    .next()
                    .unwrap_or("")
                    .to_string();
                if last.as_bytes().get(3) == Some(&b' ') {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got).trim_end().to_string()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

#[tokio::test]
async fn verbs_out_of_sequence_are_503_and_the_session_goes_on() {
    let mut s = Driven::start();
    assert!(s.reply().await.starts_with("220 markgate.test"));
    assert!(s
        .cmd("RCPT TO:<bob@cps.cjsm.net>")
        .await
        .starts_with("503 5.5.1"));
    assert!(s.cmd("DATA").await.starts_with("503 5.5.1"));
    let ehlo = s.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.contains("ENHANCEDSTATUSCODES"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("STARTTLS"),
        "no certificate, no STARTTLS: {ehlo}"
    );
    assert!(s
        .cmd("MAIL FROM:<jane@police.cjsm.net>")
        .await
        .starts_with("250 2.1.0"));
    assert!(
        s.cmd("DATA").await.starts_with("503 5.5.1"),
        "no recipient yet"
    );
    assert!(s.cmd("QUIT").await.starts_with("221 2.0.0"));
    s.session.await.unwrap();
}

#[tokio::test]
async fn a_secret_message_fed_one_byte_at_a_time_is_refused_and_tracked() {
    let mut s = Driven::start();
    s.reply().await;
    s.cmd("EHLO client.test").await;
    s.cmd("MAIL FROM:<jane@police.cjsm.net>").await;
    s.cmd("RCPT TO:<bob@cps.cjsm.net>").await;
    assert!(s.cmd("DATA").await.starts_with("354"));
    let message =
        b"Subject: [SECRET] operation\r\n\r\nHello\r\nJane Doe\r\nTel: 020 7946 0018\r\n.\r\n";
    for b in message {
        s.send(&[*b]).await;
        tokio::task::yield_now().await;
    }
    let reply = s.reply().await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    let records = Store::open(&s.config).unwrap().tracking.records().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].action, "reject");
    assert_eq!(records[0].rule.as_deref(), Some("above-restricted"));
    assert_eq!(records[0].front_end.as_deref(), Some("smtp"));
    assert_eq!(records[0].reply.as_deref(), Some(reply.as_str()));
    assert!(s.cmd("QUIT").await.starts_with("221"));
}
