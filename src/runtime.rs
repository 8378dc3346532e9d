//! Turning a config into a running gateway: loading rules and directory into a snapshot,
//! binding, serving until a signal, and reloading on SIGHUP or when a file changes.
//! A reload that fails validation keeps the running rules and says why (log + metric).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::NextHop;
use crate::directory::Directory;
use crate::frontend::smtp::tls::{self, Acceptor};
use crate::gateway::{Gateway, Snapshot};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::yaml::YamlError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Directory(#[from] YamlError),
}

/// Loads rules and directory named by the config (embedded defaults when absent).
pub fn load_snapshot(config: &Config) -> Result<Snapshot, LoadError> {
    let policy = match &config.rules {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin()?,
    };
    let directory = match &config.directory {
        Some(path) => Directory::load(path)?,
        None => Directory::builtin(),
    };
    Ok(Snapshot::new(config.clone(), policy, directory))
}

/// What start-up reads and checks before anything listens, and `check` reads and checks
/// the same way (so `check` says ok only when `serve` would start): rules, directory, the
/// TLS certificate and key as a pair, the next hop's CA file, and the state dir.
pub struct Preflight {
    pub snapshot: Snapshot,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub next_hop: NextHop,
    pub store: crate::store::Store,
}

/// Reads every file the config names. `create_state` makes a missing state dir (serve);
/// without it (check) a missing state dir only needs a parent to be made in.
pub fn preflight(config: &Config, create_state: bool) -> anyhow::Result<Preflight> {
    crate::tls::install_provider();
    let snapshot = load_snapshot(config)?;
    let acceptor = match &config.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let next_hop = NextHop::new(&config.upstream, &config.hostname)?;
    crate::store::Store::prepare(config, create_state)?;
    // A database that does not answer, or whose schema is not this binary's, stops
    // start-up here (and `check`), rather than failing every message later.
    let store = crate::store::Store::connect(config)?;
    Ok(Preflight {
        snapshot,
        acceptor,
        next_hop,
        store,
    })
}

/// Sets the certificate expiry gauge from the config's certificate (0 without one).
fn note_certificate(metrics: &Metrics, config: &Config) {
    let expiry = config
        .tls
        .as_ref()
        .and_then(|files| tls::certificate_expiry(&files.cert))
        .unwrap_or(0);
    metrics.tls_expiry.set(expiry);
}

/// A built gateway and the STARTTLS acceptor that reloads swap beside it.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub tls: Arc<Acceptor>,
}

/// Builds the gateway; every file is read and checked before anything listens.
pub fn build(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Running> {
    let Preflight {
        snapshot,
        acceptor,
        next_hop,
        store,
    } = preflight(config, true)?;
    note_certificate(&metrics, config);
    let gateway = Gateway::new(snapshot, next_hop, metrics.clone(), store);
    // A read-only state dir would defer every message; say so once, at start-up, the way
    // Postfix refuses a read-only queue. A full one is left to defer per message, since
    // room may come back without a restart.
    if let Err(err) = gateway.store.tracking.preflight() {
        if err.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            anyhow::bail!("{}: {err}", gateway.store.describe());
        }
        tracing::warn!(error = %err, "state dir: every message will be deferred until this clears");
    }
    match gateway.store.quarantine.recover() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            files = n,
            "removed incomplete quarantine files left by a crash"
        ),
        Err(err) => anyhow::bail!("quarantine in {}: {err}", gateway.store.describe()),
    }
    metrics.rules_reloaded(true);
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, bytes) = gateway.store.quarantine.usage();
    metrics.quarantine_messages.set(n);
    metrics.quarantine_bytes.set(bytes);
    Ok(Running {
        gateway: Arc::new(gateway),
        tls: Acceptor::new(acceptor),
    })
}

