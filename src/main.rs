//! `markgate`: parses flags, sets up logging and the TLS provider, runs the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = markgate::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MARKGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only on a terminal: escape codes in journald or a log file are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    markgate::tls::install_provider();
    match markgate::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("markgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}
