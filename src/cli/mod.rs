//! The command line: `serve`, `check`, `classify`, `quarantine …`, `track …`. Each command
//! parses flags, loads what it needs and reports errors with context for the user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::gateway::Snapshot;
use crate::mailbox::Mailbox;
use crate::message::Spool;
use crate::policy::Action;
use crate::store::record::RecipientRecord;
use crate::transaction::{Envelope, Origin, Recipient, TransactionBuilder};

mod docs;
mod quarantine;
mod store;
mod track;

pub use quarantine::QuarantineCommand;
pub use track::{SearchArgs, TrackCommand};

#[derive(Parser, Debug)]
#[command(
    name = "markgate",
    version,
    about = "Outbound mail gateway for CJSM protective markings"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

// Flags every command shares for finding its configuration. (A plain comment: clap would
// take a doc comment here as the `about` of every subcommand that flattens it.)
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// YAML config file; else $MARKGATE_CONFIG, else /etc/markgate/markgate.yaml when it
    /// exists, else the embedded defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rule file (overrides `rules:`).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// CJSM directory file (overrides `directory:`).
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// State directory (overrides `state_dir:`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// The config every command finds the same way: `--config`, else `MARKGATE_CONFIG`, else
/// [`SYSTEM_CONFIG`] when it exists, else the embedded defaults.
pub const SYSTEM_CONFIG: &str = "/etc/markgate/markgate.yaml";

impl ConfigArgs {
    /// Which config file this command reads, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| std::env::var_os("MARKGATE_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let system = PathBuf::from(SYSTEM_CONFIG);
                system.is_file().then_some(system)
            })
    }

    pub fn load(&self) -> anyhow::Result<Config> {
        let path = self.path();
        let mut config = match &path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.source = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded defaults".to_string());
        if let Some(r) = &self.rules {
            config.rules = Some(r.clone());
        }
        if let Some(d) = &self.directory {
            config.directory = Some(d.clone());
        }
        if let Some(s) = &self.state_dir {
            config.state_dir = s.clone();
        }
        Ok(config)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the SMTP gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on for SMTP.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Next hop, host:port.
        #[arg(long)]
        upstream: Option<String>,
        /// Address for /metrics, /healthz, /readyz.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run the policy as a milter inside Postfix's smtpd.
    Milter {
        #[command(flatten)]
        config: ConfigArgs,
        /// inet:ADDR:PORT or unix:PATH.
        #[arg(long, default_value = "inet:127.0.0.1:10027")]
        listen: crate::frontend::milter::Listen,
        /// Address for /metrics, /healthz, /readyz.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Validate config, rules and directory; print file:line:column for each error.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Also run the `tests:` in the rule file.
        #[arg(long)]
        run_tests: bool,
    },
    /// Classify one message and show the decision, sending nothing.
    Classify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Envelope sender; "" is the null sender.
        #[arg(long, default_value = "sender@example.cjsm.net")]
        from: String,
        /// Envelope recipients; To/Cc/Bcc of the message when none.
        #[arg(long)]
        to: Vec<String>,
        /// The message file (RFC 5322, as it would be sent).
        message: PathBuf,
    },
    /// Print the JSON Schema of the rule or directory file (for editors).
    Schema {
        /// Which file's schema.
        #[arg(value_enum)]
        which: crate::policy::SchemaKind,
    },
    /// Review held messages.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Search the message-tracking log.
    Track {
        #[command(subcommand)]
        command: TrackCommand,
    },
    /// Set up the shared (PostgreSQL) store.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (used to build the package).
    #[command(hide = true)]
    Man {
        /// Directory to write markgate.1 and markgate-*.1 into.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            metrics_listen,
        } => {
            let loader: crate::runtime::ConfigLoader = std::sync::Arc::new(move || {
                let mut config = config.load()?;
                if let Some(l) = listen {
                    config.listen = l;
                }
                if let Some(u) = &upstream {
                    config.upstream.address = u.clone();
                }
                if metrics_listen.is_some() {
                    config.metrics_listen = metrics_listen;
                }
                Ok(config)
            });
            run_front_end(loader, crate::runtime::FrontEnd::Smtp)
        }
        Command::Milter {
            config,
            listen,
            metrics_listen,
        } => {
            let loader: crate::runtime::ConfigLoader = std::sync::Arc::new(move || {
                let mut config = config.load()?;
                if metrics_listen.is_some() {
                    config.metrics_listen = metrics_listen;
                }
                Ok(config)
            });
            run_front_end(loader, crate::runtime::FrontEnd::Milter(listen))
        }
        Command::Check { config, run_tests } => check(&config, run_tests),
        Command::Classify {
            config,
            json,
            from,
            to,
            message,
        } => classify(&config.load()?, json, &from, &to, &message),
        Command::Schema { which } => {
            print!("{}", crate::policy::json_schema(which));
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { command } => quarantine::run(command),
        Command::Track { command } => track::run(command),
        Command::Store { command } => store::run(command),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man_pages(&out),
    }
}

