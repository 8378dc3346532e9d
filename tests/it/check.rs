//! `markgate check` says ok only when `serve` would start, and says what is wrong where it
//! is wrong, once, in an operator's words.

use std::process::Command;

use crate::support::*;

/// Runs `markgate check` with `args` in `dir`; (success, stdout + stderr).
fn check(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    outcome(
        Command::new(bin())
            .arg("check")
            .args(args)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .current_dir(dir)
            .output()
            .unwrap(),
    )
}

#[test]
fn check_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();

    // A certificate that is not there: serve exits 1, so check must not say ok.
    write(
        "missing.yaml",
        "tls:\n  cert: /nonexistent/cert.pem\n  key: /nonexistent/key.pem\n",
    );
    let (ok, text) = check(d, &["--config", "missing.yaml"]);
    assert!(!ok && text.contains("/nonexistent/cert.pem"), "{text}");

    // A key that is not the certificate's.
    write(
        "pair.yaml",
        &format!(
            "tls:\n  cert: {}\n  key: {}\n",
            ca.dir.path().join("server.pem").display(),
            ca.dir.path().join("ca.key").display()
        ),
    );
    let (ok, text) = check(d, &["--config", "pair.yaml"]);
    assert!(!ok, "a mismatched key and certificate passed check: {text}");

    // A placeholder typo in a reject text, at its own line and column.
    write(
        "typo.yaml",
        "rules:\n  - id: x\n    when: { level: [SECRET] }\n    action:\n      reject: { code: 550, status: 5.7.1, text: \"no {levl}\" }\n",
    );
    let (ok, text) = check(d, &["--rules", "typo.yaml"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("typo.yaml:5:53:") && text.contains("{levl}"),
        "{text}"
    );

    // A semantic error points at the field, not the rule's first line.
    write(
        "level.yaml",
        "rules:\n  - id: x\n    when: { level: [SECRT] }\n    action: pass\n",
    );
    let (ok, text) = check(d, &["--rules", "level.yaml"]);
    assert!(!ok && text.contains("level.yaml:3:21:"), "{text}");

    // A directory entry that is two words.
    write("dir.yaml", "cjsm_domains: [partner police.uk]\n");
    let (ok, text) = check(d, &["--directory", "dir.yaml"]);
    assert!(!ok && text.contains("dir.yaml:1:16:"), "{text}");

    // No rules at all: allowed, but said.
    write("empty.yaml", "rules: []\n");
    let (ok, text) = check(d, &["--rules", "empty.yaml"]);
    assert!(
        ok && text.contains("warning") && text.contains("no rules"),
        "{text}"
    );

    // A type error: once, at its place, in words (not `invalid u64`).
    write("num.yaml", "limits:\n  max_recipients: lots\n");
    let (ok, text) = check(d, &["--config", "num.yaml"]);
    assert!(!ok, "{text}");
    assert_eq!(text.matches("num.yaml:2:19:").count(), 1, "{text}");
    assert!(
        text.contains("whole number") && !text.contains("u64"),
        "{text}"
    );
}
