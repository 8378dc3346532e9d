//! Quarantine and tracking against a running `serve`: hold, list, show, release to a real
//! smtp-sink; refusals by the current rules; write failures fail closed; search and reindex.

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

fn json_out(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&succeeded(out)).unwrap()
}

fn unmarked() -> String {
    "From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: lunch\r\nMessage-ID: <lunch-1@police.cjsm.net>\r\n\r\nSee you at noon.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n".to_string()
}

/// The behavioural suite runs on both backends: the default files store, and PostgreSQL
/// (a cluster of the test's own).
enum Backend {
    Files,
    Postgres(Postgres),
}

impl Backend {
    fn postgres() -> Backend {
        let pg = Postgres::start();
        pg.migrate();
        Backend::Postgres(pg)
    }

    fn serve(&self, sink_port: u16) -> Markgate {
        let top = match self {
            Backend::Files => Vec::new(),
            Backend::Postgres(pg) => pg.store_yaml(),
        };
        Markgate::with(
            sink_port,
            Opts {
                top,
                ..Opts::default()
            },
        )
    }
}

#[test]
fn quarantine_list_show_release_reaches_the_sink() {
    list_show_release(Backend::Files);
}

#[test]
fn quarantine_list_show_release_reaches_the_sink_on_postgres() {
    list_show_release(Backend::postgres());
}

fn list_show_release(backend: Backend) {
    let sink = Sink::start(&[]);
    let mg = backend.serve(sink.port);
    // With a forged release header: kept in the stored copy, gone from the released one.
    let held = unmarked().replacen("Subject:", "X-Markgate-Released: by nobody\r\nSubject:", 1);
    let (code, text) = smtplib_send(mg.port, FROM, &["friend@example.com"], &held);
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("held for review"), "{text}");
    assert!(sink.messages().is_empty());

    let list = json_out(&mg.cli(&["quarantine", "list", "--json"]));
    let item = &list[0];
    for key in [
        "id",
        "time",
        "sender",
        "recipients",
        "rule",
        "level",
        "size",
    ] {
        assert!(!item[key].is_null(), "{key} missing: {item}");
    }
    assert_eq!(item["rule"], "unmarked-to-external");
    assert_eq!(item["level"], "UNMARKED");
    let id = item["id"].as_str().unwrap().to_string();
    let filtered = json_out(&mg.cli(&["quarantine", "list", "--json", "--rule", "no-such-rule"]));
    assert_eq!(filtered.as_array().unwrap().len(), 0);
    let by_rcpt = json_out(&mg.cli(&[
        "quarantine",
        "list",
        "--json",
        "--recipient",
        "FRIEND@example.com",
    ]));
    assert_eq!(by_rcpt.as_array().unwrap().len(), 1);

    let show = mg.cli(&["quarantine", "show", &id]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("Subject: lunch") && shown.contains("unmarked-to-external"),
        "{shown}"
    );
    let raw = mg.cli(&["quarantine", "show", "--raw", &id]);
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout),
        held,
        "stored byte for byte"
    );

    let out = mg.cli(&["quarantine", "release", "--by", "analyst", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps = sink.wait_for(1);
    let dump = String::from_utf8_lossy(&dumps[0]);
    assert!(dump.contains("X-Markgate-Released: by analyst"), "{dump}");
    assert!(!dump.contains("by nobody"), "{dump}");
    assert!(
        dump.contains("X-Rcpt-Args: <friend@example.com>"),
        "original envelope"
    );
    let list = json_out(&mg.cli(&["quarantine", "list", "--json"]));
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "removed after the next hop's 250"
    );
    let released = mg
        .records()
        .into_iter()
        .find(|r| r["outcome"] == "released")
        .unwrap();
    assert_eq!(released["released_by"], "analyst");
}

#[test]
fn release_is_refused_when_the_current_rules_would_reject() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("hold.yaml");
    std::fs::write(&rules, "rules:\n  - id: hold-all\n    action: quarantine\n").unwrap();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("rules: {}", rules.display())],
            ..Opts::default()
        },
    );
    let (code, _) = smtplib_send(
        mg.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[SECRET] plan"),
    );
    assert_eq!(code, 250);
    let list = json_out(&mg.cli(&["quarantine", "list", "--json"]));
    let id = list[0]["id"].as_str().unwrap().to_string();
    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/cjsm.yaml");
    let out = mg.cli(&["quarantine", "release", &id, "--rules", default_rules]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("above-restricted"), "{err}");
    assert!(sink.messages().is_empty());
    let out = mg.cli(&[
        "quarantine",
        "release",
        "--force",
        &id,
        "--rules",
        default_rules,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sink.wait_for(1);
}

#[test]
fn quarantine_write_failure_gives_451_and_no_pass() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    // A file where the quarantine directory should be: every write fails (root ignores
    // permission bits, so a read-only directory would not).
    std::fs::create_dir_all(mg.state()).unwrap();
    std::fs::write(mg.state().join("quarantine"), b"not a directory").unwrap();
    let (code, text) = smtplib_send(mg.port, FROM, &["friend@example.com"], &unmarked());
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.3.0"), "{text}");
    assert!(sink.messages().is_empty());
    let rec = &mg.records()[0];
    assert_eq!(rec["outcome"], "deferred");
    assert_ne!(rec["outcome"], "delivered");
}

