//! The two front ends cannot drift: one table of messages sent through the SMTP front end
//! and through the milter (both run in-process on `127.0.0.1:0`), and for each the same
//! decision, the same reply code and enhanced status, and the same tracking record but for
//! the fields that name the front end and what it handed on to.

use crate::support::*;

use markgate::config::Config;
use markgate::store::TrackingRecord;

const SIGNED: &str = "Hello|Jane Doe|Tel: 020 7946 0018|";
const FROM: &str = "jane@police.cjsm.net";

struct Case {
    name: &'static str,
    subject: &'static str,
    body: String,
    to: &'static str,
    /// The action both must take, and the SMTP reply code it comes to.
    action: &'static str,
    code: u16,
}

fn cases() -> Vec<Case> {
    let case = |name, subject, body: &str, to, action, code| Case {
        name,
        subject,
        body: body.to_string(),
        to,
        action,
        code,
    };
    vec![
        case(
            "secret",
            "[SECRET] operation",
            SIGNED,
            "bob@cps.cjsm.net",
            "reject",
            550,
        ),
        case(
            "restricted to external",
            "[RESTRICTED] case 7",
            SIGNED,
            "bob@gmail.com",
            "reject",
            550,
        ),
        case(
            "unsigned",
            "[RESTRICTED] case 8",
            "Hello|",
            "bob@cps.cjsm.net",
            "reject",
            550,
        ),
        case(
            "unmarked to external",
            "lunch",
            SIGNED,
            "bob@gmail.com",
            "quarantine",
            250,
        ),
        case(
            "official to cjsm",
            "[OFFICIAL] case 9",
            SIGNED,
            "bob@cps.cjsm.net",
            "pass",
            250,
        ),
        // Over limits.max_message_size: refused before it is judged, and tracked so.
        case(
            "oversize",
            "[OFFICIAL] big",
            &format!("{}{SIGNED}", "x".repeat(70).repeat(60).replace("xx", "x|")),
            "bob@cps.cjsm.net",
            "reject",
            552,
        ),
    ]
}

fn config(sink_port: u16) -> Config {
    let mut config = Config::default();
    config.upstream.address = format!("127.0.0.1:{sink_port}");
    config.limits.max_message_size = 4096;
    config
}

/// Sends one case over SMTP; the reply to the end of DATA.
fn by_smtp(port: u16, case: &Case) -> String {
    let mut raw = Raw::start(port, FROM, &[case.to]);
    // The same bytes the milter is given: the header, a blank line, the body.
    let mut body = case.body.replace('|', "\r\n");
    if !body.ends_with("\r\n") {
        body.push_str("\r\n");
    }
    raw.send(format!("Subject: {}\r\n\r\n{body}.\r\n", case.subject).as_bytes());
    let reply = raw.reply();
    raw.cmd("QUIT");
    reply
}

/// Sends one case over the milter; the replies to the end of the message (modifications
/// as `mod X`, then the final one).
fn by_milter(port: u16, case: &Case) -> Vec<String> {
    let steps = [
        "optneg".to_string(),
        "connect 127.0.0.1".into(),
        "helo client.test".into(),
        format!("mail <{FROM}>"),
        format!("rcpt <{}>", case.to),
        format!("header Subject: {}", case.subject),
        "eoh".into(),
        format!("body {}", case.body),
        "eob".into(),
    ];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let replies = milter_client(port, &steps);
    // "O", then one line for each of connect, helo, mail, rcpt, header, eoh and body ("c",
    // or "-" where the milter asked the MTA not to wait for a reply); what follows is the
    // end of the message: modifications, then its own answer.
    assert!(replies.len() > 8, "{replies:?}");
    assert_eq!(
        replies[1..8],
        ["-", "-", "c", "c", "-", "-", "-"],
        "only MAIL and RCPT are answered before the end: {replies:?}"
    );
    replies[8..].to_vec()
}

/// The record with what differs by design taken out: which front end, markgate's queue
/// id and time, and what the pass was handed to (the next hop's reply, or the MTA).
fn comparable(r: &TrackingRecord) -> TrackingRecord {
    let mut r = r.clone();
    r.time = String::new();
    r.queue_id = None;
    r.front_end = None;
    r.next_hop = None;
    if r.action != "reject" {
        r.reply = None;
    }
    if r.outcome == "delivered" || r.outcome == "accepted" {
        r.outcome = "passed".into();
    }
    r
}

#[test]
fn one_table_through_both_front_ends_gives_the_same_replies_and_records() {
    let sink = Sink::start(&[]);
    let smtp = InProcess::start(Front::Smtp, config(sink.port));
    let milter = InProcess::start(Front::Milter, config(sink.port));
    let cases = cases();
    for (i, case) in cases.iter().enumerate() {
        let smtp_reply = by_smtp(smtp.port, case);
        let milter_replies = by_milter(milter.port, case);
        let last = milter_replies
            .last()
            .map(|r| r.trim().to_string())
            .unwrap_or_default();
        let code: u16 = smtp_reply
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert_eq!(code, case.code, "{}: SMTP said {smtp_reply}", case.name);
        match case.action {
            "reject" => {
                // The same reply, code, enhanced status and text, in the milter's reply.
                assert_eq!(
                    last,
                    format!("y {smtp_reply}"),
                    "{}: {milter_replies:?}",
                    case.name
                );
            }
            "quarantine" => {
                assert!(
                    smtp_reply.contains("held for review"),
                    "{}: {smtp_reply}",
                    case.name
                );
                assert!(
                    milter_replies.iter().any(|r| r == "mod q"),
                    "{}: the MTA is told to hold it: {milter_replies:?}",
                    case.name
                );
            }
            _ => {
                assert!(
                    smtp_reply.contains("queued as"),
                    "{}: {smtp_reply}",
                    case.name
                );
                assert!(
                    last == "c" || last == "a",
                    "{}: accepted: {milter_replies:?}",
                    case.name
                );
                assert!(
                    !milter_replies.iter().any(|r| r == "mod q"),
                    "{}",
                    case.name
                );
            }
        }
        let (s, m) = (smtp.records(), milter.records());
        assert_eq!(
            s.len(),
            i + 1,
            "{}: one SMTP record per message: {s:?}",
            case.name
        );
        assert_eq!(
            m.len(),
            i + 1,
            "{}: one milter record per message: {m:?}",
            case.name
        );
        let (s, m) = (&s[i], &m[i]);
        assert_eq!(s.action, case.action, "{}: {s:?}", case.name);
        assert_eq!(s.front_end.as_deref(), Some("smtp"));
        assert_eq!(m.front_end.as_deref(), Some("milter"));
        assert_eq!(comparable(s), comparable(m), "{}", case.name);
    }
    // Only the passed message reached the next hop (the milter's passes are the MTA's to
    // deliver).
    assert_eq!(sink.wait_for(1).len(), 1);
    let oversize = smtp.records().pop().unwrap();
    assert_eq!(oversize.tags, ["protocol"], "{oversize:?}");
}
