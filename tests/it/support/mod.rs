//! Real peers for the integration tests: markgate itself as a child process, Postfix's
//! smtp-sink as the next hop, swaks / smtplib / smtp-source as clients, a raw SMTP client
//! for hostile input, and a private Postfix instance. Everything listens on 127.0.0.1 and
//! every process a test starts is stopped by PID when its handle drops.
//!
//! - `process`: `free_port`, `wait_port`, `listens_on`, `wait_child_port`, `eventually`,
//!   `bin`, `tool_available`, `python_server`, and `Stopped` (a child killed when dropped).
//! - `gateway`: `Opts` and `Markgate`, markgate `serve` / `milter` as a child process.
//! - `inprocess`: `InProcess`, the gateway run in the test binary on `127.0.0.1:0`.
//! - `sink`: `Sink`, Postfix's smtp-sink as the next hop.
//! - `clients`: `Raw`, `http_get`, `good_message`, `smtplib_send`, `swaks_message`, `swaks`,
//!   `milter_client` (the milter protocol spoken by a small Python client).
//! - `tls`: `TestCa`, a CA and a server certificate made with openssl.
//! - `dump`: `from_markgate`, `markgate_fields`, `strip_added`, `raw_records_in`,
//!   `succeeded`, `outcome`: reading sink dumps, tracking files and command output.
//!
//! Everything public is re-exported here, so tests `use crate::support::*;`. The
//! re-exports are globs: an explicit list would warn (`unused_imports`) on any helper no
//! test happens to use, such as `tool_available`.

#![allow(dead_code)]

mod clients;
mod dump;
mod gateway;
mod inprocess;
mod postgres;
mod process;
mod sink;
mod tls;

pub use clients::*;
pub use dump::*;
pub use gateway::*;
pub use inprocess::*;
pub use postgres::*;
pub use process::*;
pub use sink::*;
pub use tls::*;
