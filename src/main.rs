//! `markgate`: parses flags, sets up logging and the TLS provider, runs the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
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

/// A reader that stops early (`markgate classify … | head`) closes the pipe, and `println!`
/// panics on the next write. The rest of the output has nowhere to go: end as a Unix tool
/// killed by SIGPIPE would (status 141), without a panic message. Any other panic is
/// reported as before.
fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}
