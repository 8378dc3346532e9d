//! Hostile sessions (part of the hostile-input suite): a session that cannot be starved.
//! Slow clients, many connections from one address and clients outside the relay networks
//! must not lock out the MTAs markgate serves.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A connection from a chosen loopback address, and its greeting.
fn connect_from(ip: &str, port: u16) -> (TcpStream, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(&stream).read_line(&mut line);
    (stream, line)
}

#[test]
fn one_client_cannot_take_every_slot() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec![
                "max_connections: 10".into(),
                "max_connections_per_client: 3".into(),
            ],
            ..Opts::default()
        },
    );
    mg.wait_idle();
    let held: Vec<_> = (0..3).map(|_| connect_from("127.0.0.1", mg.port)).collect();
    for (_, greeting) in &held {
        assert!(greeting.starts_with("220"), "{greeting}");
    }
    let (_, fourth) = connect_from("127.0.0.1", mg.port);
    assert!(fourth.starts_with("421 4.7.0"), "{fourth}");
    // Another client is still served.
    let (_, other) = connect_from("127.0.0.2", mg.port);
    assert!(other.starts_with("220"), "{other}");
    drop(held);
}

#[test]
fn clients_outside_the_relay_networks_are_refused_at_the_greeting() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["relay_networks: [127.0.0.2/32]".into()],
            ..Opts::default()
        },
    );
    let (mut stream, greeting) = connect_from("127.0.0.1", mg.port);
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    // And closed: the client holds no slot past the greeting.
    let mut rest = String::new();
    let _ = stream.write_all(b"EHLO x\r\n");
    let n = BufReader::new(&stream).read_line(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "{rest}");
    let (_, ok) = connect_from("127.0.0.2", mg.port);
    assert!(ok.starts_with("220"), "{ok}");
}

#[test]
fn a_busy_session_still_ends_at_its_deadline() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["session_timeout: 2s".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    assert!(raw.reply().starts_with("220"));
    let started = Instant::now();
    let last = loop {
        let r = raw.cmd("NOOP");
        if !r.starts_with("250") {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "never ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(last.starts_with("421 4.4.2"), "{last}");
    assert!(raw.closed());
}

#[test]
fn data_trickled_below_the_minimum_rate_is_cut_off_and_nothing_is_forwarded() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["data_timeout: 2s".into(), "min_data_rate: 1000".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::start(mg.port, "jane@police.cjsm.net", &["bob@cps.cjsm.net"]);
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let started = Instant::now();
    let mut reply = String::new();
    let mut reader = BufReader::new(raw.stream.try_clone().unwrap());
    // One byte every 150 ms: each read comes well inside data_timeout, but the rate is
    // ~7 bytes a second.
    while started.elapsed() < Duration::from_secs(10) {
        if raw.stream.write_all(b"x").is_err() {
            break;
        }
        match reader.read_line(&mut reply) {
            Ok(0) => break,
            Ok(_) if reply.ends_with('\n') => break,
            _ => {}
        }
    }
    assert!(reply.starts_with("421 4.4.2"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(sink.messages().is_empty());
}

/// SIGHUP reloads the whole configuration: a changed `hostname` and `relay_networks` take
/// effect at once; a changed `listen` cannot, and is named in a warning and counted.
#[test]
fn sighup_applies_relay_networks_and_hostname_and_names_what_needs_a_restart() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let (_, greeting) = connect_from("127.0.0.1", mg.port);
    assert!(greeting.contains("markgate.test"), "{greeting}");
    let yaml = std::fs::read_to_string(&mg.config).unwrap();
    let changed = yaml
        .replace("hostname: markgate.test", "hostname: renamed.test")
        .replace(
            &format!("listen: 127.0.0.1:{}", mg.port),
            &format!(
                "listen: 127.0.0.1:{}\nrelay_networks: [127.0.0.2/32]",
                free_port()
            ),
        );
    std::fs::write(&mg.config, changed).unwrap();
    mg.signal("HUP");
    eventually(10, "the new hostname", || {
        connect_from("127.0.0.2", mg.port)
            .1
            .contains("renamed.test")
    });
    let (_, refused) = connect_from("127.0.0.1", mg.port);
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    eventually(10, "the restart-only key named and counted", || {
        mg.log_text().contains("need a restart")
            && mg
                .metrics()
                .contains("markgate_config_restart_required_total 1")
    });
    assert!(mg.log_text().contains("listen"));
}
