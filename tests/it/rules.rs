//! Rules as security teams use them: `check` with file:line:column errors, rule tests, audit
//! mode, first-match order, hot reload through a running `serve`, the directory.

use std::process::Command;
use std::time::{Duration, Instant};

use markgate::directory::{Class, Directory, DirectoryFile};
use markgate::policy::Policy;

use crate::support::*;

fn check(args: &[&str]) -> (bool, String) {
    outcome(
        Command::new(bin())
            .arg("check")
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn default_rules_pass_their_own_tests() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/cjsm.yaml");
    let (ok, out) = check(&["--rules", rules, "--run-tests"]);
    assert!(ok, "{out}");
    assert!(out.contains("22 passed, 0 failed"), "{out}");
}

#[test]
fn forwards_from_holds_by_the_original_senders_class() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yaml");
    let directory = dir.path().join("d.yaml");
    std::fs::write(&directory, "trusted_domains: [court.example]\n").unwrap();
    // One forward block per test: a CJSM sender, a trusted one, an outside one, none.
    let fwd = |from: &str| {
        format!(
            "\"Subject: FW: x\\r\\n\\r\\nSee below.\\r\\n\\r\\nFrom: Someone <{from}>\\r\\nSent: Monday\\r\\nSubject: x\\r\\n\\r\\ntext\\r\\n\""
        )
    };
    std::fs::write(
        &rules,
        format!(
            "rules:
  - id: from-cjsm
    when: {{forwards_from: [cjsm]}}
    action: quarantine
  - id: from-trusted-or-external
    when: {{forwards_from: [trusted, external]}}
    action: quarantine
tests:
  - name: cjsm
    message: {}
    to: [a@b.cjsm.net]
    expect: {{action: quarantine, rule: from-cjsm}}
  - name: trusted
    message: {}
    to: [a@b.cjsm.net]
    expect: {{action: quarantine, rule: from-trusted-or-external}}
  - name: external
    message: {}
    to: [a@b.cjsm.net]
    expect: {{action: quarantine, rule: from-trusted-or-external}}
  - name: no history
    message: \"Subject: x\\r\\n\\r\\nFrom: the desk of bob@b.cjsm.net\\r\\n\"
    to: [a@b.cjsm.net]
    expect: {{action: pass}}
",
            fwd("bob@cps.cjsm.net"),
            fwd("clerk@court.example"),
            fwd("mate@gmail.com"),
        ),
    )
    .unwrap();
    let (ok, out) = check(&[
        "--rules",
        rules.to_str().unwrap(),
        "--directory",
        directory.to_str().unwrap(),
        "--run-tests",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");
}

#[test]
fn a_forward_of_cjsm_mail_outside_is_held_with_its_original_sender_in_the_record() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/forward/outlook-fw-cjsm-to-external.eml"
    ))
    .unwrap();
    let (code, reply) = smtplib_send(
        mg.port,
        "jane@police.cjsm.net",
        &["friend@example.com"],
        &raw,
    );
    assert_eq!(code, 250, "{reply}");
    let rec = &mg.records()[0];
    assert_eq!(rec["action"], "quarantine", "{rec}");
    assert_eq!(rec["rule"], "cjsm-forward-outside", "{rec}");
    assert_eq!(
        rec["forwarded"],
        serde_json::json!([{
            "source": "inline-forward",
            "from": "bob.smith@cps.cjsm.net",
            "class": "cjsm",
            "to": ["jane@police.cjsm.net"],
        }]),
        "{rec}"
    );
    // classify says the same, for the reviewer at a shell.
    let out = Command::new(bin())
        .args(["classify", "--to", "friend@example.com"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/forward/outlook-fw-cjsm-to-external.eml"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forwarded:   from bob.smith@cps.cjsm.net (cjsm) in inline-forward"),
        "{text}"
    );
}