/// Runs the rule file's own `tests:` against a snapshot: each test's name and, if it
/// failed, why. `Err` when a test's message file cannot be read.
pub fn rule_tests(snapshot: &Snapshot) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let base = snapshot
        .config
        .rules
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut out = Vec::new();
    for test in &snapshot.policy.file.tests {
        let raw = match (&test.message, &test.file) {
            (Some(m), _) => m.clone().into_bytes(),
            (None, Some(f)) => std::fs::read(base.join(f))
                .map_err(|e| anyhow::anyhow!("test `{}`: {}: {e}", test.name, f.display()))?,
            (None, None) => anyhow::bail!("test `{}` has neither message nor file", test.name),
        };
        let eval = crate::cli::evaluate(snapshot, raw, &test.from, &test.to);
        let action = eval.verdict.action;
        let ok = action == test.expect.action
            && (test.expect.rule.is_none() || test.expect.rule == eval.verdict.rule);
        let failure = (!ok).then(|| {
            format!(
                "expected {} {}, got {} {}",
                test.expect.action.name(),
                test.expect.rule.as_deref().unwrap_or("(any rule)"),
                action.name(),
                eval.verdict.rule.as_deref().unwrap_or("(no rule)")
            )
        });
        out.push((test.name.clone(), failure));
    }
    Ok(out)
}

/// Reads the whole configuration again, as the command line first read it (the file and
/// the flags that override it).
pub type ConfigLoader = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// The keys a running process cannot change (its listeners and limiter are built from
/// them, its state lives there): a reload keeps their running values and names them.
fn keep_restart_only(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:expr) => {
            if new.$($field).+ != running.$($field).+ {
                changed.push($name);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(listen, "listen");
    keep!(state_dir, "state_dir");
    keep!(metrics_listen, "metrics_listen");
    keep!(milter_socket_group, "milter_socket_group");
    keep!(limits.max_connections, "limits.max_connections");
    keep!(
        limits.max_connections_per_client,
        "limits.max_connections_per_client"
    );
    keep!(limits.http_max_connections, "limits.http_max_connections");
    keep!(limits.http_idle_timeout, "limits.http_idle_timeout");
    keep!(limits.milter_idle_timeout, "limits.milter_idle_timeout");
    keep!(limits.worker_threads, "limits.worker_threads");
    keep!(store, "store");
    keep!(review.listen, "review.listen");
    // The console's certificate, key and client CA are in its listener; who each
    // certificate subject is (`client_users`) is read per request and reloads.
    let restart_part = |t: &Option<crate::config::ReviewTls>| {
        t.as_ref()
            .map(|t| (t.cert.clone(), t.key.clone(), t.client_ca.clone()))
    };
    if restart_part(&new.review.tls) != restart_part(&running.review.tls) {
        changed.push("review.tls.cert, .key, .client_ca");
        let users = new.review.tls.as_ref().map(|t| t.client_users.clone());
        new.review.tls = running.review.tls.clone();
        if let (Some(tls), Some(users)) = (new.review.tls.as_mut(), users) {
            tls.client_users = users;
        }
    }
    changed
}

/// Reloads everything: the config file (relay networks, hostname, limits, TLS
/// certificates, upstream, classifier settings take effect; keys that need a restart are
/// named in a warning and counted, never silently ignored), the rules and the directory.
/// On any failure the running configuration stays. The new rules must pass their own
/// `tests:` before they are swapped in: a file caught half-written, or an edit that breaks
/// what the file itself promises, keeps the running rules.
pub fn reload(live: &Running, loader: &ConfigLoader) -> Result<(), String> {
    let gateway = &live.gateway;
    let running = gateway.snapshot().config.clone();
    let checked = loader()
        .map_err(|e| format!("{e:#}"))
        .and_then(|mut config| {
            config.validate("reload").map_err(|e| format!("{e:#}"))?;
            let restart = keep_restart_only(&mut config, &running);
            let snapshot = load_snapshot(&config).map_err(|e| e.to_string())?;
            let failed: Vec<String> = rule_tests(&snapshot)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|(name, failure)| failure.map(|f| format!("{name}: {f}")))
                .collect();
            if !failed.is_empty() {
                return Err(format!(
                    "the rule file's own tests fail: {}",
                    failed.join("; ")
                ));
            }
            let acceptor = match &config.tls {
                Some(files) => {
                    Some(tls::acceptor(&files.cert, &files.key).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            let next_hop =
                NextHop::new(&config.upstream, &config.hostname).map_err(|e| e.to_string())?;
            Ok((snapshot, acceptor, next_hop, restart))
        });
    match checked {
        Ok((snapshot, acceptor, next_hop, restart)) => {
            note_certificate(&gateway.metrics, &snapshot.config);
            gateway.swap(snapshot);
            live.tls.swap(acceptor);
            gateway.swap_next_hop(next_hop);
            gateway.metrics.rules_reloaded(true);
            if !restart.is_empty() {
                gateway.metrics.restart_required(restart.len() as u64);
                tracing::warn!(keys = %restart.join(", "), "changed keys need a restart; running with their old values");
            }
            tracing::info!("configuration, rules and directory reloaded");
            Ok(())
        }
        Err(err) => {
            gateway.metrics.rules_reloaded(false);
            tracing::error!(error = %err, "reload failed; keeping the running configuration");
            Err(err)
        }
    }
}

/// Device, inode, size, mtime and content hash of one watched file.
type FileState = (u64, u64, u64, Option<SystemTime>, Vec<u8>);

/// What the watcher compares: for each watched file (symlinks followed), its device, inode,
/// size, modification time and a hash of its content. A symlink swapped to a file with the
/// same mtime changes the inode; an in-place rewrite changes the hash.
fn fingerprint(config: &Config) -> Vec<Option<FileState>> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let files: Vec<&PathBuf> = config.rules.iter().chain(config.directory.iter()).collect();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            let content = std::fs::read(p).ok()?;
            Some((
                meta.dev(),
                meta.ino(),
                meta.len(),
                meta.modified().ok(),
                sha2::Sha256::digest(&content).to_vec(),
            ))
        })
        .collect()
}

