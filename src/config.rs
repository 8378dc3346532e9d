//! The YAML configuration file: typed, with defaults for every key, so that markgate runs
//! with no file at all and a file only names what differs. Unknown keys are errors: a typo
//! in a security gateway's config must never be silently ignored.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::yaml::{self, YamlError};

/// The whole configuration, as read from `--config` and patched by CLI flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the SMTP front end listens on.
    pub listen: SocketAddr,
    /// Name used in the greeting, EHLO reply and Received header.
    pub hostname: String,
    /// Where quarantine, tracking log and index live.
    pub state_dir: PathBuf,
    /// Client networks allowed to relay through markgate (CIDR).
    pub relay_networks: Vec<IpNet>,
    /// Refuse MAIL until the client has done STARTTLS.
    pub require_tls: bool,
    /// Refuse envelope addresses a next hop may route elsewhere than their domain says:
    /// percent hack (`x%y@d`), bang path (`y!x@d`), a quoted `@`, source routes, and any
    /// quoted local part that is not a plain dot-string. On by default. Turning it off
    /// allows those forms (sent on quoted), but never the characters a dequoting next hop
    /// misreads (`\ " ( ) [ ] < > , ; :`), nor controls or 8-bit without SMTPUTF8.
    pub strict_addresses: bool,
    /// Per-recipient verdicts: `by_class` keeps one transaction to one recipient class
    /// (`cjsm`, `trusted`, `external`), answering a recipient of another class `452 4.5.3`
    /// so that the client sends it again in a transaction of its own, judged on its own.
    /// `off`: one verdict for every recipient of a message.
    pub split_recipients: SplitRecipients,
    /// Certificate and key for inbound STARTTLS; STARTTLS is offered only when set.
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    pub upstream: Upstream,
    /// Rule file; the embedded CJSM ruleset when absent.
    pub rules: Option<PathBuf>,
    /// CJSM directory and trusted partners; only the `cjsm.net` suffix rule when absent.
    pub directory: Option<PathBuf>,
    /// Group given the milter's Unix socket (`unix:PATH`), created 0660 whatever the umask,
    /// so that this group (Postfix's, `postfix`) and no one else can connect. None: the
    /// socket keeps markgate's own group.
    pub milter_socket_group: Option<String>,
    /// HTTP listener for /metrics, /healthz, /readyz; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    pub classifier: ClassifierConfig,
    pub tracking: TrackingConfig,
    pub quarantine: QuarantineConfig,
    /// Where held messages and the tracking log live: files under `state_dir` (one
    /// machine), or PostgreSQL shared by several instances.
    pub store: StoreConfig,
    /// The review console for the security team (off unless `review.listen` is set).
    pub review: ReviewConfig,
    /// Notices to the sender of a held message (off unless `notify.from` is set).
    pub notify: NotifyConfig,
    /// Where this config came from (a path, or the embedded defaults): said at start-up.
    #[serde(skip)]
    pub source: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 10025)),
            hostname: default_hostname(),
            state_dir: PathBuf::from("markgate-state"),
            relay_networks: vec![IpNet::loopback_v4(), IpNet::loopback_v6()],
            require_tls: false,
            strict_addresses: true,
            split_recipients: SplitRecipients::ByClass,
            tls: None,
            limits: Limits::default(),
            upstream: Upstream::default(),
            rules: None,
            directory: None,
            milter_socket_group: None,
            metrics_listen: None,
            classifier: ClassifierConfig::default(),
            tracking: TrackingConfig::default(),
            quarantine: QuarantineConfig::default(),
            store: StoreConfig::default(),
            review: ReviewConfig::default(),
            notify: NotifyConfig::default(),
            source: "embedded defaults".to_string(),
        }
    }
}