#[test]
fn a_failing_rule_test_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.yaml");
    std::fs::write(
        &path,
        "rules:\n  - id: hold-all\n    action: quarantine\ntests:\n  - name: expects pass\n    message: \"Subject: x\\r\\n\\r\\nhi\\r\\n\"\n    to: [a@b.cjsm.net]\n    expect: {action: pass}\n",
    )
    .unwrap();
    let (ok, out) = check(&["--rules", path.to_str().unwrap(), "--run-tests"]);
    assert!(!ok);
    assert!(out.contains("FAIL: expects pass"), "{out}");
}

#[test]
fn every_error_carries_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown-key.yaml",
            "rules:\n  - id: a\n    action: pass\n    wen: {}\n",
            ":4:5:",
        ),
        (
            "bad-yaml.yaml",
            "rules:\n  - id: a\n    action: [pass\n",
            ":",
        ),
        (
            "bad-regex.yaml",
            "rules:\n  - id: a\n    when: {subject: '(['}\n    action: pass\n",
            ":3:22:",
        ),
        (
            "bad-level.yaml",
            "rules:\n  - id: a\n    when: {level: [SECRETISH]}\n    action: pass\n",
            ":3:20:",
        ),
        (
            "bad-code.yaml",
            "rules:\n  - id: a\n    action: {reject: {code: 250, status: '2.0.0', text: x}}\n",
            ":3:29:",
        ),
        (
            "bad-condition.yaml",
            "rules:\n  - id: a\n    when: {rank_at_lest: 3}\n    action: pass\n",
            ":3:11:",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&["--rules", path.to_str().unwrap()]);
        assert!(!ok, "{name} should fail");
        let prefix = format!("{}{want}", path.display());
        assert!(
            out.starts_with(&prefix),
            "{name}: want prefix {prefix}, got:\n{out}"
        );
    }
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:2525\nlimits:\n  max_recipents: 5\n",
    )
    .unwrap();
    let (ok, out) = check(&["--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.starts_with(&format!("{}:3:3:", config.display())),
        "{out}"
    );
}

fn policy(text: &str) -> Policy {
    Policy::from_str(text, "t.yaml").unwrap()
}

fn decide(p: &Policy, subject: &str, to: &[(&str, Class)]) -> markgate::policy::Verdict {
    let c = markgate::marking::classify::Classifier::new(&Default::default())
        .classify(format!("Subject: {subject}\r\n\r\nhi\r\n\r\nTel: 020 7946 0018\r\n").as_bytes())
        .unwrap();
    let recipients: Vec<(String, Class)> = to.iter().map(|(a, c)| (a.to_string(), *c)).collect();
    p.decide(&markgate::policy::Facts {
        sender: "a@b.cjsm.net",
        recipients: &recipients,
        classification: &c,
        size: 100,
        tls: false,
        forwarded_from: &[],
    })
}

#[test]
fn first_matching_rule_decides_and_audit_lets_the_next_rule_decide() {
    let p = policy(
        "rules:
  - id: audit-secret
    mode: audit
    when: {level: [SECRET]}
    action: {reject: {code: 550, status: '5.7.1', text: would refuse}}
  - id: hold-marked
    when: {marked: true}
    action: quarantine
  - id: reject-secret
    when: {level: [SECRET]}
    action: {reject: {code: 550, status: '5.7.1', text: never reached}}
",
    );
    let v = decide(&p, "[SECRET] x", &[("a@b.cjsm.net", Class::Cjsm)]);
    assert_eq!(v.action.name(), "quarantine");
    assert_eq!(v.rule.as_deref(), Some("hold-marked"));
    let ids: Vec<_> = v
        .matched
        .iter()
        .map(|h| (h.id.as_str(), h.mode.name()))
        .collect();
    assert_eq!(ids, [("audit-secret", "audit"), ("hold-marked", "enforce")]);
    let v = decide(&p, "lunch", &[("a@b.cjsm.net", Class::Cjsm)]);
    assert_eq!(v.action.name(), "pass");
    assert!(v.rule.is_none() && v.matched.is_empty());
}

