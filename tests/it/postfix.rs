//! A real Postfix in front of markgate: a private instance under a temp dir with
//! `relayhost = [127.0.0.1]:PORT`, as a site would point its own Postfix at markgate.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A private Postfix instance; stopped with `postfix -c DIR stop` when dropped.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Postfix {
    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Starts smtpd on a free port; `main_extra` lines go into main.cf.
    pub fn start(main_extra: &[String]) -> Postfix {
        Postfix::start_with(main_extra, None)
    }

    /// Like `start`; `services(port)`, when given, replaces the smtpd line of master.cf
    /// (the deploy files' own services, with the port substituted).
    pub fn start_with(main_extra: &[String], services: Option<&dyn Fn(u16) -> String>) -> Postfix {
        let dir = tempfile::Builder::new().prefix("pf").tempdir().unwrap();
        let d = dir.path();
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        set_mode(d, 0o755);
        Command::new("chown")
            .args(["postfix"])
            .arg(d.join("data"))
            .status()
            .unwrap();
        let port = free_port();
        let mut main = format!(
            "compatibility_level = 3.6
queue_directory = {q}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtp_tls_security_level = none
",
            q = d.join("queue").display(),
            data = d.join("data").display(),
            d = d.display(),
        );
        for l in main_extra {
            main.push_str(l);
            main.push('\n');
        }
        std::fs::write(d.join("etc/main.cf"), main).unwrap();
        let smtpd = match services {
            Some(services) => services(port),
            None => format!("127.0.0.1:{port} inet n - n - - smtpd"),
        };
        let master = format!(
            "{smtpd}
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(d.join("etc/master.cf"), master).unwrap();
        let pf = Postfix { dir, port };
        let check = pf.postfix(&["check"]);
        assert!(
            check.status.success(),
            "postfix check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let start = pf.postfix(&["start"]);
        assert!(
            start.status.success(),
            "postfix start: {}",
            String::from_utf8_lossy(&start.stderr)
        );
        wait_port(port);
        pf
    }

    fn postfix(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.etc())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// The queue as `postqueue -j` lists it.
    pub fn queue(&self) -> String {
        let out = Command::new("/usr/sbin/postqueue")
            .arg("-c")
            .arg(self.etc())
            .arg("-j")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix(&["stop"]);
    }
}

fn set_mode(p: &Path, mode: u32) {
    let mut perms = std::fs::metadata(p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, mode);
    std::fs::set_permissions(p, perms).unwrap();
}

fn message() -> String {
    "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <pf-1@police.cjsm.net>\r\nSubject: [RESTRICTED] Case file 4411\r\n\r\nHello Bob,\r\n\r\n..a line that starts with a dot survives.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\n".to_string()
}

#[test]
fn postfix_relayhost_sends_through_markgate_byte_identical_apart_from_added_headers() {
    let sink = Sink::start(&[]);
    let mg = Markgate::start(sink.port);
    let pf = Postfix::start(&[format!("relayhost = [127.0.0.1]:{}", mg.port)]);
    let msg = message();
    let out = swaks_message(pf.port, "jane@police.cjsm.net", "bob@cps.cjsm.net", &msg);
    assert!(out.contains("<-  250 2.0.0 Ok: queued as"), "{out}");
    let dumps = sink.wait_for(1);
    // Postfix adds its own Received line in front of markgate's; after both, the message
    // is the one that was sent.
    let text = String::from_utf8_lossy(&dumps[0]).to_string();
    let mg_at = text.find("(markgate)").expect("markgate Received header");
    let body_at = text[mg_at..].find("From: ").unwrap() + mg_at;
    assert_eq!(
        text[body_at..].trim_end_matches('\n').to_string() + "\n",
        msg.replace("\r\n", "\n"),
        "postfix log:\n{}",
        pf.log()
    );
    assert!(text[mg_at..body_at].contains("X-Markgate-Marking: RESTRICTED"));
    // Postfix logged markgate's 250 with markgate's queue id.
    let rec = &mg.records()[0];
    let id = rec["queue_id"].as_str().unwrap().to_string();
    eventually(10, "postfix log of the relay", || pf.log().contains(&id));
}

#[test]
fn postfix_keeps_and_retries_what_markgate_defers() {
    let dead = free_port();
    let mg = Markgate::start(dead);
    let pf = Postfix::start(&[format!("relayhost = [127.0.0.1]:{}", mg.port)]);
    let out = swaks_message(
        pf.port,
        "jane@police.cjsm.net",
        "bob@cps.cjsm.net",
        &message(),
    );
    assert!(out.contains("<-  250"), "{out}");
    // markgate answered 451 (next hop down); Postfix must still hold the message.
    eventually(20, "the deferral in the postfix log", || {
        pf.log().contains("status=deferred")
    });
    assert!(pf.log().contains("451 4.4.1"), "{}", pf.log());
    assert!(
        pf.queue().contains("bob@cps.cjsm.net"),
        "queue: {}",
        pf.queue()
    );
}

#[test]
fn postfix_as_the_next_hop_over_required_starttls_verified_against_a_test_ca() {
    let sink = Sink::start(&[]);
    let ca = TestCa::new();
    // The private CA's files must be readable by Postfix's smtpd (it runs as postfix).
    for f in ["server.pem", "server.key", "ca.pem"] {
        let mut perms = std::fs::metadata(ca.path(f)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(ca.path(f), perms).unwrap();
    }
    let mut perms = std::fs::metadata(ca.dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(ca.dir.path(), perms).unwrap();
    let pf = Postfix::start(&[
        format!("relayhost = [127.0.0.1]:{}", sink.port),
        format!("smtpd_tls_cert_file = {}", ca.path("server.pem")),
        format!("smtpd_tls_key_file = {}", ca.path("server.key")),
        "smtpd_tls_security_level = may".to_string(),
        "smtpd_tls_loglevel = 1".to_string(),
    ]);
    let mg = Markgate::with(
        pf.port,
        Opts {
            upstream: ca.upstream_required(),
            ..Opts::default()
        },
    );
    let (code, text) = smtplib_send(
        mg.port,
        "jane@police.cjsm.net",
        &["bob@cps.cjsm.net"],
        &message(),
    );
    assert_eq!(code, 250, "{text}\n{}", pf.log());
    let rec = &mg.records()[0];
    // Postfix's own queue id comes back in the record.
    assert!(rec["next_hop"]["queue_id"].is_string(), "{rec}");
    sink.wait_for(1);
    eventually(10, "Postfix logging the TLS session", || {
        pf.log().contains("TLS connection established from")
    });
}

/// The shipped smarthost files loaded into a private Postfix (their ports swapped for
/// free ones), markgate behind it, and the sink as the site's route to CJSM. `smtpd_extra`
/// lines go under the filtering smtpd.
pub(crate) fn deploy_smarthost(smtpd_extra: &str) -> (Sink, Markgate, Postfix) {
    let root = env!("CARGO_MANIFEST_DIR");
    let main_cf =
        std::fs::read_to_string(format!("{root}/deploy/postfix/main.cf.smarthost")).unwrap();
    let master_cf =
        std::fs::read_to_string(format!("{root}/deploy/postfix/master.cf.smarthost")).unwrap();
    let sink = Sink::start(&[]);
    let reinject = free_port();
    let mg = Markgate::with(reinject, Opts::default());
    let mg_port = mg.port;
    let smtpd_extra = smtpd_extra.to_string();
    let services = move |port: u16| {
        master_cf
            .replace("smtp      inet", &format!("127.0.0.1:{port} inet"))
            .replace(
                "127.0.0.1:10025\n",
                &format!("127.0.0.1:{mg_port}\n{smtpd_extra}"),
            )
            .replace("127.0.0.1:10026", &format!("127.0.0.1:{reinject}"))
    };
    let mut main: Vec<String> = main_cf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    // The site's own route to CJSM: here, the sink.
    main.push(format!("relayhost = [127.0.0.1]:{}", sink.port));
    let pf = Postfix::start_with(&main, Some(&services));
    (sink, mg, pf)
}

/// The shipped Postfix files, loaded as they are (ports substituted) into a private Postfix
/// that delivers to a sink: mail goes through markgate once (no loop), a refusal reaches the
/// sending client, a hold lands in the quarantine.
#[test]
fn the_deploy_smarthost_files_filter_once_and_never_loop() {
    let (sink, mg, pf) = deploy_smarthost("");

    // Passes: delivered once, with markgate's marking header, and never back to markgate.
    let out = swaks_message(
        pf.port,
        "jane@police.cjsm.net",
        "bob@cps.cjsm.net",
        &message(),
    );
    assert!(out.contains("<-  250"), "{out}\n{}", pf.log());
    let dumps = sink.wait_for(1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        sink.messages().len(),
        1,
        "delivered more than once: {}",
        pf.log()
    );
    assert_eq!(mg.records().len(), 1, "markgate saw the message again");
    let text = String::from_utf8_lossy(&dumps[0]);
    assert!(text.contains("X-Markgate-Marking: RESTRICTED"), "{text}");
    assert!(!pf.log().contains("too many hops"), "{}", pf.log());

    // Refused: the rule's reply reaches the sending client during the SMTP session.
    let secret = message().replace("[RESTRICTED]", "[SECRET]");
    let out = swaks_message(pf.port, "jane@police.cjsm.net", "bob@cps.cjsm.net", &secret);
    assert!(out.contains("<** 550 5.7.1"), "{out}");

    // Split: the external recipient is answered 452 4.5.3 through the filter, for the
    // client to send again on its own; the CJSM copy is delivered now, to Bob alone.
    let out = swaks_message(
        pf.port,
        "jane@police.cjsm.net",
        "bob@cps.cjsm.net,mate@gmail.com",
        &message(),
    );
    assert!(
        out.contains("<** 452 4.5.3 Recipients of another class"),
        "{out}"
    );
    assert!(out.contains("<-  250 2.0.0 Ok: queued as"), "{out}");
    let dumps = sink.wait_for(2);
    let text = String::from_utf8_lossy(&dumps[1]);
    assert!(!text.contains("mate@gmail.com"), "{text}");
    assert_eq!(mg.records().len(), 3, "{:?}", mg.records());

    // Held: in markgate's quarantine, nothing delivered.
    let unmarked = message().replace("[RESTRICTED] ", "");
    let out = swaks_message(
        pf.port,
        "jane@police.cjsm.net",
        "friend@example.com",
        &unmarked,
    );
    assert!(out.contains("<-  250"), "{out}");
    let held = mg.cli(&["quarantine", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&held.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(sink.messages().len(), 2);
}

/// The shipped milter settings, loaded as they are into a private Postfix.
#[test]
fn the_deploy_milter_file_filters_inside_postfix() {
    let root = env!("CARGO_MANIFEST_DIR");
    let main_cf = std::fs::read_to_string(format!("{root}/deploy/postfix/main.cf.milter")).unwrap();
    let sink = Sink::start(&[]);
    let mg = Markgate::milter(Opts::default());
    let mut main: Vec<String> = main_cf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.replace("127.0.0.1:10027", &format!("127.0.0.1:{}", mg.port)))
        .collect();
    main.push(format!("relayhost = [127.0.0.1]:{}", sink.port));
    let pf = Postfix::start(&main);
    let out = swaks_message(
        pf.port,
        "jane@police.cjsm.net",
        "bob@cps.cjsm.net",
        &message(),
    );
    assert!(out.contains("<-  250"), "{out}");
    let dumps = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&dumps[0]).contains("X-Markgate-Marking: RESTRICTED"));
    let secret = message().replace("[RESTRICTED]", "[SECRET]");
    let out = swaks_message(pf.port, "jane@police.cjsm.net", "bob@cps.cjsm.net", &secret);
    assert!(out.contains("<** 550 5.7.1"), "{out}");
}
