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
//! `marking` know nothing about SMTP.

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
pub mod ops;
pub mod policy;
pub mod process_stats;
pub mod reply;
pub mod runtime;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod transaction;
pub mod yaml;
