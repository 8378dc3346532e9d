//! Prometheus metrics and the HTTP endpoint that serves them with `/healthz` and `/readyz`.
//! Label values are bounded: actions, rule ids and levels come from the loaded rules and the
//! marking model, never from message content.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How logs, metrics and the CLI name "no rule decided" (the default action).
pub const NO_RULE: &str = "none";

/// One enforced decision (`markgate_messages_total`), or one audit rule that matched
/// (`markgate_audit_hits_total`: it decided nothing, so it is not a message).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub rule: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeClassLabel {
    code_class: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabel {
    fault: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

pub struct Metrics {
    registry: Registry,
    messages: Family<DecisionLabels, Counter>,
    audit_hits: Family<DecisionLabels, Counter>,
    recipients: Family<ClassLabel, Counter>,
    sessions_active: Gauge,
    sessions: Family<OutcomeLabel, Counter>,
    replies: Family<CodeClassLabel, Counter>,
    /// Each class's counter of `replies` once it has counted one: a session gives seven
    /// replies a message, and the family's lookup costs an allocation, a hash and a lock.
    reply_classes: [std::sync::OnceLock<Counter>; 6],
    pub decision_seconds: Histogram,
    pub transaction_seconds: Histogram,
    pub upstream_seconds: Histogram,
    message_size: Histogram,
    upstream_errors: Family<KindLabel, Counter>,
    deferred: Family<FaultLabel, Counter>,
    pub quarantine_messages: Gauge,
    pub quarantine_bytes: Gauge,
    rules_reload: Family<ResultLabel, Counter>,
    rules_loaded: Gauge<i64, AtomicI64>,
    /// When the inbound STARTTLS certificate expires (0: no certificate configured).
    pub tls_expiry: Gauge<i64, AtomicI64>,
    tracking_write_errors: Counter,
    tracking_incomplete: Counter,
    recipients_split: Counter,
    /// Store operations that failed (the PostgreSQL store counts them itself).
    pub store_errors: Counter,
    store_pool: Family<StateLabel, Gauge>,
    restart_required: Counter,
    /// Set when the next hop last answered; read by `/readyz`.
    pub upstream_ok_at: AtomicI64,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Bucket bounds people read on a dashboard (1 ms, 2.5 ms, 5 ms …), not powers of 2.5
/// printed to 17 digits.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// 1 KiB to 64 MiB, by fours.
const SIZE_BUCKETS: [f64; 9] = [
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("markgate");
        let m = Metrics {
            messages: Family::default(),
            audit_hits: Family::default(),
            recipients: Family::default(),
            sessions_active: Gauge::default(),
            sessions: Family::default(),
            replies: Family::default(),
            reply_classes: Default::default(),
            decision_seconds: seconds_histogram(),
            transaction_seconds: seconds_histogram(),
            upstream_seconds: seconds_histogram(),
            message_size: Histogram::new(SIZE_BUCKETS),
            upstream_errors: Family::default(),
            deferred: Family::default(),
            quarantine_messages: Gauge::default(),
            quarantine_bytes: Gauge::default(),
            rules_reload: Family::default(),
            rules_loaded: Gauge::default(),
            tls_expiry: Gauge::default(),
            tracking_write_errors: Counter::default(),
            tracking_incomplete: Counter::default(),
            recipients_split: Counter::default(),
            store_errors: Counter::default(),
            store_pool: Family::default(),
            restart_required: Counter::default(),
            upstream_ok_at: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "messages",
            "Messages by the action taken, the rule that decided (none: the default) and level",
            m.messages.clone(),
        );
        registry.register(
            "audit_hits",
            "Audit-mode rules that matched (what they would have done); not messages",
            m.audit_hits.clone(),
        );
        registry.register(
            "recipients",
            "Recipients by directory class",
            m.recipients.clone(),
        );
        registry.register(
            "smtp_sessions_active",
            "Open SMTP sessions",
            m.sessions_active.clone(),
        );
        registry.register(
            "smtp_sessions",
            "SMTP sessions by outcome",
            m.sessions.clone(),
        );
        registry.register(
            "smtp_replies",
            "SMTP replies by code class",
            m.replies.clone(),
        );
        registry.register(
            "decision_seconds",
            "Time to classify and decide",
            m.decision_seconds.clone(),
        );
        registry.register(
            "transaction_seconds",
            "End of data to final reply",
            m.transaction_seconds.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Time the next hop took",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "message_size_bytes",
            "Message sizes",
            m.message_size.clone(),
        );
        registry.register(
            "upstream_errors",
            "Next-hop failures by kind",
            m.upstream_errors.clone(),
        );
        registry.register(
            "quarantine_messages",
            "Messages in quarantine",
            m.quarantine_messages.clone(),
        );
        registry.register(
            "quarantine_bytes",
            "Bytes in quarantine",
            m.quarantine_bytes.clone(),
        );
        registry.register(
            "rules_reload",
            "Rule reloads by result",
            m.rules_reload.clone(),
        );
        registry.register(
            "rules_loaded_timestamp_seconds",
            "When the running rules were loaded",
            m.rules_loaded.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the STARTTLS certificate in use expires (0 when none is configured)",
            m.tls_expiry.clone(),
        );
        registry.register(
            "deferred",
            "Messages the rules would pass or hold that were answered 4xx instead, by whose \
             fault: upstream (the next hop) or internal (tracking, quarantine)",
            m.deferred.clone(),
        );
        registry.register(
            "tracking_write_errors",
            "Tracking records that could not be written",
            m.tracking_write_errors.clone(),
        );
        registry.register(
            "config_restart_required",
            "Changed config keys a reload could not apply (they need a restart)",
            m.restart_required.clone(),
        );
        registry.register(
            "tracking_incomplete",
            "Delivered messages whose record could not be completed (their intent record stands)",
            m.tracking_incomplete.clone(),
        );
        registry.register(
            "store_errors",
            "Operations on the shared (PostgreSQL) store that failed or timed out",
            m.store_errors.clone(),
        );
        registry.register(
            "store_pool_connections",
            "The shared store's connection pool: open, idle, and callers waiting for one",
            m.store_pool.clone(),
        );
        registry.register(
            "recipients_split",
            "Recipients answered 452 4.5.3 to come again in a transaction of their own class \
             (split_recipients: by_class)",
            m.recipients_split.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "markgate version", build);
        // Series that alerts rate() over exist from the start, at zero.
        for kind in ["refused_4xx", "refused_5xx", "unavailable"] {
            let _ = m.upstream_errors.get_or_create(&KindLabel {
                kind: kind.to_string(),
            });
        }
        for result in ["success", "failure"] {
            let _ = m.rules_reload.get_or_create(&ResultLabel {
                result: result.to_string(),
            });
        }
        Metrics { registry, ..m }
    }

    pub fn reply(&self, code: u16) {
        let class = usize::from(code / 100);
        let counter = || {
            self.replies
                .get_or_create(&CodeClassLabel {
                    code_class: format!("{class}xx"),
                })
                .clone()
        };
        // A code outside SMTP's classes is counted, not cached.
        match self.reply_classes.get(class) {
            Some(cached) => cached.get_or_init(counter).inc(),
            None => counter().inc(),
        };
    }

    pub fn decision(&self, labels: DecisionLabels) {
        self.messages.get_or_create(&labels).inc();
    }

    pub fn audit_hit(&self, labels: DecisionLabels) {
        self.audit_hits.get_or_create(&labels).inc();
    }

    pub fn recipient(&self, class: &str) {
        self.recipients
            .get_or_create(&ClassLabel {
                class: class.to_string(),
            })
            .inc();
    }

    pub fn message_size(&self, bytes: u64) {
        self.message_size.observe(bytes as f64);
    }

    pub fn session_started(&self) {
        self.sessions_active.inc();
    }

    pub fn session_ended(&self, outcome: &str) {
        self.sessions_active.dec();
        self.sessions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn session_refused(&self) {
        self.sessions
            .get_or_create(&OutcomeLabel {
                outcome: "refused".to_string(),
            })
            .inc();
    }

    /// A deferral, labelled by whose fault it was.
    pub fn deferred(&self, fault: &str) {
        self.deferred
            .get_or_create(&FaultLabel {
                fault: fault.to_string(),
            })
            .inc();
    }

    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn upstream_ok(&self) {
        self.upstream_ok_at.store(unix_now(), Ordering::Relaxed);
    }

    pub fn rules_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.rules_reload
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        if ok {
            self.rules_loaded.set(unix_now());
        }
    }

    pub fn tracking_write_error(&self) {
        self.tracking_write_errors.inc();
    }

    pub fn restart_required(&self, keys: u64) {
        self.restart_required.inc_by(keys);
    }

    /// The shared store's pool, as read at scrape time.
    pub fn store_pool(&self, open: usize, idle: usize, waiting: usize) {
        for (state, n) in [("open", open), ("idle", idle), ("waiting", waiting)] {
            self.store_pool
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(n as i64);
        }
    }

    pub fn recipient_split(&self) {
        self.recipients_split.inc();
    }

    pub fn tracking_incomplete(&self) {
        self.tracking_incomplete.inc();
    }

    /// The Prometheus text exposition (format 0.0.4), which every Prometheus and `promtool
    /// check metrics` read. prometheus-client writes OpenMetrics, where a counter's HELP and
    /// TYPE name drop the `_total` its samples carry; 0.0.4 wants the sample name.
    pub fn render(&self) -> String {
        let mut open = String::new();
        if encode(&mut open, &self.registry).is_err() {
            return String::new();
        }
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
            match meta {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    if counters.contains(name) {
                        out.push_str(&format!("{prefix}{name}_total {tail}"));
                    } else {
                        out.push_str(line);
                    }
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out.push_str(&crate::process_stats::render());
        out
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The metrics port is usually open to a monitoring network: its connections are bounded in
/// number and closed when idle (which is the header-read timeout too), so clients that
/// connect and stop cannot use up the descriptors the mail listeners share.
struct BoundedListener {
    listener: tokio::net::TcpListener,
    slots: Arc<crate::limiter::Limiter>,
    idle: std::time::Duration,
    backoff: crate::idle::Backoff,
}

impl axum::serve::Listener for BoundedListener {
    type Io = crate::idle::Idle<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    self.backoff.succeeded();
                    // Past the bound the connection is closed at once.
                    if let Ok(slot) = self.slots.acquire(addr.ip()) {
                        return (crate::idle::Idle::new(stream, self.idle, Some(slot)), addr);
                    }
                }
                Err(err) => self.backoff.failed("metrics", &err).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves; at most
/// `max_connections` at once, each closed after `idle` without traffic.
pub async fn serve(
    listener: tokio::net::TcpListener,
    (max_connections, idle): (usize, std::time::Duration),
    metrics: Arc<Metrics>,
    store: crate::store::Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let m = metrics.clone();
    let r = metrics.clone();
    let q_store = store.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                let store = q_store.clone();
                async move {
                    // Releases and deletes happen in other processes (the CLI): the
                    // quarantine gauges are read at scrape time, so they follow every change.
                    let usage = tokio::task::spawn_blocking(move || {
                        (store.quarantine.usage(), store.pool_status())
                    })
                    .await;
                    if let Ok(((n, bytes), pool)) = usage {
                        m.quarantine_messages.set(n);
                        m.quarantine_bytes.set(bytes);
                        if let Some((open, idle, waiting)) = pool {
                            m.store_pool(open, idle, waiting);
                        }
                    }
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = r.clone();
                let store = store.clone();
                async move {
                    let mut problems = Vec::new();
                    if !r.ready.load(Ordering::Relaxed) {
                        problems.push("rules not loaded");
                    }
                    // What the gateway checks before each hand-off: a state dir it would
                    // defer every message on is not ready.
                    let ready = tokio::task::spawn_blocking(move || store.ready()).await;
                    if !ready.unwrap_or(false) {
                        problems.push(
                            "state dir not writable or below its free-space floor, or the store's database not answering",
                        );
                    }
                    if unix_now() - r.upstream_ok_at.load(Ordering::Relaxed) > 60 {
                        problems.push("next hop not reached in the last minute");
                    }
                    if problems.is_empty() {
                        (StatusCode::OK, "ready\n".to_string())
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; ") + "\n")
                    }
                }
            }),
        );
    let listener = BoundedListener {
        listener,
        slots: crate::limiter::Limiter::new(max_connections, max_connections),
        idle,
        backoff: crate::idle::Backoff::default(),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn replies_are_counted_by_class_through_the_cache() {
        let m = Metrics::new();
        for code in [250, 250, 354, 550, 221, 451, 250] {
            m.reply(code);
        }
        // Outside the classes SMTP has: counted, not cached.
        m.reply(999);
        let text = m.render();
        for (class, n) in [("2xx", 4), ("3xx", 1), ("4xx", 1), ("5xx", 1), ("9xx", 1)] {
            let line = format!("code_class=\"{class}\"}} {n}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(!text.contains("code_class=\"1xx\""), "{text}");
    }
}
