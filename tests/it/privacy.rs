//! Subject access and erasure requests (`track export`, `track redact`) against a running
//! gateway's state: everything naming the address is exported; redaction rewrites only
//! whole past days, spares legal holds, stays searchable by its hash, and is audited.

use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";
const VICTIM: &str = "victim@example.com";

fn record(time: &str, id: &str, sender: &str, to: &[&str]) -> String {
    let recipients: Vec<serde_json::Value> = to
        .iter()
        .map(|a| serde_json::json!({"address": a, "class": "external"}))
        .collect();
    format!(
        "{}\n",
        serde_json::json!({
            "time": time, "queue_id": id, "sender": sender, "recipients": recipients,
            "action": "pass", "outcome": "delivered", "marking": {"level": "UNMARKED"},
            "reply": format!("250 2.0.0 Ok: queued, rcpt <{}>", to[0]),
        })
    )
}

#[test]
fn export_finds_everything_and_redaction_spares_today_and_legal_holds() {
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec!["tracking:\n  legal_holds: ['@held.example']".into()],
            ..Opts::default()
        },
    );
    // Today: one held message to the victim (unmarked to an external address).
    let msg = "From: jane@police.cjsm.net\r\nTo: victim@example.com\r\nSubject: lunch\r\n\r\nSee you at noon.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n";
    assert_eq!(smtplib_send(mg.port, FROM, &[VICTIM], msg).0, 250);
    // Three days ago: two records naming the victim (one also a legal-hold address), one not.
    let day = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    let date = {
        let secs = day.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let old = mg.state().join(format!("tracking/tracking-{date}.jsonl"));
    let t = format!("{date}T10:00:00Z");
    std::fs::write(
        &old,
        [
            record(&t, "AAAAAAAAAAAAAAA1", FROM, &[VICTIM]),
            record(
                &t,
                "AAAAAAAAAAAAAAA2",
                FROM,
                &["VICTIM@example.com", "lawyer@held.example"],
            ),
            record(&t, "AAAAAAAAAAAAAAA3", FROM, &["other@example.com"]),
        ]
        .concat(),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&old).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&old, perms).unwrap();
    succeeded(&mg.cli(&["track", "reindex"]));

    // Export: both old records, today's record, and the held message itself.
    let out_dir = mg.dir.path().join("sar");
    let said = succeeded(&mg.cli(&[
        "track",
        "export",
        "--address",
        VICTIM,
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(said.contains("3 records and 1 held"), "{said}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("tracking.json")).unwrap())
            .unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 3);
    let held: Vec<_> = std::fs::read_dir(out_dir.join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert!(
        held.iter().any(|n| n.ends_with(".eml")) && held.iter().any(|n| n.ends_with(".json")),
        "{held:?}"
    );

    // Redact before tomorrow: the old day is rewritten, today's file is not touched.
    let tomorrow = {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", "tomorrow", "+%Y-%m-%d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let said = succeeded(&mg.cli(&[
        "track",
        "redact",
        "--address",
        VICTIM,
        "--before",
        &tomorrow,
        "--reason",
        "erasure request ER-7",
        "--by",
        "dpo",
    ]));
    assert!(said.contains("redacted 1 records"), "{said}");
    assert!(said.contains("1 kept under a legal hold"), "{said}");
    let text = std::fs::read_to_string(&old).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines[0].to_lowercase().contains("victim@example.com"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("@redacted.invalid"), "{}", lines[0]);
    assert!(
        lines[1].contains("VICTIM@example.com"),
        "legal hold kept: {}",
        lines[1]
    );
    assert!(lines[2].contains("other@example.com"));
    let token = lines[0]
        .split('"')
        .find(|s| s.ends_with("@redacted.invalid"))
        .unwrap()
        .to_string();

    // Search follows the rewrite: the victim is found today and under the hold; the hash
    // finds the redacted record; the audit record names the hash, not the address.
    let search = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&succeeded(
            &mg.cli(&[&["track", "search", "--json"][..], args].concat()),
        ))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
    };
    assert_eq!(search(&["--recipient", VICTIM]).len(), 2);
    assert_eq!(search(&["--recipient", &token]).len(), 1);
    let audit: Vec<serde_json::Value> = mg
        .records()
        .into_iter()
        .filter(|r| r["action"] == "redact")
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "erasure request ER-7");
    assert_eq!(audit[0]["by"], "dpo");
    assert!(!audit[0].to_string().to_lowercase().contains("victim@"));
}