/// Validates the final config and runs a front end until a signal stops it.
/// Text from a message or an envelope made safe for the operator's terminal: control
/// characters (escape sequences that retitle the window or clear the screen, a CR that
/// overwrites a line, C1 controls) are shown escaped, as `track search` shows them. With
/// `lines`, line breaks stay (a header block); CR is dropped.
pub(crate) fn terminal_safe(text: &str, lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if lines => out.push('\n'),
            '\r' if lines => {}
            '\t' => out.push('\t'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Whether a command only reads the state dir or also writes it.
pub(crate) use crate::store::Access;

/// The state the command uses belongs to whoever runs the service (see
/// [`Store::check_access`](crate::store::Store::check_access)).
pub(crate) fn state_access(config: &Config, access: Access) -> anyhow::Result<()> {
    crate::store::Store::check_access(config, access)
}

fn run_front_end(
    loader: crate::runtime::ConfigLoader,
    front_end: crate::runtime::FrontEnd,
) -> anyhow::Result<ExitCode> {
    let config = loader()?;
    config.validate("command line")?;
    // Classification of large messages runs on blocking threads; give them the stack a
    // deeply nested (but allowed) message needs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.limits.workers())
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
        .context("starting the runtime")?;
    rt.block_on(crate::runtime::run(config, front_end, loader))?;
    Ok(ExitCode::SUCCESS)
}

/// A `--since`/`--until` value (`1h`, `7d`, `today`, `yesterday`, `YYYY-MM-DD`, RFC 3339),
/// as RFC 3339 for comparisons.
pub(crate) fn time_flag(value: Option<String>, flag: &str) -> anyhow::Result<Option<String>> {
    let now = std::time::SystemTime::now();
    value
        .map(|s| {
            crate::timefmt::parse_when(&s, now)
                .map(crate::timefmt::rfc3339)
                .with_context(|| {
                    format!(
                        "{flag} {s:?}: use an age (1h, 7d), today, yesterday, YYYY-MM-DD or \
                         RFC 3339"
                    )
                })
        })
        .transpose()
}

fn check(args: &ConfigArgs, run_tests: bool) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // Everything `serve` reads before it listens, read the same way.
    let snapshot = match crate::runtime::preflight(&config, false) {
        Ok(p) => p.snapshot,
        Err(err) => {
            eprintln!("{err:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if snapshot.policy.rule_ids().next().is_none() {
        eprintln!(
            "warning: {}: no rules: every message will be passed",
            snapshot.policy.source
        );
    }
    println!(
        "ok: config from {}; {} rules from {}",
        config.source,
        snapshot.policy.rule_ids().count(),
        snapshot.policy.source
    );
    if !run_tests {
        return Ok(ExitCode::SUCCESS);
    }
    let results = crate::runtime::rule_tests(&snapshot)?;
    let mut failed = 0;
    for (name, failure) in &results {
        match failure {
            None => println!("pass: {name}"),
            Some(why) => {
                failed += 1;
                println!("FAIL: {name}: {why}");
            }
        }
    }
    let tests = &results;
    println!("{} passed, {} failed", tests.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs a message through the same evaluate step `serve` uses.
pub(crate) fn evaluate(
    snapshot: &Snapshot,
    raw: Vec<u8>,
    from: &str,
    to: &[String],
) -> crate::gateway::Evaluation {
    let mut recipients: Vec<Recipient> = to
        .iter()
        .filter_map(|a| Mailbox::lenient(a))
        .map(Recipient::plain)
        .collect();
    if recipients.is_empty() {
        if let Ok(c) = snapshot.classifier.classify(&raw) {
            recipients = c
                .header_recipients
                .iter()
                .filter_map(|a| Mailbox::lenient(a))
                .map(Recipient::plain)
                .collect();
        }
    }
    let envelope = Envelope {
        sender: Mailbox::lenient(from),
        params: Default::default(),
        recipients,
    };
    let txn = TransactionBuilder::new(Origin::Classify)
        .client("127.0.0.1", "classify")
        .build(envelope, Spool::from_bytes(raw));
    snapshot.evaluate(&txn)
}

/// `classify --json`: the contract of DESIGN.md (`marking`, `signature`, `recipients`,
/// `decision`), with what else the classifier found.
#[derive(serde::Serialize)]
struct ClassifyOutput<'a> {
    marking: crate::store::record::MarkingRecord,
    signature: bool,
    confidentiality_statement: bool,
    recipients: Vec<RecipientRecord>,
    attachments: &'a [crate::marking::classify::Attachment],
    opaque: &'a [String],
    unknown_labels: &'a [String],
    forwarded: Vec<crate::store::record::ForwardedRecord>,
    matched: &'a [crate::policy::Hit],
    decision: Decision<'a>,
}

#[derive(serde::Serialize)]
struct Decision<'a> {
    action: crate::policy::Action,
    rule: Option<&'a str>,
    reply: Option<String>,
}

fn classify(
    config: &Config,
    as_json: bool,
    from: &str,
    to: &[String],
    path: &Path,
) -> anyhow::Result<ExitCode> {
    let snapshot = crate::runtime::load_snapshot(config)?;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let eval = evaluate(&snapshot, raw, from, to);
    let v = &eval.verdict;
    let reply = match v.action {
        Action::Reject => v.reply.as_ref().map(|r| r.to_string()),
        Action::Quarantine => Some("250 2.0.0 Ok: held for review".to_string()),
        Action::Pass => Some("250 2.0.0 Ok: forwarded to next hop".to_string()),
    };
    let m = &eval.classification.marking;
    if as_json {
        let out = ClassifyOutput {
            marking: crate::gateway::marking_record(m),
            signature: eval.classification.signature,
            confidentiality_statement: eval.classification.confidentiality_statement,
            recipients: eval
                .recipients
                .iter()
                .map(|(a, c)| RecipientRecord {
                    address: a.clone(),
                    class: Some(c.name().to_string()),
                })
                .collect(),
            attachments: &eval.classification.attachments,
            opaque: &eval.classification.opaque,
            unknown_labels: &eval.classification.unknown_labels,
            forwarded: crate::gateway::forwarded_records(&eval),
            matched: &v.matched,
            decision: Decision {
                action: v.action,
                rule: v.rule.as_deref(),
                reply,
            },
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "marking:     {} (rank {})",
        m.level_name(),
        m.rank()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none: must be protected".into())
    );
    if !m.descriptors.is_empty() {
        println!(
            "descriptors: {}",
            m.descriptors.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !m.caveats.is_empty() {
        println!(
            "caveats:     {}",
            m.caveats.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for e in &m.evidence {
        println!("  found {:<20} in {:<28} {:?}", e.level, e.source, e.text);
    }
    if m.evidence.is_empty() {
        println!("  no marking found anywhere (UNMARKED)");
    }
    println!(
        "signature:   {}",
        if eval.classification.signature {
            "present"
        } else {
            "absent"
        }
    );
    println!(
        "statement:   {}",
        if eval.classification.confidentiality_statement {
            "present"
        } else {
            "absent"
        }
    );
    for why in &eval.classification.opaque {
        println!("opaque:      {}", terminal_safe(why, false));
    }
    for label in &eval.classification.unknown_labels {
        println!("unknown label: {}", terminal_safe(label, false));
    }
    for f in crate::gateway::forwarded_records(&eval) {
        println!(
            "forwarded:   from {} ({}) in {}",
            terminal_safe(&f.from, false),
            f.class,
            terminal_safe(&f.source, false)
        );
    }
    for (a, c) in &eval.recipients {
        println!("recipient:   {a} ({})", c.name());
    }
    for hit in &v.matched {
        println!(
            "matched:     {} ({}, would {})",
            hit.id,
            hit.mode.name(),
            hit.action.name()
        );
    }
    println!(
        "decision:    {} by {} -> {}",
        v.action.name(),
        v.rule.as_deref().unwrap_or("default"),
        reply.unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn escape_sequences_and_c1_controls_never_reach_the_terminal() {
        let shown = super::terminal_safe("a\u{1b}]0;pwned\u{7}b\u{9b}2Jc\r\nd", true);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains("\\u{1b}"));
        assert_eq!(super::terminal_safe("x\r\ny", false), "x\\r\\ny");
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every subcommand says what it does and every flag and argument says what it takes,
    /// so `--help` and the man pages are complete.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !cmd.is_hide_set() {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}: no help"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
