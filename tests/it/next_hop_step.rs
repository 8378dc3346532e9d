//! A next hop out of step (part of the hostile-input suite): a reply that arrives before the
//! data was sent, or one nobody asked for, is a protocol error. The transaction fails with
//! 451 (the sender keeps the message) and the connection is not used again.

use std::process::Child;

use crate::support::*;

/// A scripted next hop in Python. `mode`: `early` answers `354` and `250` in one write and
/// then `554` to the data; `stray` accepts the first message, refuses later ones with `554`,
/// and a moment after each transaction sends three replies nobody asked for (`250`, `250`,
/// `354`: what a pipelined MAIL, RCPT, DATA would get). It logs each new connection and
/// each final reply to `log`.
struct Fake {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

const SCRIPT: &str = r#"
import socket, sys, threading, time
port, mode, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
done = [0]
def note(s):
    with open(log, 'a') as f: f.write(s + '\n')
def serve(c):
    note('connect')
    f = c.makefile('rb')
    c.sendall(b'220 fake ESMTP\r\n')
    while True:
        line = f.readline()
        if not line: return
        verb = line[:4].upper()
        if verb in (b'EHLO', b'HELO'):
            c.sendall(b'250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n')
        elif verb == b'DATA':
            if mode == 'early':
                c.sendall(b'354 go\r\n250 2.0.0 early\r\n')
            else:
                c.sendall(b'354 go\r\n')
            while f.readline() not in (b'.\r\n', b''):
                pass
            done[0] += 1
            if mode == 'early' or done[0] > 1:
                c.sendall(b'554 5.7.1 refused after all\r\n'); note('554')
            else:
                c.sendall(b'250 2.0.0 queued as A1\r\n'); note('250')
            if mode == 'stray':
                time.sleep(0.1)
                c.sendall(b'250 2.0.0 s1\r\n250 2.0.0 s2\r\n354 s3\r\n'); note('stray')
        elif verb == b'QUIT':
            c.sendall(b'221 bye\r\n'); return
        else:
            c.sendall(b'250 2.0.0 ok\r\n')
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port)); s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

impl Fake {
    fn start(mode: &str) -> Fake {
        let log = tempfile::NamedTempFile::new().unwrap();
        let (child, port) = python_server(
            SCRIPT,
            &[std::ffi::OsStr::new(mode), log.path().as_os_str()],
        );
        Fake { child, port, log }
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FROM: &str = "jane@police.cjsm.net";
const TO: &str = "bob@cps.cjsm.net";

#[test]
fn a_reply_before_the_data_is_not_trusted() {
    let fake = Fake::start("early");
    let mg = Markgate::start(fake.port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[RESTRICTED] early"));
    assert_eq!(code, 451, "{text}");
    let records = mg.records();
    assert_eq!(records[0]["outcome"], "deferred", "{records:?}");
    assert!(records[0]["next_hop"].is_null());
    // Counted as the next hop's fault, not markgate's.
    let scrape = mg.metrics();
    assert!(
        scrape.contains("markgate_deferred_total{fault=\"upstream\"} 1"),
        "{scrape}"
    );
    assert!(!scrape.contains("fault=\"internal\""), "{scrape}");
    // The connection was dropped: the next message opens a new one.
    let _ = smtplib_send(mg.port, FROM, &[TO], &good_message("[RESTRICTED] again"));
    let connects = fake.log().iter().filter(|l| *l == "connect").count();
    assert!(connects >= 2, "{:?}", fake.log());
}

#[test]
fn a_stray_reply_on_an_idle_connection_does_not_answer_the_next_command() {
    let fake = Fake::start("stray");
    let mg = Markgate::start(fake.port);
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[RESTRICTED] one"));
    assert_eq!(code, 250, "{text}");
    // Let the stray lines arrive on the pooled connection.
    eventually(10, "stray replies sent", || {
        fake.log().iter().any(|l| l == "stray")
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The next hop refuses the second message; the stray lines must not make it look
    // accepted.
    let (code, text) = smtplib_send(mg.port, FROM, &[TO], &good_message("[RESTRICTED] two"));
    assert_eq!(code, 554, "{text} {:?} {}", fake.log(), mg.log_text());
    let log = fake.log();
    assert_eq!(log.iter().filter(|l| *l == "554").count(), 1, "{log:?}");
}