#[test]
fn tracking_write_failure_fails_closed_with_451() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    // Start-up made the tracking dir; a file in its place makes every write fail.
    let _ = std::fs::remove_dir_all(mg.state().join("tracking"));
    std::fs::write(mg.state().join("tracking"), b"not a directory").unwrap();
    // A SECRET message would be refused with 550; without a record it is a 451.
    let (code, text) = smtplib_send(
        mg.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[SECRET] x"),
    );
    assert_eq!(code, 451, "{text}");
    assert!(mg
        .metrics()
        .contains("markgate_tracking_write_errors_total 1"));
}

#[test]
fn every_action_and_audit_hit_is_tracked_and_searchable() {
    let mg = every_action_tracked_on(&Backend::Files);
    // The index is rebuilt from the JSONL files alone.
    std::fs::remove_file(mg.state().join("tracking/index.sqlite")).unwrap();
    let _ = std::fs::remove_file(mg.state().join("tracking/index.sqlite-wal"));
    let _ = std::fs::remove_file(mg.state().join("tracking/index.sqlite-shm"));
    let out = mg.cli(&["track", "reindex"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("indexed 3 records"));
    let by = |args: &[&str]| {
        json_out(&mg.cli(&[&["track", "search", "--json"][..], args].concat()))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(by(&["--sender", "jane@police.cjsm.net"]), 3);
    assert_eq!(by(&["--action", "quarantine"]), 1);
}

#[test]
fn every_action_and_audit_hit_is_tracked_and_searchable_on_postgres() {
    let backend = Backend::postgres();
    // The gateway goes before its database.
    drop(every_action_tracked_on(&backend));
}

fn every_action_tracked_on(backend: &Backend) -> Markgate {
    let sink = Sink::start(&[]);
    let mg = backend.serve(sink.port);
    let cjsm = "bob@cps.cjsm.net";
    // pass (with the confidentiality-statement audit hit), reject, quarantine
    let mut no_statement = good_message("[OFFICIAL] audit");
    no_statement =
        no_statement.replace("This e-mail is intended solely for the addressee.\r\n", "");
    assert_eq!(smtplib_send(mg.port, FROM, &[cjsm], &no_statement).0, 250);
    assert_eq!(
        smtplib_send(mg.port, FROM, &[cjsm], &good_message("[SECRET] x")).0,
        550
    );
    assert_eq!(
        smtplib_send(mg.port, FROM, &["friend@example.com"], &unmarked()).0,
        250
    );
    sink.wait_for(1);
    let records = mg.records();
    assert_eq!(records.len(), 3);
    let audit = &records[0]["matched"][0];
    assert_eq!(audit["id"], "confidentiality-statement");
    assert_eq!(audit["mode"], "audit");
    for (action, rule) in [
        ("pass", None),
        ("reject", Some("above-restricted")),
        ("quarantine", Some("unmarked-to-external")),
    ] {
        let found = json_out(&mg.cli(&["track", "search", "--json", "--action", action]));
        assert_eq!(found.as_array().unwrap().len(), 1, "{action}");
        assert_eq!(found[0]["rule"].as_str(), rule);
    }
    let by = |args: &[&str]| {
        json_out(&mg.cli(&[&["track", "search", "--json"][..], args].concat()))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(by(&["--sender", "JANE@police.cjsm.net"]), 3);
    assert_eq!(by(&["--recipient", "friend@example.com"]), 1);
    assert_eq!(by(&["--message-id", "<lunch-1@police.cjsm.net>"]), 1);
    assert_eq!(by(&["--level", "secret"]), 1);
    assert_eq!(by(&["--rule", "above-restricted"]), 1);
    assert_eq!(by(&["--since", "2000-01-01", "--until", "2100-01-01"]), 3);
    assert_eq!(by(&["--until", "2000-01-01"]), 0);
    assert_eq!(by(&["--sender", "@police.cjsm.net"]), 3);
    assert_eq!(by(&["--sender", "cjsm"]), 3);
    assert_eq!(by(&["--recipient", "@example.com"]), 1);
    assert_eq!(by(&["--recipient", "example"]), 1);
    assert_eq!(by(&["--limit", "2"]), 2);
    mg
}

#[test]
fn control_characters_from_clients_are_escaped_in_records_and_logs() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    // RFC 2047 lets a client smuggle an escape sequence into the decoded subject.
    use base64::Engine;
    let evil = base64::engine::general_purpose::STANDARD.encode("\x1b[31mred\x07 bell");
    let msg = good_message(&format!("=?utf-8?B?{evil}?="));
    assert_eq!(
        smtplib_send(mg.port, FROM, &["bob@cps.cjsm.net"], &msg).0,
        250
    );
    let line = std::fs::read_dir(mg.state().join("tracking"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(
        !line.contains('\x1b') && !line.contains("\\u001b"),
        "{line}"
    );
    assert!(line.contains("\\\\u{1b}[31mred\\\\u{7} bell"), "{line}");
    assert!(!mg.log_text().contains('\x1b'));
    // A HELO with a control character is refused outright.
    let mut raw = Raw::connect(mg.port);
    raw.reply();
    let r = raw.cmd("EHLO evil\x1bhost");
    assert!(r.starts_with("501"), "{r}");
}

#[test]
fn sigkill_during_quarantine_writes_never_leaves_a_half_file() {
    let sink = Sink::start(&[]);
    let mut mg = Markgate::start(sink.port);
    let port = mg.port;
    let senders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let _ = std::panic::catch_unwind(|| {
                        smtplib_send(port, FROM, &["friend@example.com"], &unmarked())
                    });
                }
            })
        })
        .collect();
    let qdir = mg.state().join("quarantine");
    eventually(30, "a first held message", || {
        std::fs::read_dir(&qdir).is_ok_and(|d| {
            d.flatten().any(|e| {
                let done = !e.file_name().to_string_lossy().starts_with(".tmp-");
                done && e.path().extension().is_some_and(|x| x == "json")
            })
        })
    });
    mg.signal("KILL");
    for s in senders {
        let _ = s.join();
    }
    mg.stop();
    // Restart on the same state: leftovers from the kill are cleared, and every listed
    // message is whole (its bytes hash to the recorded SHA-256).
    mg.restart();
    let names: Vec<String> = std::fs::read_dir(&qdir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
    let list = json_out(&mg.cli(&["quarantine", "list", "--json"]));
    assert!(!list.as_array().unwrap().is_empty());
    for item in list.as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let bytes = std::fs::read(qdir.join(format!("{id}.eml"))).unwrap();
        use sha2::Digest;
        assert_eq!(
            format!("{:x}", sha2::Sha256::digest(&bytes)),
            item["sha256"].as_str().unwrap()
        );
        assert_eq!(bytes.len() as u64, item["size"].as_u64().unwrap());
    }
}

