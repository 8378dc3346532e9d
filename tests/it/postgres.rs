//! The PostgreSQL store against a real PostgreSQL started by the test: the schema checks,
//! two `markgate serve` sharing one database (a message held by one is listed, shown and
//! released by the other, and two concurrent releases deliver once), and the database
//! going away mid-run (nothing passes untracked, nothing is lost, both recover).

use std::time::Duration;

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

fn unmarked(n: usize) -> String {
    format!("From: jane@police.cjsm.net\r\nTo: friend@example.com\r\nSubject: lunch {n}\r\nMessage-ID: <pg-{n}@police.cjsm.net>\r\n\r\nSee you at noon.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n")
}

fn on(pg: &Postgres, sink_port: u16) -> Markgate {
    Markgate::with(
        sink_port,
        Opts {
            top: pg.store_yaml(),
            ..Opts::default()
        },
    )
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn serve_refuses_a_database_without_this_binarys_schema() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nlisten: 127.0.0.1:0\n{}\n",
            dir.path().join("state").display(),
            pg.store_yaml()[0]
        ),
    )
    .unwrap();
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = serve(&["serve"]);
    assert!(!ok);
    assert!(err.contains("run `markgate store migrate`"), "{err}");
    let (ok, err) = serve(&["check"]);
    assert!(!ok && err.contains("store migrate"), "{err}");
    pg.migrate();
    let (ok, err) = serve(&["check"]);
    assert!(ok, "{err}");
    // A newer markgate migrated it further: this one must not write it.
    pg.psql(
        "markgate",
        "INSERT INTO markgate_schema (version) VALUES (99)",
    );
    let (ok, err) = serve(&["serve"]);
    assert!(!ok);
    assert!(err.contains("newer than this markgate"), "{err}");
}

