//! A milter client speaking the protocol directly (part of the hostile-input suite): state
//! is per client and per message, and commands out of order are refused. Postfix never sends
//! these sequences, but anyone who can reach the milter port can.

use std::process::Command;

use crate::support::*;

/// A minimal milter client in Python: runs the steps in `script` (one per line) and prints
/// one line per reply: the reply's command letter, `closed` when the connection ended.
const CLIENT: &str = r#"
import socket, struct, sys
port, steps = int(sys.argv[1]), sys.argv[2].split('\n')
s = socket.create_connection(('127.0.0.1', port), timeout=10)
def send(cmd, data=b''):
    s.sendall(struct.pack('>I', len(data) + 1) + cmd + data)
def recv():
    head = b''
    while len(head) < 4:
        more = s.recv(4 - len(head))
        if not more: return None
        head += more
    n = struct.unpack('>I', head)[0]
    body = b''
    while len(body) < n:
        more = s.recv(n - len(body))
        if not more: return None
        body += more
    return body
def reply():
    while True:
        r = recv()
        if r is None: print('closed'); sys.exit(0)
        # Modification actions come before the final reply of end-of-body.
        if r[:1] in (b'h', b'm', b'q', b'+', b'-', b'e'):
            print('mod', r[:1].decode()); continue
        print(r[:1].decode(), r[1:].split(b'\0')[0].decode(errors='replace')); return
z = lambda *xs: b''.join(x.encode() + b'\0' for x in xs)
for step in steps:
    if not step: continue
    verb, _, arg = step.partition(' ')
    if verb == 'optneg':
        send(b'O', struct.pack('>III', 6, 0x1ff, 0x1fffff)); recv(); print('O')
    elif verb == 'connect': send(b'C', z('client.test')[:-1] + b'\0' + b'4' + struct.pack('>H', 25) + z(arg)); reply()
    elif verb == 'helo': send(b'H', z(arg)); reply()
    elif verb == 'tls': send(b'D', b'M' + z('{tls_version}', arg, '{cipher}', 'TLS_AES_256_GCM_SHA384'))
    elif verb == 'mail': send(b'M', z(arg)); reply()
    elif verb == 'rcpt': send(b'R', z(arg)); reply()
    elif verb == 'header':
        name, _, value = arg.partition(':'); send(b'L', z(name, value)); reply()
    elif verb == 'eoh': send(b'N'); reply()
    elif verb == 'body': send(b'B', arg.replace('|', '\r\n').encode()); reply()
    elif verb == 'eob': send(b'E'); reply()
    elif verb == 'quitnc': send(b'K')
    elif verb == 'abort': send(b'A')
"#;

fn run(port: u16, steps: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), &steps.join("\n")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

const SIGNED: &str = "body Hello|Jane Doe|Tel: 020 7946 0018|";

/// A message over the milter, from MAIL to end of body.
fn message(subject: &str) -> Vec<String> {
    vec![
        "mail <jane@police.cjsm.net>".into(),
        "rcpt <bob@cps.cjsm.net>".into(),
        format!("header Subject: {subject}"),
        "eoh".into(),
        SIGNED.into(),
        "eob".into(),
    ]
}

#[test]
fn a_reused_milter_connection_forgets_the_previous_clients_tls() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: plaintext\n    when:\n      tls: false\n    action:\n      reject:\n        code: 530\n        status: \"5.7.0\"\n        text: \"TLS required\"\n",
    )
    .unwrap();
    let mg = Markgate::milter(Opts {
        top: vec![format!("rules: {}", rules.display())],
        ..Opts::default()
    });
    let mut steps: Vec<String> = vec![
        "optneg".into(),
        "connect 192.0.2.1".into(),
        "helo tls.test".into(),
        "tls TLSv1.3".into(),
    ];
    steps.extend(message("[OFFICIAL] over TLS"));
    // The MTA reuses the connection for a plaintext client.
    steps.extend([
        "quitnc".into(),
        "connect 192.0.2.2".into(),
        "helo plain.test".into(),
    ]);
    steps.extend(message("[OFFICIAL] in plaintext"));
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let replies = run(mg.port, &steps);
    let finals: Vec<&String> = replies
        .iter()
        .filter(|r| r.starts_with('y') || r.starts_with('c') || r.starts_with('a'))
        .collect();
    // The last reply is the plaintext message's: refused by the tls: false rule.
    let last = finals.last().unwrap();
    assert!(last.starts_with("y 530"), "{replies:?}");
    let records = mg.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[1]["tls"].is_null(), "{}", records[1]);
    assert_eq!(records[1]["client"]["helo"], "plain.test");
}

#[test]
fn milter_commands_out_of_order_are_refused() {
    let mg = Markgate::milter(Opts::default());
    // A body with no MAIL: the connection ends (the MTA tempfails), nothing is judged.
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "header Subject: x",
            "eob",
        ],
    );
    assert_eq!(replies.last().unwrap(), "closed", "{replies:?}");
    // A header after the end of headers (a SECRET subject read as body text).
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "mail <jane@police.cjsm.net>",
            "rcpt <bob@cps.cjsm.net>",
            "header Subject: hello",
            "eoh",
            "header Subject: [SECRET] plan",
            SIGNED,
            "eob",
        ],
    );
    assert_eq!(replies.last().unwrap(), "closed", "{replies:?}");
    assert!(mg.records().is_empty(), "{:?}", mg.records());
    // A 64 KB recipient is refused, not kept.
    let long = format!("rcpt <{}@cps.cjsm.net>", "a".repeat(64 * 1024 - 100));
    let replies = run(
        mg.port,
        &[
            "optneg",
            "connect 192.0.2.1",
            "helo x.test",
            "mail <jane@police.cjsm.net>",
            &long,
        ],
    );
    assert!(replies.last().unwrap().starts_with("y 501"), "{replies:?}");
}