/// Reloads off the async workers: compiling a large rule file must not stall sessions.
async fn reload_blocking(running: &Arc<Running>, loader: &ConfigLoader) {
    let (r, l) = (running.clone(), loader.clone());
    let _ = tokio::task::spawn_blocking(move || reload(&r, &l)).await;
}

/// Which front end a process runs.
pub enum FrontEnd {
    /// `serve`: the SMTP smarthost on `config.listen`.
    Smtp,
    /// `milter`: the milter protocol on this address.
    Milter(crate::frontend::milter::Listen),
}

/// A bound front-end listener: bound by the caller (`main`, or a test on `127.0.0.1:0`),
/// so a bad address is an error before anything is spawned.
pub enum Listener {
    Smtp(tokio::net::TcpListener),
    Milter(crate::frontend::milter::Bound),
}

/// Runs `serve` or `milter` until SIGTERM/SIGINT: binds what the config names, then
/// [`serve`].
pub async fn run(config: Config, front_end: FrontEnd, loader: ConfigLoader) -> anyhow::Result<()> {
    let listener = match &front_end {
        FrontEnd::Smtp => Listener::Smtp(
            tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?,
        ),
        FrontEnd::Milter(listen) => Listener::Milter(
            crate::frontend::milter::bind(listen, config.milter_socket_group.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen:?} for the milter: {e}"))?,
        ),
    };
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?,
        ),
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve(listener, metrics_listener, config, loader, shutdown).await
}

