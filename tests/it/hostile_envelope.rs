//! Hostile envelopes (part of the hostile-input suite): the envelope markgate classifies is
//! the envelope the next hop reads. The next hop here is a real Postfix with its default
//! `allow_percent_hack` and `swap_bangpath`, relaying to smtp-sink, so a recipient that
//! Postfix would route elsewhere shows up at the sink.

use crate::postfix::Postfix;
use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

fn restricted() -> String {
    "From: jane@police.cjsm.net\r\nSubject: [RESTRICTED] bail address\r\n\r\nHello,\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n.\r\n".to_string()
}

/// markgate → Postfix (`police.cjsm.net` local, relaying the rest) → sink.
fn chain(top: &[&str]) -> (Sink, Postfix, Markgate) {
    let sink = Sink::start(&[]);
    let pf = Postfix::start(&[
        "mydestination = police.cjsm.net".to_string(),
        format!("relayhost = [127.0.0.1]:{}", sink.port),
    ]);
    let mg = Markgate::with(
        pf.port,
        Opts {
            top: top.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        },
    );
    (sink, pf, mg)
}

/// One transaction with `rcpt` written exactly as given; returns the RCPT reply and, if it
/// was accepted, the reply to the message.
fn send(port: u16, mail: &str, rcpt: &str) -> (String, String, Option<String>) {
    let mut raw = Raw::connect(port);
    assert!(raw.reply().starts_with("220"));
    assert!(raw.cmd("EHLO client.test").starts_with("250"));
    let m = raw.cmd(mail);
    if !m.starts_with("250") {
        return (m, String::new(), None);
    }
    let r = raw.cmd(rcpt);
    if !r.starts_with("250") {
        return (m, r, None);
    }
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(restricted().as_bytes());
    let end = raw.reply();
    raw.cmd("QUIT");
    (m, r, Some(end))
}

fn rcpt_args(sink: &Sink) -> Vec<String> {
    sink.messages()
        .iter()
        .flat_map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .filter(|l| l.starts_with("X-Rcpt-Args:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn rewritable_recipient_forms_are_refused_at_rcpt() {
    let (sink, pf, mg) = chain(&[]);
    let mail = format!("MAIL FROM:<{FROM}>");
    for rcpt in [
        "RCPT TO:<x%gmail.com@police.cjsm.net>",
        "RCPT TO:<gmail.com!x@police.cjsm.net>",
        "RCPT TO:<\"x@gmail.com\"@police.cjsm.net>",
        "RCPT TO:<@relay.test:x@police.cjsm.net>",
        "RCPT TO:<\"x@gmail.com> ORCPT=rfc822;a\"@force.cjsm.net>",
        "RCPT TO:<\"x@gmail.com> NOTIFY=NEVER\"@force.cjsm.net>",
        // Read again unquoted by Postfix, `\\` and `(` swallow the real domain.
        "RCPT TO:<\"root+\\\\\"@police.cjsm.net>",
        "RCPT TO:<\"attacker.example!x(\"@police.cjsm.net>",
        "RCPT TO:<\"x[\"@police.cjsm.net>",
    ] {
        let (_, r, end) = send(mg.port, &mail, rcpt);
        assert!(r.starts_with("553 5.1.3"), "{rcpt}: {r} / {end:?}");
    }
    // The same chain delivers an ordinary recipient, so the refusals are not the chain's.
    let (_, r, end) = send(mg.port, &mail, "RCPT TO:<bob@cps.cjsm.net>");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    sink.wait_for(1);
    eventually(10, "postfix to settle", || pf.queue().trim().is_empty());
    let args = rcpt_args(&sink);
    assert_eq!(args.len(), 1, "{args:?}");
    assert!(
        args[0].starts_with("X-Rcpt-Args: <bob@cps.cjsm.net>"),
        "{args:?}"
    );
}

#[test]
fn a_quoted_local_part_reaches_the_next_hop_quoted_and_injects_nothing() {
    // With the strict check off, the injected text stays inside the quoted local part, and
    // what a dequoting next hop would misread is refused even so.
    let (sink, _pf, mg) = chain(&["strict_addresses: false"]);
    let (_, r, _) = send(
        mg.port,
        &format!("MAIL FROM:<{FROM}>"),
        "RCPT TO:<\"attacker.example!x(\"@police.cjsm.net>",
    );
    assert!(r.starts_with("553 5.1.3"), "{r}");
    let mail = format!("MAIL FROM:<{FROM}>");
    let (_, r, _) = send(
        mg.port,
        &mail,
        "RCPT TO:<\"x@gmail.com> ORCPT=rfc822;a\"@cps.cjsm.net>",
    );
    assert!(r.starts_with("553 5.1.3"), "{r}");
    let (_, r, end) = send(mg.port, &mail, "RCPT TO:<\"x@gmail.com\"@cps.cjsm.net>");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    let (_, r, end) = send(mg.port, &mail, "RCPT TO:<\"a b\"@cps.cjsm.net>");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    sink.wait_for(2);
    let args = rcpt_args(&sink);
    assert!(
        args.iter().all(|a| !a.contains("<x@gmail.com>")),
        "{args:?}"
    );
    assert!(
        args.iter()
            .any(|a| a.contains("<\"x@gmail.com\"@cps.cjsm.net>")),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a.contains("\"a b\"@cps.cjsm.net")),
        "{args:?}"
    );
    let records = mg.records();
    assert_eq!(
        records[1]["recipients"][0]["address"],
        "\"a b\"@cps.cjsm.net"
    );
}

#[test]
fn eight_bit_and_control_characters_in_the_envelope_are_refused() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    // 8-bit local part without SMTPUTF8.
    let (_, r, _) = send(
        mg.port,
        &format!("MAIL FROM:<{FROM}>"),
        "RCPT TO:<jöe@cps.cjsm.net>",
    );
    assert!(r.starts_with("553 5.1.3"), "{r}");
    // A UTF-8 C1 control (NEL) in MAIL FROM, even with SMTPUTF8.
    let (m, _, _) = send(
        mg.port,
        "MAIL FROM:<ja\u{85}ne@police.cjsm.net> SMTPUTF8",
        "RCPT TO:<bob@cps.cjsm.net>",
    );
    assert!(m.starts_with("553 5.1.7"), "{m}");
    // With SMTPUTF8 an 8-bit address is fine.
    let (m, r, end) = send(
        mg.port,
        "MAIL FROM:<jäne@police.cjsm.net> SMTPUTF8",
        "RCPT TO:<böb@cps.cjsm.net>",
    );
    assert!(m.starts_with("250") && r.starts_with("250"), "{m} {r}");
    assert!(end.unwrap().starts_with("250"));
    assert_eq!(sink.wait_for(1).len(), 1);
}
