//! `markgate track …`: search the tracking log through its index, rebuild the index.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;

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

pub fn run(command: TrackCommand) -> anyhow::Result<ExitCode> {
    let (config, q, json) = match command {
        TrackCommand::Reindex { config } => {
            let config = config.load()?;
            super::state_dir_access(&config, super::Access::Write)?;
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
            let q = crate::store::index::Query {
                message_id,
                sender,
                recipient,
                action,
                rule,
                level,
                since: super::time_flag(since, "--since")?,
                until: super::time_flag(until, "--until")?,
                limit,
            };
            (config.load()?, q, json)
        }
    };
    super::state_dir_access(&config, super::Access::Read)?;
    let tracking =
        crate::tracking::Tracking::new(&config.state_dir, config.tracking.retention_days);
    let found = tracking.search_existing(&q)?;
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
