//! `markgate completions SHELL` and the hidden `markgate man --out DIR`: the shell
//! completions and man pages the Debian package ships, generated from the same clap
//! definitions the binary parses with, so the documentation cannot drift from the flags.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "markgate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `markgate.1` and one page per subcommand (`markgate-quarantine-list.1`, …) into
/// `out`, creating it.
pub fn man_pages(out: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clap_mangen::generate_to(Cli::command(), out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}
