//! Real peers for the integration tests: markgate itself as a child process, Postfix's
//! smtp-sink as the next hop, swaks / smtplib / smtp-source as clients, a raw SMTP client
//! for hostile input, and a private Postfix instance. Everything listens on 127.0.0.1 and
//! every process a test starts is stopped by PID when its handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listening on {port}");
}

/// Starts a Python SMTP stand-in that binds port 0 itself and prints the port it got, so no
/// other process can take the port between choosing and binding it (free_port then bind
/// raced under a loaded CI run). The script reads its port from `sys.argv[1]` ("0") and
/// prints `s.getsockname()[1]` once listening.
pub fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (Child, u16) {
    let mut child = Command::new("python3")
        .args(["-c", script, "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("port line");
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("python server printed no port: {line:?}")
    });
    (child, port)
}

/// Whether the process `pid` holds the listening socket on 127.0.0.1:`port` (read from
/// /proc, so no probe connection is made: a probe is a session to the server and takes
/// one of its slots). Where /proc/PID/fd cannot be read (another user's process), whether
/// anything accepts a connection there.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let probe = || TcpStream::connect(("127.0.0.1", port)).is_ok();
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return probe();
    };
    let want = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return probe();
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| {
                let l = l.to_string_lossy();
                inodes.iter().any(|i| l == format!("socket:[{i}]"))
            })
            .unwrap_or(false)
    })
}

/// Waits until `child` (not some other process that took the port) listens on `port`;
/// false when it exits first or never does.
pub fn wait_child_port(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if listens_on(child.id(), port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Waits until `f` holds or panics after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_markgate")
}

pub fn tool_available(path: &str) -> bool {
    Path::new(path).exists()
}

/// Postfix's smtp-sink, dumping each message to a file.
pub struct Sink {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Sink {
    /// `args` are failure modes such as `["-r", "."]`.
    pub fn start(args: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
        std::fs::set_permissions(dir.path(), perms).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // A port chosen free can be taken before smtp-sink binds it: try another.
        let (child, port) = (0..5)
            .find_map(|_| {
                let port = free_port();
                let mut child = Sink::launch(dir.path(), &args, port);
                if wait_child_port(&mut child, port) {
                    Some((child, port))
                } else {
                    let _ = child.kill();
                    let _ = child.wait();
                    None
                }
            })
            .expect("smtp-sink never listened");
        Sink {
            child,
            port,
            dir,
            args,
        }
    }

    fn launch(dir: &Path, args: &[String], port: u16) -> Child {
        let template = format!("{}/%H%M%S", dir.display());
        Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody", "-d", &template])
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (apt-get install postfix)")
    }

    /// Stops the sink (the next hop goes down); what it stored stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Brings the sink back on the same port and directory.
    pub fn restart_on(&mut self, port: u16) {
        let mut child = Sink::launch(self.dir.path(), &self.args, port);
        assert!(
            wait_child_port(&mut child, port),
            "smtp-sink could not take port {port} back"
        );
        self.child = child;
    }

    /// Every dumped message, as written (smtp-sink prepends its own X- and Received lines).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// The first `n` messages, once smtp-sink has closed every dump it was writing (it
    /// writes a file as data arrives, so a count alone can see half a message).
    pub fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        eventually(30, "complete messages at the sink", || {
            self.messages().len() >= n && !self.writing()
        });
        self.messages()
    }

    /// Whether smtp-sink holds a file in its dump directory open. Where its descriptors
    /// cannot be read, a pause stands in.
    fn writing(&self) -> bool {
        let Ok(dir) = self.dir.path().canonicalize() else {
            return false;
        };
        match std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) {
            Ok(fds) => fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.starts_with(&dir) && l != dir)
            }),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The part of a sink dump from markgate's Received header on. smtp-sink writes its dumps
/// with LF line ends and its own X- headers and Received line first.
pub fn from_markgate(dump: &[u8]) -> String {
    let text = String::from_utf8_lossy(dump).to_string();
    let starts: Vec<usize> = text.match_indices("Received:").map(|(i, _)| i).collect();
    match starts.get(1) {
        Some(&i) => text[i..].to_string(),
        None => text,
    }
}