#[test]
fn each_condition_kind_matches_its_case_and_not_its_neighbour() {
    let p = policy(
        "rules:
  - id: any-external
    when: {recipients: {any: [external]}, subject: 'any'}
    action: quarantine
  - id: all-cjsm
    when: {recipients: {all: [cjsm]}, subject: 'all'}
    action: quarantine
  - id: none-trusted
    when: {recipients: {none: [trusted]}, subject: 'none'}
    action: quarantine
  - id: descriptor
    when: {descriptor: [COMMERCIAL]}
    action: quarantine
  - id: caveat
    when: {caveat: ['EYES ONLY$']}
    action: quarantine
  - id: not-and-any-of
    when: {not: {marked: true}, any_of: [{subject: 'alpha'}, {subject: 'beta'}]}
    action: quarantine
  - id: recipient-pattern
    when: {recipient: ['@gmail\\.com$']}
    action: quarantine
",
    );
    let cj = ("a@x.cjsm.net", Class::Cjsm);
    let ext = ("b@gmail.com", Class::External);
    let tr = ("c@court.uk", Class::Trusted);
    let rule = |subject: &str, to: &[(&str, Class)]| decide(&p, subject, to).rule;
    assert_eq!(rule("any", &[cj, ext]).as_deref(), Some("any-external"));
    assert_eq!(rule("any", &[cj, tr]), None);
    assert_eq!(rule("all", &[cj]).as_deref(), Some("all-cjsm"));
    assert_eq!(rule("all", &[cj, tr]), None);
    assert_eq!(rule("none", &[cj]).as_deref(), Some("none-trusted"));
    assert_eq!(rule("none", &[cj, tr]), None);
    assert_eq!(
        rule("RESTRICTED - COMMERCIAL: bid", &[cj]).as_deref(),
        Some("descriptor")
    );
    assert_eq!(rule("RESTRICTED - MANAGEMENT: bid", &[cj]), None);
    assert_eq!(
        rule("[RESTRICTED - UK EYES ONLY] x", &[cj]).as_deref(),
        Some("caveat")
    );
    assert_eq!(rule("beta", &[cj]).as_deref(), Some("not-and-any-of"));
    assert_eq!(rule("[OFFICIAL] beta", &[cj]), None);
    assert_eq!(rule("gamma", &[cj]), None);
    assert_eq!(
        rule("x", &[tr, ("z@GMAIL.com", Class::External)]).as_deref(),
        Some("recipient-pattern")
    );
}

#[test]
fn a_broken_rule_file_on_reload_keeps_the_running_rules() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "rules:\n  - id: hold-all\n    action: quarantine\n").unwrap();
    let mut mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("rules: {}", rules.display())],
            ..Opts::default()
        },
    );
    let send = |mg: &Markgate| {
        smtplib_send(
            mg.port,
            "a@b.cjsm.net",
            &["c@d.cjsm.net"],
            &good_message("[OFFICIAL] x"),
        )
    };
    assert!(send(&mg).1.contains("held for review"));
    // A broken file: the running rules stay, the failure is logged and counted.
    std::fs::write(&rules, "rules:\n  - id: hold-all\n    acton: pass\n").unwrap();
    mg.signal("HUP");
    eventually(10, "reload failure metric", || {
        mg.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("markgate_rules_reload_total{result=\"failure\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 1.0)
    });
    eventually(10, "the failure logged with its location", || {
        mg.log_text().contains("rules.yaml:3:5")
    });
    assert!(
        send(&mg).1.contains("held for review"),
        "old rules still apply"
    );
    // A good file is picked up without a signal (the file watcher).
    std::fs::write(&rules, "rules:\n  - id: pass-all\n    action: pass\n").unwrap();
    eventually(10, "the new rules", || {
        send(&mg).0 == 250 && !send(&mg).1.contains("held")
    });
    mg.stop();
}