fn default_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// How recipients of different classes share a transaction (`split_recipients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRecipients {
    /// One class per transaction; the others are asked to come again (452 4.5.3).
    ByClass,
    /// Every recipient in one transaction, one verdict for all.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Protocol limits. Defaults follow RFC 5321 minimums and Postfix's habits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in bytes (advertised as SIZE, enforced while data arrives).
    pub max_message_size: u64,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command line, CRLF included.
    pub max_command_length: usize,
    /// Longest line of message text, CRLF included (RFC 5321: 1000).
    pub max_line_length: usize,
    /// Concurrent connections (SMTP or milter); past it: 421 4.7.0.
    pub max_connections: usize,
    /// Concurrent connections from one client address; past it: 421 4.7.0. Keeps one
    /// client (or a slow-loris from it) from taking every slot.
    pub max_connections_per_client: usize,
    /// The longest one SMTP session may last, however busy; then 421 4.4.2.
    #[serde(deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// A milter connection with no traffic for this long is closed (Postfix opens a new
    /// one); longer than Postfix's `smtpd_timeout`, so a slow client's milter survives.
    #[serde(deserialize_with = "duration")]
    pub milter_idle_timeout: Duration,
    /// An HTTP (metrics, health) connection with no traffic for this long is closed: the
    /// header-read timeout too.
    #[serde(deserialize_with = "duration")]
    pub http_idle_timeout: Duration,
    /// Concurrent HTTP (metrics, health) connections; past it a connection is closed.
    pub http_max_connections: usize,
    /// Slowest acceptable DATA, in bytes per second, after the first `data_timeout`: a
    /// message may take `data_timeout` plus its size at this rate (Postfix's
    /// `smtpd_min_data_rate`). 0 turns it off.
    pub min_data_rate: u64,
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// Messages up to this many bytes stay in memory; larger ones spool to a 0600 temp file.
    pub spool_threshold: usize,
    /// Errors (bad commands) tolerated in one session before it is closed.
    pub max_errors: usize,
    /// Threads that run sessions (classification of large messages has its own). 0: half
    /// the machine's cores, at least one — markgate shares its machine with the MTA in
    /// front of it, and on two cores a second thread only added hand-offs between them
    /// (0.29 against 0.24 CPU s per 1,000 messages, the same rate).
    pub worker_threads: usize,
}

impl Limits {
    /// The session threads to start: `worker_threads`, or half the cores when it is 0.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism()
                .map(|n| (n.get() / 2).max(1))
                .unwrap_or(1),
            n => n,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024 * 1024,
            max_recipients: 1000,
            max_command_length: 2048,
            max_line_length: 1000,
            max_connections: 256,
            max_connections_per_client: 20,
            session_timeout: Duration::from_secs(1800),
            min_data_rate: 500,
            milter_idle_timeout: Duration::from_secs(600),
            http_idle_timeout: Duration::from_secs(10),
            http_max_connections: 32,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            spool_threshold: 1024 * 1024,
            max_errors: 20,
            worker_threads: 0,
        }
    }
}

/// How markgate talks to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Opportunistic,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `host:port` of the next hop.
    pub address: String,
    pub tls: TlsMode,
    /// PEM CA bundle to verify the next hop against instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the next hop's certificate; the host part of `address` by default.
    pub tls_name: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            address: "127.0.0.1:10026".to_string(),
            tls: TlsMode::Opportunistic,
            ca_file: None,
            tls_name: None,
            timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(600),
            max_idle: 16,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What the classifier reads beyond the standard places.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// Headers whose whole value is a marking (EPMS-style `SEC=` values are understood too).
    pub headers: Vec<String>,
    /// Microsoft sensitivity label name or GUID → marking, for labels not named as markings.
    pub msip_labels: HashMap<String, String>,
    /// Phrases that make a closing paragraph a confidentiality statement.
    pub confidentiality_phrases: Vec<String>,
    /// Depth limit for attached messages.
    pub max_depth: usize,
    /// Time one message may take to classify; past it the message is held as
    /// unclassifiable (never passed).
    #[serde(deserialize_with = "duration")]
    pub budget: Duration,
    /// Bytes that reading attached documents (unzipping, inflating PDF streams) may produce
    /// for one message; past it the message is held as unclassifiable (a zip bomb).
    pub max_document_bytes: u64,
    /// Entries an attached archive (a .zip, an Office file) may have; past it the message
    /// is held as unclassifiable.
    pub max_archive_entries: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            headers: vec![
                "X-Classification".into(),
                "X-Security-Classification".into(),
                "X-Titus-Classification".into(),
            ],
            msip_labels: HashMap::new(),
            confidentiality_phrases: vec![
                "intended solely for".into(),
                "confidential".into(),
                "need to know".into(),
            ],
            max_depth: 8,
            budget: Duration::from_secs(5),
            max_document_bytes: 64 * 1024 * 1024,
            max_archive_entries: 2000,
        }
    }
}

