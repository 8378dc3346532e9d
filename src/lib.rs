//! markgate: an outbound mail gateway that enforces protective markings for CJSM.
//!
//! ```text
//!  Postfix / Exchange ──SMTP──▶ smtp::session ─▶ Transaction ─▶ gateway::process
//!                                                                │
//!     spool ─▶ classify (marking) ─▶ decide (policy) ─▶ act ─────┼─▶ next hop  (pass)
//!                                                                ├─▶ quarantine (hold)
//!                                                                └─▶ reject reply
//!                                          every decision ─▶ tracking log + metrics
//! ```
//!
//! The front end only speaks its protocol; `gateway` owns the path; `policy` and
//! `marking` know nothing about SMTP. Dependencies run one way:
//!
//! ```text
//! cli ─▶ runtime ─▶ frontend/{smtp,milter} ─▶ gateway ─▶ {policy, marking, message,
//!        directory, delivery, store} ─▶ {reply, transaction}
//! ```
//!
//! [`serve`] is the library's entry point: `main` binds what the config names and calls it
//! (through `runtime::run`); a test binds `127.0.0.1:0` and runs the gateway in-process.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod frontend;
pub mod gateway;
pub mod idle;
pub mod limiter;
pub mod mailbox;
pub mod marking;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod policy;
pub mod process_stats;
pub mod reply;
pub mod review;
pub mod runtime;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod transaction;
pub mod yaml;

pub use runtime::Listener;

/// Serves one front end on a bound listener with `config` until `shutdown` completes
/// (mini-redis's `server::run`). A reload (SIGHUP, or a rules or directory file that
/// changed) re-reads the files `config` names.
pub async fn serve(
    listener: Listener,
    config: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let again = config.clone();
    let loader: runtime::ConfigLoader = std::sync::Arc::new(move || Ok(again.clone()));
    runtime::serve(listener, None, config, loader, shutdown).await
}
