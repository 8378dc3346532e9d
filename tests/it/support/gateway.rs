//! `Opts` and `Markgate`: markgate itself (`serve` or `milter`) as a child process with its
//! own config and state dir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::clients::http_get;
use super::dump::{raw_records_in, whole_lines};
use super::process::{bin, eventually, listens_on};

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
        // No next hop in milter mode: the MTA delivers. Port 9 (discard) is never dialled.
        Markgate::build(9, opts, true)
    }

    pub fn with(upstream_port: u16, opts: Opts) -> Markgate {
        Markgate::build(upstream_port, opts, false)
    }

    fn build(upstream_port: u16, opts: Opts, milter: bool) -> Markgate {
        let dir = tempfile::tempdir().expect("tempdir");
        // Port 0: markgate binds what the kernel gives and logs it; the first start reads
        // the ports from its log and writes them into the config, so a restart (and a
        // test that edits the config) uses the same ones.
        let (port, metrics_port) = (0, 0);
        let mut yaml =
            "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nhostname: markgate.test\n"
                .to_string();
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
        mg.spawn();
        mg
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
        // Ready when this process (not another test's) holds both its listeners: on the
        // first start, once it has logged the ports it bound.
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
            if self.port == 0 || self.metrics_port == 0 {
                self.learn_ports();
            }
            if self.port != 0
                && self.metrics_port != 0
                && listens_on(pid, self.port)
                && listens_on(pid, self.metrics_port)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Reads the ports a first start bound (port 0) from its log, and keeps them in the
    /// config for restarts.
    fn learn_ports(&mut self) {
        let log = self.log_text();
        let bound = |what: &str| -> Option<u16> {
            let line = log.lines().find(|l| l.contains(what))?;
            let at = line.find("listen=")? + "listen=".len();
            let addr = line[at..].split_whitespace().next()?;
            addr.rsplit(':').next()?.parse().ok()
        };
        let front = if self.milter {
            "milter front end serving"
        } else {
            "SMTP front end serving"
        };
        let (Some(port), Some(metrics_port)) = (bound(front), bound("metrics serving")) else {
            return;
        };
        self.port = port;
        self.metrics_port = metrics_port;
        let mut yaml = std::fs::read_to_string(&self.config).unwrap();
        if !self.milter {
            // The first line: `listen:` (the milter's address is its --listen flag).
            yaml = yaml.replacen(
                "listen: 127.0.0.1:0\n",
                &format!("listen: 127.0.0.1:{port}\n"),
                1,
            );
        }
        let yaml = yaml.replacen(
            "metrics_listen: 127.0.0.1:0\n",
            &format!("metrics_listen: 127.0.0.1:{metrics_port}\n"),
            1,
        );
        std::fs::write(&self.config, yaml).unwrap();
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
        let config = markgate::config::Config::load(&self.config).unwrap();
        if config.store.backend == markgate::config::StoreBackend::Postgres {
            // Through the store, as search reads them.
            let store = markgate::store::Store::open(&config).unwrap();
            return store
                .tracking
                .records()
                .unwrap()
                .iter()
                .map(|r| serde_json::to_value(r).expect("a record serializes"))
                .collect();
        }
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
        // Read through the typed record, as search reads them: a field the type does not
        // know would be missing here, and the test looking for it fails.
        let typed: Vec<markgate::store::TrackingRecord> = out
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("a tracking record"))
            .collect();
        markgate::store::record::supersede_intents(typed)
            .iter()
            .map(|r| serde_json::to_value(r).expect("a record serializes"))
            .collect()
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
