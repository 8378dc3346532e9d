//! A throwaway PostgreSQL cluster under a temp dir, started by the test that needs it and
//! stopped (by its postmaster's PID, through `pg_ctl`) when dropped: `initdb` and
//! `pg_ctl` as the `postgres` user, listening on 127.0.0.1 and a private socket dir.

use std::path::PathBuf;
use std::process::Command;

use super::process::{free_port, wait_port};

pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("PostgreSQL's initdb (apt-get install postgresql)")
}

impl Postgres {
    /// A new cluster with an empty `markgate` database.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sock")).unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let bin = pg_bin();
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
        };
        pg.up();
        pg.psql("postgres", "CREATE DATABASE markgate");
        pg
    }

    /// Starts (again) the stopped server on the same port and data.
    pub fn up(&self) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "start", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().join("sock").display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_port(self.port);
    }

    /// Stops the server at once (as a crash or a failover would take it away).
    pub fn down(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/markgate", self.port)
    }

    /// The config lines that point markgate at this database.
    pub fn store_yaml(&self) -> Vec<String> {
        vec![format!(
            "store: {{backend: postgres, url: \"{}\", tls: disable, timeout: 3s, pool_size: 4}}",
            self.url()
        )]
    }

    /// Runs SQL with psql over the private socket; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_command(db, sql).output().unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// psql running `sql` while the test goes on (a session holding a lock); the caller
    /// waits for it.
    pub fn psql_background(&self, db: &str, sql: &str) -> std::process::Child {
        self.psql_command(db, sql).spawn().unwrap()
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut command = Command::new("psql");
        command.arg("-h").arg(self.dir.path().join("sock")).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-Atqc",
            sql,
        ]);
        command
    }

    /// A markgate config in `dir` with this database as its store (and a state dir there).
    pub fn config_in(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let config = dir.join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "state_dir: {}\n{}\n",
                dir.join("state").display(),
                self.store_yaml()[0]
            ),
        )
        .unwrap();
        config
    }

    /// Applies markgate's schema with `markgate store migrate`, as an operator does.
    pub fn migrate(&self) {
        let dir = tempfile::tempdir().unwrap();
        let config = self.config_in(dir.path());
        let out = Command::new(super::process::bin())
            .args(["store", "migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "store migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.down();
    }
}
