//! `markgate quarantine …`: list, show, release, delete and purge held messages.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::ConfigArgs;
use crate::config::Config;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::policy::Action;
use crate::quarantine::Quarantine;
use crate::store::index::AddressMatch;
use crate::transaction::{ClientInfo, Envelope, Recipient, Transaction};

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List held messages, newest first.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        /// Only messages held at or after this time: an age (30m, 1h, 7d), today,
        /// yesterday, YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Only messages held by this rule id.
        #[arg(long)]
        rule: Option<String>,
        /// Envelope sender: user@domain exactly, @domain for a whole domain, or any part
        /// of an address.
        #[arg(long)]
        sender: Option<String>,
        /// A recipient: user@domain exactly, @domain for a whole domain, or any part of
        /// an address.
        #[arg(long)]
        recipient: Option<String>,
        /// At most this many: the newest.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one held message: envelope, subject, marking and its evidence, the rule, and
    /// the header block.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the metadata and header block as JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Print the stored message itself, byte for byte.
        #[arg(long)]
        raw: bool,
        /// The quarantine id (the queue id in the 250 reply and in `quarantine list`).
        id: String,
    },
    /// Send a held message on to the next hop with its original envelope, after checking
    /// it against the current rules.
    Release {
        #[command(flatten)]
        config: ConfigArgs,
        /// Release even if the current rules would reject it.
        #[arg(long)]
        force: bool,
        /// Who released it (recorded in the message and the tracking log); $USER by
        /// default.
        #[arg(long)]
        by: Option<String>,
        /// The quarantine id.
        id: String,
    },
    /// Delete a held message without sending it.
    Delete {
        #[command(flatten)]
        config: ConfigArgs,
        /// The quarantine id.
        id: String,
    },
    /// Delete every message held longer than an age.
    Purge {
        #[command(flatten)]
        config: ConfigArgs,
        /// An age such as 30d or 12h.
        #[arg(long)]
        older_than: String,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuarantineCommand::List {
            config,
            json,
            since,
            rule,
            sender,
            recipient,
            limit,
        } => {
            let config = config.load()?;
            super::state_dir_access(&config, super::Access::Read)?;
            let q = Quarantine::new(&config.state_dir);
            let since = super::time_flag(since, "--since")?;
            let sender = sender.as_deref().map(AddressMatch::parse);
            let recipient = recipient.as_deref().map(AddressMatch::parse);
            let list: Vec<_> = q
                .list()?
                .into_iter()
                .rev()
                .filter(|m| since.as_ref().is_none_or(|s| m.time >= *s))
                .filter(|m| rule.as_ref().is_none_or(|r| m.rule.as_ref() == Some(r)))
                .filter(|m| sender.as_ref().is_none_or(|s| s.matches(&m.sender)))
                .filter(|m| {
                    recipient
                        .as_ref()
                        .is_none_or(|r| m.recipients.iter().any(|x| r.matches(x)))
                })
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let safe = |s: &str| super::terminal_safe(s, false);
                for m in &list {
                    println!(
                        "{}  {}  {:<24} {:<20} {} -> {}  \"{}\"",
                        safe(&m.id),
                        safe(&m.time),
                        safe(m.rule.as_deref().unwrap_or(crate::metrics::NO_RULE)),
                        safe(&m.level),
                        safe(&m.sender),
                        safe(&m.recipients.join(", ")),
                        safe(&subject_of(&q, m)),
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
            super::state_dir_access(&config, super::Access::Read)?;
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
            let headers = header_block(&bytes);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"meta": meta, "headers": headers}))?
                );
            } else {
                print!("{}", describe(&meta, &headers));
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
            super::state_dir_access(&config, super::Access::Write)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(release(&config, &id, force, by))
        }
        QuarantineCommand::Delete { config, id } => {
            let config = config.load()?;
            super::state_dir_access(&config, super::Access::Write)?;
            Quarantine::new(&config.state_dir)
                .delete(&id)
                .with_context(|| format!("deleting {id}"))?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Purge {
            config,
            older_than,
            dry_run,
        } => {
            let config = config.load()?;
            let access = if dry_run {
                super::Access::Read
            } else {
                super::Access::Write
            };
            super::state_dir_access(&config, access)?;
            let age = humantime::parse_duration(&older_than).context("--older-than: e.g. 30d")?;
            let cutoff = std::time::SystemTime::now() - age;
            let q = Quarantine::new(&config.state_dir);
            if dry_run {
                let cutoff = crate::timefmt::rfc3339(cutoff);
                let would: Vec<_> = q.list()?.into_iter().filter(|m| m.time < cutoff).collect();
                for m in &would {
                    println!(
                        "would purge {}  {}",
                        super::terminal_safe(&m.id, false),
                        super::terminal_safe(&m.time, false)
                    );
                }
                println!("would purge {} (dry run: nothing deleted)", would.len());
                return Ok(ExitCode::SUCCESS);
            }
            let gone = q.purge(cutoff)?;
            println!("purged {}", gone.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The header block of a stored message (up to the blank line), as text.
fn header_block(bytes: &[u8]) -> String {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).to_string()
}

/// The subject for the list: from the metadata, else (entries held by an older version)
/// read from the stored headers.
fn subject_of(q: &Quarantine, m: &crate::quarantine::Meta) -> String {
    if let Some(s) = &m.subject {
        return s.clone();
    }
    let Ok(bytes) = q.message_path(&m.id).and_then(std::fs::read) else {
        return String::new();
    };
    let head = header_block(&bytes);
    mailparse::parse_headers(head.as_bytes())
        .ok()
        .and_then(|(h, _)| {
            use mailparse::MailHeaderMap;
            h.get_first_value("Subject")
        })
        .unwrap_or_default()
}

/// `quarantine show` for a person: what was held, why, and the evidence; every value
/// that came from the message is made safe for the terminal.
fn describe(meta: &crate::quarantine::Meta, headers: &str) -> String {
    use std::fmt::Write;
    let safe = |s: &str| super::terminal_safe(s, false);
    let mut out = String::new();
    let _ = writeln!(out, "id:          {}", safe(&meta.id));
    let _ = writeln!(out, "held:        {}", safe(&meta.time));
    let _ = writeln!(
        out,
        "rule:        {} ({})",
        safe(meta.rule.as_deref().unwrap_or(crate::metrics::NO_RULE)),
        safe(&meta.reason)
    );
    let _ = writeln!(out, "from:        <{}>", safe(&meta.sender));
    for r in &meta.recipients {
        let _ = writeln!(out, "to:          <{}>", safe(r));
    }
    if let Some(s) = &meta.subject {
        let _ = writeln!(out, "subject:     {}", safe(s));
    }
    let _ = writeln!(out, "size:        {} bytes", meta.size);
    let _ = writeln!(out, "marking:     {}", safe(&meta.level));
    let evidence = meta
        .marking
        .get("evidence")
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    for e in &evidence {
        let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let _ = writeln!(
            out,
            "  found {} in {}: {:?}",
            safe(field("level")),
            safe(field("source")),
            safe(field("text"))
        );
    }
    if evidence.is_empty() {
        let _ = writeln!(out, "  no marking found anywhere");
    }
    if let Some(mta) = &meta.mta_queue_id {
        let _ = writeln!(out, "held by MTA: queue id {}", safe(mta));
    }
    if let Some(r) = &meta.released {
        let _ = writeln!(out, "release:     {}", safe(&r.to_string()));
    }
    let _ = writeln!(out, "sha256:      {}", safe(&meta.sha256));
    let _ = writeln!(out, "\n{}", super::terminal_safe(headers, true));
    out
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
    if let Some(mta_id) = &meta.mta_queue_id {
        let mta_id = super::terminal_safe(mta_id, false);
        // Sending markgate's copy would deliver the message a second time once the MTA's
        // held copy is released, and past the MTA's own queue and logs.
        eprintln!(
            "not released: {id} was held by the MTA (milter mode) as queue id {mta_id}; \
             release it there with `postsuper -H {mta_id}`, then `markgate quarantine delete {id}`"
        );
        return Ok(ExitCode::FAILURE);
    }
    let raw = std::fs::read(q.message_path(id)?)?;
    let snapshot = crate::runtime::load_snapshot(config)?;
    let envelope = Envelope {
        sender: Mailbox::lenient(&meta.sender),
        params: Default::default(),
        recipients: meta
            .recipients
            .iter()
            .filter_map(|a| Mailbox::lenient(a))
            .map(Recipient::plain)
            .collect(),
    };
    // The transaction as it arrived, so the released copy carries the same Received and
    // X-Markgate-Marking headers a passed message gets.
    let text = |k: &str| {
        meta.client
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    let txn = Transaction {
        id: id.to_string(),
        received: crate::timefmt::parse(&meta.time).unwrap_or_else(std::time::SystemTime::now),
        client: ClientInfo {
            addr: text("addr"),
            helo: text("helo"),
        },
        tls: None,
        envelope,
        message: std::sync::Arc::new(Spool::from_bytes(raw)),
        front_end: "release",
        mta_queue_id: None,
    };
    let eval = snapshot.evaluate(&txn);
    // The rule that held it does not count against its own release; a reject does.
    if !force && eval.verdict.action == Action::Reject {
        eprintln!(
            "refused: the current rules reject this message ({}: {}); use --force to override",
            eval.verdict
                .rule
                .as_deref()
                .unwrap_or(crate::metrics::NO_RULE),
            eval.verdict
                .reply
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    let next_hop = crate::smtp::next_hop::NextHop::new(&config.upstream, &config.hostname)?;
    let who = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let now = std::time::SystemTime::now();
    let header = format!(
        "{}X-Markgate-Released: by {} at {} (held as {id})\r\n",
        crate::gateway::added_headers(&snapshot, &txn, &eval),
        // Printable ASCII and spaces: "A. Analyst" stays readable, and no line break
        // can start a header of its own.
        who.chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        crate::timefmt::rfc5322(now)
    );
    match next_hop
        .send(&txn.envelope, header.as_bytes(), &txn.message)
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
