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
    /// What markgate decided.
    #[arg(long, value_parser = ["pass", "reject", "quarantine"])]
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
