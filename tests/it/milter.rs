//! Milter mode inside a real Postfix: pass, reject, hold, markgate down, and the same
//! decisions as smarthost mode for the same messages.

use std::path::Path;

use crate::postfix::Postfix;
use crate::support::*;

const FROM: &str = "jane@police.cjsm.net";

pub(crate) fn postfix_with_milter(milter_port: u16, sink_port: u16) -> Postfix {
    Postfix::start(&[
        format!("smtpd_milters = inet:127.0.0.1:{milter_port}"),
        "milter_default_action = tempfail".to_string(),
        "milter_protocol = 6".to_string(),
        format!("relayhost = [127.0.0.1]:{sink_port}"),
    ])
}

fn send(port: u16, from: &str, to: &[&str], msg: &str) -> String {
    swaks_message(port, from, &to.join(","), msg)
}

#[test]
fn milter_passes_rejects_and_holds_inside_postfix() {
    let sink = Sink::start(&[]);
    let mg = Markgate::milter(Opts::default());
    let pf = postfix_with_milter(mg.port, sink.port);

    // Pass: reaches the sink with the marking header added by the milter, and the sender's
    // own X-Markgate-* fields (two of one name, one folded) deleted.
    let forged = good_message("[OFFICIAL] milter").replacen(
        "Subject:",
        "X-Markgate-Marking: NOT PROTECTIVELY\r\n MARKED\r\nX-Markgate-Released: by nobody\r\n\
         x-markgate-marking: PROTECT\r\nSubject:",
        1,
    );
    let out = send(pf.port, FROM, &["bob@cps.cjsm.net"], &forged);
    assert!(out.contains("<-  250 2.0.0 Ok: queued"), "{out}");
    let dumps = sink.wait_for(1);
    let dump = String::from_utf8_lossy(&dumps[0]);
    let headers = dump.split("\n\n").next().unwrap();
    assert_eq!(
        markgate_fields(&dump),
        ["X-Markgate-Marking: OFFICIAL"],
        "{headers}"
    );
    assert!(!headers.contains(" MARKED"), "{headers}");
    assert!(headers.contains("Subject: [OFFICIAL] milter"), "{headers}");

    // SECRET: the rule's 550 at the client.
    let out = send(
        pf.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[SECRET] plan"),
    );
    assert!(out.contains("<** 550 5.7.1 Message marked SECRET"), "{out}");

    // Unmarked to an external address: Postfix holds it and markgate keeps a copy.
    let unmarked = good_message("lunch").replace("bob@cps.cjsm.net", "friend@example.com");
    let out = send(pf.port, FROM, &["friend@example.com"], &unmarked);
    assert!(out.contains("<-  250"), "{out}");
    eventually(10, "a held message in postqueue", || {
        pf.queue().contains("\"queue_name\": \"hold\"")
    });
    let list = mg.cli(&["quarantine", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["rule"], "unmarked-to-external");
    // Releasing markgate's copy would send the message a second time: refused, pointing at
    // the MTA's held copy by its queue id, and the copy stays held.
    let mta_id = list[0]["mta_queue_id"]
        .as_str()
        .expect("mta_queue_id")
        .to_string();
    assert!(pf.queue().contains(&mta_id), "{}", pf.queue());
    let id = list[0]["id"].as_str().unwrap();
    let out = mg.cli(&["quarantine", "release", id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("postsuper -H {mta_id}")),
        "{stderr}"
    );
    let list = mg.cli(&["quarantine", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Every decision was tracked with the MTA's queue id.
    let records = mg.records();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["front_end"] == "milter"));
    assert!(
        records.iter().all(|r| r["mta_queue_id"].is_string()),
        "{records:?}"
    );
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn postfix_tempfails_when_markgate_is_down() {
    let sink = Sink::start(&[]);
    let mut mg = Markgate::milter(Opts::default());
    let pf = postfix_with_milter(mg.port, sink.port);
    mg.stop();
    let out = send(
        pf.port,
        FROM,
        &["bob@cps.cjsm.net"],
        &good_message("[OFFICIAL] x"),
    );
    assert!(out.contains("<** 451 4.7.1"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(sink.messages().is_empty());
}

#[test]
fn milter_and_smarthost_modes_decide_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let picks = [
        "subject/restricted-bracket.eml",
        "subject/secret-subject.eml",
        "decision/restricted-to-external.eml",
        "decision/unmarked-to-external.eml",
        "decision/no-signature.eml",
        "prose/secret-santa.eml",
        "banner/quoted-printable-split.eml",
        "nested/inner-header.eml",
        "attachment/rfc2231-name.eml",
        "header/msip-enabled.eml",
        "banner/html.eml",
        "combine/descriptor-union.eml",
        // Markings as clients write them, and inline history: nothing above RESTRICTED
        // passes through these places in either mode.
        "client/outlook-secret-en-dash-html.eml",
        "client/outlook-re-external-tag-os.eml",
        "client/cyrillic-subject.eml",
        "history/outlook-fw-secret-subject.eml",
        "history/outlook-de-von-gesendet.eml",
        "history/apple-reply-quoted-secret.eml",
        "textpart/attachment-text-plain.eml",
        "textpart/html-decimal-entity.eml",
        "textpart/flowed-delsp-secret.eml",
    ];
    let sink = Sink::start(&[]);
    let milter = Markgate::milter(Opts::default());
    let pf = postfix_with_milter(milter.port, sink.port);
    let smarthost = Markgate::start(sink.port);
    for (i, file) in picks.iter().enumerate() {
        let case = manifest.iter().find(|c| c["file"] == *file).unwrap();
        let raw = std::fs::read_to_string(root.join(file)).unwrap();
        let mut to: Vec<&str> = case["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // Both modes split a mixed envelope by class (the external copy comes round again
        // later, on Postfix's retry); the fixture's verdict is the external copy's, so that
        // copy is what is sent here.
        if to.iter().any(|t| !t.contains(".cjsm.net")) {
            to.retain(|t| !t.contains(".cjsm.net"));
        }
        let from = case["from"].as_str().unwrap();
        let via_postfix = send(pf.port, from, &to, &raw);
        let (code, _) = smtplib_send(smarthost.port, from, &to, &raw);
        // The client sees the same reply code either way.
        let seen = if code == 250 {
            "<-  250".to_string()
        } else {
            format!("<** {code}")
        };
        assert!(
            via_postfix.contains(&seen),
            "{file}: smarthost said {code}; via Postfix:\n{via_postfix}"
        );
        eventually(10, "both records", || {
            milter.records().len() > i && smarthost.records().len() > i
        });
        let a = &milter.records()[i];
        let b = &smarthost.records()[i];
        let key = |r: &serde_json::Value| {
            (
                r["action"].clone(),
                r["rule"].clone(),
                r["marking"]["level"].clone(),
            )
        };
        assert_eq!(key(a), key(b), "{file}: milter vs smarthost");
        assert_eq!(a["action"], case["action"], "{file}");
    }
}

#[test]
fn milter_refuses_rewritable_recipients_postfix_hands_over() {
    let sink = Sink::start(&[]);
    let mg = Markgate::milter(Opts::default());
    let pf = postfix_with_milter(mg.port, sink.port);
    for to in ["x%gmail.com@police.cjsm.net", "gmail.com!x@police.cjsm.net"] {
        let out = send(pf.port, FROM, &[to], &good_message("[RESTRICTED] r"));
        assert!(out.contains("<** 553 5.1.3"), "{to}: {out}");
    }
    assert!(sink.messages().is_empty());
}

#[test]
fn milter_connections_are_bounded_like_smtp_ones() {
    let mg = Markgate::milter(Opts {
        limits: vec!["max_connections: 2".into()],
        ..Opts::default()
    });
    // The start-up probe's connection (wait_port) must have ended and freed its slot.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // Three connections to a bound of two: whichever the server takes last is closed at
    // once (the order the server accepts them in is its own).
    let conns: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", mg.port)).unwrap())
        .collect();
    let closed = conns
        .into_iter()
        .filter(|c| {
            c.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            let mut buf = [0u8; 16];
            match std::io::Read::read(&mut &*c, &mut buf) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert_eq!(closed, 1, "exactly the connection past the bound is closed");
}

/// The milter's Unix socket is 0660 and in Postfix's group whatever the umask it is started
/// under (under umask 000 it used to be 0777: anyone could submit verdicts' input).
#[test]
fn milter_unix_socket_is_group_only_whatever_the_umask() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("milter.sock");
    let config = dir.path().join("markgate.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nmilter_socket_group: postfix\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\"", bin()])
        .args(["milter", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Stopped(child);
    // Created, then given its group and mode: wait for the final state.
    eventually(10, "the socket, group-writable", || {
        std::fs::metadata(&sock).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o660)
    });
    let meta = std::fs::metadata(&sock).unwrap();
    let postfix_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("postfix:")
                .map(|r| r.split(':').nth(1).unwrap().parse::<u32>().unwrap())
        })
        .unwrap();
    assert_eq!(meta.gid(), postfix_gid);
}