/// What the tracking log keeps of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectPolicy {
    Keep,
    Hash,
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    pub subject: SubjectPolicy,
    /// Days a tracking file is kept (CJSM: one year).
    pub retention_days: u64,
    /// Addresses (`user@domain`) or domains (`@domain`) under a legal hold: `track redact`
    /// leaves every record that names one of them as it is.
    pub legal_holds: Vec<String>,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            subject: SubjectPolicy::Keep,
            retention_days: 365,
            legal_holds: Vec::new(),
        }
    }
}

/// The `review:` section: the console served to a trusted reverse proxy (an OIDC proxy
/// such as oauth2-proxy) that authenticates people and says who they are.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// Where the console listens; off when absent.
    pub listen: Option<SocketAddr>,
    /// Only requests from these addresses are served, and only their `X-Forwarded-User`
    /// and `X-Forwarded-Groups` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which groups (from `X-Forwarded-Groups`) hold which role.
    pub roles: ReviewRoles,
    /// The least role that may download a held message's attachments (each download is a
    /// tracking record): held files are the sensitive part, so not every viewer.
    pub download_role: Role,
    /// TLS on the console's own listener, and client certificates as sign-in.
    pub tls: Option<ReviewTls>,
}

/// `review.tls`: the console serves HTTPS itself. With `client_ca`, every connection must
/// present a certificate issued by it, and its subject (RFC 4514, as
/// `openssl x509 -noout -subject -nameopt RFC2253` prints it) names the user through
/// `client_users`; the proxy's headers are then not read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_users: HashMap<String, CertUser>,
}

/// Who a client certificate's subject is, and their groups (mapped by `review.roles`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertUser {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What a console user may do; each role may do all the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the quarantine, the trace and the audit.
    Viewer,
    /// Also releases and deletes.
    Reviewer,
    /// Also forces a release the current rules would refuse.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            listen: None,
            trusted_proxies: vec![IpNet::loopback_v4(), IpNet::loopback_v6()],
            roles: ReviewRoles::default(),
            download_role: Role::Reviewer,
            tls: None,
        }
    }
}

/// The `notify:` section: when a message is held, and when it is released or deleted,
/// markgate tells its sender through the next hop, from a template that never includes the
/// message's content (placeholders: `{id}`, `{time}`, `{recipients}`, `{rule}`,
/// `{description}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The notices' `From:`; notices are off when absent.
    pub from: Option<String>,
    /// The domains whose senders are told (the organisation's own): a client may name any
    /// envelope sender, and a notice must not become a way to mail someone else.
    pub domains: Vec<String>,
    pub held: NoticeTemplate,
    pub released: NoticeTemplate,
    pub deleted: NoticeTemplate,
}

/// One notice's subject and text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeTemplate {
    pub subject: String,
    pub body: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        let template = |subject: &str, body: &str| NoticeTemplate {
            subject: subject.into(),
            body: body.into(),
        };
        NotifyConfig {
            from: None,
            domains: Vec::new(),
            held: template(
                "Your message was held for review",
                "Your message to {recipients} was held for review by the security team because: \
                 {description}\n\nIt has not been delivered. Reference: {id} (sent {time}).\n",
            ),
            released: template(
                "Your held message was released",
                "Your message to {recipients} held for review (reference {id}, sent {time}) was \
                 released by the security team and has been delivered.\n",
            ),
            deleted: template(
                "Your held message was not delivered",
                "Your message to {recipients} held for review (reference {id}, sent {time}) was \
                 deleted by the security team and will not be delivered.\n",
            ),
        }
    }
}

/// Roles by group: `viewer` sees the quarantine and the trace, `reviewer` also releases
/// and deletes, `admin` also force-releases.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewRoles {
    pub viewer: Vec<String>,
    pub reviewer: Vec<String>,
    pub admin: Vec<String>,
}

impl Default for ReviewRoles {
    fn default() -> Self {
        ReviewRoles {
            viewer: vec!["markgate-viewers".into()],
            reviewer: vec!["markgate-reviewers".into()],
            admin: vec!["markgate-admins".into()],
        }
    }
}

