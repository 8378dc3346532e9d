//! `markgate track …`: search the tracking log through its index, follow it, rebuild the
//! index.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::store::index::{AddressMatch, Query};

#[derive(Subcommand, Debug)]
pub enum TrackCommand {
    /// Find tracking records, newest first (from the index).
    Search(Box<SearchArgs>),
    /// Rebuild the search index from the tracking files (after a restore, or when search
    /// says the index is out of step).
    Reindex {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Subject access request: write every tracking record and held message that names an
    /// address (as sender or recipient) to a new directory (tracking.json, quarantine/).
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The data subject's address.
        #[arg(long)]
        address: String,
        /// Only from this time on: an age (30m, 1h, 7d), today, yesterday, YYYY-MM-DD or
        /// RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// The directory to create (default: ./markgate-export-ADDRESS).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Erasure request: replace an address with a keyed hash in the tracking records before
    /// a date, except records under a legal hold (tracking.legal_holds); an audit record
    /// says who did it and why.
    Redact {
        #[command(flatten)]
        config: ConfigArgs,
        /// The address to erase.
        #[arg(long)]
        address: String,
        /// Only records before this day (YYYY-MM-DD; records of today are never rewritten).
        #[arg(long)]
        before: String,
        /// Why (the request's reference); kept in the audit record.
        #[arg(long)]
        reason: String,
        /// Who (kept in the audit record); $USER by default.
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the records as a JSON array (with --follow: one object per line).
    #[arg(long)]
    json: bool,
    /// Message-ID header, with or without the angle brackets.
    #[arg(long)]
    message_id: Option<String>,
    /// Envelope sender: user@domain exactly, @domain for a whole domain, or any part of
    /// an address.
    #[arg(long)]
    sender: Option<String>,
    /// A recipient: user@domain exactly, @domain for a whole domain, or any part of an
    /// address.
    #[arg(long)]
    recipient: Option<String>,
    /// What markgate decided (pass, reject, quarantine), or what an operator did to a
    /// held message (delete, purge) or to the log (redact).
    #[arg(long, value_parser = ["pass", "reject", "quarantine", "delete", "purge", "redact"])]
    action: Option<String>,
    /// The id of the rule that decided.
    #[arg(long)]
    rule: Option<String>,
    /// The marking found, e.g. SECRET, OFFICIAL-SENSITIVE, UNMARKED (any case).
    #[arg(long)]
    level: Option<String>,
    /// From this time on: an age (30m, 1h, 7d), today, yesterday, YYYY-MM-DD or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records: the newest.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep running and print matching records as they are written (Ctrl-C stops).
    #[arg(long)]
    follow: bool,
}

pub fn run(command: TrackCommand) -> anyhow::Result<ExitCode> {
    let args = match command {
        TrackCommand::Reindex { config } => {
            let config = config.load()?;
            super::state_dir_access(&config, super::Access::Write)?;
            let tracking =
                crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
            let n = tracking.reindex()?;
            println!("indexed {n} records");
            return Ok(ExitCode::SUCCESS);
        }
        TrackCommand::Search(args) => *args,
        TrackCommand::Export {
            config,
            address,
            since,
            out,
        } => return export(&config, &address, since, out),
        TrackCommand::Redact {
            config,
            address,
            before,
            reason,
            by,
        } => return redact(&config, &address, &before, &reason, by),
    };
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
        follow,
    } = args;
    let mut q = Query {
        message_id,
        sender: sender.as_deref().map(AddressMatch::parse),
        recipient: recipient.as_deref().map(AddressMatch::parse),
        action,
        rule,
        level,
        since: super::time_flag(since, "--since")?,
        until: super::time_flag(until, "--until")?,
        limit,
        after: None,
    };
    let config = config.load()?;
    super::state_dir_access(&config, super::Access::Read)?;
    let tracking =
        crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
    let mut last = tracking.last_row()?;
    let found = tracking.search_existing(&q)?;
    if json && !follow {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Oldest at the top when following, as `tail -f` reads.
    let shown: Box<dyn Iterator<Item = &serde_json::Value>> = if follow {
        Box::new(found.iter().rev())
    } else {
        Box::new(found.iter())
    };
    for r in shown {
        print_record(r, json)?;
    }
    if !follow {
        println!("{} records", found.len());
        return Ok(ExitCode::SUCCESS);
    }
    q.limit = None;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        // A rebuilt index numbers its rows from 1 again.
        let newest = tracking.last_row()?;
        if newest < last {
            last = newest;
        }
        q.after = Some(last);
        for (id, r) in tracking.search_rows_existing(&q)? {
            print_record(&r, json)?;
            last = last.max(id);
        }
        use std::io::Write;
        std::io::stdout().flush()?;
    }
}

/// One record as one line: the Postfix-style fields operators grep for.
fn print_record(r: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value, k: &str| {
        super::terminal_safe(v.get(k).and_then(|x| x.as_str()).unwrap_or("-"), false)
    };
    let to: Vec<String> = r
        .get("recipients")
        .and_then(|v| v.as_array())
        .map(|list| list.iter().map(|x| text(x, "address")).collect())
        .unwrap_or_default();
    let level = r
        .get("marking")
        .map(|m| text(m, "level"))
        .unwrap_or_else(|| "-".into());
    println!(
        "{} {}: from=<{}>, to=<{}>, action={}, rule={}, level={}, outcome={}, reply=\"{}\"",
        text(r, "time"),
        text(r, "queue_id"),
        text(r, "sender"),
        to.join(">,<"),
        text(r, "action"),
        r.get("rule")
            .and_then(|x| x.as_str())
            .map(|x| super::terminal_safe(x, false))
            .unwrap_or_else(|| crate::metrics::NO_RULE.into()),
        level,
        text(r, "outcome"),
        text(r, "reply"),
    );
    Ok(())
}

fn export(
    config: &ConfigArgs,
    address: &str,
    since: Option<String>,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    super::state_dir_access(&config, super::Access::Read)?;
    let since = super::time_flag(since, "--since")?;
    let out = out.unwrap_or_else(|| crate::privacy::default_out(address));
    let tracking =
        crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
    let quarantine = crate::quarantine::Quarantine::new(&config.state_dir);
    let done = crate::privacy::export(&tracking, &quarantine, address, since.as_deref(), &out)
        .map_err(|e| anyhow::anyhow!("exporting into {}: {e}", out.display()))?;
    println!(
        "exported {} records and {} held messages naming {} into {}",
        done.records,
        done.held,
        super::terminal_safe(address, false),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn redact(
    config: &ConfigArgs,
    address: &str,
    before: &str,
    reason: &str,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    super::state_dir_access(&config, super::Access::Write)?;
    let before_day = crate::timefmt::parse(before)
        .map(crate::timefmt::date)
        .ok_or_else(|| anyhow::anyhow!("--before {before:?}: use YYYY-MM-DD"))?;
    if reason.trim().is_empty() {
        anyhow::bail!("--reason: say why (the request's reference)");
    }
    let now = std::time::SystemTime::now();
    let holds: Vec<AddressMatch> = config
        .tracking
        .legal_holds
        .iter()
        .map(|h| AddressMatch::parse(h))
        .collect();
    let tracking =
        crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
    let done = crate::privacy::redact(
        &tracking,
        address,
        &before_day,
        &crate::timefmt::date(now),
        &holds,
    )?;
    let who = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let audit = crate::privacy::audit_record(&done, &before_day, reason, &who, now);
    tracking.append(&audit, now)?;
    println!(
        "redacted {} records in {} files (now {}); {} kept under a legal hold; {} from today left until tomorrow",
        done.records, done.files, done.token, done.held_back, done.too_recent
    );
    Ok(ExitCode::SUCCESS)
}