#[test]
fn two_instances_share_tracking_and_the_quarantine_and_release_once() {
    let pg = Postgres::start();
    pg.migrate();
    let sink = Sink::start(&[]);
    let a = on(&pg, sink.port);
    let b = on(&pg, sink.port);

    // A pass through A, tracked where B searches.
    let (code, reply) = smtplib_send(
        a.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] via A"),
    );
    assert_eq!(code, 250, "{reply}");
    sink.wait_for(1);
    // The outcome is committed just after the reply (a delivered message's reply does not
    // wait for it), so B may see the intent for a moment.
    eventually(10, "the intent gave way to its outcome", || {
        let found =
            json_out(&b.cli(&["track", "search", "--json", "--sender", "@police.cjsm.net"]));
        found.as_array().is_some_and(|a| a.len() == 1)
            && found[0]["action"] == "pass"
            && found[0]["outcome"] == "delivered"
    });
    let mid = format!("{}@test", "[OFFICIAL] via A".len());
    let by_id = json_out(&b.cli(&["track", "search", "--json", "--message-id", &mid]));
    assert_eq!(by_id.as_array().unwrap().len(), 1, "{by_id}");

    // Held by A; listed and shown by B.
    let (code, reply) = smtplib_send(a.port, FROM, &["friend@example.com"], &unmarked(1));
    assert_eq!(code, 250, "{reply}");
    assert!(reply.contains("held for review"), "{reply}");
    let list = json_out(&b.cli(&["quarantine", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let shown = b.cli(&["quarantine", "show", "--raw", &id]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        unmarked(1),
        "byte for byte"
    );

    // Released from A and from B at once: one delivers, the other is told it is taken.
    let release = |mg: &Markgate| {
        mg.cli(&[
            "quarantine",
            "release",
            "--by",
            "analyst",
            "--reason",
            "ok",
            &id,
        ])
    };
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| release(&a));
        let hb = s.spawn(|| release(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let oks = [&ra, &rb].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        oks,
        1,
        "A: {}\nB: {}",
        String::from_utf8_lossy(&ra.stderr),
        String::from_utf8_lossy(&rb.stderr)
    );
    sink.wait_for(2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.messages().len(), 2, "released exactly once");
    assert_eq!(
        json_out(&a.cli(&["quarantine", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let released: Vec<_> = a
        .records()
        .into_iter()
        .filter(|r| r["outcome"] == "released")
        .collect();
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(
        pg.psql("markgate", "SELECT state || ' ' || by_whom FROM audit"),
        "released analyst"
    );
}

#[test]
fn the_database_going_away_fails_closed_and_both_recover_without_a_restart() {
    let pg = Postgres::start();
    pg.migrate();
    let sink = Sink::start(&[]);
    let a = on(&pg, sink.port);
    let b = on(&pg, sink.port);
    let mut accepted = 0;
    let mut deferred = 0;
    // Twenty messages, alternating instances and pass / hold, the database gone for the
    // middle ten: each is accepted (delivered or held, and tracked) or deferred (the
    // client keeps it), never accepted untracked.
    for i in 0..20 {
        if i == 5 {
            pg.down();
        }
        if i == 15 {
            pg.up();
        }
        let mg = if i % 2 == 0 { &a } else { &b };
        let (code, reply) = if i % 4 < 2 {
            smtplib_send(
                mg.port,
                FROM,
                &["bob@cps.cjsm.net"],
                &good_message(&format!("[OFFICIAL] n{i}")),
            )
        } else {
            smtplib_send(mg.port, FROM, &["friend@example.com"], &unmarked(i))
        };
        match code {
            250 => accepted += 1,
            451 => {
                assert!(reply.starts_with("4.3.0"), "{reply}");
                assert!(
                    (5..15).contains(&i),
                    "deferred with the database up: {i} {reply}"
                );
                deferred += 1;
            }
            _ => panic!("message {i}: {code} {reply}"),
        }
        if i == 7 {
            // Not ready while the database is away.
            let (status, _) = http_get(a.metrics_port, "/readyz");
            assert_eq!(status, 503);
        }
    }
    assert_eq!(
        deferred, 10,
        "every message with the database down was deferred"
    );
    assert_eq!(accepted, 10);
    // Every accepted message is tracked, and every held one is in the database.
    let records = a.records();
    assert_eq!(records.len(), accepted, "{records:?}");
    let held = records
        .iter()
        .filter(|r| r["action"] == "quarantine")
        .count();
    let listed = json_out(&b.cli(&["quarantine", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), held);
    assert_eq!(sink.wait_for(accepted - held).len(), accepted - held);
    eventually(10, "ready again", || {
        http_get(a.metrics_port, "/readyz").0 == 200
    });
}

#[test]
fn a_files_store_is_imported_once_however_often_the_import_runs() {
    // A site on the files store: a pass, a refusal and a hold.
    let sink = Sink::start(&[]);
    let old = Markgate::start(sink.port);
    assert_eq!(
        smtplib_send(
            old.port,
            FROM,
            &["bob@cps.cjsm.net"],
            &good_message("[OFFICIAL] old")
        )
        .0,
        250
    );
    assert_eq!(
        smtplib_send(
            old.port,
            FROM,
            &["bob@cps.cjsm.net"],
            &good_message("[SECRET] old")
        )
        .0,
        550
    );
    assert_eq!(
        smtplib_send(old.port, FROM, &["friend@example.com"], &unmarked(7)).0,
        250
    );
    let before = old.records();
    assert_eq!(before.len(), 3);
    let state = old.state();

    let pg = Postgres::start();
    pg.migrate();
    let new = on(&pg, sink.port);
    let import = || {
        let out = new.cli(&[
            "store",
            "import",
            "--from-state-dir",
            state.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(import().contains("ok: 3 tracking records and 1 held messages copied"));
    // Run again (as after an interruption): nothing is copied twice.
    assert!(import().contains("ok: 0 tracking records and 0 held messages copied"));
    let after = new.records();
    assert_eq!(after, before, "the history as it was");
    // The held message is the new store's to release.
    let list = json_out(&new.cli(&["quarantine", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let id = list[0]["id"].as_str().unwrap();
    let raw = new.cli(&["quarantine", "show", "--raw", id]);
    assert_eq!(String::from_utf8_lossy(&raw.stdout), unmarked(7));
    let out = new.cli(&["quarantine", "release", "--by", "analyst", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sink.wait_for(2).len(), 2);
}

#[test]
fn export_and_redaction_work_on_the_shared_store() {
    const VICTIM: &str = "victim@example.com";
    let pg = Postgres::start();
    pg.migrate();
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: [
                pg.store_yaml(),
                vec!["tracking:\n  legal_holds: ['@held.example']".into()],
            ]
            .concat(),
            ..Opts::default()
        },
    );
    // Today: a message to the victim, held.
    let msg = unmarked(9).replace("friend@example.com", VICTIM);
    assert_eq!(smtplib_send(mg.port, FROM, &[VICTIM], &msg).0, 250);
    // Three days ago (imported from a files store): two records naming the victim, one of
    // them also a legal-hold address.
    let old = tempfile::tempdir().unwrap();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3 * 86_400;
    let day = markgate::timefmt::date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
    let record = |id: &str, to: &[&str]| {
        let recipients: Vec<serde_json::Value> = to
            .iter()
            .map(|a| serde_json::json!({"address": a, "class": "external"}))
            .collect();
        serde_json::json!({
            "time": format!("{day}T10:00:00Z"), "queue_id": id, "sender": FROM,
            "recipients": recipients, "action": "pass", "outcome": "delivered",
        })
        .to_string()
            + "\n"
    };
    std::fs::create_dir_all(old.path().join("tracking")).unwrap();
    std::fs::write(
        old.path().join(format!("tracking/tracking-{day}.jsonl")),
        record("AAAAAAAAAAAAAAA1", &[VICTIM])
            + &record("AAAAAAAAAAAAAAA2", &[VICTIM, "lawyer@held.example"]),
    )
    .unwrap();
    let out = mg.cli(&[
        "store",
        "import",
        "--from-state-dir",
        old.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sar = mg.dir.path().join("sar");
    let out = mg.cli(&[
        "track",
        "export",
        "--address",
        VICTIM,
        "--out",
        sar.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 records and 1 held"), "{said}");
    assert!(sar.join("quarantine").read_dir().unwrap().count() == 2);

    let tomorrow =
        markgate::timefmt::date(std::time::SystemTime::now() + Duration::from_secs(86_400));
    let out = mg.cli(&[
        "track",
        "redact",
        "--address",
        VICTIM,
        "--before",
        &tomorrow,
        "--reason",
        "ER-8",
        "--by",
        "dpo",
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("redacted 1 records"), "{said}");
    assert!(said.contains("1 kept under a legal hold"), "{said}");
    let found = json_out(&mg.cli(&["track", "search", "--json", "--recipient", VICTIM]));
    assert_eq!(
        found.as_array().unwrap().len(),
        2,
        "today's and the held one: {found}"
    );
    let rows = pg.psql(
        "markgate",
        "SELECT recipients[1] FROM tracking WHERE queue_id = 'AAAAAAAAAAAAAAA1'",
    );
    assert!(rows.ends_with("@redacted.invalid"), "{rows}");
    let by_token = json_out(&mg.cli(&["track", "search", "--json", "--recipient", &rows]));
    assert_eq!(by_token.as_array().unwrap().len(), 1);
    assert!(!pg
        .psql(
            "markgate",
            "SELECT record::text FROM tracking WHERE queue_id = 'AAAAAAAAAAAAAAA1'"
        )
        .contains("victim@"));
}

/// A files store after one pass, cut back to the pass's intent record alone (a site moved
/// mid-message): the gateway (its state dir), its sink, the day's tracking file and the
/// file's whole text (intent and outcome).
struct MidMessage {
    sink: Sink,
    old: Markgate,
    day_file: std::path::PathBuf,
    whole: String,
}

fn files_store_mid_message(subject: &str) -> MidMessage {
    let sink = Sink::start(&[]);
    let old = Markgate::start(sink.port);
    let msg = good_message(subject);
    assert_eq!(
        smtplib_send(old.port, FROM, &["bob@cps.cjsm.net"], &msg).0,
        250
    );
    let day_file = std::fs::read_dir(old.state().join("tracking"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("a tracking file");
    let whole = std::fs::read_to_string(&day_file).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    assert_eq!(lines.len(), 2, "intent and outcome: {whole}");
    assert!(lines[0].contains("handing-off"), "{}", lines[0]);
    std::fs::write(&day_file, format!("{}\n", lines[0])).unwrap();
    MidMessage {
        sink,
        old,
        day_file,
        whole,
    }
}

#[test]
fn an_intent_is_searchable_until_its_outcome_replaces_it() {
    // A files store's pass leaves its intent and its outcome; a site moved mid-message
    // (only the intent so far) must find the intent, by sender and by Message-ID, and then
    // the outcome alone once it arrives.
    let MidMessage {
        sink,
        old,
        day_file,
        whole,
    } = files_store_mid_message("[OFFICIAL] in flight");
    let state = old.state();

    let pg = Postgres::start();
    pg.migrate();
    let new = on(&pg, sink.port);
    let import = || {
        let out = new.cli(&[
            "store",
            "import",
            "--from-state-dir",
            state.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let search = |args: &[&str]| {
        let mut all = vec!["track", "search", "--json"];
        all.extend_from_slice(args);
        json_out(&new.cli(&all))
    };
    let mid = format!("{}@test", "[OFFICIAL] in flight".len());
    import();
    for found in [search(&["--sender", FROM]), search(&["--message-id", &mid])] {
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
        assert_eq!(found[0]["outcome"], "handing-off", "{found}");
    }
    assert_eq!(new.records().len(), 1);

    std::fs::write(&day_file, &whole).unwrap();
    import();
    for found in [search(&["--sender", FROM]), search(&["--message-id", &mid])] {
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
        assert_eq!(found[0]["outcome"], "delivered", "{found}");
    }
    let records = new.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "delivered");
}

#[test]
fn migrating_keeps_waiting_intents_searchable() {
    // A database at schema version 1 (intents among the history) with one waiting intent.
    let pg = Postgres::start();
    pg.psql("markgate", markgate::store::postgres::MIGRATIONS[0]);
    pg.psql(
        "markgate",
        "INSERT INTO markgate_schema (version) VALUES (1)",
    );
    let record = serde_json::json!({
        "time": "2026-12-03T10:00:00Z", "queue_id": "AAAAAAAAAAAAAAA9",
        "sender": FROM, "recipients": [{"address": "bob@cps.cjsm.net"}],
        "message_id": "<waiting@police.cjsm.net>", "action": "pass", "outcome": "handing-off"
    });
    pg.psql(
        "markgate",
        &format!(
            "INSERT INTO tracking (time, queue_id, message_id, sender, recipients, action, level, outcome, record, digest) \
             VALUES ('2026-12-03T10:00:00Z', 'AAAAAAAAAAAAAAA9', '<waiting@police.cjsm.net>', '{FROM}', \
             '{{bob@cps.cjsm.net}}', 'pass', 'NONE', 'handing-off', '{record}', 'd9'); \
             INSERT INTO tracking_ids VALUES ('<waiting@police.cjsm.net>', '2026-12-03T10:00:00Z')"
        ),
    );
    pg.migrate();
    // Left where it was (a crash's leftover: no outcome will come for it).
    assert_eq!(
        pg.psql("markgate", "SELECT count(*) FROM tracking").trim(),
        "1"
    );
    let sink = Sink::start(&[]);
    let mg = on(&pg, sink.port);
    let found = json_out(&mg.cli(&[
        "track",
        "search",
        "--json",
        "--message-id",
        "waiting@police.cjsm.net",
    ]));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["outcome"], "handing-off");
}

#[test]
fn an_intent_under_another_messages_queue_id_is_not_taken_as_written() {
    // Two instances that made the same queue id: the second intent must fail, not pass as
    // written (an import stands for it here: the same statement).
    let MidMessage {
        sink,
        old,
        day_file,
        ..
    } = files_store_mid_message("[OFFICIAL] clash");
    let state = old.state();
    let intent = std::fs::read_to_string(&day_file).unwrap();
    let queue_id = serde_json::from_str::<serde_json::Value>(&intent).unwrap()["queue_id"]
        .as_str()
        .unwrap()
        .to_string();

    let pg = Postgres::start();
    pg.migrate();
    pg.psql(
        "markgate",
        &format!(
            "INSERT INTO tracking_intent (time, queue_id, sender, recipients, action, level, outcome, record, digest) \
             VALUES (now(), '{queue_id}', 'other@police.cjsm.net', '{{x@cps.cjsm.net}}', 'pass', 'NONE', \
             'handing-off', '{{}}', 'another')"
        ),
    );
    let new = on(&pg, sink.port);
    let out = new.cli(&[
        "store",
        "import",
        "--from-state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_batch_that_timed_out_never_commits_later() {
    // The database takes nothing for 9 s, past store.timeout (3 s here) for the intent and
    // then for the deferral's record: the client is told 451, and neither may appear
    // afterwards (the sender retries; records committed late would be a false history).
    let pg = Postgres::start();
    pg.migrate();
    let sink = Sink::start(&[]);
    let mg = on(&pg, sink.port);
    let mut lock = pg.psql_background(
        "markgate",
        "BEGIN; LOCK TABLE tracking_intent, tracking IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(9); COMMIT;",
    );
    std::thread::sleep(Duration::from_millis(500));
    let (code, reply) = smtplib_send(
        mg.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] late"),
    );
    assert_eq!(code, 451, "{reply}");
    assert!(lock.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pg.psql("markgate", "SELECT count(*) FROM tracking_all"),
        "0",
        "{}",
        pg.psql("markgate", "SELECT outcome FROM tracking_all")
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn a_delivered_message_is_answered_without_waiting_for_its_completion_record() {
    // The delivered record cannot change the reply (250 either way: invariant 3), so the
    // client is not kept waiting while the database is slow to take it. Here it waits
    // behind a lock on the history table (the intent's table is free) for 8 s.
    let pg = Postgres::start();
    pg.migrate();
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![pg.store_yaml()[0].replace("timeout: 3s", "timeout: 20s")],
            ..Opts::default()
        },
    );
    // One message first, so the committer's connection has its statements ready (preparing
    // one naming the locked table would wait for the lock too).
    let first = good_message("[OFFICIAL] warm");
    assert_eq!(
        smtplib_send(mg.port, FROM, &["bob@cps.cjsm.net"], &first).0,
        250
    );
    let mut lock = pg.psql_background(
        "markgate",
        "BEGIN; LOCK TABLE tracking IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
    );
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (code, reply) = smtplib_send(
        mg.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] while slow"),
    );
    let waited = started.elapsed();
    assert_eq!(code, 250, "{reply}");
    assert!(
        waited < Duration::from_secs(4),
        "the reply waited {waited:?} for the completion record"
    );
    assert_eq!(sink.wait_for(2).len(), 2);
    // The database lets go: the record is completed after all.
    assert!(lock.wait().unwrap().success());
    let mid = format!("{}@test", "[OFFICIAL] while slow".len());
    eventually(15, "the outcome recorded", || {
        let found = json_out(&mg.cli(&["track", "search", "--json", "--message-id", &mid]));
        found
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["outcome"] == "delivered")
    });
    assert!(!mg
        .metrics()
        .contains("markgate_tracking_incomplete_total 1"));
}

#[test]
fn a_delivered_messages_record_rides_in_the_next_commit_a_reply_waits_for() {
    // No reply waits on a delivered message's outcome, so the store holds it a few
    // milliseconds for the next record a session does wait on, and both go in one
    // transaction (rows of one transaction share their xmin): before, a fifth of the
    // commits held outcomes alone, each a WAL flush no session needed.
    let pg = Postgres::start();
    let (_dir, store, rt) = in_process_store(&pg);
    let now = std::time::SystemTime::now();
    let write = |r| rt.block_on(store.tracking.append_async(&r, now).wait());
    // The committer's statements prepared first.
    write(record("W", "delivered")).unwrap();
    let xmin = |table: &str, queue_id: &str| {
        pg.psql(
            "markgate",
            &format!("SELECT xmin FROM {table} WHERE queue_id = '{queue_id}'"),
        )
    };
    // A sleep on a loaded machine can overrun the 5 ms the record is held: ten tries
    // (the lone record's wait below shows the holding is there at all).
    let rode = (0..10).any(|i| {
        let (outcome, intent) = (format!("A{i}"), format!("B{i}"));
        let later = store
            .tracking
            .append_later(&record(&outcome, "delivered"), now);
        std::thread::sleep(Duration::from_millis(2));
        write(record(&intent, "handing-off")).unwrap();
        rt.block_on(later.wait()).unwrap();
        let (a, b) = (xmin("tracking", &outcome), xmin("tracking_intent", &intent));
        assert!(!a.is_empty() && !b.is_empty(), "both written: {a:?} {b:?}");
        a == b
    });
    assert!(rode, "the held outcome went in a commit of its own");
    // With nothing to ride with, it is committed on its own a moment later.
    let started = std::time::Instant::now();
    let alone = store.tracking.append_later(&record("C", "delivered"), now);
    rt.block_on(alone.wait()).unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(5) && waited < Duration::from_secs(1),
        "held {waited:?}"
    );
    assert_eq!(
        pg.psql(
            "markgate",
            "SELECT count(*) FROM tracking WHERE queue_id = 'C'"
        ),
        "1"
    );
}

#[test]
fn a_history_row_whose_key_is_taken_is_not_taken_as_written() {
    // The history's inserts skip a row that clashes on any unique key (so an import run
    // twice stores each record once). The primary key (time, id) can clash only if the
    // id sequence was set back (a restore, a `setval`): that row is lost, not written,
    // and must fail like any unwritten record, not pass as already there.
    let pg = Postgres::start();
    let (_dir, store, rt) = in_process_store(&pg);
    let now = std::time::SystemTime::now();
    let write = |r| rt.block_on(store.tracking.append_async(&r, now).wait());
    write(record("K1", "delivered")).unwrap();
    pg.psql(
        "markgate",
        "SELECT setval('tracking_id_seq', (SELECT max(id) FROM tracking), false)",
    );
    // The same time (the fixture's), another record: the id it draws is taken.
    let err = write(record("K2", "delivered")).unwrap_err();
    assert!(err.to_string().contains("tracking_id_seq"), "{err}");
    // The same record again is a record already there, as an import run twice finds it.
    write(record("K1", "delivered")).unwrap();
    assert_eq!(
        pg.psql(
            "markgate",
            "SELECT count(*) FROM tracking WHERE queue_id LIKE 'K%'"
        ),
        "1"
    );
}

/// A migrated database's store opened in the test's process, and a runtime to await its
/// appends on.
fn in_process_store(
    pg: &Postgres,
) -> (
    tempfile::TempDir,
    markgate::store::Store,
    tokio::runtime::Runtime,
) {
    pg.migrate();
    let dir = tempfile::tempdir().unwrap();
    let config = markgate::config::Config::load(&pg.config_in(dir.path())).unwrap();
    let store = markgate::store::Store::open(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (dir, store, rt)
}

/// The fixture's pass record under `queue_id` with `outcome` (its time fixed).
fn record(queue_id: &str, outcome: &str) -> markgate::store::TrackingRecord {
    let mut r: markgate::store::TrackingRecord =
        serde_json::from_str(include_str!("../../src/store/record_fixtures/pass.json")).unwrap();
    r.queue_id = Some(queue_id.to_string());
    r.outcome = outcome.to_string();
    r
}
