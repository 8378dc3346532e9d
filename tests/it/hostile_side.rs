//! The surfaces beside the SMTP session (part of the hostile-input suite): the metrics
//! listener and the milter. Connections that connect and stop are closed; there are never
//! more than the bound; the mail listener keeps working under a low `ulimit -n`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Seconds until the server closes `stream` (reads return 0), or `None` within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn a_metrics_client_that_stops_mid_request_is_closed() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["http_idle_timeout: 1s".into()],
            ..Opts::default()
        },
    );
    let mut slow = TcpStream::connect(("127.0.0.1", mg.metrics_port)).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(5));
    assert!(closed.is_some(), "a half request held the connection");
}

#[test]
fn idle_metrics_connections_cannot_starve_the_mail_listener_under_a_low_ulimit() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["http_max_connections: 8".into()],
            nofile: Some(64),
            ..Opts::default()
        },
    );
    // Far more idle connections than the process has descriptors.
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", mg.metrics_port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, text) = smtplib_send(
        mg.port,
        "jane@police.cjsm.net",
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] still served"),
    );
    assert_eq!(code, 250, "{text}");
    assert_eq!(sink.wait_for(1).len(), 1);
    drop(idle);
    // And the metrics port still answers once they are gone (a connection refused while
    // the server has not yet noticed them go is tried again).
    eventually(10, "metrics answer", || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", mg.metrics_port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn an_idle_milter_connection_is_closed() {
    let mg = Markgate::milter(Opts {
        limits: vec!["milter_idle_timeout: 1s".into()],
        ..Opts::default()
    });
    let mut idle = TcpStream::connect(("127.0.0.1", mg.port)).unwrap();
    let closed = closed_within(&mut idle, Duration::from_secs(5));
    assert!(closed.is_some(), "an idle milter connection stayed open");
}

/// The review console's listener, plain and TLS, is bounded like the metrics one: a client
/// that connects and stops (mid-request, or before its ClientHello) is closed after
/// `http_idle_timeout`, and past `http_max_connections` a connection is closed at once.
#[test]
fn idle_review_console_connections_are_closed_and_bounded() {
    let ca = TestCa::new();
    for tls in [false, true] {
        let sink = Sink::start(&[]);
        let port = free_port();
        let tls_lines = if tls {
            format!(
                "\n  tls: {{cert: {}, key: {}}}",
                ca.path("server.pem"),
                ca.path("server.key")
            )
        } else {
            String::new()
        };
        let _mg = Markgate::with(
            sink.port,
            Opts {
                top: vec![format!("review:\n  listen: 127.0.0.1:{port}{tls_lines}")],
                limits: vec![
                    "http_idle_timeout: 1s".into(),
                    "http_max_connections: 4".into(),
                ],
                ..Opts::default()
            },
        );
        wait_port(port);
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(if tls { b"\x16\x03\x01" } else { b"GET /quar" })
            .unwrap();
        assert!(
            closed_within(&mut slow, Duration::from_secs(5)).is_some(),
            "tls {tls}: a stalled client held its connection"
        );
        let held: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let closed = closed_within(&mut extra, Duration::from_millis(800));
        assert!(closed.is_some(), "tls {tls}: a fifth connection was kept");
        drop(held);
    }
}
