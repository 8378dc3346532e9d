//! Hostile SMTP input: each case sends exact bytes after EHLO, asserts the exact replies, and
//! that nothing malformed (here: nothing at all, unless the case says so) reached the next hop.

use std::time::Duration;

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";
const TO: &str = "bob@cps.cjsm.net";

fn envelope() -> String {
    format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n")
}

/// A body the default rules pass (marked, signed), for cases that must deliver.
fn signed(body: &str) -> String {
    format!("Subject: [OFFICIAL] t\r\n\r\n{body}Jane Doe\r\nTel: 020 7946 0018\r\n")
}

/// Sends `input` in one write after EHLO; returns the next `n` replies.
fn exchange(mg: &Markgate, input: &[u8], n: usize) -> Vec<String> {
    let mut raw = Raw::connect(mg.port);
    assert!(raw.reply().starts_with("220"));
    assert!(raw.cmd("EHLO hostile.test").starts_with("250"));
    raw.send(input);
    let replies: Vec<String> = (0..n).map(|_| raw.reply()).collect();
    // The session survives (or closed cleanly after a 421/5xx that ends it).
    let _ = raw.stream.write_all_checked(b"QUIT\r\n");
    replies
}

trait WriteChecked {
    fn write_all_checked(&mut self, b: &[u8]) -> std::io::Result<()>;
}
impl WriteChecked for std::net::TcpStream {
    fn write_all_checked(&mut self, b: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, b)
    }
}

fn expect(replies: &[String], want: &[&str]) {
    assert_eq!(replies.len(), want.len());
    for (got, want) in replies.iter().zip(want) {
        assert!(
            got.starts_with(want),
            "want {want:?}, got {got:?} (all: {replies:?})"
        );
    }
}

