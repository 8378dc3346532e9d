//! Hostile message content through a running gateway: every message gets a decision, no
//! panic, and what cannot be classified is held, never passed.

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";
const TO: &str = "bob@cps.cjsm.net";
const SIG: &str = "\r\nJane Doe\r\nTel: 020 7946 0018\r\n";

/// Sends the message and returns the tracking record of the decision.
fn judge(mg: &Markgate, msg: &str) -> serde_json::Value {
    let before = mg.records().len();
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], msg);
    assert!(code == 250 || code == 550, "{code} {text}");
    let records = mg.records();
    assert_eq!(records.len(), before + 1, "one record per message");
    records[before].clone()
}

fn nested(depth: usize) -> String {
    let mut msg =
        String::from("Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
    for i in 1..depth {
        msg.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n",
            i - 1
        ));
    }
    msg.push_str(&format!(
        "--b{}\r\nContent-Type: text/plain\r\n\r\nhello{SIG}--b{}--\r\n",
        depth - 1,
        depth - 1
    ));
    for i in (0..depth - 1).rev() {
        msg.push_str(&format!("--b{i}--\r\n"));
    }
    msg
}

#[test]
fn hostile_messages_all_get_a_decision_and_the_unclassifiable_are_held() {
    let sink = Sink::start(&[]);
    // A budget a debug build on a loaded machine keeps to: the cases that must be
    // classified are not held for time.
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["classifier:\n  budget: 60s".into()],
            ..Opts::default()
        },
    );
    let held = |r: &serde_json::Value| r["action"] == "quarantine" && r["rule"] == "unclassifiable";

    // MIME nested 1,000 deep.
    assert!(held(&judge(&mg, &nested(1000))));

    // 10,000 parts.
    let mut many =
        String::from("Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    for _ in 0..10_000 {
        many.push_str("--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
    }
    many.push_str("--b--\r\n");
    assert!(held(&judge(&mg, &many)));

    // Forwarded messages nested past the depth limit (the nearest thing to a loop).
    let mut inner = format!("Subject: [SECRET] core\r\n\r\nx{SIG}");
    for i in 0..20 {
        inner = format!(
            "Subject: fwd {i}\r\nContent-Type: multipart/mixed; boundary=f{i}\r\n\r\n--f{i}\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--f{i}--\r\n"
        );
    }
    let r = judge(&mg, &inner);
    assert!(held(&r), "{r}");

    // 100,000 headers.
    let mut headers = String::new();
    for i in 0..100_000 {
        headers.push_str(&format!("X-H{i}: v\r\n"));
    }
    // Past what the classifier reads of a header block, a marking could hide: held.
    let r = judge(
        &mg,
        &format!("{headers}Subject: [SECRET] many headers\r\n\r\nbody{SIG}"),
    );
    assert!(held(&r), "{r}");

    // Broken base64 and quoted-printable, an unknown charset, invalid UTF-8.
    for body in [
        "Content-Transfer-Encoding: base64\r\n\r\n!!!not*base64===\r\nAAA\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nbroken =ZZ escape and = at end=\r\n",
        "Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nhello\r\n",
    ] {
        let r = judge(&mg, &format!("Subject: [OFFICIAL] broken\r\n{body}{SIG}"));
        assert!(r["action"].is_string(), "{r}");
    }
    let mut bad_utf8 =
        b"Subject: [SECRET] \xff\xfe bad\r\n\r\n\xc3\x28 invalid \xed\xa0\x80\r\n".to_vec();
    bad_utf8.extend_from_slice(SIG.as_bytes());
    let r = judge(&mg, &String::from_utf8_lossy(&bad_utf8));
    assert_eq!(r["action"], "reject", "the marking is still found: {r}");

    // An RFC 2047 bomb: thousands of encoded words in a folded subject.
    let mut subject = String::from("Subject: [RESTRICTED]");
    for _ in 0..5000 {
        subject.push_str("\r\n =?utf-8?B?QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB?=");
    }
    let r = judge(&mg, &format!("{subject}\r\n\r\nbody{SIG}"));
    assert_eq!(r["marking"]["level"], "RESTRICTED");

    // Zip-bomb-like repetition: 20 MB of one line, classified from its head and tail.
    let mut big = String::from("Subject: lunch\r\n\r\nSECRET\r\n");
    let line = "same same same same same same same same same same same same same same\r\n";
    for _ in 0..(20 * 1024 * 1024 / line.len()) {
        big.push_str(line);
    }
    big.push_str(SIG);
    let r = judge(&mg, &big);
    assert_eq!(r["rule"], "above-restricted", "{}", r["marking"]);
    // Memory stays bounded through all of the above (the 20 MB message is spooled, and
    // classification reads a bounded view of it). A loose ceiling, not a measurement.
    assert!(
        mg.peak_rss_kb() < 256 * 1024,
        "peak RSS {} kB",
        mg.peak_rss_kb()
    );
    // Only messages classified as marked and allowed went on to the next hop.
    for r in mg.records().iter().filter(|r| r["action"] == "pass") {
        let level = r["marking"]["level"].as_str().unwrap_or("");
        assert!(
            level == "OFFICIAL" || level == "RESTRICTED",
            "passed at level {level}"
        );
    }
    let passes = mg
        .records()
        .iter()
        .filter(|r| r["action"] == "pass")
        .count();
    assert_eq!(sink.wait_for(passes).len(), passes);
}

#[test]
fn a_classification_past_its_budget_is_held() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["classifier: {budget: 1ms}".into()],
            ..Opts::default()
        },
    );
    // Enough work that classification cannot finish in a millisecond in a debug build.
    let mut msg = String::from(
        "Subject: [OFFICIAL] slow\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for i in 0..3000 {
        msg.push_str(&format!(
            "--b\r\nContent-Type: text/html\r\n\r\n<p>part {i}</p>{}\r\n",
            "<b>x</b>".repeat(40)
        ));
    }
    msg.push_str(&format!("--b--\r\n{SIG}"));
    let r = judge(&mg, &msg);
    assert_eq!(r["rule"], "unclassifiable", "{r}");
    assert!(sink.messages().is_empty());
}
