//! The command line: `serve`, `check`, `classify`, `quarantine …`, `track …`. Each command
//! parses flags, loads what it needs and reports errors with context for the user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::gateway::Snapshot;
use crate::message::Spool;
use crate::policy::Action;
use crate::quarantine::Quarantine;
use crate::transaction::{ClientInfo, Envelope, Recipient, Transaction};

#[derive(Parser, Debug)]
#[command(
    name = "markgate",
    version,
    about = "Outbound mail gateway for CJSM protective markings"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command shares for finding its configuration.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// YAML config file; embedded defaults when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rule file (overrides `rules:`).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// CJSM directory file (overrides `directory:`).
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// State directory (overrides `state_dir:`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(r) = &self.rules {
            config.rules = Some(r.clone());
        }
        if let Some(d) = &self.directory {
            config.directory = Some(d.clone());
        }
        if let Some(s) = &self.state_dir {
            config.state_dir = s.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the SMTP gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on for SMTP.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Next hop, host:port.
        #[arg(long)]
        upstream: Option<String>,
        /// Address for /metrics, /healthz, /readyz.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run the policy as a milter inside Postfix's smtpd.
    Milter {
        #[command(flatten)]
        config: ConfigArgs,
        /// inet:ADDR:PORT or unix:PATH.
        #[arg(long, default_value = "inet:127.0.0.1:10027")]
        listen: crate::milter::Listen,
        /// Address for /metrics, /healthz, /readyz.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Validate config, rules and directory; print file:line:column for each error.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Also run the `tests:` in the rule file.
        #[arg(long)]
        run_tests: bool,
    },
    /// Classify one message and show the decision, sending nothing.
    Classify {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
        /// Envelope sender; "" is the null sender.
        #[arg(long, default_value = "sender@example.cjsm.net")]
        from: String,
        /// Envelope recipients; To/Cc/Bcc of the message when none.
        #[arg(long)]
        to: Vec<String>,
        message: PathBuf,
    },
    /// Print the JSON Schema of the rule or directory file (for editors).
    Schema {
        #[arg(value_enum)]
        which: crate::policy::SchemaKind,
    },
    /// Review held messages.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Search the message-tracking log.
    Track {
        #[command(subcommand)]
        command: TrackCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
        /// Only messages held at or after this time (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        sender: Option<String>,
        #[arg(long)]
        recipient: Option<String>,
    },
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
        /// Print the stored message itself.
        #[arg(long)]
        raw: bool,
        id: String,
    },
    /// Send a held message on to the next hop with its original envelope.
    Release {
        #[command(flatten)]
        config: ConfigArgs,
        /// Skip re-evaluation against the current rules.
        #[arg(long)]
        force: bool,
        /// Who released it (recorded); $USER by default.
        #[arg(long)]
        by: Option<String>,
        id: String,
    },
    Delete {
        #[command(flatten)]
        config: ConfigArgs,
        id: String,
    },
    Purge {
        #[command(flatten)]
        config: ConfigArgs,
        /// e.g. 30d, 12h.
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrackCommand {
    /// Find tracking records (from the index).
    Search(Box<SearchArgs>),
    /// Rebuild the search index from the tracking files.
    Reindex {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    message_id: Option<String>,
    #[arg(long)]
    sender: Option<String>,
    #[arg(long)]
    recipient: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    rule: Option<String>,
    #[arg(long)]
    level: Option<String>,
    /// From this time on (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Before this time.
    #[arg(long)]
    until: Option<String>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            metrics_listen,
        } => {
            let mut config = config.load()?;
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(u) = upstream {
                config.upstream.address = u;
            }
            if metrics_listen.is_some() {
                config.metrics_listen = metrics_listen;
            }
            config.validate("command line")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(8 * 1024 * 1024)
                .build()
                .context("starting the runtime")?;
            rt.block_on(crate::runtime::run(config, crate::runtime::FrontEnd::Smtp))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Milter {
            config,
            listen,
            metrics_listen,
        } => {
            let mut config = config.load()?;
            if metrics_listen.is_some() {
                config.metrics_listen = metrics_listen;
            }
            config.validate("command line")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(8 * 1024 * 1024)
                .build()
                .context("starting the runtime")?;
            rt.block_on(crate::runtime::run(
                config,
                crate::runtime::FrontEnd::Milter(listen),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, run_tests } => check(&config, run_tests),
        Command::Classify {
            config,
            json,
            from,
            to,
            message,
        } => classify(&config.load()?, json, &from, &to, &message),
        Command::Schema { which } => {
            print!("{}", crate::policy::json_schema(which));
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { command } => quarantine(command),
        Command::Track { command } => track(command),
    }
}

fn check(args: &ConfigArgs, run_tests: bool) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let snapshot = match crate::runtime::load_snapshot(&config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "ok: {} rules from {}",
        snapshot.policy.rule_ids().count(),
        snapshot.policy.source
    );
    if !run_tests {
        return Ok(ExitCode::SUCCESS);
    }
    let base = config
        .rules
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut failed = 0;
    let tests = snapshot.policy.file.tests.clone();
    for test in &tests {
        let raw = match (&test.message, &test.file) {
            (Some(m), _) => m.clone().into_bytes(),
            (None, Some(f)) => std::fs::read(base.join(f))
                .with_context(|| format!("test `{}`: {}", test.name, f.display()))?,
            (None, None) => anyhow::bail!("test `{}` has neither message nor file", test.name),
        };
        let eval = evaluate(&snapshot, raw, &test.from, &test.to);
        let action = eval.verdict.action.name();
        let ok = action == test.expect.action
            && (test.expect.rule.is_none() || test.expect.rule == eval.verdict.rule);
        if ok {
            println!("pass: {}", test.name);
        } else {
            failed += 1;
            println!(
                "FAIL: {}: expected {} {}, got {} {}",
                test.name,
                test.expect.action,
                test.expect.rule.as_deref().unwrap_or("(any rule)"),
                action,
                eval.verdict.rule.as_deref().unwrap_or("(no rule)")
            );
        }
    }
    println!("{} passed, {} failed", tests.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs a message through the same evaluate step `serve` uses.
fn evaluate(
    snapshot: &Snapshot,
    raw: Vec<u8>,
    from: &str,
    to: &[String],
) -> crate::gateway::Evaluation {
    let mut recipients: Vec<Recipient> = to.iter().map(|a| Recipient::plain(a)).collect();
    if recipients.is_empty() {
        if let Ok(c) = snapshot.classifier.classify(&raw) {
            recipients = c
                .header_recipients
                .iter()
                .map(|a| Recipient::plain(a))
                .collect();
        }
    }
    let txn = Transaction {
        id: crate::transaction::new_queue_id(),
        received: std::time::SystemTime::now(),
        client: ClientInfo {
            addr: "127.0.0.1".into(),
            helo: "classify".into(),
        },
        tls: None,
        envelope: Envelope {
            sender: from.to_string(),
            params: Default::default(),
            recipients,
        },
        message: std::sync::Arc::new(Spool::from_bytes(raw)),
        front_end: "classify",
        mta_queue_id: None,
    };
    snapshot.evaluate(&txn)
}

fn classify(
    config: &Config,
    as_json: bool,
    from: &str,
    to: &[String],
    path: &Path,
) -> anyhow::Result<ExitCode> {
    let snapshot = crate::runtime::load_snapshot(config)?;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let eval = evaluate(&snapshot, raw, from, to);
    let v = &eval.verdict;
    let reply = match v.action {
        Action::Reject => v.reply.as_ref().map(|r| r.to_string()),
        Action::Quarantine => Some("250 2.0.0 Ok: held for review".to_string()),
        Action::Pass => Some("250 2.0.0 Ok: forwarded to next hop".to_string()),
    };
    let m = &eval.classification.marking;
    if as_json {
        let out = json!({
            "marking": m.to_json(),
            "signature": eval.classification.signature,
            "confidentiality_statement": eval.classification.confidentiality_statement,
            "recipients": eval.recipients.iter().map(|(a, c)| json!({"address": a, "class": c.name()})).collect::<Vec<_>>(),
            "attachments": eval.classification.attachments,
            "matched": v.matched,
            "decision": {"action": v.action.name(), "rule": v.rule, "reply": reply},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "marking:     {} (rank {})",
        m.level_name(),
        m.rank()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none: must be protected".into())
    );
    if !m.descriptors.is_empty() {
        println!(
            "descriptors: {}",
            m.descriptors.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !m.caveats.is_empty() {
        println!(
            "caveats:     {}",
            m.caveats.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for e in &m.evidence {
        println!("  found {:<20} in {:<28} {:?}", e.level, e.source, e.text);
    }
    if m.evidence.is_empty() {
        println!("  no marking found anywhere (UNMARKED)");
    }
    println!(
        "signature:   {}",
        if eval.classification.signature {
            "present"
        } else {
            "absent"
        }
    );
    println!(
        "statement:   {}",
        if eval.classification.confidentiality_statement {
            "present"
        } else {
            "absent"
        }
    );
    for (a, c) in &eval.recipients {
        println!("recipient:   {a} ({})", c.name());
    }
    for hit in &v.matched {
        println!(
            "matched:     {} ({}, would {})",
            hit.id, hit.mode, hit.action
        );
    }
    println!(
        "decision:    {} by {} -> {}",
        v.action.name(),
        v.rule.as_deref().unwrap_or("default"),
        reply.unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn quarantine(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuarantineCommand::List {
            config,
            json,
            since,
            rule,
            sender,
            recipient,
        } => {
            let config = config.load()?;
            let q = Quarantine::new(&config.state_dir);
            let since = since
                .map(|s| {
                    crate::timefmt::parse(&s)
                        .map(crate::timefmt::rfc3339)
                        .context("--since: use YYYY-MM-DD or RFC 3339")
                })
                .transpose()?;
            let list: Vec<_> = q
                .list()?
                .into_iter()
                .filter(|m| since.as_ref().is_none_or(|s| m.time >= *s))
                .filter(|m| rule.as_ref().is_none_or(|r| m.rule.as_ref() == Some(r)))
                .filter(|m| {
                    sender
                        .as_ref()
                        .is_none_or(|s| m.sender.eq_ignore_ascii_case(s))
                })
                .filter(|m| {
                    recipient
                        .as_ref()
                        .is_none_or(|r| m.recipients.iter().any(|x| x.eq_ignore_ascii_case(r)))
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in &list {
                    println!(
                        "{}  {}  {:<24} {:<20} {} -> {}",
                        m.id,
                        m.time,
                        m.rule.as_deref().unwrap_or("-"),
                        m.level,
                        m.sender,
                        m.recipients.join(", ")
                    );
                }
                println!("{} held", list.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Show {
            config,
            json,
            raw,
            id,
        } => {
            let config = config.load()?;
            let q = Quarantine::new(&config.state_dir);
            let meta = q
                .get(&id)
                .with_context(|| format!("no quarantined message {id}"))?;
            let bytes = std::fs::read(q.message_path(&id)?)?;
            if raw {
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
                return Ok(ExitCode::SUCCESS);
            }
            let end = bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 2)
                .unwrap_or(bytes.len());
            let headers = String::from_utf8_lossy(&bytes[..end]).to_string();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"meta": meta, "headers": headers}))?
                );
            } else {
                println!("{}", serde_json::to_string_pretty(&meta)?);
                println!("\n{headers}");
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Release {
            config,
            force,
            by,
            id,
        } => {
            let config = config.load()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(release(&config, &id, force, by))
        }
        QuarantineCommand::Delete { config, id } => {
            let config = config.load()?;
            Quarantine::new(&config.state_dir)
                .delete(&id)
                .with_context(|| format!("deleting {id}"))?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Purge { config, older_than } => {
            let config = config.load()?;
            let age = humantime::parse_duration(&older_than).context("--older-than: e.g. 30d")?;
            let cutoff = std::time::SystemTime::now() - age;
            let gone = Quarantine::new(&config.state_dir).purge(cutoff)?;
            println!("purged {}", gone.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn release(
    config: &Config,
    id: &str,
    force: bool,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    crate::smtp::tls::install_provider();
    let q = Quarantine::new(&config.state_dir);
    let mut meta = q
        .get(id)
        .with_context(|| format!("no quarantined message {id}"))?;
    let raw = std::fs::read(q.message_path(id)?)?;
    let snapshot = crate::runtime::load_snapshot(config)?;
    let to: Vec<String> = meta.recipients.clone();
    if !force {
        let eval = evaluate(&snapshot, raw.clone(), &meta.sender, &to);
        // The rule that held it does not count against its own release.
        if eval.verdict.action == Action::Reject {
            eprintln!(
                "refused: the current rules reject this message ({}: {}); use --force to override",
                eval.verdict.rule.as_deref().unwrap_or("-"),
                eval.verdict
                    .reply
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    let next_hop = crate::smtp::next_hop::NextHop::new(&config.upstream, &config.hostname)?;
    let envelope = Envelope {
        sender: meta.sender.clone(),
        params: Default::default(),
        recipients: to.iter().map(|a| Recipient::plain(a)).collect(),
    };
    let who = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let now = std::time::SystemTime::now();
    let header = format!(
        "X-Markgate-Released: by {} at {} (held as {id})\r\n",
        who.chars()
            .filter(|c| c.is_ascii_graphic())
            .collect::<String>(),
        crate::timefmt::rfc5322(now)
    );
    match next_hop
        .send(&envelope, header.as_bytes(), &Spool::from_bytes(raw))
        .await
    {
        Ok(delivered) => {
            meta.released = Some(
                json!({"by": who, "time": crate::timefmt::rfc3339(now), "reply": delivered.reply}),
            );
            let record = json!({
                "time": crate::timefmt::rfc3339(now),
                "queue_id": id,
                "action": "pass",
                "rule": null,
                "released_by": who,
                "sender": meta.sender,
                "recipients": meta.recipients.iter().map(|a| json!({"address": a, "class": snapshot.directory.classify(a).name()})).collect::<Vec<_>>(),
                "marking": meta.marking,
                "size": meta.size,
                "reply": delivered.reply,
                "outcome": "released",
                "next_hop": {"reply": delivered.reply, "queue_id": delivered.queue_id},
            });
            crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days)
                .append(&record, now)
                .context("writing the tracking record")?;
            q.delete(id)?;
            println!("released {id}: {}", delivered.reply);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("not released, still held: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn track(command: TrackCommand) -> anyhow::Result<ExitCode> {
    let (config, q, json) = match command {
        TrackCommand::Reindex { config } => {
            let config = config.load()?;
            let tracking =
                crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
            let n = tracking.reindex()?;
            println!("indexed {n} records");
            return Ok(ExitCode::SUCCESS);
        }
        TrackCommand::Search(args) => {
            let SearchArgs {
                config,
                json,
                message_id,
                sender,
                recipient,
                action,
                rule,
                level,
                since,
                until,
                limit,
            } = *args;
            let parse_time = |s: Option<String>, flag: &str| -> anyhow::Result<Option<String>> {
                s.map(|s| {
                    crate::timefmt::parse(&s)
                        .map(crate::timefmt::rfc3339)
                        .with_context(|| format!("{flag}: use YYYY-MM-DD or RFC 3339"))
                })
                .transpose()
            };
            let q = crate::store::index::Query {
                message_id,
                sender,
                recipient,
                action,
                rule,
                level,
                since: parse_time(since, "--since")?,
                until: parse_time(until, "--until")?,
                limit,
            };
            (config.load()?, q, json)
        }
    };
    let tracking =
        crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
    let found = tracking.search(&q)?;
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string()
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for r in &found {
            println!(
                "{} {} {:<10} {:<24} {} -> {}",
                text(r, "time"),
                text(r, "queue_id"),
                text(r, "action"),
                text(r, "rule"),
                text(r, "sender"),
                text(r, "reply")
            );
        }
        println!("{} records", found.len());
    }
    Ok(ExitCode::SUCCESS)
}
