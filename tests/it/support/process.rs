//! Generic process and port helpers: free ports, waiting for listeners and conditions,
//! the markgate binary's path, and `Stopped`, a child process killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

/// A child process stopped (by PID) when dropped, so a failing test leaves nothing running.
pub struct Stopped(pub std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
