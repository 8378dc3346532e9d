//! The relay core against real peers: swaks, smtplib and smtp-source as clients, smtp-sink as
//! the next hop, with its failure modes.

use std::time::Duration;

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";
const TO: &str = "bob@cps.cjsm.net";

#[test]
fn swaks_message_reaches_the_sink_byte_identical_apart_from_added_headers() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let msg = good_message("[RESTRICTED] Case file 4411");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, &msg).unwrap();
    let out = swaks(
        mg.port,
        &["--from", FROM, "--to", TO, "--data", path.to_str().unwrap()],
    );
    assert!(out.contains("<-  250 2.0.0 Ok: queued as"), "{out}");
    let dumps = sink.wait_for(1);
    // smtp-sink stores LF line ends; everything else must be the bytes that were sent.
    assert_eq!(strip_added(&dumps[0]), msg.replace("\r\n", "\n"));
    let head = from_markgate(&dumps[0]);
    assert!(head.starts_with("Received: from "), "{head}");
    assert!(head.contains("X-Markgate-Marking: RESTRICTED\n"));
}

#[test]
fn smtplib_gets_250_with_the_next_hop_reply_and_a_delivered_record() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] note"));
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("next hop: 250"), "{text}");
    sink.wait_for(1);
    let records = mg.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["action"], "pass");
    assert_eq!(records[0]["outcome"], "delivered");
    assert_eq!(records[0]["marking"]["level"], "OFFICIAL");
    assert_eq!(records[0]["recipients"][0]["class"], "cjsm");
}

#[test]
fn upstream_down_gives_451_and_nothing_is_tracked_as_delivered() {
    // Port 1: nothing listens there, and no other test can take it.
    let mg = Markgate::start(1);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.4.1"), "{text}");
    let records = mg.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "deferred");
    assert!(records[0]["next_hop"].is_null());
}

#[test]
fn upstream_451_at_end_of_data_is_mirrored_as_4xx() {
    let sink = Sink::start(&["-r", "."]);
    let mg = Markgate::start(sink.port);
    let (code, _) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code / 100, 4);
    assert_eq!(mg.records()[0]["outcome"], "deferred");
}

#[test]
fn upstream_dropping_after_the_data_gives_451() {
    let sink = Sink::start(&["-q", "."]);
    let mg = Markgate::start(sink.port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.4.1"), "{text}");
}

#[test]
fn upstream_dropping_mid_data_gives_451() {
    // A next hop that takes the envelope and hangs up after the first bytes of data.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Every connection is served (markgate's start-up probe is one); the first that reaches
    // DATA is dropped there, and the server stops.
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.write_all(b"220 flaky ESMTP\r\n");
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.to_ascii_uppercase();
                if cmd.starts_with("EHLO") {
                    let _ = s.write_all(b"250-flaky\r\n250 8BITMIME\r\n");
                } else if cmd.starts_with("DATA") {
                    let _ = s.write_all(b"354 go\r\n");
                    let mut first = String::new();
                    let _ = r.read_line(&mut first);
                    return; // drop the connection mid-DATA
                } else if cmd.starts_with("QUIT") {
                    let _ = s.write_all(b"221 bye\r\n");
                    break;
                } else {
                    let _ = s.write_all(b"250 ok\r\n");
                }
            }
        }
    });
    let mg = Markgate::start(port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 451, "{text}");
    server.join().unwrap();
    assert_eq!(mg.records()[0]["outcome"], "deferred");
}

#[test]
fn upstream_550_is_mirrored_to_the_client() {
    let sink = Sink::start(&["-f", "RCPT", "-B", "550 5.1.1 No such user"]);
    let mg = Markgate::start(sink.port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.1.1 next hop said"), "{text}");
}

#[test]
fn pipelined_envelope_with_100_recipients_gets_batched_replies_and_one_delivery() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    assert!(raw.reply().starts_with("220"));
    assert!(raw.cmd("EHLO pipeline.test").contains("PIPELINING"));
    let mut batch = format!("MAIL FROM:<{FROM}>\r\n");
    for i in 0..100 {
        batch.push_str(&format!("RCPT TO:<user{i}@cps.cjsm.net>\r\n"));
    }
    batch.push_str("DATA\r\n");
    raw.send(batch.as_bytes());
    assert!(raw.reply().starts_with("250 2.1.0"));
    for _ in 0..100 {
        let r = raw.reply();
        assert!(r.starts_with("250 2.1.5"), "{r}");
    }
    assert!(raw.reply().starts_with("354"));
    // Not protectively marked: marked mail to a hundred would be held for need to know.
    raw.send(good_message("[NOT PROTECTIVELY MARKED] many").as_bytes());
    raw.send(b".\r\n");
    let r = raw.reply();
    assert!(r.starts_with("250"), "{r}");
    let dumps = sink.wait_for(1);
    let dump = String::from_utf8_lossy(&dumps[0]);
    assert_eq!(dump.matches("X-Rcpt-Args:").count(), 100, "{dump}");
}

