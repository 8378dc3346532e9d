//! A milter client speaking the protocol directly (part of the hostile-input suite): state
//! is per client and per message, and commands out of order are refused. Postfix never sends
//! these sequences, but anyone who can reach the milter port can.

use crate::support::*;

fn run(port: u16, steps: &[&str]) -> Vec<String> {
    milter_client(port, steps)
}

const SIGNED: &str = "body Hello|Jane Doe|Tel: 020 7946 0018|";

/// A message over the milter, from MAIL to end of body.
fn message(subject: &str) -> Vec<String> {
    vec![
        "mail <jane@police.cjsm.net>".into(),
        "rcpt <bob@cps.cjsm.net>".into(),
        format!("header Subject: {subject}"),
        "eoh".into(),
        SIGNED.into(),
        "eob".into(),
    ]
}

#[test]
fn a_reused_milter_connection_forgets_the_previous_clients_tls() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: plaintext\n    when:\n      tls: false\n    action:\n      reject:\n        code: 530\n        status: \"5.7.0\"\n        text: \"TLS required\"\n",
    )
    .unwrap();
    let mg = Markgate::milter(Opts {
        top: vec![format!("rules: {}", rules.display())],
        ..Opts::default()
    });
    let mut steps: Vec<String> = vec![
        "optneg".into(),
        "connect 192.0.2.1".into(),
        "helo tls.test".into(),
        "tls TLSv1.3".into(),
    ];
    steps.extend(message("[OFFICIAL] over TLS"));
    // The MTA reuses the connection for a plaintext client.
    steps.extend([
        "quitnc".into(),
        "connect 192.0.2.2".into(),
        "helo plain.test".into(),
    ]);
    steps.extend(message("[OFFICIAL] in plaintext"));
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let replies = run(mg.port, &steps);
    let finals: Vec<&String> = replies
        .iter()
        .filter(|r| r.starts_with('y') || r.starts_with('c') || r.starts_with('a'))
        .collect();
    // The last reply is the plaintext message's: refused by the tls: false rule.
    let last = finals.last().unwrap();
    assert!(last.starts_with("y 530"), "{replies:?}");
    let records = mg.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[1]["tls"].is_null(), "{}", records[1]);
    assert_eq!(records[1]["client"]["helo"], "plain.test");
}

#[test]
fn milter_commands_out_of_order_are_refused() {
    let mg = Markgate::milter(Opts::default());
    // A body with no MAIL: the connection ends (the MTA tempfails), nothing is judged.
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "header Subject: x",
            "eob",
        ],
    );
    assert_eq!(replies.last().unwrap(), "closed", "{replies:?}");
    // A header after the end of headers (a SECRET subject read as body text).
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "mail <jane@police.cjsm.net>",
            "rcpt <bob@cps.cjsm.net>",
            "header Subject: hello",
            "eoh",
            "header Subject: [SECRET] plan",
            SIGNED,
            "eob",
        ],
    );
    assert_eq!(replies.last().unwrap(), "closed", "{replies:?}");
    assert!(mg.records().is_empty(), "{:?}", mg.records());
    // Body bytes carried by the end-of-body command (libmilter would read them as a last
    // chunk; they would go out unread): the connection ends, nothing is judged.
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "mail <jane@police.cjsm.net>",
            "rcpt <bob@gmail.com>",
            "header Subject: hello",
            "eoh",
            SIGNED,
            "eobdata [SECRET] the plan|",
        ],
    );
    assert_eq!(replies.last().unwrap(), "closed", "{replies:?}");
    assert!(mg.records().is_empty(), "{:?}", mg.records());
    // A 64 KB recipient is refused, not kept.
    let long = format!("rcpt <{}@cps.cjsm.net>", "a".repeat(64 * 1024 - 100));
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "mail <jane@police.cjsm.net>",
            &long,
        ],
    );
    assert!(replies.last().unwrap().starts_with("y 501"), "{replies:?}");
}
