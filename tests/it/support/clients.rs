//! Clients that talk to markgate: a raw SMTP client for hostile input, a bare HTTP GET,
//! Python's smtplib and swaks, and a message that passes the default rules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A raw SMTP client: write exactly the bytes a test wants, read replies line by line.
pub struct Raw {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// Reads one (possibly multi-line) reply; returns its lines joined with `\n`.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                return all;
            }
            let done = line.as_bytes().get(3) != Some(&b'-');
            all.push_str(line.trim_end());
            if done {
                return all;
            }
            all.push('\n');
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command line and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Greeting, EHLO, MAIL, RCPT..., DATA; returns the DATA reply.
    pub fn start(port: u16, from: &str, to: &[&str]) -> Raw {
        let mut raw = Raw::connect(port);
        assert!(raw.reply().starts_with("220"));
        assert!(raw.cmd("EHLO client.test").starts_with("250"));
        assert!(raw.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        for t in to {
            let r = raw.cmd(&format!("RCPT TO:<{t}>"));
            assert!(r.starts_with("250"), "{r}");
        }
        let r = raw.cmd("DATA");
        assert!(r.starts_with("354"), "{r}");
        raw
    }

    /// True once the server closed the connection (anything it sends first, such as a TLS
    /// alert, is read and ignored).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut
                }
            }
        }
        false
    }
}

/// A message that passes the default rules to a CJSM recipient.
pub fn good_message(subject: &str) -> String {
    format!(
        "From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\r\nHello Bob,\r\n\r\nThe file is attached.\r\n\r\nJane Doe\r\nTel: 020 7946 0018\r\nThis e-mail is intended solely for the addressee.\r\n",
        subject.len()
    )
}

/// Sends one message with Python's smtplib; returns (code, reply text) of the end of data,
/// or the refusal of an earlier command.
pub fn smtplib_send(port: u16, from: &str, to: &[&str], msg: &str) -> (u16, String) {
    let script = r#"
import smtplib, sys, json
port, sender, rcpts, path = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
data = open(path, 'rb').read()
s = smtplib.SMTP('127.0.0.1', port, timeout=60)
s.ehlo('smtplib.test')
try:
    code, resp = s.mail(sender)
    if code != 250: print(code, resp.decode()); sys.exit(0)
    for r in rcpts:
        code, resp = s.rcpt(r)
        if code != 250: print(code, resp.decode()); sys.exit(0)
    code, resp = s.data(data)
    print(code, resp.decode())
finally:
    try: s.quit()
    except Exception: pass
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, msg).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(from)
        .arg(serde_json::to_string(to).unwrap())
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !text.is_empty(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, rest) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), rest.to_string())
}

/// Sends `msg` with swaks from `from` to `to` (comma-separated); returns the transcript.
pub fn swaks_message(port: u16, from: &str, to: &str, msg: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), msg).unwrap();
    swaks(
        port,
        &[
            "--from",
            from,
            "--to",
            to,
            "--data",
            file.path().to_str().unwrap(),
        ],
    )
}

/// Runs swaks; returns its whole transcript.
pub fn swaks(port: u16, args: &[&str]) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "60"])
        .args(args)
        .output()
        .expect("swaks (apt-get install swaks)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A minimal milter client in Python: runs the steps in `script` (one per line) and prints
/// one line per reply: the reply's command letter, `-` for a reply the milter negotiated
/// away (it asked the MTA not to wait), `closed` when the connection ended.
pub const MILTER_CLIENT: &str = r#"
import socket, struct, sys
port, steps = int(sys.argv[1]), sys.argv[2].split('\n')
s = socket.create_connection(('127.0.0.1', port), timeout=10)
# The replies the milter asked us not to wait for (SMFIP_NR_*), from its optneg answer.
NR = {'connect': 0x1000, 'helo': 0x2000, 'mail': 0x4000, 'rcpt': 0x8000,
      'header': 0x80, 'eoh': 0x40000, 'body': 0x80000}
agreed = 0
def closed():
    print('closed'); sys.exit(0)
def send(cmd, data=b''):
    try: s.sendall(struct.pack('>I', len(data) + 1) + cmd + data)
    except OSError: closed()
def recv():
    head = b''
    while len(head) < 4:
        try: more = s.recv(4 - len(head))
        except OSError: return None
        if not more: return None
        head += more
    n = struct.unpack('>I', head)[0]
    body = b''
    while len(body) < n:
        try: more = s.recv(n - len(body))
        except OSError: return None
        if not more: return None
        body += more
    return body
def reply(verb=None):
    # A reply negotiated away: nothing to wait for ("-").
    if verb in NR and agreed & NR[verb]:
        print('-'); return
    while True:
        r = recv()
        if r is None: closed()
        # Modification actions come before the final reply of end-of-body.
        if r[:1] in (b'h', b'm', b'q', b'+', b'-', b'e'):
            print('mod', r[:1].decode()); continue
        print((r[:1].decode() + ' ' + r[1:].split(b'\0')[0].decode(errors='replace')).rstrip()); return
z = lambda *xs: b''.join(x.encode() + b'\0' for x in xs)
for step in steps:
    if not step: continue
    verb, _, arg = step.partition(' ')
    if verb == 'optneg':
        send(b'O', struct.pack('>III', 6, 0x1ff, 0x1fffff))
        r = recv()
        if r is None: closed()
        agreed = struct.unpack('>III', r[1:13])[2]
        print('O')
    elif verb == 'connect': send(b'C', z('client.test')[:-1] + b'\0' + b'4' + struct.pack('>H', 25) + z(arg)); reply(verb)
    elif verb == 'helo': send(b'H', z(arg)); reply(verb)
    elif verb == 'tls': send(b'D', b'M' + z('{tls_version}', arg, '{cipher}', 'TLS_AES_256_GCM_SHA384'))
    elif verb == 'mail': send(b'M', z(arg)); reply(verb)
    elif verb == 'rcpt': send(b'R', z(arg)); reply(verb)
    elif verb == 'header':
        name, _, value = arg.partition(':'); send(b'L', z(name, value)); reply(verb)
    elif verb == 'eoh': send(b'N'); reply(verb)
    elif verb == 'body': send(b'B', arg.replace('|', '\r\n').encode()); reply(verb)
    elif verb == 'eob': send(b'E'); reply()
    elif verb == 'eobdata': send(b'E', arg.replace('|', '\r\n').encode()); reply()
    elif verb == 'quitnc': send(b'K')
    elif verb == 'abort': send(b'A')
"#;

/// Runs the milter `steps` (one per line: optneg, connect ADDR, helo NAME, tls VERSION,
/// mail <A>, rcpt <A>, header NAME: VALUE, eoh, body TEXT (`|` for CRLF), eob, quitnc,
/// abort) against the milter on `port`; one line per reply.
pub fn milter_client(port: u16, steps: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", MILTER_CLIENT, &port.to_string(), &steps.join("\n")])
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