#[test]
fn message_over_the_size_limit_gets_552_while_data_arrives_and_by_size_parameter() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["max_message_size: 10000".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    raw.cmd("EHLO size.test");
    let r = raw.cmd(&format!("MAIL FROM:<{FROM}> SIZE=20000"));
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let mut raw = Raw::start(mg.port, FROM, &[TO]);
    let line = format!("{}\r\n", "x".repeat(70));
    for _ in 0..300 {
        raw.send(line.as_bytes());
    }
    raw.send(b".\r\n");
    let r = raw.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // The session survives the refusal.
    assert!(raw.cmd("NOOP").starts_with("250"));
    assert!(sink.messages().is_empty());
}

#[test]
fn too_many_recipients_get_452() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["max_recipients: 3".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::start(mg.port, FROM, &[TO, "b@cps.cjsm.net", "c@cps.cjsm.net"]);
    raw.send(b".\r\n");
    raw.reply();
    raw.cmd(&format!("MAIL FROM:<{FROM}>"));
    for i in 0..3 {
        assert!(raw
            .cmd(&format!("RCPT TO:<r{i}@cps.cjsm.net>"))
            .starts_with("250"));
    }
    let r = raw.cmd("RCPT TO:<r4@cps.cjsm.net>");
    assert!(r.starts_with("452 4.5.3"), "{r}");
}

#[test]
fn over_long_lines_are_refused_in_commands_and_in_data() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    let r = raw.cmd(&format!("EHLO {}", "a".repeat(5000)));
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert!(raw.cmd("NOOP").starts_with("250"));
    let mut raw = Raw::start(mg.port, FROM, &[TO]);
    raw.send(format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(1200)).as_bytes());
    let r = raw.reply();
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert!(sink.messages().is_empty());
}

#[test]
fn bare_lf_and_bare_cr_in_data_are_refused_and_never_forwarded() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    for body in [
        &b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\n"[..],
        b"Subject: x\r\n\r\nhello\r.\rRCPT TO:<evil@x>\r\n",
        b"Subject: x\r\n\r\nhello\r\n.\nDATA\r\n",
    ] {
        let mut raw = Raw::start(mg.port, FROM, &[TO]);
        raw.send(body);
        raw.send(b".\r\n");
        let r = raw.reply();
        assert!(r.starts_with("550 5.5.2"), "{r}");
        assert!(raw.cmd("NOOP").starts_with("250"), "session survives");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(sink.messages().is_empty());
    let rejects = mg
        .records()
        .iter()
        .filter(|r| r["action"] == "reject")
        .count();
    assert_eq!(rejects, 3);
}

#[test]
fn clients_outside_relay_networks_cannot_relay() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["relay_networks: [10.0.0.0/8]".into()],
            ..Opts::default()
        },
    );
    // Refused at the greeting (the RCPT check stays as a second line of defence).
    let mut raw = Raw::connect(mg.port);
    let r = raw.reply();
    assert!(r.starts_with("554 5.7.1"), "{r}");
    assert!(raw.closed());
    assert!(sink.messages().is_empty());
}

#[test]
fn connections_past_the_limit_get_421() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["max_connections: 2".into()],
            ..Opts::default()
        },
    );
    mg.wait_idle();
    let mut a = Raw::connect(mg.port);
    let mut b = Raw::connect(mg.port);
    assert!(a.reply().starts_with("220"));
    assert!(b.reply().starts_with("220"));
    let mut c = Raw::connect(mg.port);
    let r = c.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.closed());
    drop(a);
    eventually(5, "a free slot", || {
        let mut d = Raw::connect(mg.port);
        d.reply().starts_with("220")
    });
}

#[test]
fn idle_client_is_timed_out_with_421() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["command_timeout: 1s".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    let r = raw.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(raw.closed());
}

#[test]
fn commands_have_their_rfc_replies() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    assert!(raw
        .cmd(&format!("MAIL FROM:<{FROM}>"))
        .starts_with("503 5.5.1"));
    let ehlo = raw.cmd("EHLO c.test");
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no certificate, no STARTTLS");
    assert!(raw.cmd("VRFY bob").starts_with("252"));
    assert!(raw.cmd("HELP").starts_with("214"));
    assert!(raw.cmd("NOOP").starts_with("250"));
    assert!(raw.cmd("RCPT TO:<a@b.cjsm.net>").starts_with("503"));
    assert!(raw.cmd("DATA").starts_with("503"));
    assert!(raw.cmd("BDAT 10 LAST").starts_with("502"));
    assert!(raw.cmd("FOO").starts_with("500"));
    assert!(raw
        .cmd(&format!("MAIL FROM:<{FROM}> BODY=8BITMIME SMTPUTF8"))
        .starts_with("250"));
    assert!(
        raw.cmd(&format!("MAIL FROM:<{FROM}>")).starts_with("503"),
        "nested MAIL"
    );
    assert!(raw.cmd("RSET").starts_with("250"));
    assert!(raw.cmd("QUIT").starts_with("221"));
}

