//! `markgate quarantine …`: list, show, release, delete and purge held messages.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::{evaluate, ConfigArgs};
use crate::config::Config;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::policy::Action;
use crate::quarantine::Quarantine;
use crate::transaction::{Envelope, Recipient};

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

pub fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
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
            super::state_dir_access(&config, super::Access::Read)?;
            let q = Quarantine::new(&config.state_dir);
            let since = super::time_flag(since, "--since")?;
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
                let safe = |s: &str| super::terminal_safe(s, false);
                for m in &list {
                    println!(
                        "{}  {}  {:<24} {:<20} {} -> {}",
                        safe(&m.id),
                        safe(&m.time),
                        safe(m.rule.as_deref().unwrap_or("-")),
                        safe(&m.level),
                        safe(&m.sender),
                        safe(&m.recipients.join(", "))
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
                // JSON escapes controls itself; the header block is shown escaped.
                println!("{}", serde_json::to_string_pretty(&meta)?);
                println!("\n{}", super::terminal_safe(&headers, true));
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
        QuarantineCommand::Purge { config, older_than } => {
            let config = config.load()?;
            super::state_dir_access(&config, super::Access::Write)?;
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
        sender: Mailbox::lenient(&meta.sender),
        params: Default::default(),
        recipients: to
            .iter()
            .filter_map(|a| Mailbox::lenient(a))
            .map(Recipient::plain)
            .collect(),
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