/// Serves one front end on a bound listener (and metrics on another, if given) until
/// `shutdown` completes, with reloads (SIGHUP, or a watched file that changed) and hourly
/// housekeeping. Sessions in flight are given ten seconds to finish.
pub async fn serve(
    listener: Listener,
    metrics_listener: Option<tokio::net::TcpListener>,
    config: Config,
    loader: ConfigLoader,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // The running config names what is really bound (with port 0, what the kernel
    // chose), so a reload compares against that.
    let mut config = config;
    if let Listener::Smtp(l) = &listener {
        if let Ok(addr) = l.local_addr() {
            config.listen = addr;
        }
    }
    if let Some(addr) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        config.metrics_listen = Some(addr);
    }
    let metrics = Arc::new(Metrics::new());
    let running = Arc::new(build(&config, metrics.clone())?);
    let gateway = running.gateway.clone();
    tracing::info!(config = %config.source, upstream = %config.upstream.address, rules = %gateway.snapshot().policy.source, "markgate starting");
    let (stop_tx, stop_rx) = watch::channel(false);

    if let Some(addr) = config.review.listen {
        let tls = match &config.review.tls {
            Some(tls) => {
                Some(crate::review::acceptor(tls).map_err(|e| anyhow::anyhow!("review.tls: {e}"))?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the review console: {e}"))?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "review console serving");
        }
        let mut rx = stop_rx.clone();
        let g = gateway.clone();
        let bounds = crate::review::Bounds {
            max_connections: config.limits.http_max_connections,
            idle: config.limits.http_idle_timeout,
        };
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.changed().await;
            };
            if let Err(err) = crate::review::serve(listener, tls, bounds, g, stop).await {
                tracing::error!(error = %err, "review console failed");
            }
        });
    }
    if let Some(listener) = metrics_listener {
        // The address bound, which with port 0 is the one the kernel chose.
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "metrics serving");
        }
        let mut rx = stop_rx.clone();
        let store = gateway.store.clone();
        let m = metrics.clone();
        let bounds = (
            config.limits.http_max_connections,
            config.limits.http_idle_timeout,
        );
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.changed().await;
            };
            if let Err(err) = crate::metrics::serve(listener, bounds, m, store, stop).await {
                tracing::error!(error = %err, "metrics endpoint failed");
            }
        });
    }

    // Next-hop probe for /readyz (smarthost mode; in milter mode the MTA delivers).
    if matches!(listener, Listener::Smtp(_)) {
        let g = gateway.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                if g.next_hop().probe().await.is_ok() {
                    g.metrics.upstream_ok();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    _ = rx.changed() => return,
                }
            }
        });
    }

    // Reload on SIGHUP, or when a watched file has changed and then stayed the same for a
    // whole poll (a file being rewritten in place is not loaded half-written); housekeeping
    // hourly.
    {
        let r = running.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let g = r.gateway.clone();
            let mut loaded = fingerprint(&g.snapshot().config);
            let mut last = loaded.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            // After a stall, never two polls back to back: "unchanged for a whole poll"
            // must mean two seconds, or a file half rewritten could be taken as settled.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_housekeeping = std::time::Instant::now() - Duration::from_secs(3600);
            loop {
                tokio::select! {
                    _ = rx.changed() => return,
                    _ = hup.recv() => {
                        reload_blocking(&r, &loader).await;
                        loaded = fingerprint(&g.snapshot().config);
                        last = loaded.clone();
                    }
                    _ = tick.tick() => {
                        let now = fingerprint(&g.snapshot().config);
                        if now != last {
                            // Changed since the last poll: wait until it holds still.
                            last = now;
                        } else if now != loaded {
                            loaded = now;
                            reload_blocking(&r, &loader).await;
                        }
                    }
                }
                if last_housekeeping.elapsed() >= Duration::from_secs(3600) {
                    last_housekeeping = std::time::Instant::now();
                    housekeeping(&g);
                }
            }
        });
    }

    let server = match listener {
        Listener::Smtp(listener) => {
            let addr = listener.local_addr().map(|a| a.to_string());
            tracing::info!(listen = %addr.unwrap_or_default(), "SMTP front end serving");
            tokio::spawn(crate::frontend::smtp::server::serve(
                listener,
                gateway.clone(),
                running.tls.clone(),
                stop_rx.clone(),
            ))
        }
        Listener::Milter(bound) => {
            match bound.local_addr() {
                Some(addr) => tracing::info!(listen = %addr, "milter front end serving"),
                None => tracing::info!("milter front end serving"),
            }
            // The MTA delivers in milter mode: readiness does not wait on a next hop.
            metrics
                .upstream_ok_at
                .store(i64::MAX / 2, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(crate::frontend::milter::serve(
                bound,
                gateway.clone(),
                stop_rx.clone(),
            ))
        }
    };
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    gateway.complete_records(Duration::from_secs(10)).await;
    Ok(())
}

/// Retention: tracking files past a year, quarantine past its days.
fn housekeeping(g: &Gateway) {
    let now = SystemTime::now();
    if let Err(err) = g.store.tracking.purge_older_than(now) {
        tracing::warn!(error = %err, "tracking retention failed");
    }
    let days = g.snapshot().config.quarantine.retention_days;
    let cutoff = now - Duration::from_secs(days * 86_400);
    // The same operation an operator's `quarantine purge` is: each message claimed (a
    // release in progress wins) and its removal recorded.
    let actor = crate::ops::Actor::new(
        Some("markgate".into()),
        Some(format!("quarantine.retention_days ({days})")),
    );
    match crate::ops::purge(&g.store, cutoff, &actor, false) {
        Ok(ids) if !ids.is_empty() => tracing::info!(count = ids.len(), "quarantine purged"),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "quarantine purge failed"),
    }
    let (n, bytes) = g.store.quarantine.usage();
    g.metrics.quarantine_messages.set(n);
    g.metrics.quarantine_bytes.set(bytes);
}