#[test]
fn require_tls_refuses_mail_before_starttls() {
    let sink = Sink::start(&[]);
    let ca = TestCa::new();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["require_tls: true".into(), ca.tls_line()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    assert!(raw.cmd("EHLO c.test").contains("STARTTLS"));
    let r = raw.cmd(&format!("MAIL FROM:<{FROM}>"));
    assert!(r.starts_with("530 5.7.0"), "{r}");
    // With TLS, the same message goes through.
    let msg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(msg.path(), good_message("[OFFICIAL] tls")).unwrap();
    let out = swaks(
        mg.port,
        &[
            "--tls",
            "--from",
            FROM,
            "--to",
            TO,
            "--data",
            msg.path().to_str().unwrap(),
        ],
    );
    assert!(out.contains("<~  250 2.0.0 Ok: queued"), "{out}");
    sink.wait_for(1);
    let rec = &mg.records()[0];
    assert!(
        rec["tls"]["version"].as_str().unwrap().contains("TLS"),
        "{rec}"
    );
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let sink = Sink::start(&[]);
    let ca = TestCa::new();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![ca.tls_line()],
            ..Opts::default()
        },
    );
    // STARTTLS with an injected command behind it: the server must not answer the injected
    // command in plaintext, and the TLS handshake then sees garbage-free bytes or fails.
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    raw.cmd("EHLO c.test");
    raw.send(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n");
    let r = raw.reply();
    assert!(r.starts_with("220 2.0.0"), "{r}");
    // No second reply may arrive in plaintext for the injected MAIL.
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let extra = raw.reply();
    assert!(
        !extra.starts_with("250"),
        "injected command answered: {extra}"
    );
}

#[test]
fn next_hop_tls_required_against_a_plaintext_next_hop_gives_4xx_and_sends_nothing() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            upstream: vec!["tls: required".into()],
            ..Opts::default()
        },
    );
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("STARTTLS"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(sink.messages().is_empty(), "no plaintext send");
}

#[test]
fn next_hop_tls_required_is_verified_against_the_configured_ca() {
    // markgate B offers STARTTLS with a test certificate; markgate A must verify it.
    let sink = Sink::start(&[]);
    let ca = TestCa::new();
    let b = Markgate::with(
        sink.port,
        Opts {
            top: vec![ca.tls_line()],
            ..Opts::default()
        },
    );
    let a = Markgate::with(
        b.port,
        Opts {
            upstream: ca.upstream_required(),
            ..Opts::default()
        },
    );
    let (code, text) = smtplib_send(a.port, FROM, &[TO], &good_message("[OFFICIAL] x"));
    assert_eq!(code, 250, "{text}");
    sink.wait_for(1);
    let rec = &b.records()[0];
    assert!(rec["tls"]["version"].is_string(), "B saw TLS: {rec}");
    // A client that trusts a different CA refuses the next hop.
    let other = TestCa::new();
    let c = Markgate::with(
        b.port,
        Opts {
            upstream: other.upstream_required(),
            ..Opts::default()
        },
    );
    let (code, _) = smtplib_send(c.port, FROM, &[TO], &good_message("[OFFICIAL] y"));
    assert_eq!(code, 451);
}

#[test]
fn fifty_megabyte_message_is_spooled_and_memory_stays_bounded() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut msg = good_message("[OFFICIAL] big");
    msg.truncate(msg.find("\r\n\r\n").unwrap() + 4);
    let line = format!("{}\r\n", "z".repeat(76));
    let lines = 50 * 1024 * 1024 / line.len();
    msg.reserve(lines * line.len());
    for _ in 0..lines {
        msg.push_str(&line);
    }
    msg.push_str("\r\nJane Doe\r\nTel: 020 7946 0018\r\n");
    let baseline = mg.peak_rss_kb();
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &msg);
    assert_eq!(code, 250, "{text}");
    let peak = mg.peak_rss_kb();
    assert!(
        peak < baseline + 40 * 1024,
        "peak RSS {peak} kB against a {baseline} kB baseline for a 50 MB message"
    );
    let dumps = sink.wait_for(1);
    // The sink stores LF line ends, one byte less per line.
    assert!(dumps[0].len() > lines * (line.len() - 1));
}

