//! The operator's command line against a running `serve`: filters people type (ages,
//! domains, parts of addresses, Message-IDs without brackets), newest first, values
//! refused by name, a readable `quarantine show`, `purge --dry-run`, `track search
//! --follow`, and a released message that carries markgate's own headers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

fn json(out: &std::process::Output) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&succeeded(out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn message(to: &str, subject: &str, id: &str) -> String {
    format!(
        "From: jane@police.cjsm.net\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}@police.cjsm.net>\r\n\r\nSee you at noon.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n"
    )
}

#[test]
fn searches_take_what_operators_type_and_list_newest_first() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let sends = [
        ("a@gmail.com", "lunch one", "m1"),
        ("b@mail.gmail.com", "lunch two", "m2"),
        ("c@example.org", "lunch three", "m3"),
    ];
    for (to, subject, id) in sends {
        let (code, text) = smtplib_send(mg.port, FROM, &[to], &message(to, subject, id));
        assert_eq!(code, 250, "{text}");
        // Distinct record times, so "newest" is well defined.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let search =
        |args: &[&str]| json(&mg.cli(&[&["track", "search", "--json"][..], args].concat()));
    let to = |r: &serde_json::Value| r["recipients"][0]["address"].as_str().unwrap().to_string();

    // Newest first, and --limit keeps the newest.
    let newest: Vec<String> = search(&["--limit", "2"]).iter().map(to).collect();
    assert_eq!(newest, ["c@example.org", "b@mail.gmail.com"]);
    // @domain is that domain; a bare part matches inside addresses.
    let at_gmail: Vec<String> = search(&["--recipient", "@gmail.com"])
        .iter()
        .map(to)
        .collect();
    assert_eq!(at_gmail, ["a@gmail.com"]);
    assert_eq!(search(&["--recipient", "gmail.com"]).len(), 2);
    assert_eq!(search(&["--recipient", "A@GMAIL.COM"]).len(), 1);
    assert_eq!(search(&["--sender", "@police.cjsm.net"]).len(), 3);
    // Message-ID with or without its brackets.
    assert_eq!(search(&["--message-id", "m2@police.cjsm.net"]).len(), 1);
    assert_eq!(search(&["--message-id", "<m2@police.cjsm.net>"]).len(), 1);
    // Ages and names of days.
    assert_eq!(search(&["--since", "1h"]).len(), 3);
    assert_eq!(search(&["--since", "yesterday"]).len(), 3);
    assert_eq!(search(&["--until", "1h"]).len(), 0);
    let bad = mg.cli(&["track", "search", "--since", "lately"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("an age (1h, 7d)"));
    // An action that does not exist is refused by name, with the ones that do.
    let hold = mg.cli(&["track", "search", "--action", "hold"]);
    assert!(!hold.status.success());
    let err = String::from_utf8_lossy(&hold.stderr);
    assert!(err.contains("pass") && err.contains("quarantine"), "{err}");

    // The quarantine list: newest first, with the subject, and the same address forms.
    let text = succeeded(&mg.cli(&["quarantine", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("lunch three"), "{text}");
    assert!(lines[2].contains("lunch one"), "{text}");
    assert!(text.contains("3 held"));
    let q = |args: &[&str]| json(&mg.cli(&[&["quarantine", "list", "--json"][..], args].concat()));
    assert_eq!(q(&["--recipient", "@gmail.com"]).len(), 1);
    assert_eq!(q(&["--recipient", "gmail"]).len(), 2);
    assert_eq!(
        q(&["--since", "2h", "--limit", "1"])[0]["subject"],
        "lunch three"
    );
}

#[test]
fn show_is_readable_purge_can_be_tried_and_release_keeps_markgates_headers() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let msg = message("friend@example.com", "lunch", "m9");
    // Unmarked mail to an external address is held for review.
    let (code, text) = smtplib_send(mg.port, FROM, &["friend@example.com"], &msg);
    assert_eq!(code, 250, "{text}");
    let held = json(&mg.cli(&["quarantine", "list", "--json"]));
    let id = held[0]["id"].as_str().unwrap().to_string();

    let shown = succeeded(&mg.cli(&["quarantine", "show", &id]));
    for want in [
        "rule:",
        "from:        <jane@police.cjsm.net>",
        "to:          <friend@example.com>",
        "subject:     lunch",
        "marking:     UNMARKED",
        "no marking found anywhere",
        "unmarked-to-external",
    ] {
        assert!(shown.contains(want), "{want:?} missing:\n{shown}");
    }
    assert!(
        !shown.trim_start().starts_with('{'),
        "not raw JSON:\n{shown}"
    );
    let as_json: serde_json::Value =
        serde_json::from_str(&succeeded(&mg.cli(&["quarantine", "show", "--json", &id]))).unwrap();
    assert_eq!(as_json["meta"]["id"], id.as_str());

    // Held for a second at least, so "older than 0s" takes it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dry = succeeded(&mg.cli(&["quarantine", "purge", "--older-than", "0s", "--dry-run"]));
    assert!(
        dry.contains(&id) && dry.contains("nothing deleted"),
        "{dry}"
    );
    assert_eq!(json(&mg.cli(&["quarantine", "list", "--json"])).len(), 1);

    let out = mg.cli(&["quarantine", "release", "--by", "A. Analyst", &id]);
    succeeded(&out);
    let dumps = sink.wait_for(1);
    let dump = String::from_utf8_lossy(&dumps[0]);
    assert!(
        dump.contains("X-Markgate-Released: by A. Analyst"),
        "{dump}"
    );
    assert!(
        dump.contains("(markgate) with ESMTP id"),
        "markgate's Received:\n{dump}"
    );
    assert!(dump.contains("X-Markgate-Marking: UNMARKED"), "{dump}");
}

#[test]
fn follow_prints_records_as_they_are_written() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let to = "bob@cps.cjsm.net";
    assert_eq!(
        smtplib_send(mg.port, FROM, &[to], &good_message("[OFFICIAL] first")).0,
        250
    );
    let mut follow = Stopped(
        Command::new(bin())
            .args(["track", "search", "--follow", "--config"])
            .arg(&mg.config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert!(
        first.contains("from=<jane@police.cjsm.net>") && first.contains("action=pass"),
        "{first}"
    );
    assert_eq!(
        smtplib_send(mg.port, FROM, &[to], &good_message("[SECRET] second")).0,
        550
    );
    let next = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert!(
        next.contains("action=reject") && next.contains("rule=above-restricted"),
        "{next}"
    );
}

/// Two releases of one held message at once: one sends it, the other is told it is being
/// released and sends nothing. Delete and purge leave records saying who and why.
#[test]
fn a_message_is_released_once_and_every_operation_is_recorded() {
    let sink = Sink::start(&["-w", "1"]);
    let mg = Markgate::start(sink.port);
    for (i, to) in ["a@example.com", "b@example.com", "c@example.com"]
        .iter()
        .enumerate()
    {
        let msg = message(to, &format!("held {i}"), &format!("r{i}"));
        assert_eq!(smtplib_send(mg.port, FROM, &[to], &msg).0, 250);
    }
    let held = json(&mg.cli(&["quarantine", "list", "--json"]));
    let ids: Vec<String> = held
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    // The sink waits a second before its greeting: both releases are in flight together.
    let run = |id: String, cfg: std::path::PathBuf| {
        std::thread::spawn(move || {
            Command::new(bin())
                .args(["quarantine", "release", "--by", "analyst", "--config"])
                .arg(cfg)
                .arg(id)
                .output()
                .unwrap()
        })
    };
    let first = run(ids[0].clone(), mg.config.clone());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = run(ids[0].clone(), mg.config.clone());
    let (a, b) = (first.join().unwrap(), second.join().unwrap());
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        wins,
        1,
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("being released by another command"),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 1, "delivered once");

    succeeded(&mg.cli(&[
        "quarantine",
        "delete",
        "--by",
        "dpo",
        "--reason",
        "sent in error",
        &ids[1],
    ]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    succeeded(&mg.cli(&[
        "quarantine",
        "purge",
        "--older-than",
        "0s",
        "--reason",
        "weekly",
    ]));
    let records = mg.records();
    let deleted: Vec<_> = records.iter().filter(|r| r["action"] == "delete").collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["queue_id"], ids[1].as_str());
    assert_eq!(deleted[0]["by"], "dpo");
    assert_eq!(deleted[0]["reason"], "sent in error");
    let purged: Vec<_> = records.iter().filter(|r| r["action"] == "purge").collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0]["queue_id"], ids[2].as_str());
    assert_eq!(purged[0]["reason"], "weekly");
    let released: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "released")
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0]["by"], "analyst");
    let found = json(&mg.cli(&["track", "search", "--json", "--action", "delete"]));
    assert_eq!(found.len(), 1);
}

/// A release interrupted after sending began (a crash; recovery holds the message again)
/// is not sent a second time without --force.
#[test]
fn an_interrupted_release_is_not_repeated_without_force() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let msg = message("a@example.com", "held", "i1");
    assert_eq!(smtplib_send(mg.port, FROM, &["a@example.com"], &msg).0, 250);
    let held = json(&mg.cli(&["quarantine", "list", "--json"]));
    let id = held[0]["id"].as_str().unwrap().to_string();
    // What a crash mid-send leaves once recovery has put the claim back.
    let meta_path = mg.state().join(format!("quarantine/{id}.json"));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["released"] =
        serde_json::json!({"by": "analyst", "time": "2026-11-25T10:00:00Z", "state": "sending"});
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let out = mg.cli(&["quarantine", "release", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted after sending began"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(sink.messages().is_empty());
    succeeded(&mg.cli(&["quarantine", "release", "--force", &id]));
    assert_eq!(sink.wait_for(1).len(), 1);
}
