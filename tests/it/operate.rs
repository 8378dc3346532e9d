//! What operators rely on: the metrics move with traffic, the scrape and the alert rules pass
//! promtool, every dashboard panel's metric exists, health endpoints answer, the example
//! config and the systemd unit are valid.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;

fn deploy(path: &str) -> String {
    format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn sample(scrape: &str, prefix: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_scrape_after_traffic_shows_the_counts_and_passes_promtool() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let from = "jane@police.cjsm.net";
    assert_eq!(
        smtplib_send(
            mg.port,
            from,
            &["bob@cps.cjsm.net"],
            &good_message("[OFFICIAL] a")
        )
        .0,
        250
    );
    assert_eq!(
        smtplib_send(
            mg.port,
            from,
            &["bob@cps.cjsm.net"],
            &good_message("[SECRET] b")
        )
        .0,
        550
    );
    let unmarked = good_message("lunch").replace("To: bob@cps.cjsm.net", "To: x@example.com");
    assert_eq!(
        smtplib_send(mg.port, from, &["x@example.com"], &unmarked).0,
        250
    );
    let scrape = mg.metrics();
    assert_eq!(
        sample(
            &scrape,
            r#"markgate_messages_total{action="pass",rule="none",level="OFFICIAL"}"#
        ),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            r#"markgate_messages_total{action="reject",rule="above-restricted",level="SECRET"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            r#"markgate_messages_total{action="quarantine",rule="unmarked-to-external",level="UNMARKED"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&scrape, r#"markgate_recipients_total{class="external"}"#),
        1.0
    );
    assert_eq!(sample(&scrape, "markgate_quarantine_messages "), 1.0);
    assert!(sample(&scrape, "markgate_quarantine_bytes ") > 100.0);
    assert!(sample(&scrape, "markgate_transaction_seconds_count ") >= 3.0);
    assert_eq!(sample(&scrape, r#"markgate_build_info{version="#), 1.0);
    // Audit rules that matched are their own counter, never messages.
    let messages: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("markgate_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(messages, 3.0, "{scrape}");
    assert!(!scrape.contains("mode="), "{scrape}");
    // The process metrics every exporter has.
    assert!(sample(&scrape, "process_resident_memory_bytes ") > 1e6);
    assert!(sample(&scrape, "process_open_fds ") > 3.0);
    assert!(sample(&scrape, "process_start_time_seconds ") > 1.7e9);
    // Present and a number; a process this young may not have used a clock tick yet.
    assert!(sample(&scrape, "process_cpu_seconds_total ") >= 0.0);
    // Bucket bounds a person can read (no 5.9604644775390629).
    for le in scrape.split("{le=\"").skip(1) {
        let bound = &le[..le.find('"').unwrap()];
        assert!(bound.len() <= 10, "unreadable bucket bound {bound}");
    }
    // The quarantine gauge follows a delete made by another process at once.
    let held = mg.cli(&["quarantine", "list", "--json"]);
    let held: serde_json::Value = serde_json::from_slice(&held.stdout).unwrap();
    let id = held[0]["id"].as_str().unwrap().to_string();
    assert!(mg.cli(&["quarantine", "delete", &id]).status.success());
    assert_eq!(sample(&mg.metrics(), "markgate_quarantine_messages "), 0.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric a dashboard panel queries exists in a live scrape.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/markgate.json")).unwrap())
            .unwrap();
    let names = regex::Regex::new(r"markgate_[a-z_]+").unwrap();
    let mut missing = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            for m in names.find_iter(target["expr"].as_str().unwrap()) {
                let name = m.as_str();
                let present = scrape
                    .lines()
                    .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']));
                if !present {
                    missing.insert(name.to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard metrics not in the scrape: {missing:?}"
    );
}

#[test]
fn health_and_readiness_endpoints_answer() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    assert_eq!(http_get(mg.metrics_port, "/healthz").0, 200);
    eventually(10, "ready", || {
        http_get(mg.metrics_port, "/readyz").0 == 200
    });
    drop(sink);
    let dead = Markgate::start(free_port());
    let (code, body) = http_get(dead.metrics_port, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("next hop"), "{body}");
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn example_config_is_valid_and_names_every_key() {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(deploy("config.example.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = std::fs::read_to_string(deploy("config.example.yaml")).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for key in [
        "listen",
        "hostname",
        "state_dir",
        "relay_networks",
        "require_tls",
        "tls",
        "max_message_size",
        "max_recipients",
        "max_command_length",
        "max_line_length",
        "max_connections",
        "worker_threads",
        "command_timeout",
        "data_timeout",
        "spool_threshold",
        "max_errors",
        "address",
        "ca_file",
        "tls_name",
        "timeout",
        "max_idle",
        "idle_timeout",
        "rules",
        "directory",
        "metrics_listen",
        "headers",
        "msip_labels",
        "confidentiality_phrases",
        "max_depth",
        "subject",
        "retention_days",
        "trusted_proxies",
        "download_role",
    ] {
        assert!(
            example.contains(&format!("{key}:")),
            "config.example.yaml lacks {key}"
        );
        assert!(
            readme.contains(&format!("`{key}`")) || readme.contains(&format!(".{key}`")),
            "README lacks {key}"
        );
    }
}

#[test]
fn systemd_unit_verifies() {
    if !std::path::Path::new("/usr/bin/systemd-analyze").exists() {
        eprintln!("systemd-analyze not installed; unit not verified");
        return;
    }
    for name in ["markgate.service", "markgate-milter.service"] {
        let dir = tempfile::tempdir().unwrap();
        let unit = std::fs::read_to_string(deploy(&format!("systemd/{name}")))
            .unwrap()
            .replace("/usr/bin/markgate", bin());
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        // The man page it names is the package's (scripts/package-test installs it).
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Lines about units this machine lacks (network-online.target in a container) are
        // not about our file; anything naming it is.
        let ours: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
        assert!(ours.is_empty(), "{text}");
        // Hardening kept at its level (exposure 1.6 of 10, "OK").
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=16"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            security.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&security.stdout)
        );
    }
}

/// The operator's CLI cannot stop the service: a read-only command creates nothing, and a
/// command run as someone other than the state dir's owner is refused, saying how to run it.
#[test]
fn cli_commands_create_nothing_and_run_only_as_the_state_dirs_owner() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("markgate.yaml");
    std::fs::write(&config, format!("state_dir: {}\n", state.display())).unwrap();
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    // Before the service ever ran: read-only commands find nothing and create nothing.
    for args in [&["track", "search"][..], &["quarantine", "list"][..]] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!state.exists(), "{args:?} created the state dir");
    }
    let out = run(&["track", "reindex"]);
    assert!(!out.status.success());
    assert!(!state.exists());

    // A state dir owned by the service's user (here: nobody): refused for root, untouched.
    std::fs::create_dir(&state).unwrap();
    let status = Command::new("chown")
        .arg("nobody")
        .arg(&state)
        .status()
        .unwrap();
    assert!(status.success());
    for args in [
        &["track", "search"][..],
        &["track", "reindex"][..],
        &["quarantine", "list"][..],
        &["quarantine", "purge", "--older-than", "1d"][..],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("sudo -u nobody"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nothing created"
    );
}

/// Every command finds the config the same way: `--config`, else `MARKGATE_CONFIG`, else
/// /etc/markgate/markgate.yaml, else the embedded defaults — and says which.
#[test]
fn the_config_is_found_through_markgate_config_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("site.yaml");
    std::fs::write(&config, format!("state_dir: {}\n", state.display())).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .env("MARKGATE_CONFIG", &config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&config.display().to_string()), "{text}");
    // A read-only command with that config looks in its state dir and creates nothing.
    let out = Command::new(bin())
        .args(["quarantine", "list"])
        .env("MARKGATE_CONFIG", &config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!state.exists());
    assert!(!dir.path().join("markgate-state").exists());
}

/// The expiry of the certificate in `pem` (seconds since the epoch), as Python's ssl reads
/// it; of the certificate a STARTTLS session on `port` is given, with `port`.
fn not_after(pem: Option<&std::path::Path>, port: Option<u16>) -> i64 {
    let script = r#"
import ssl, smtplib, sys, socket
if sys.argv[1] == 'file':
    info = ssl._ssl._test_decode_cert(sys.argv[2])
else:
    s = smtplib.SMTP('127.0.0.1', int(sys.argv[2]), timeout=30)
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    der = s.sock.getpeercert(binary_form=True)
    s.quit()
    open(sys.argv[3], 'w').write(ssl.DER_cert_to_PEM_cert(der))
    info = ssl._ssl._test_decode_cert(sys.argv[3])
print(int(ssl.cert_time_to_seconds(info['notAfter'])))
"#;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]);
    match (pem, port) {
        (Some(p), _) => cmd.arg("file").arg(p),
        (None, Some(port)) => cmd.arg("live").arg(port.to_string()).arg(tmp.path()),
        _ => unreachable!(),
    };
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_reload_takes_a_new_certificate_and_its_expiry_is_a_metric() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(ca.path("server.pem"), &cert).unwrap();
    std::fs::copy(ca.path("server.key"), &key).unwrap();
    let sink = Sink::start(&[]);
    let mg = Markgate::with(
        sink.port,
        Opts {
            top: vec![format!(
                "tls: {{cert: {}, key: {}}}",
                cert.display(),
                key.display()
            )],
            ..Opts::default()
        },
    );
    let gauge = |mg: &Markgate| {
        sample(
            &mg.metrics(),
            "markgate_tls_certificate_expiry_timestamp_seconds ",
        ) as i64
    };
    let first = not_after(Some(&cert), None);
    assert_eq!(gauge(&mg), first);
    assert_eq!(not_after(None, Some(mg.port)), first);

    // The renewed certificate (a year, not two days) put in place, then a reload.
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "400",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let renewed = not_after(Some(&cert), None);
    assert!(renewed > first + 300 * 86_400);
    mg.signal("HUP");
    eventually(10, "the renewed certificate's expiry", || {
        gauge(&mg) == renewed
    });
    assert_eq!(
        not_after(None, Some(mg.port)),
        renewed,
        "STARTTLS serves the renewed certificate"
    );
}