/// Defines a hostile case: bytes after EHLO, the reply prefixes expected, and how many
/// messages may reach the sink.
macro_rules! hostile {
    ($name:ident, $input:expr, [$($want:expr),* $(,)?], delivered = $n:expr) => {
        #[test]
        fn $name() {
            let sink = Sink::start(&[]);
            let mg = Markgate::start(sink.port);
            let input: Vec<u8> = $input;
            let want: Vec<&str> = vec![$($want),*];
            let replies = exchange(&mg, &input, want.len());
            expect(&replies, &want);
            std::thread::sleep(Duration::from_millis(150));
            let n: usize = $n;
            if n == 0 {
                assert!(sink.messages().is_empty(), "nothing may reach the next hop");
            } else {
                assert_eq!(sink.wait_for(n).len(), n);
            }
        }
    };
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

// --- SMTP smuggling: only CRLF.CRLF ends data; bare CR/LF refuses the message ----------
hostile!(
    smuggle_lf_dot_lf,
    bytes(&format!(
        "{}{}x\n.\nMAIL FROM:<e@x>\r\nRCPT TO:<f@y>\r\nDATA\r\nevil\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    smuggle_cr_dot_cr,
    bytes(&format!(
        "{}{}x\r.\rMAIL FROM:<e@x>\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    smuggle_lf_dot_crlf,
    bytes(&format!(
        "{}{}x\n.\r\nMAIL FROM:<e@x>\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    smuggle_crlf_dot_lf,
    bytes(&format!(
        "{}{}x\r\n.\nMAIL FROM:<e@x>\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    smuggle_crlf_dot_cr,
    bytes(&format!(
        "{}{}x\r\n.\rMAIL FROM:<e@x>\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    bare_cr_inside_body,
    bytes(&format!("{}{}a\rb\r\n.\r\n", envelope(), signed(""))),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    bare_lf_inside_body,
    bytes(&format!("{}{}a\nb\r\n.\r\n", envelope(), signed(""))),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    bare_lf_in_headers,
    bytes(&format!(
        "{}Subject: x\nBcc: evil@x\r\n\r\nbody\r\n.\r\n",
        envelope()
    )),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    bare_lf_just_before_end,
    bytes(&format!("{}{}end\n\r\n.\r\n", envelope(), signed(""))),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    bare_cr_just_before_end,
    bytes(&format!("{}{}end\r\r\n.\r\n", envelope(), signed(""))),
    ["250", "250", "354", "550 5.5.2"],
    delivered = 0
);
hostile!(
    session_continues_after_a_smuggling_refusal,
    bytes(&format!(
        "{}{}x\n.\n\r\n.\r\n{}{}.\r\n",
        envelope(),
        signed(""),
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "550 5.5.2", "250", "250", "354", "250"],
    delivered = 1
);

// --- Line length -----------------------------------------------------------------------
hostile!(
    over_long_command_line,
    bytes(&format!(
        "MAIL FROM:<{}@x.cjsm.net>\r\nNOOP\r\n",
        "a".repeat(4000)
    )),
    ["500 5.5.2", "250"],
    delivered = 0
);
hostile!(
    over_long_text_line,
    bytes(&format!(
        "{}{}{}\r\n.\r\n",
        envelope(),
        signed(""),
        "y".repeat(1001)
    )),
    ["250", "250", "354", "500 5.5.2"],
    delivered = 0
);
hostile!(
    text_line_at_the_limit_is_accepted,
    bytes(&format!(
        "{}{}{}\r\n.\r\n",
        envelope(),
        signed(&format!("{}\r\n", "y".repeat(998))),
        ""
    )),
    ["250", "250", "354", "250"],
    delivered = 1
);
hostile!(
    one_megabyte_header_line,
    bytes(&format!(
        "{}X-Big: {}\r\n{}.\r\n",
        envelope(),
        "h".repeat(1 << 20),
        signed("")
    )),
    ["250", "250", "354", "500 5.5.2"],
    delivered = 0
);

// --- Bad bytes in commands ---------------------------------------------------------------
hostile!(
    nul_in_command,
    b"MAIL FROM:<a\0b@x.cjsm.net>\r\n".to_vec(),
    ["501"],
    delivered = 0
);
hostile!(
    control_character_in_helo,
    b"HELO evil\x1b[31m\r\n".to_vec(),
    ["501"],
    delivered = 0
);
hostile!(
    control_character_in_mail_from,
    b"MAIL FROM:<a\x07@x.cjsm.net>\r\n".to_vec(),
    ["501"],
    delivered = 0
);
hostile!(
    control_character_in_rcpt,
    bytes(&format!(
        "MAIL FROM:<{FROM}>\r\nRCPT TO:<b\x08@x.cjsm.net>\r\n"
    )),
    ["250", "501"],
    delivered = 0
);
hostile!(
    eight_bit_in_command_verb,
    b"M\xc3\xa4IL FROM:<a@b>\r\n".to_vec(),
    ["500"],
    delivered = 0
);
hostile!(
    unknown_command,
    b"XYZZY\r\n".to_vec(),
    ["500 5.5.2"],
    delivered = 0
);
hostile!(
    auth_is_not_offered,
    b"AUTH PLAIN AGFAYg==\r\n".to_vec(),
    ["502 5.5.1"],
    delivered = 0
);
hostile!(
    bdat_is_not_offered,
    b"BDAT 5 LAST\r\nhello".to_vec(),
    ["502 5.5.1"],
    delivered = 0
);

// --- Sizes and counts ------------------------------------------------------------------
hostile!(
    size_parameter_over_the_limit,
    bytes(&format!("MAIL FROM:<{FROM}> SIZE=999999999999\r\n")),
    ["552 5.3.4"],
    delivered = 0
);
hostile!(
    binarymime_without_chunking,
    bytes(&format!("MAIL FROM:<{FROM}> BODY=BINARYMIME\r\n")),
    ["555 5.5.4"],
    delivered = 0
);
hostile!(
    unsupported_mail_parameter,
    bytes(&format!("MAIL FROM:<{FROM}> FOO=bar\r\n")),
    ["555 5.5.4"],
    delivered = 0
);

// --- Sequence ----------------------------------------------------------------------------
hostile!(
    rcpt_before_mail,
    bytes(&format!("RCPT TO:<{TO}>\r\n")),
    ["503 5.5.1"],
    delivered = 0
);
hostile!(
    data_before_rcpt,
    bytes(&format!("MAIL FROM:<{FROM}>\r\nDATA\r\n")),
    ["250", "503 5.5.1"],
    delivered = 0
);
hostile!(
    nested_mail,
    bytes(&format!("MAIL FROM:<{FROM}>\r\nMAIL FROM:<{FROM}>\r\n")),
    ["250", "503 5.5.1"],
    delivered = 0
);
hostile!(
    empty_recipient,
    bytes(&format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<>\r\n")),
    ["250", "501"],
    delivered = 0
);
hostile!(
    recipient_without_domain,
    bytes(&format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<postmaster>\r\n")),
    ["250", "501 5.1.3"],
    delivered = 0
);
hostile!(
    pipelined_commands_after_data_become_data,
    bytes(&format!(
        "{}RSET\r\nQUIT\r\n{}.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "250"],
    delivered = 1
);
hostile!(
    starttls_without_a_certificate,
    b"STARTTLS\r\nNOOP\r\n".to_vec(),
    ["454 4.7.0", "250"],
    delivered = 0
);
hostile!(
    dot_stuffed_lines_are_restuffed_to_the_next_hop,
    bytes(&format!(
        "{}{}..leading dot\r\n.\r\n",
        envelope(),
        signed("")
    )),
    ["250", "250", "354", "250"],
    delivered = 1
);
hostile!(
    empty_message_is_judged_not_crashed,
    bytes(&format!("{}.\r\n", envelope())),
    ["250", "250", "354", "550 5.7.1"],
    delivered = 0
);

#[test]
fn too_many_errors_close_the_session() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    for _ in 0..19 {
        assert!(raw.cmd("BOGUS").starts_with("500"));
    }
    assert!(raw.cmd("BOGUS").starts_with("500"));
    let r = raw.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(raw.closed());
}

#[test]
fn ten_thousand_recipients_are_capped_and_the_session_survives() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    raw.cmd("EHLO many.test");
    let mut batch = format!("MAIL FROM:<{FROM}>\r\n");
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<u{i}@cps.cjsm.net>\r\n"));
    }
    raw.send(batch.as_bytes());
    assert!(raw.reply().starts_with("250"));
    let mut ok = 0;
    let mut capped = 0;
    for _ in 0..10_000 {
        let r = raw.reply();
        if r.starts_with("250") {
            ok += 1;
        } else if r.starts_with("452 4.5.3") {
            capped += 1;
        }
    }
    assert_eq!((ok, capped), (1000, 9000));
    assert!(raw.cmd("NOOP").starts_with("250"));
}

#[test]
fn commands_sent_before_the_greeting_are_answered_after_it() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::connect(mg.port);
    raw.send(b"EHLO early.test\r\n");
    assert!(raw.reply().starts_with("220"));
    assert!(raw.reply().starts_with("250"));
}

#[test]
fn tls_handshake_garbage_closes_the_connection_and_the_server_survives() {
    let sink = Sink::start(&[]);
    let ca = TestCa::new();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![ca.tls_line()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    raw.cmd("EHLO c.test");
    assert!(raw.cmd("STARTTLS").starts_with("220"));
    raw.send(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef]);
    raw.send(&[0u8; 4096]);
    assert!(raw.closed());
    let mut next = Raw::connect(mg.port);
    assert!(next.reply().starts_with("220"), "server still serves");
}

#[test]
fn require_tls_cannot_be_bypassed_by_pipelining() {
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
    raw.cmd("EHLO c.test");
    // Everything after STARTTLS in the same packet is dropped, never run in plaintext.
    raw.send(format!("STARTTLS\r\n{}{}.\r\n", envelope(), signed("")).as_bytes());
    assert!(raw.reply().starts_with("220"));
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let extra = raw.reply();
    assert!(!extra.starts_with("250"), "{extra}");
    drop(raw);
    let mut plain = Raw::connect(mg.port);
    plain.reply();
    plain.cmd("EHLO c.test");
    assert!(plain
        .cmd(&format!("MAIL FROM:<{FROM}>"))
        .starts_with("530 5.7.0"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(sink.messages().is_empty());
}

#[test]
fn slowloris_is_timed_out() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            limits: vec!["command_timeout: 1s".into(), "data_timeout: 1s".into()],
            ..Opts::default()
        },
    );
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    raw.send(b"E");
    std::thread::sleep(Duration::from_millis(1500));
    let r = raw.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(raw.closed());
    // A client that stalls mid-DATA is freed too, and nothing is forwarded.
    let mut raw = Raw::start(mg.port, FROM, &[TO]);
    raw.send(signed("half a message").as_bytes());
    let r = raw.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(sink.messages().is_empty());
}

#[test]
fn client_vanishing_mid_data_forwards_nothing() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let mut raw = Raw::start(mg.port, FROM, &[TO]);
    raw.send(signed("the first half").as_bytes());
    drop(raw);
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.messages().is_empty());
    assert!(mg.records().is_empty(), "no transaction happened");
}

#[test]
fn two_thousand_connections_at_once_hit_the_limit_and_the_process_survives() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            // All from one address here: the per-client share is not what is tested.
            limits: vec![
                "max_connections: 100".into(),
                "max_connections_per_client: 5000".into(),
            ],
            ..Opts::default()
        },
    );
    mg.wait_idle();
    let mut conns = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", mg.port)) {
            conns.push(s);
        }
    }
    let mut refused = 0;
    let mut greeted = 0;
    for s in &conns {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut r, &mut line);
        if line.starts_with("421 4.7.0") {
            refused += 1;
        } else if line.starts_with("220") {
            greeted += 1;
        }
    }
    assert_eq!(greeted, 100, "exactly the limit is served");
    assert_eq!(refused + greeted, conns.len());
    drop(conns);
    mg.wait_idle();
    let mut raw = Raw::connect(mg.port);
    assert!(raw.reply().starts_with("220"));
    assert!(mg.peak_rss_kb() < 256 * 1024, "{} kB", mg.peak_rss_kb());
}