#[test]
fn directory_classifies_by_suffix_address_domain_and_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dir.yaml");
    std::fs::write(
        &path,
        "cjsm_domains: [Partner.Police.UK]\ncjsm_addresses: [Solicitor@Example.com]\ntrusted_domains: [court.example.gov.uk]\n",
    )
    .unwrap();
    let d = Directory::load(&path).unwrap();
    assert_eq!(d.classify("x@cjsm.net"), Class::Cjsm);
    assert_eq!(d.classify("x@CPS.CJSM.NET"), Class::Cjsm);
    assert_eq!(d.classify("x@fakecjsm.net"), Class::External);
    assert_eq!(d.classify("x@partner.police.uk"), Class::Cjsm);
    assert_eq!(d.classify("solicitor@example.COM"), Class::Cjsm);
    assert_eq!(d.classify("other@example.com"), Class::External);
    assert_eq!(d.classify("clerk@Court.Example.gov.uk"), Class::Trusted);
}

#[test]
fn a_directory_of_100000_addresses_loads_and_looks_up() {
    let addresses: Vec<String> = (0..100_000)
        .map(|i| format!("user{i}@firm{}.example", i % 977))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut yaml = String::from("cjsm_addresses:\n");
    for a in &addresses {
        yaml.push_str(&format!("  - {a}\n"));
    }
    std::fs::write(&path, yaml).unwrap();
    let started = Instant::now();
    let d = Directory::load(&path).unwrap();
    let built = started.elapsed();
    eprintln!("100,000-address directory loaded in {built:?}");
    assert_eq!(d.classify("user99999@firm345.example"), Class::Cjsm);
    assert_eq!(d.classify("user100000@firm345.example"), Class::External);
    let small = Directory::from_file(DirectoryFile {
        cjsm_suffixes: vec![],
        cjsm_domains: vec![],
        cjsm_addresses: addresses[..10].to_vec(),
        trusted_domains: vec![],
    });
    assert_eq!(small.classify("user9@firm9.example"), Class::Cjsm);
    // Generous bound (a debug build on a loaded machine): this is about O(1) structure; a
    // quadratic load would take minutes.
    assert!(built < Duration::from_secs(60), "{built:?}");
}

#[test]
fn committed_json_schemas_match_the_rust_types() {
    for (which, file) in [
        ("rules", "rules.schema.json"),
        ("directory", "directory.schema.json"),
    ] {
        let out = Command::new(bin())
            .args(["schema", which])
            .output()
            .unwrap();
        let committed = std::fs::read_to_string(format!(
            "{}/rules/schema/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            committed,
            "rules/schema/{file} is stale: run `markgate schema {which} > rules/schema/{file}`"
        );
    }
    // The schema knows every condition, so editors complete them.
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/schema/rules.schema.json"
    ))
    .unwrap();
    for key in [
        "rank_at_least",
        "attachment_name",
        "confidentiality_statement",
        "any_of",
        "null_sender",
    ] {
        assert!(schema.contains(&format!("\"{key}\"")), "{key}");
    }
}

#[test]
fn serve_with_a_broken_rule_file_exits_non_zero_with_the_location_and_listens_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.yaml");
    std::fs::write(&rules, "rules:\n  - id: x\n    action: pas\n").unwrap();
    let port = free_port();
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .arg("--rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", rules.display())), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing half-started"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.eml");
    let mut msg = String::from("Subject: x\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
    for i in 1..300 {
        msg.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n",
            i - 1
        ));
    }
    std::fs::write(&path, msg).unwrap();
    let out = Command::new(bin())
        .args(["--log-format", "json", "classify"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("unclassifiable"))
        .expect("a warning");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "WARN");
}

