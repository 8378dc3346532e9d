//! `Sink`: Postfix's smtp-sink as the next hop, stopped by PID when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{eventually, free_port, wait_child_port};

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
