//! `markgate quarantine …`: list, show, release, delete and purge held messages.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::ConfigArgs;
use crate::ops;
use crate::store::{AddressMatch, HeldFilter, Meta, Store};

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
        /// Why (kept in the tracking record).
        #[arg(long)]
        reason: Option<String>,
        /// The quarantine id.
        id: String,
    },
    /// Delete a held message without sending it (a tracking record says who and why).
    Delete {
        #[command(flatten)]
        config: ConfigArgs,
        /// Who deleted it (kept in the tracking record); $USER by default.
        #[arg(long)]
        by: Option<String>,
        /// Why (kept in the tracking record).
        #[arg(long)]
        reason: Option<String>,
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
        /// Who purged (kept in each tracking record); $USER by default.
        #[arg(long)]
        by: Option<String>,
        /// Why (kept in each tracking record).
        #[arg(long)]
        reason: Option<String>,
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
            super::state_access(&config, super::Access::Read)?;
            let store = Store::connect(&config)?;
            let filter = HeldFilter {
                since: super::time_flag(since, "--since")?,
                sender: sender.as_deref().map(AddressMatch::parse),
                recipient: recipient.as_deref().map(AddressMatch::parse),
                ..HeldFilter::default()
            };
            let list: Vec<_> = ops::list(&store, &filter)?
                .into_iter()
                .rev()
                .filter(|m| rule.as_ref().is_none_or(|r| m.rule.as_ref() == Some(r)))
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
                        safe(&subject_of(&store, m)),
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
            super::state_access(&config, super::Access::Read)?;
            let ops::Shown {
                meta,
                message: bytes,
            } = ops::show(&Store::connect(&config)?, &id)?;
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
            reason,
            id,
        } => {
            let config = config.load()?;
            super::state_access(&config, super::Access::Write)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let actor = ops::Actor::new(by, reason);
            match rt.block_on(ops::release(
                &Store::connect(&config)?,
                &config,
                &id,
                force,
                &actor,
            )) {
                Ok(done) => {
                    println!("released {id}: {}", done.reply);
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!(
                        "not released: {}",
                        super::terminal_safe(&err.to_string(), false)
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        QuarantineCommand::Delete {
            config,
            by,
            reason,
            id,
        } => {
            let config = config.load()?;
            super::state_access(&config, super::Access::Write)?;
            ops::delete(
                &Store::connect(&config)?,
                &config,
                &id,
                &ops::Actor::new(by, reason),
            )?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Purge {
            config,
            older_than,
            dry_run,
            by,
            reason,
        } => {
            let config = config.load()?;
            let access = if dry_run {
                super::Access::Read
            } else {
                super::Access::Write
            };
            super::state_access(&config, access)?;
            let age = humantime::parse_duration(&older_than).context("--older-than: e.g. 30d")?;
            let cutoff = std::time::SystemTime::now() - age;
            let actor = ops::Actor::new(by, reason);
            let list = ops::purge(&Store::connect(&config)?, cutoff, &actor, dry_run)?;
            if dry_run {
                for m in &list {
                    println!(
                        "would purge {}  {}",
                        super::terminal_safe(&m.id, false),
                        super::terminal_safe(&m.time, false)
                    );
                }
                println!("would purge {} (dry run: nothing deleted)", list.len());
            } else {
                println!("purged {}", list.len());
            }
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
fn subject_of(store: &Store, m: &Meta) -> String {
    if let Some(s) = &m.subject {
        return s.clone();
    }
    let Ok(bytes) = store.quarantine.message(&m.id) else {
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
fn describe(meta: &Meta, headers: &str) -> String {
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
    let evidence = &meta.marking.evidence;
    for e in evidence {
        let _ = writeln!(
            out,
            "  found {} in {}: {:?}",
            safe(&e.level),
            safe(&e.source),
            safe(&e.text)
        );
    }
    if evidence.is_empty() {
        let _ = writeln!(out, "  no marking found anywhere");
    }
    if let Some(mta) = &meta.mta_queue_id {
        let _ = writeln!(out, "held by MTA: queue id {}", safe(mta));
    }
    if let Some(r) = &meta.released {
        let _ = writeln!(
            out,
            "release:     {} by {} at {}",
            safe(&r.state),
            safe(&r.by),
            safe(&r.time)
        );
    }
    let _ = writeln!(out, "sha256:      {}", safe(&meta.sha256));
    let _ = writeln!(out, "\n{}", super::terminal_safe(headers, true));
    out
}
