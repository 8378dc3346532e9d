//! `markgate store …`: the shared store's schema (PostgreSQL).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArgs;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create or upgrade the PostgreSQL store's schema (`store.backend: postgres`) and its
    /// daily tracking partitions; safe to run again, and from several instances at once.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
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