/// A child process stopped (by PID) when dropped, so a failing test leaves nothing running.
pub struct Stopped(pub std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `X-Markgate-*` lines (any case) of a sink dump's header block.
pub fn markgate_fields(dump: &str) -> Vec<&str> {
    let headers = dump.split("\n\n").next().unwrap_or_default();
    headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-markgate-"))
        .collect()
}

/// The message after markgate's added headers (Received, X-Markgate-*), LF line ends, with
/// the blank lines smtp-sink appends removed.
pub fn strip_added(dump: &[u8]) -> String {
    let text = from_markgate(dump);
    let mut lines = text.split_inclusive('\n').peekable();
    let mut skipped = 0;
    while let Some(line) = lines.peek() {
        let added = line.starts_with("Received:")
            || line.starts_with("X-Markgate-")
            || line.starts_with('\t')
            || line.starts_with(' ');
        if !added {
            break;
        }
        skipped += line.len();
        lines.next();
    }
    text[skipped..].trim_end_matches('\n').to_string() + "\n"
}

/// Options for a markgate instance.
#[derive(Default, Clone)]
pub struct Opts {
    /// Extra lines under `limits:` (indented two spaces).
    pub limits: Vec<String>,
    /// Extra lines under `upstream:`.
    pub upstream: Vec<String>,
    /// Extra top-level YAML.
    pub top: Vec<String>,
    /// Starts markgate under this umask instead of the test's own.
    pub umask: Option<u32>,
    /// Starts markgate with this many file descriptors at most (`ulimit -n`).
    pub nofile: Option<u32>,
}

/// `markgate serve` as a child process with its own state dir.
pub struct Markgate {
    child: Option<Child>,
    /// The SMTP port (`serve`) or the milter port (`milter`).
    pub port: u16,
    milter: bool,
    umask: Option<u32>,
    nofile: Option<u32>,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Markgate {
    pub fn start(upstream_port: u16) -> Markgate {
        Markgate::with(upstream_port, Opts::default())
    }

    /// `markgate milter` on a free port, with the same config shape.
    pub fn milter(opts: Opts) -> Markgate {
        Markgate::build(free_port(), opts, true)
    }

    pub fn with(upstream_port: u16, opts: Opts) -> Markgate {
        Markgate::build(upstream_port, opts, false)
    }

    fn build(upstream_port: u16, opts: Opts, milter: bool) -> Markgate {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let metrics_port = free_port();
        let mut yaml =
            format!("listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{metrics_port}\nhostname: markgate.test\n");
        if !opts.top.iter().any(|l| l.starts_with("state_dir:")) {
            yaml.push_str(&format!(
                "state_dir: {}\n",
                dir.path().join("state").display()
            ));
        }
        yaml.push_str("limits:\n");
        if !opts.limits.iter().any(|l| l.starts_with("command_timeout")) {
            yaml.push_str("  command_timeout: 30s\n");
        }
        for l in &opts.limits {
            yaml.push_str(&format!("  {l}\n"));
        }
        yaml.push_str(&format!(
            "upstream:\n  address: 127.0.0.1:{upstream_port}\n"
        ));
        if !opts.upstream.iter().any(|l| l.starts_with("timeout:")) {
            yaml.push_str("  timeout: 10s\n");
        }
        if !opts.upstream.iter().any(|l| l.starts_with("tls:")) {
            yaml.push_str("  tls: none\n");
        }
        for l in &opts.upstream {
            yaml.push_str(&format!("  {l}\n"));
        }
        for l in &opts.top {
            yaml.push_str(l);
            yaml.push('\n');
        }
        let config = dir.path().join("markgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.path().join("markgate.log");
        let mut mg = Markgate {
            child: None,
            port,
            milter,
            umask: opts.umask,
            nofile: opts.nofile,
            metrics_port,
            dir,
            config,
            log,
        };
        // A port picked free can be taken by another test before markgate binds it: then
        // markgate says so and exits, and the instance is tried again on new ports.
        for _ in 0..5 {
            if mg.try_spawn() {
                return mg;
            }
            let log = mg.log_text();
            assert!(
                log.contains("cannot listen"),
                "markgate did not start: {log}"
            );
            let (port, metrics_port) = (free_port(), free_port());
            let yaml = std::fs::read_to_string(&mg.config)
                .unwrap()
                .replace(
                    &format!("127.0.0.1:{}\n", mg.port),
                    &format!("127.0.0.1:{port}\n"),
                )
                .replace(
                    &format!("127.0.0.1:{}\n", mg.metrics_port),
                    &format!("127.0.0.1:{metrics_port}\n"),
                );
            std::fs::write(&mg.config, yaml).unwrap();
            mg.port = port;
            mg.metrics_port = metrics_port;
        }
        panic!("markgate never found free ports: {}", mg.log_text());
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "markgate did not start: {}",
            self.log_text()
        );
    }

    /// Starts the process; true once it listens, false if it exited first.
    fn try_spawn(&mut self) -> bool {
        let log = std::fs::File::create(&self.log).unwrap();
        let mut prefix = String::new();
        if let Some(mask) = self.umask {
            prefix.push_str(&format!("umask {mask:03o} && "));
        }
        if let Some(n) = self.nofile {
            prefix.push_str(&format!("ulimit -n {n} && "));
        }
        let mut cmd = if prefix.is_empty() {
            Command::new(bin())
        } else {
            let mut sh = Command::new("sh");
            sh.args(["-c", &format!("{prefix}exec \"$0\" \"$@\""), bin()]);
            sh
        };
        if self.milter {
            cmd.args([
                "milter",
                "--listen",
                &format!("inet:127.0.0.1:{}", self.port),
            ]);
        } else {
            cmd.arg("serve");
        }
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .env("MARKGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("markgate");
        self.child = Some(child);
        // Ready when this process (not another test's) holds both its listeners.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(child) = self.child.as_mut() else {
                return false;
            };
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            let pid = child.id();
            if listens_on(pid, self.port) && listens_on(pid, self.metrics_port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Starts the same instance again (same config, ports and state) after `stop`.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Peak resident memory in kB (VmHWM).
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Waits until no SMTP session is open (the readiness probe's own connection included).
    pub fn wait_idle(&self) {
        eventually(10, "no open sessions", || {
            self.metrics().contains("markgate_smtp_sessions_active 0\n")
        });
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").1
    }

    /// Every tracking record written so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let dir = self.state().join("tracking");
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            paths.sort();
            for p in paths {
                out.extend(whole_lines(&std::fs::read_to_string(&p).unwrap()));
            }
        }
        markgate::tracking::supersede_intents(out)
    }

    /// Every tracking line as written, intent records included.
    pub fn raw_records(&self) -> Vec<serde_json::Value> {
        raw_records_in(&self.state())
    }
}

impl Markgate {
    /// Runs a markgate subcommand against this instance's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        cmd.arg("--config").arg(&self.config);
        cmd.output().unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Markgate {
    fn drop(&mut self) {
        self.stop();
    }
}

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

/// A CA and a server certificate for `localhost`/127.0.0.1, made with openssl.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let st = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "openssl {args:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=markgate test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `upstream:` lines that make markgate require TLS to a next hop this CA signed.
    pub fn upstream_required(&self) -> Vec<String> {
        vec![
            "tls: required".into(),
            format!("ca_file: {}", self.path("ca.pem")),
            "tls_name: localhost".into(),
        ]
    }

    /// The config line that gives markgate this CA's server certificate for STARTTLS.
    pub fn tls_line(&self) -> String {
        format!(
            "tls: {{cert: {}, key: {}}}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }
}

/// Every tracking line under `state`, as written, intent records included.
/// The records of one tracking file; a last line still being appended (no newline yet)
/// is not one.
fn whole_lines(text: &str) -> Vec<serde_json::Value> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn raw_records_in(state: &Path) -> Vec<serde_json::Value> {
    let dir = state.join("tracking");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new());
    paths.retain(|p| p.extension().is_some_and(|x| x == "jsonl"));
    paths.sort();
    paths
        .iter()
        .flat_map(|p| whole_lines(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// The stdout of a command that must have succeeded (else a panic with both streams).
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeded, and everything it printed (stdout, then stderr).
pub fn outcome(out: std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