/// The `store:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `postgres://user@host:port/db` (libpq's URL or `key=value` form); the password,
    /// if any, is better given by `PGPASSWORD` or a `.pgpass` file than written here.
    pub url: Option<String>,
    /// Connections each instance keeps at most.
    pub pool_size: usize,
    pub tls: PgTls,
    /// CA certificates (PEM) the database's certificate is checked against; the system's
    /// roots without it.
    pub ca_file: Option<PathBuf>,
    /// The longest one store operation may take; past it the message is answered 451
    /// 4.3.0 (never a pass without its record, never a hold that was not stored).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// How long a release's claim on a held message lasts: an instance that crashed
    /// mid-release leaves a claim another may take once it has expired.
    #[serde(deserialize_with = "duration")]
    pub claim_lease: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Files,
            url: None,
            pool_size: 16,
            tls: PgTls::Prefer,
            ca_file: None,
            timeout: Duration::from_secs(5),
            claim_lease: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// Files, JSONL and a SQLite index under `state_dir`.
    Files,
    /// PostgreSQL at `store.url`.
    Postgres,
}

/// TLS to PostgreSQL, as libpq's `sslmode` names it (`prefer` tries TLS, then plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgTls {
    Required,
    Prefer,
    Disable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Days a quarantined message is kept before automatic purge.
    pub retention_days: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig { retention_days: 30 }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn loopback_v4() -> IpNet {
        IpNet {
            addr: IpAddr::from([127, 0, 0, 0]),
            prefix: 8,
        }
    }
    fn loopback_v6() -> IpNet {
        IpNet {
            addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        }
    }

    /// True when `ip` lies in this network; IPv4-mapped IPv6 clients match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Durations are written as humans write them: `30s`, `5m`, `1h 30m`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = yaml::from_file(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Checks what the types cannot: values that parse but make no sense together.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        if self.limits.max_line_length < 80 {
            return Err(invalid("limits.max_line_length must be at least 80".into()));
        }
        if self.limits.max_command_length < 512 {
            return Err(invalid(
                "limits.max_command_length must be at least 512 (RFC 5321)".into(),
            ));
        }
        if self.limits.max_recipients == 0 || self.limits.max_connections == 0 {
            return Err(invalid(
                "limits.max_recipients and limits.max_connections must be positive".into(),
            ));
        }
        if self.limits.worker_threads > 256 {
            return Err(invalid(
                "limits.worker_threads must be at most 256 (0: half the cores)".into(),
            ));
        }
        if self.upstream.address.rsplit_once(':').is_none() {
            return Err(invalid(format!(
                "upstream.address `{}` must be host:port",
                self.upstream.address
            )));
        }
        if self.hostname.is_empty() || !self.hostname.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("hostname must be a plain host name".into()));
        }
        if self.store.backend == StoreBackend::Postgres && self.store.url.is_none() {
            return Err(invalid(
                "store.backend is postgres but store.url is not set".into(),
            ));
        }
        if self.store.pool_size == 0 || self.store.timeout.is_zero() {
            return Err(invalid(
                "store.pool_size and store.timeout must be positive".into(),
            ));
        }
        if let Some(from) = &self.notify.from {
            if self.notify.domains.is_empty() {
                return Err(invalid(
                    "notify.from needs notify.domains: the domains whose senders are told".into(),
                ));
            }
            if crate::mailbox::Mailbox::lenient(from).is_none() {
                return Err(invalid(format!(
                    "notify.from {from:?} is not a plain address (user@domain)"
                )));
            }
        }
        for (name, t) in [
            ("held", &self.notify.held),
            ("released", &self.notify.released),
            ("deleted", &self.notify.deleted),
        ] {
            if t.subject.contains(['\r', '\n']) {
                return Err(invalid(format!("notify.{name}.subject must be one line")));
            }
        }
        if let Some(tls) = &self.review.tls {
            if tls.client_ca.is_none() && !tls.client_users.is_empty() {
                return Err(invalid(
                    "review.tls.client_users needs review.tls.client_ca (the CA that issues them)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matches_inside_and_not_outside() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let lo: IpNet = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        let odd: IpNet = "192.168.0.128/25".parse().unwrap();
        assert!(odd.contains("192.168.0.200".parse().unwrap()));
        assert!(!odd.contains("192.168.0.100".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = yaml::from_str::<Config>("listen: 127.0.0.1:25\nlisten_typo: 1\n", "c.yaml")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("c.yaml:2:"), "{text}");
    }

    #[test]
    fn durations_read_as_humans_write_them() {
        let c: Config = yaml::from_str("limits:\n  command_timeout: 2m\n", "c.yaml").unwrap();
        assert_eq!(c.limits.command_timeout, Duration::from_secs(120));
    }
}