/// Quarantine, tracking, index and spool files hold the very material markgate guards:
/// none may be readable or writable by anyone but markgate's own user, whatever umask the
/// service manager starts it under.
#[test]
fn state_files_are_private_even_under_a_permissive_umask() {
    use std::os::unix::fs::PermissionsExt;
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            umask: Some(0),
            ..Opts::default()
        },
    );
    let (code, _) = smtplib_send(
        mg.port,
        "jane@police.cjsm.net",
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] passes"),
    );
    assert_eq!(code, 250);
    let (code, _) = smtplib_send(
        mg.port,
        "jane@police.cjsm.net",
        &["friend@example.com"],
        &unmarked(),
    );
    assert_eq!(code, 250);
    sink.wait_for(1);
    let out = mg.cli(&["track", "search", "--sender", "jane@police.cjsm.net"]);
    assert!(out.status.success(), "{out:?}");

    let mut seen = Vec::new();
    let mut stack = vec![mg.state()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            if meta.is_dir() {
                stack.push(path.clone());
            }
            seen.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    let state_mode = std::fs::metadata(mg.state()).unwrap().permissions().mode() & 0o777;
    assert_eq!(state_mode, 0o700);
    for want in ["quarantine", "tracking", "index.sqlite"] {
        assert!(seen.iter().any(|s| s == want), "no {want} in {seen:?}");
    }
    assert!(seen.iter().any(|s| s.ends_with(".eml")), "{seen:?}");
    assert!(seen.iter().any(|s| s.ends_with(".jsonl")), "{seen:?}");
}

/// Anyone who can send mail writes what `quarantine show` and `list` print: terminal escape
/// sequences in a held message reach the operator's terminal escaped, never raw.
#[test]
fn held_headers_reach_the_operators_terminal_escaped() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let hostile = unmarked().replacen(
        "Subject:",
        "X-Title: \u{1b}]0;owned\u{7}\r\nX-Clear: \u{1b}[2J\u{9b}2J\r\nSubject:",
        1,
    );
    let (code, text) = smtplib_send(mg.port, FROM, &["friend@example.com"], &hostile);
    assert_eq!(code, 250, "{text}");
    let list = json_out(&mg.cli(&["quarantine", "list", "--json"]));
    let id = list[0]["id"].as_str().unwrap().to_string();
    for out in [
        mg.cli(&["quarantine", "show", &id]),
        mg.cli(&["quarantine", "list"]),
    ] {
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{shown:?}"
        );
    }
    let shown = String::from_utf8_lossy(&mg.cli(&["quarantine", "show", &id]).stdout).to_string();
    assert!(shown.contains("X-Title: \\u{1b}]0;owned\\u{7}"), "{shown}");
}
