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
