//! `markgate store …`: the shared store's schema (PostgreSQL).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArgs;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a files store (a state dir's tracking history and held messages) into the
    /// PostgreSQL store: safe to run again, and resumes where an interrupted run stopped.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// The state dir to copy from (its `tracking/` and `quarantine/`).
        #[arg(long)]
        from_state_dir: std::path::PathBuf,
    },
    /// Create or upgrade the PostgreSQL store's schema (`store.backend: postgres`) and its
    /// daily tracking partitions; safe to run again, and from several instances at once.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Import {
            config,
            from_state_dir,
        } => {
            let config = config.load()?;
            let store = Store::connect(&config)?;
            let (records, held) =
                store.import_files(&from_state_dir, config.tracking.retention_days)?;
            println!(
                "ok: {records} tracking records and {held} held messages copied from {} (anything already there was left as it was)",
                from_state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Migrate { config } => {
            let config = config.load()?;
            let store = Store::open(&config)?;
            let Some(pg) = store.postgres() else {
                anyhow::bail!(
                    "store.backend is files: its files need no migration (set store.backend: postgres and store.url to use PostgreSQL)"
                );
            };
            let (from, to) = pg.migrate().context("store migrate")?;
            // Partitions for the days around now, as housekeeping keeps them.
            store
                .tracking
                .purge_older_than(std::time::SystemTime::now())
                .context("creating tracking partitions")?;
            if from == to {
                println!("ok: the schema is at version {to}, nothing to do");
            } else {
                println!("ok: schema migrated from version {from} to {to}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
