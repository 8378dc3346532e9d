//! `markgate track …`: search the tracking log through its index, follow it, rebuild the
//! index.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::store::record::TrackingRecord;
use crate::store::{AddressMatch, Query, Store};

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
    /// address (as sender or recipient) to a new directory (tracking.json, and the held messages in a folder of their own).
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
    #[arg(long, value_parser = ["pass", "reject", "quarantine", "delete", "purge", "redact", "download"])]
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
            super::state_access(&config, super::Access::Write)?;
            let n = Store::connect(&config)?.tracking.reindex()?;
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
    super::state_access(&config, super::Access::Read)?;
    let store = Store::connect(&config)?;
    let tracking = &store.tracking;
    let mut last = tracking.last_row()?;
    let found = crate::ops::search(&store, &q)?;
    if json && !follow {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Oldest at the top when following, as `tail -f` reads.
    let shown: Box<dyn Iterator<Item = &TrackingRecord>> = if follow {
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
        for (id, r) in tracking.search_rows(&q)? {
            print_record(&r, json)?;
            last = last.max(id);
        }
        use std::io::Write;
        std::io::stdout().flush()?;
    }
}

/// One record as one line: the Postfix-style fields operators grep for.
fn print_record(r: &TrackingRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let safe = |s: &str| super::terminal_safe(s, false);
    let or_dash = |s: Option<&str>| safe(s.unwrap_or("-"));
    let to: Vec<String> = r.addresses().map(safe).collect();
    println!(
        "{} {}: from=<{}>, to=<{}>, action={}, rule={}, level={}, outcome={}, reply=\"{}\"",
        safe(&r.time),
        or_dash(r.queue_id.as_deref()),
        safe(&r.sender),
        to.join(">,<"),
        safe(&r.action),
        safe(r.rule.as_deref().unwrap_or(crate::metrics::NO_RULE)),
        if r.marking.is_some() {
            safe(r.level())
        } else {
            "-".into()
        },
        safe(&r.outcome),
        or_dash(r.reply.as_deref()),
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
    super::state_access(&config, super::Access::Read)?;
    let since = super::time_flag(since, "--since")?;
    let out = out.unwrap_or_else(|| default_out(address));
    let done = crate::ops::export(&Store::connect(&config)?, address, since.as_deref(), &out)?;
    println!(
        "exported {} records and {} held messages naming {} into {}",
        done.records,
        done.held,
        super::terminal_safe(address, false),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the export of `address` goes by default: `./markgate-export-<address-ish>`.
fn default_out(address: &str) -> std::path::PathBuf {
    let safe: String = address
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::path::PathBuf::from(format!("markgate-export-{safe}"))
}

fn redact(
    config: &ConfigArgs,
    address: &str,
    before: &str,
    reason: &str,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    super::state_access(&config, super::Access::Write)?;
    let before_day = crate::timefmt::parse(before)
        .map(crate::timefmt::date)
        .ok_or_else(|| anyhow::anyhow!("--before {before:?}: use YYYY-MM-DD"))?;
    if reason.trim().is_empty() {
        anyhow::bail!("--reason: say why (the request's reference)");
    }
    let actor = crate::ops::Actor::new(by, Some(reason.to_string()));
    let done = crate::ops::redact(
        &Store::connect(&config)?,
        &config,
        address,
        &before_day,
        &actor,
    )?;
    println!(
        "redacted {} records in {} files (now {}); {} kept under a legal hold; {} from today left until tomorrow",
        done.records, done.files, done.token, done.held_back, done.too_recent
    );
    Ok(ExitCode::SUCCESS)
}