fn held_or_passed(mg: &Markgate) -> String {
    let (code, text) = smtplib_send(
        mg.port,
        "a@b.cjsm.net",
        &["c@d.cjsm.net"],
        &good_message("[OFFICIAL] x"),
    );
    if text.contains("held for review") {
        "held".into()
    } else if code == 250 {
        "passed".into()
    } else {
        format!("{code} {text}")
    }
}

fn reload_count(mg: &Markgate, result: &str) -> f64 {
    let prefix = format!("markgate_rules_reload_total{{result=\"{result}\"}} ");
    mg.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A rule file whose own tests fail is not swapped in on reload; one being rewritten is
/// loaded only once it holds still; a symlink swapped to a file with the same mtime is
/// noticed.
#[test]
fn reload_takes_only_whole_files_that_pass_their_own_tests() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold.yaml");
    std::fs::write(&hold, "rules:\n  - id: hold-all\n    action: quarantine\n").unwrap();
    let rules = dir.path().join("rules.yaml");
    std::os::unix::fs::symlink(&hold, &rules).unwrap();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("rules: {}", rules.display())],
            ..Opts::default()
        },
    );
    assert_eq!(held_or_passed(&mg), "held");

    // A valid file whose own tests fail keeps the running rules.
    let failing = dir.path().join("failing.yaml");
    std::fs::write(
        &failing,
        "rules:\n  - id: pass-all\n    action: pass\ntests:\n  - name: promises a hold\n    message: \"Subject: x\\r\\n\\r\\nbody\\r\\n\"\n    to: [c@d.cjsm.net]\n    expect: {action: quarantine}\n",
    )
    .unwrap();
    let swap = |target: &std::path::Path| {
        let tmp = dir.path().join("rules.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &rules).unwrap();
    };
    swap(&failing);
    eventually(10, "reload refused", || reload_count(&mg, "failure") >= 1.0);
    assert_eq!(held_or_passed(&mg), "held");
    assert!(
        mg.log_text().contains("own tests fail"),
        "{}",
        mg.log_text()
    );

    // A symlink swapped to a file with the very same mtime as the running one.
    let pass = dir.path().join("pass.yaml");
    std::fs::write(&pass, "rules:\n  - id: pass-all\n    action: pass\n").unwrap();
    let mtime = std::fs::metadata(&hold).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&pass)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    swap(&hold);
    std::thread::sleep(std::time::Duration::from_secs(5));
    swap(&pass);
    eventually(10, "the swapped rules", || held_or_passed(&mg) == "passed");
}

/// A rule file rewritten in place is not loaded while it is still changing: a message
/// sent while the file is half-written meets the whole old rules.
#[test]
fn a_rule_file_rewritten_in_place_is_not_loaded_half_written() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    let whole = "rules:\n  - id: hold-all\n    action: quarantine\n";
    std::fs::write(&rules, whole).unwrap();
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!("rules: {}", rules.display())],
            ..Opts::default()
        },
    );
    for round in 0..3 {
        // The first half of a rewrite: valid YAML, no rules yet. The second half lands
        // 1.5 s later (under the 2 s poll), whatever the send below takes.
        std::fs::write(&rules, "rules: []\n").unwrap();
        let (path, whole) = (rules.clone(), whole.to_string());
        let restore = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            std::fs::write(&path, whole).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert_eq!(held_or_passed(&mg), "held", "round {round}");
        restore.join().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Every regex of a rule file is under one budget: a file of header patterns that are each
/// within the per-pattern limit is refused, quickly, instead of taking gigabytes to load.
#[test]
fn many_header_regexes_are_refused_by_the_shared_budget() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    let mut text = String::from("rules:\n");
    for i in 0..400 {
        text.push_str(&format!(
            "  - id: h{i}\n    when:\n      header:\n        X-H{i}: '\\w{{4}}z{i}\\w{{4}}'\n    action: quarantine\n"
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let (ok, out) = check(&["--rules", rules.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("budget"), "{out}");
}
