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
pub mod directory;
pub mod gateway;
pub mod idle;
pub mod limiter;
pub mod mailbox;
pub mod marking;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod ops;
pub mod policy;
pub mod privacy;
pub mod process_stats;
pub mod quarantine;
pub mod runtime;
pub mod smtp;
pub mod store;
pub mod timefmt;
pub mod tracking;
pub mod transaction;
pub mod yaml;