#[test]
fn smtp_source_load_all_messages_arrive() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.txt");
    // smtp-source adds CRLF itself: give it LF lines.
    std::fs::write(&file, good_message("[OFFICIAL] load").replace("\r\n", "\n")).unwrap();
    let out = std::process::Command::new("/usr/sbin/smtp-source")
        .args(["-s", "5", "-m", "50", "-F"])
        .arg(&file)
        .args(["-f", FROM, "-t", TO])
        .arg(format!("127.0.0.1:{}", mg.port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps = sink.wait_for(50);
    assert_eq!(dumps.len(), 50);
    let passes = mg
        .records()
        .iter()
        .filter(|r| r["outcome"] == "delivered")
        .count();
    assert_eq!(passes, 50);
}

#[test]
fn a_reused_next_hop_connection_that_died_is_replaced_without_a_deferral() {
    let mut sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    assert_eq!(
        smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] one")).0,
        250
    );
    // The next hop restarts: markgate's idle connection to it is now dead.
    let port = sink.port;
    sink.kill();
    sink.restart_on(port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[OFFICIAL] two"));
    assert_eq!(code, 250, "{text}");
    assert_eq!(sink.wait_for(2).len(), 2);
}

/// A sender cannot make a message leave with its own `X-Markgate-Marking`: its copies (any
/// case, folded) are removed from the header block, markgate's is the only one, and the
/// rest of the message is untouched; the same for a message large enough to be spooled.
#[test]
fn a_senders_own_markgate_headers_never_reach_the_next_hop() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["spool_threshold: 4096".into()],
            ..Opts::default()
        },
    );
    let forged = good_message("[OFFICIAL] forged").replacen(
        "Subject:",
        "X-Markgate-Marking: NOT PROTECTIVELY\r\n MARKED\r\nx-markgate-released: by nobody\r\nSubject:",
        1,
    );
    let forged = forged.replacen(
        "Hello Bob,",
        "Hello Bob,\r\nX-Markgate-Marking: quoted in the body stays",
        1,
    );
    let large = forged.replacen("Hello Bob,", &"padding line\r\n".repeat(2000), 1);
    for msg in [&forged, &large] {
        let (code, text) = smtplib_send(mg.port, FROM, &[TO], msg);
        assert_eq!(code, 250, "{text}");
    }
    let dumps = sink.wait_for(2);
    for dump in &dumps {
        let head = from_markgate(dump);
        assert_eq!(
            markgate_fields(&head),
            ["X-Markgate-Marking: OFFICIAL"],
            "{}",
            head.split("\n\n").next().unwrap_or_default()
        );
    }
    // Everything else arrived as sent (smtp-sink stores LF line ends).
    let arrived: Vec<String> = dumps.iter().map(|d| strip_added(d)).collect();
    for msg in [&forged, &large] {
        let without_forged = msg
            .replacen(
                "X-Markgate-Marking: NOT PROTECTIVELY\r\n MARKED\r\nx-markgate-released: by nobody\r\n",
                "",
                1,
            )
            .replace("\r\n", "\n");
        assert!(
            arrived.contains(&without_forged),
            "a message of {} bytes did not arrive as sent",
            msg.len()
        );
    }
}

/// The guidelines make delivery receipts the sender's to ask for: the DSN parameters a
/// client gives (RET, ENVID, NOTIFY, ORCPT) reach the next hop as given, xtext kept.
#[test]
fn dsn_requests_reach_the_next_hop() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    assert!(raw.reply().starts_with("220"));
    assert!(raw.cmd("EHLO dsn.test").contains("DSN"));
    let r = raw.cmd(&format!("MAIL FROM:<{FROM}> RET=HDRS ENVID=case+2B4411"));
    assert!(r.starts_with("250"), "{r}");
    let r =
        raw.cmd("RCPT TO:<bob@cps.cjsm.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@cps.cjsm.net");
    assert!(r.starts_with("250"), "{r}");
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(good_message("[OFFICIAL] receipt please").as_bytes());
    let r = raw.cmd(".");
    assert!(r.starts_with("250"), "{r}");
    let dump = String::from_utf8_lossy(&sink.wait_for(1)[0]).to_string();
    let line = |name: &str| {
        dump.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    let mail = line("X-Mail-Args:");
    assert!(
        mail.contains("RET=HDRS") && mail.contains("ENVID=case+2B4411"),
        "{dump}"
    );
    let rcpt = line("X-Rcpt-Args:");
    assert!(
        rcpt.contains("NOTIFY=SUCCESS,FAILURE") && rcpt.contains("ORCPT=rfc822;bob@cps.cjsm.net"),
        "{dump}"
    );
}
